"""DreamBench++ (yuangpeng/dreambench_plus, ICLR 2025): 150 images x 9 prompts, judged by a VLM.

Layout of the released data (docs/protocols.md section 7); ``--data-root`` may be the
folder that holds ``images/`` and ``captions/`` or its parent holding ``data/``::

    images/<category>/<index>.jpg        category: animal, human, object, style
    captions/<category>/<index>.txt      line 1: the subject's name; then exactly 9 prompts

Prompts 0-3 are photorealistic, 4-6 style transfer, 7-8 imaginative. Collection ids are formed as
the release forms them, so scores line up with its per-image files: ``animal`` and ``human``
become ``live_subject_animal`` / ``live_subject_human``, and the id is
``<category>_<index>_<subject name lowercased, spaces as underscores>`` (e.g.
``live_subject_animal_00_kitten``); collections are ordered by id. The collection id is this
suite's subject, ``prompt_index`` is the caption line's index (0-8), ``category`` is the folder.

Every prompt names the subject in words, so the method sees the caption as it is and CLIP-T scores
the same text. The one image of a collection conditions the method and is the reference of
CLIP-I, DINO, DreamSim and the judge's concept preservation (the "paired" comparison of the
release). Protocol defaults as released (its generate_images.py): one image per prompt, seed 42.

Option ``subjects``: a list (or comma-separated string) of collection ids to keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bench import BenchError
from bench.files import check_path_part
from bench.images import check_image
from bench.suites.base import Suite
from bench.types import Sample

CATEGORIES = ("animal", "human", "object", "style")
#: the release's collection-id prefix per category folder
ID_PREFIX = {"animal": "live_subject_animal", "human": "live_subject_human", "object": "object", "style": "style"}
PROMPTS_PER_IMAGE = 9
#: prompt index -> kind, as the release's benchmarking script splits prompt following
PROMPT_KINDS = ("photorealistic",) * 4 + ("style_transfer",) * 3 + ("imaginative",) * 2
#: bounds on a caption file: characters per line, and bytes read at most
MAX_LINE_CHARS = 1000
MAX_CAPTION_BYTES = 64 * 1024


def prompt_kind(index: int) -> str:
    return PROMPT_KINDS[index]


def judge_instruction(category: str) -> str:
    """Which of the release's concept-preservation instruction sets a category uses."""
    return "style" if category == "style" else "subject"


def collection_id(category: str, index: str, subject_name: str) -> str:
    return "_".join([ID_PREFIX[category], index, subject_name.lower().replace(" ", "_")])


def resolve_data_dir(root: Path) -> Path:
    """The folder holding images/ and captions/: ``root`` itself or ``root/data``."""
    root = Path(root)
    for candidate in (root, root / "data"):
        if (candidate / "images").is_dir() and (candidate / "captions").is_dir():
            return candidate
    raise BenchError(f"{root} is not a DreamBench++ copy: expected images/ and captions/ in it or in "
                     f"{root / 'data'} (get it with `python -m bench data fetch dreambench-plus`)")


def _check_line(line: str, path: Path, lineno: int) -> str:
    if len(line) > MAX_LINE_CHARS:
        raise BenchError(f"{path}:{lineno}: line of {len(line)} characters, more than {MAX_LINE_CHARS}")
    if any(ord(c) < 32 for c in line):
        raise BenchError(f"{path}:{lineno}: control character in {line[:60]!r}")
    if "{" in line or "}" in line:
        raise BenchError(f"{path}:{lineno}: braces in {line[:60]!r}: DreamBench++ prompts are plain text, "
                         "not templates")
    return line


def read_caption(path: Path) -> tuple[str, tuple[str, ...]]:
    """(subject name, 9 prompts) from one caption file; a bad file is one BenchError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CAPTION_BYTES + 1)
    except OSError as exc:
        raise BenchError(f"cannot read DreamBench++ caption {path}: {exc.strerror}") from None
    if len(data) > MAX_CAPTION_BYTES:
        raise BenchError(f"{path}: larger than {MAX_CAPTION_BYTES} bytes; not a DreamBench++ caption file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BenchError(f"{path} is not a UTF-8 text file") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        if not line:
            raise BenchError(f"{path}:{lineno}: empty line (expected the subject name, then {PROMPTS_PER_IMAGE} prompts)")
        _check_line(line, path, lineno)
    if len(lines) != 1 + PROMPTS_PER_IMAGE:
        raise BenchError(f"{path}: {len(lines)} lines, expected {1 + PROMPTS_PER_IMAGE} (the subject name, "
                         f"then {PROMPTS_PER_IMAGE} prompts)")
    return lines[0], tuple(lines[1:])


def _as_list(value) -> list[str] | None:
    """The subjects option as a list; empty items and an empty list are refused (bench.options)."""
    from bench.options import as_list

    return as_list(value, "dreambench-plus option subjects")


class DreamBenchPlus(Suite):
    name = "dreambench-plus"
    version = "1"
    task = "generate"
    default_images_per_prompt = 1          # the release's generate_images.py: num_images_per_prompt=1
    default_seeds = (42,)                  # ... and seed=42
    default_metrics = ("clip", "dino", "dreamsim", "judge")
    default_root = "datasets/dreambench-plus"
    mini_root = "datasets/mini-dreambench-plus"
    leaderboard_columns = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO", "dreamsim": "DreamSim ↓",
                           "cp": "CP", "pf": "PF"}
    aggregate = "seeds"
    scatter_axes = ("PF", "CP")
    prompt_kinds = PROMPT_KINDS            # the leaderboard's "By prompt kind" table
    released_subjects = 150                # the release's README: 150 images, 9 prompts each
    dataset_id = "yuangpeng/dreambench_plus"
    download_size = 15_100_000            # the dataset's data.zip

    @classmethod
    def fetch_command(cls, root: Path) -> str:
        return (f"hf download {cls.dataset_id} data.zip --repo-type dataset --local-dir {root} && "
                f"unzip -q {root}/data.zip -d {root}")
    repository_url = "https://github.com/yuangpeng/dreambench_plus"

    def __init__(self, root: Path, subjects: Iterable[str] | str | None = None, **unknown):
        if unknown:
            raise BenchError(f"unknown dreambench-plus option(s) {', '.join(sorted(unknown))}; valid: subjects")
        selected = _as_list(subjects)
        super().__init__(root, **({"subjects": selected} if selected is not None else {}))
        self.selected = selected
        self.data_dir = resolve_data_dir(self.root)
        self._samples: list[Sample] | None = None

    def collections(self) -> list[dict]:
        """Every collection of the copy, ordered by id: {id, category, index, name, image, caption, prompts}."""
        out = {}
        images_dir, captions_dir = self.data_dir / "images", self.data_dir / "captions"
        for folder in sorted(p for p in captions_dir.iterdir() if p.is_dir()):
            if folder.name not in CATEGORIES:
                raise BenchError(f"{folder}: unknown DreamBench++ category {folder.name!r} "
                                 f"(expected {', '.join(CATEGORIES)})")
        for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            if folder.name not in CATEGORIES:
                raise BenchError(f"{folder}: unknown DreamBench++ category {folder.name!r} "
                                 f"(expected {', '.join(CATEGORIES)})")
        for category in CATEGORIES:
            captions = {p.stem: p for p in (captions_dir / category).glob("*.txt")} \
                if (captions_dir / category).is_dir() else {}
            images = {p.stem: p for p in (images_dir / category).glob("*.jpg")} \
                if (images_dir / category).is_dir() else {}
            for stem in sorted(set(captions) ^ set(images)):
                have, lacks = ((captions[stem], images_dir / category / f"{stem}.jpg") if stem in captions
                               else (images[stem], captions_dir / category / f"{stem}.txt"))
                raise BenchError(f"{have} has no partner {lacks} (every image needs its caption file)")
            for index in sorted(captions):
                check_path_part(index, str(captions[index]), "file name")
                name, prompts = read_caption(captions[index])
                cid = collection_id(category, index, name)
                check_path_part(cid, str(captions[index]), "collection id")
                if cid in out:
                    raise BenchError(f"{captions[index]}: collection id {cid!r} twice (also {out[cid]['caption']})")
                out[cid] = {"id": cid, "category": category, "index": index, "name": name,
                            "image": images[index], "caption": captions[index], "prompts": prompts}
        if not out:
            raise BenchError(f"{self.data_dir}: no collections (images/<category>/<index>.jpg with "
                             "captions/<category>/<index>.txt)")
        return [out[k] for k in sorted(out)]

    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self._build()
        return list(self._samples)

    def _build(self) -> list[Sample]:
        collections = self.collections()
        if self.selected is not None:
            known = {c["id"] for c in collections}
            unknown = [s for s in self.selected if s not in known]
            if unknown:
                raise BenchError(f"unknown DreamBench++ collection(s) {', '.join(unknown)} in {self.data_dir}; "
                                 f"e.g. {', '.join(sorted(known)[:3])}")
            collections = [c for c in collections if c["id"] in set(self.selected)]
        samples = []
        for c in collections:
            check_image(c["image"])
            image = (c["image"],)
            for index, prompt in enumerate(c["prompts"]):
                samples.append(Sample(
                    suite=self.name, subject=c["id"], class_noun=c["name"], prompt_index=index,
                    prompt=prompt, eval_text=prompt, subject_images=image, reference_images=image,
                    category=c["category"],
                    extra=(("judge_instruction", judge_instruction(c["category"])),
                           ("prompt_kind", prompt_kind(index)))))
        return samples

    # ---- download ---------------------------------------------------------------------------
    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        dest = Path(dest)
        return (f"DreamBench++ is the Hugging Face dataset {cls.dataset_id}: with network access run "
                f"`hf download {cls.dataset_id} --repo-type dataset --local-dir {dest}` (or unpack the "
                f"release's zip there) so that {dest}/images/<category>/<index>.jpg and "
                f"{dest}/captions/<category>/<index>.txt exist (a data/ folder holding them is accepted too). "
                f"The judge's instruction files are the prompts/ folder of {cls.repository_url}: "
                f"`git clone --depth 1 {cls.repository_url} {dest / 'dreambench_plus'}` puts them where the "
                "judge looks by default (or pass --metric-param judge.prompts=DIR).")

    @classmethod
    def fetch(cls, dest: Path) -> Path:
        """Nothing is downloaded here: a present copy is validated, else the instructions are raised."""
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            suite = cls(dest)
            suite.samples()
            return dest
        raise BenchError(cls.fetch_instructions(dest))
