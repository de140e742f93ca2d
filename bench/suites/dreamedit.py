"""DreamEditBench: subject replacement and subject addition (docs/protocols.md section 3).

Layout (the public DreamEditBench release; ``--data-root`` may be the folder holding ``data/``
or ``data/`` itself)::

    data/replacement_source/<class folder>/found0.jpg ... found9.jpg
    data/addition_source/<class folder>/found0.jpg ... found9.jpg
    data/addition_source/<class folder>/bbox.json     {"foundK.jpg": [x0, y0, x1, y1], ...}

Boxes are in 512x512 pixel coordinates (docs/protocols.md section 3) and are scaled to the source's
size when a source is not 512x512.

Subjects and their reference images come from DreamBench (``dataset/prompts_and_classes.txt``
and ``dataset/<subject>/*.jpg``): option ``dreambench_root``, by default the DreamBench suite's
download location, or the embedded mini DreamBench when this suite reads its own mini copy.
Each DreamBench subject edits the sources of one class folder: the subject's own name, except
``dog2..dog8 -> dog``, ``cat2 -> cat``, ``backpack_dog -> backpack``, and for addition also
``colorful_sneaker / shiny_sneaker -> sneaker`` (the mapping of DreamEdit's released
evaluation code; a missing ``sneaker`` folder falls back to the subject's own folder).

Keys: ``prompt_index`` encodes the task and the source: replacement ``foundK`` -> K (0-9),
addition ``foundK`` -> 100 + K (100-109). So ``dreamedit/dog2/003`` is "replace the dog of
replacement_source/dog/found3.jpg with dog2" and ``dreamedit/dog2/103`` the addition one.

Masks (white = region to edit, at the source's size): addition from the box; replacement from
the Grounded-SAM annotator (bench.metrics.grounded_sam) on the source with the class noun,
cached on disk. A source where Grounded-SAM finds nothing gets ``mask=None`` and the extra
field ``mask_status=no-detection`` (never a silent full or empty mask).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

from PIL import Image

from bench import BenchError
from bench.files import cache_root, file_sha256
from bench.images import open_image
from bench.options import as_list
from bench.suites.base import Suite
from bench.types import Sample

TASK_KINDS = ("replacement", "addition")
TASK_OFFSETS = {"replacement": 0, "addition": 100}
SOURCE_FOLDERS = {"replacement": "replacement_source", "addition": "addition_source"}
BOX_SPACE = 512                       # bbox.json coordinates are 512x512 pixels
SOURCE_PATTERN = re.compile(r"^found(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# DreamEdit's released evaluation code: DreamBench subject -> class folder.
_SHARED_FOLDERS = {"dog2": "dog", "dog3": "dog", "dog5": "dog", "dog6": "dog", "dog7": "dog",
                   "dog8": "dog", "cat2": "cat", "backpack_dog": "backpack"}
FOLDER_OF_SUBJECT = {
    "replacement": dict(_SHARED_FOLDERS),
    "addition": {**_SHARED_FOLDERS, "colorful_sneaker": "sneaker", "shiny_sneaker": "sneaker"},
}


def annotate_flag(value) -> bool:
    """The ``annotate`` option as a bool; anything but a yes/no word is refused (``annotate=maybe``
    must not silently mean yes)."""
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise BenchError(f"dreamedit option annotate={value!r}: expected true or false")


def _data_dir(root: Path) -> Path:
    """``root/data`` when root is the repository, ``root`` when it is ``data/`` itself."""
    for candidate in (root / "data", root):
        if any((candidate / f).is_dir() for f in SOURCE_FOLDERS.values()):
            return candidate
    raise BenchError(f"{root} is not a DreamEditBench folder: neither {root / 'data' / 'replacement_source'} "
                     f"nor {root / 'replacement_source'} exists (pass the folder that holds data/, or data/)")


def _dreambench_dataset_dir(root: Path) -> Path:
    for candidate in (root / "dataset", root):
        if (candidate / "prompts_and_classes.txt").is_file():
            return candidate
    raise BenchError(f"DreamBench (the DreamEdit subjects' reference images) not found at {root}: "
                     f"{root / 'dataset' / 'prompts_and_classes.txt'} is missing; pass dreambench_root=... "
                     f"or run `python -m bench data fetch dreambench`")


def read_dreambench_classes(prompts_file: Path) -> dict[str, str]:
    """The ``subject_name,class`` table of DreamBench's prompts_and_classes.txt, read with the
    DreamBench suite's parser (docs/protocols.md section 2)."""
    from bench.suites.dreambench import parse_prompts_file
    return dict(parse_prompts_file(prompts_file).classes)


def _images_in(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def box_mask(source: Path, box: list[float], out_dir: Path) -> Path:
    """A white-on-black mask of ``box`` (512x512 coordinates) at the source's size, cached by
    the source's sha256 and the box."""
    digest = hashlib.sha256(f"{file_sha256(source)}|{json.dumps(box)}|upright".encode()).hexdigest()[:24]
    path = out_dir / f"box-{digest}.png"
    if path.exists():
        return path
    width, height = open_image(source).size       # upright (EXIF applied), as every reader sees it
    x0, y0, x1, y1 = (box[0] * width / BOX_SPACE, box[1] * height / BOX_SPACE,
                      box[2] * width / BOX_SPACE, box[3] * height / BOX_SPACE)
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (round(x0), round(y0), max(round(x1), round(x0) + 1), max(round(y1), round(y0) + 1)))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{path.name}.{os.getpid()}.tmp"
    mask.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


class DreamEdit(Suite):
    name = "dreamedit"
    version = "1"
    task = "edit"
    # DreamEditBench scores one edit per (subject, source).
    default_images_per_prompt = 1
    # Six runs averaged, as for DreamBench (docs/protocols.md section 2): per seed the mean over
    # the edits, then mean and std over the six seeds.
    default_seeds = (0, 1, 2, 3, 4, 5)
    default_metrics = ("masked", "dreamedit-official")
    default_root = "datasets/dreamedit"
    mini_root = "datasets/mini-dreamedit"
    dataset_id = "tianleliphoebe/DreamEditBench"
    download_size = 60_000_000            # an estimate: about 440 JPEG sources of 20 KB to 1.5 MB

    @classmethod
    def fetch_command(cls, root: Path) -> str:
        return f"hf download {cls.dataset_id} --repo-type dataset --include 'data/*' --local-dir {root}"
    # docs/protocols.md section 5 column order: DINO-sub / DINO-back / CLIP-I-sub / CLIP-I-back.
    # Then the official protocol's scores and the no-detection rate of the masked protocol.
    scatter_axes = ("DINO-back", "DINO-sub")
    leaderboard_columns = {"dino_sub": "DINO-sub", "dino_back": "DINO-back",
                           "clip_i_sub": "CLIP-I-sub", "clip_i_back": "CLIP-I-back",
                           "official_dino_sub": "DINO-sub (official, final image)",
                           "official_dino_back": "DINO-back (official, final image)",
                           "official_clip_i_sub": "CLIP-I-sub (official, final image)",
                           "official_clip_i_back": "CLIP-I-back (official, final image)",
                           "official_overall": "Overall (official, final image, corrected)",
                           "official_overall_as_released": "Overall (official, final image, as released)",
                           # option official_iteration=best: DreamEdit's own rule (best iteration per sample)
                           "official_best_dino_sub": "DINO-sub (official, best iteration)",
                           "official_best_dino_back": "DINO-back (official, best iteration)",
                           "official_best_clip_i_sub": "CLIP-I-sub (official, best iteration)",
                           "official_best_clip_i_back": "CLIP-I-back (official, best iteration)",
                           "official_best_overall": "Overall (official, best iteration, corrected)",
                           "official_best_overall_as_released": "Overall (official, best iteration, as released)",
                           "gsam_no_detection": "No detection (rate)"}

    def __init__(self, root: Path, task_kind: str = "both", dreambench_root: str | Path | None = None,
                 identifier: str = "", conditioning: str = "first", subjects: list[str] | None = None,
                 annotator_preset: str | None = None, annotate: bool | str = True, device: str = "cpu",
                 official_iteration: str = "final", **options):
        super().__init__(root, task_kind=task_kind, dreambench_root=dreambench_root, identifier=identifier,
                         conditioning=conditioning, subjects=subjects, annotator_preset=annotator_preset,
                         annotate=annotate, official_iteration=official_iteration, **options)
        if options:
            raise BenchError(f"unknown dreamedit option(s) {', '.join(sorted(options))}; valid: task_kind (--task), "
                             "dreambench_root, identifier, conditioning, subjects, annotator_preset, annotate, "
                             "official_iteration")
        if official_iteration not in ("final", "best"):
            raise BenchError(f"dreamedit: official_iteration={official_iteration!r} is not 'final' (score the "
                             "final image) or 'best' (DreamEdit's rule: each sample's best iteration)")
        self.official_iteration = official_iteration
        if task_kind not in (*TASK_KINDS, "both"):
            raise BenchError(f"dreamedit: --task {task_kind!r} is not replacement, addition or both")
        if conditioning not in ("first", "all"):
            raise BenchError(f"dreamedit: conditioning={conditioning!r} is not 'first' or 'all'")
        self.task_kinds = TASK_KINDS if task_kind == "both" else (task_kind,)
        self.identifier = "" if identifier is None else str(identifier).strip()
        self.conditioning = conditioning
        if annotator_preset not in (None, "tiny"):
            raise BenchError(f"dreamedit: annotator_preset={annotator_preset!r} is not 'tiny' (or absent: real "
                             "Grounded-SAM weights)")
        from bench.options import check_device
        check_device(str(device), "dreamedit option device")
        self.selected_subjects = as_list(subjects, "dreamedit option subjects")
        from bench.suites import REPO_ROOT
        is_mini = self.root.resolve() == (REPO_ROOT / self.mini_root).resolve()
        if dreambench_root is None:
            dreambench_root = REPO_ROOT / ("datasets/mini-dreambench" if is_mini else "datasets/dreambench")
        self.dreambench_root = Path(str(dreambench_root)).expanduser()
        # The mini copy is procedurally drawn: a real detector finds nothing in it, so smoke runs
        # annotate with the tiny random preset unless told otherwise.
        self.annotator_preset = annotator_preset if annotator_preset is not None else ("tiny" if is_mini else None)
        self.annotate = annotate_flag(annotate)
        self.device = device

    def metric_params(self) -> dict[str, dict]:
        """``official_iteration``: which output the official metric scores (docs/protocols.md
        section 3): the final image, or DreamEdit's own choice, each sample's best iteration."""
        return {"dreamedit-official": {"iteration": self.official_iteration}}

    # ---- layout ------------------------------------------------------------------------------
    def _subjects(self) -> tuple[dict[str, str], dict[str, tuple[Path, ...]]]:
        dataset = _dreambench_dataset_dir(self.dreambench_root)
        classes = read_dreambench_classes(dataset / "prompts_and_classes.txt")
        if self.selected_subjects:
            unknown = [s for s in self.selected_subjects if s not in classes]
            if unknown:
                raise BenchError(f"dreamedit: unknown subject(s) {', '.join(unknown)}; "
                                 f"valid: {', '.join(sorted(classes))}")
            classes = {s: classes[s] for s in self.selected_subjects}
        images = {}
        for subject in classes:
            folder = dataset / subject
            if not folder.is_dir():
                raise BenchError(f"DreamBench subject {subject!r} is listed in {dataset / 'prompts_and_classes.txt'} "
                                 f"but {folder} does not exist")
            images[subject] = _images_in(folder)
            if not images[subject]:
                raise BenchError(f"DreamBench subject folder {folder} has no images")
        return classes, images

    def class_folder(self, data: Path, task_kind: str, subject: str) -> Path:
        base = data / SOURCE_FOLDERS[task_kind]
        mapped = base / FOLDER_OF_SUBJECT[task_kind].get(subject, subject)
        if mapped.is_dir():
            return mapped
        own = base / subject
        if own.is_dir():
            return own
        raise BenchError(f"dreamedit: no class folder for subject {subject!r}: {mapped} does not exist")

    @staticmethod
    def sources(folder: Path) -> list[tuple[int, Path]]:
        found = []
        for p in folder.iterdir():
            m = SOURCE_PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        if not found:
            raise BenchError(f"dreamedit: {folder} has no foundK.jpg source images")
        found.sort()
        too_many = [p.name for k, p in found if k >= 100]
        if too_many:
            raise BenchError(f"dreamedit: {folder}: source index out of range (0-99): {', '.join(too_many)}")
        return found

    @staticmethod
    def read_boxes(folder: Path) -> dict[str, list[float]]:
        path = folder / "bbox.json"
        if not path.is_file():
            raise BenchError(f"dreamedit: {path} is missing (addition sources need their boxes)")
        from bench.files import read_json

        boxes = read_json(path, "the DreamEdit boxes file")     # bounded: size, depth, UTF-8
        if not isinstance(boxes, dict):
            raise BenchError(f"dreamedit: {path} must map 'foundK.jpg' to [x0, y0, x1, y1]")
        for name, box in boxes.items():
            if (not isinstance(box, list) or len(box) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               and -BOX_SPACE <= v <= 2 * BOX_SPACE for v in box)
                    or box[2] <= box[0] or box[3] <= box[1]):
                raise BenchError(f"dreamedit: {path}: box of {name!r} must be [x0, y0, x1, y1] of finite numbers in "
                                 f"{BOX_SPACE}x{BOX_SPACE} coordinates with x1>x0, y1>y0, "
                                 f"got {box!r}")
        return boxes

    def describe(self) -> dict:
        """Counts for --dry-run: class folders and sources per task, subjects mapped."""
        data = _data_dir(self.root)
        classes, _ = self._subjects()
        out: dict = {"subjects_mapped": len(classes), "dreambench_root": str(self.dreambench_root)}
        for kind in self.task_kinds:
            base = data / SOURCE_FOLDERS[kind]
            folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            per_folder = {p.name: len([q for q in p.iterdir() if SOURCE_PATTERN.match(q.name)]) for p in folders}
            out[kind] = {"class_folders": len(folders), "sources_per_folder": sorted(set(per_folder.values())),
                         "samples": sum(per_folder[self.class_folder(data, kind, s).name] for s in classes)}
        return out

    # ---- samples -----------------------------------------------------------------------------
    def samples(self) -> list[Sample]:
        data = _data_dir(self.root)
        classes, images = self._subjects()
        mask_dir = cache_root() / "dreamedit-masks"
        out: list[Sample] = []
        pending: list[tuple[int, Path, str]] = []           # replacement samples awaiting masks
        for kind in self.task_kinds:
            boxes_by_folder: dict[Path, dict] = {}
            for subject, noun in classes.items():
                folder = self.class_folder(data, kind, subject)
                refs = images[subject]
                conditioning = refs[:1] if self.conditioning == "first" else refs
                prompt = f"photo of a {self.identifier} {noun}" if self.identifier else f"photo of a {noun}"
                for index, source in self.sources(folder):
                    mask = None
                    extra = {"task_kind": kind, "source_prompt": f"photo of a {noun}",
                             "class_folder": folder.name}
                    if kind == "addition":
                        if folder not in boxes_by_folder:
                            boxes_by_folder[folder] = self.read_boxes(folder)
                        box = boxes_by_folder[folder].get(source.name)
                        if box is None:
                            raise BenchError(f"dreamedit: {folder / 'bbox.json'} has no box for {source.name}")
                        mask = box_mask(source, box, mask_dir)
                        extra["mask_status"] = "box"
                    out.append(Sample(
                        suite=self.name, subject=subject, class_noun=noun,
                        prompt_index=TASK_OFFSETS[kind] + index, prompt=prompt,
                        eval_text=f"photo of a {noun}", subject_images=conditioning, reference_images=refs,
                        category=kind, source_image=source, mask=mask,
                        extra=tuple(sorted(extra.items()))))
                    if kind == "replacement":
                        pending.append((len(out) - 1, source, noun))
        if pending and self.annotate:
            out = self._attach_replacement_masks(out, pending)
        return out

    def _attach_replacement_masks(self, out: list[Sample], pending: list[tuple[int, Path, str]]) -> list[Sample]:
        from dataclasses import replace
        from bench.metrics.grounded_sam import GroundedSam

        annotator = GroundedSam(device=self.device, preset=self.annotator_preset)
        unique = sorted({(source, noun) for _, source, noun in pending})
        results = dict(zip(unique, annotator.annotate([s for s, _ in unique], [n for _, n in unique])))
        for position, source, noun in pending:
            result = results[(source, noun)]
            extra = dict(out[position].extra)
            extra["mask_status"] = result.status
            out[position] = replace(out[position], mask=result.mask_path, extra=tuple(sorted(extra.items())))
        return out

    @classmethod
    def requirements(cls, root: Path, **options) -> list:
        """The data (it also needs DreamBench's) and, to mask replacement sources with real weights,
        Grounded-SAM."""
        from bench.needs import grounded_sam
        from bench.suites import REPO_ROOT

        annotate = annotate_flag(options.get("annotate", True))
        is_mini = Path(root).resolve() == (REPO_ROOT / cls.mini_root).resolve()
        real_annotator = options.get("annotator_preset", "tiny" if is_mini else None) is None
        dreambench = cls._dreambench_requirements(root, options)
        if dreambench[0].check().present:
            data = super().requirements(root, **{**options, "annotate": False})     # loading it segments nothing
        else:                     # without DreamBench the suite cannot load: check the folder layout alone
            from bench.needs import probe

            sources = [Path(root) / "data" / f"{kind}_source" for kind in ("replacement", "addition")]
            data = [probe(f"{cls.name} data", str(root), cls.fetch_command(Path(root)),
                          lambda: None if any(p.is_dir() for p in sources) else f"no {sources[0]} or {sources[1]}",
                          size=cls.download_size, measure=Path(root))]
        return data + dreambench + (grounded_sam() if annotate and real_annotator else [])

    @classmethod
    def _dreambench_requirements(cls, root: Path, options: dict) -> list:
        """DreamBench's subjects and images (option ``dreambench_root``, default the DreamBench suite's folder)."""
        from bench.registry import SUITES
        from bench.suites import REPO_ROOT

        dreambench = SUITES.get("dreambench").load()
        is_mini = Path(root).resolve() == (REPO_ROOT / cls.mini_root).resolve()
        default = REPO_ROOT / (dreambench.mini_root if is_mini else dreambench.default_root)
        given = options.get("dreambench_root")      # a path, whatever KEY=VALUE parsing made of it ('nan', '1')
        dreambench_root = Path(str(given)).expanduser() if given not in (None, "") else default
        return dreambench.requirements(dreambench_root)

    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        return (f"DreamEditBench cannot be downloaded here. Get it from the DreamEdit release "
                f"(github.com/DreamEditBenchTeam/DreamEdit, the DreamEditBench data; cc-by-4.0) and place it so "
                f"that {dest / 'data' / 'replacement_source'} and {dest / 'data' / 'addition_source'} exist; "
                f"it also needs DreamBench (`python -m bench data fetch dreambench`)")
