"""DreamBench++ (yuangpeng/dreambench_plus, ICLR 2025): 150 images x 9 prompts, judged by a VLM.

Layout of the released data (docs/protocols.md section 7); ``--data-root`` may be the
folder that holds ``images/`` and ``captions/`` or its parent holding ``data/``. Two layouts are
read, and give the same collections (``bench data check`` says which one a copy has)::

    flat:    images/<category>/<index>.jpg            category: animal, human, object, style
    nested:  images/live_subject/<animal|human>/<index>.jpg, images/<object|style>/<index>.jpg
             (the release's zip; its loader globs recursively and names the category by the parent folder)
    captions/... in the same layout, <index>.txt: line 1 the subject's name; then exactly 9 prompts

The release has 45 animal, 20 human, 65 object and 20 style collections (150); ``bench data
check`` names a copy whose per-category counts differ. Every file is checked to be a regular file
(a FIFO, a device or a symlink loop is one line naming it) before it is read.

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

import errno
import os
import stat
from pathlib import Path
from typing import Iterable

from bench import BenchError
from bench.files import check_path_part
from bench.images import check_image
from bench.suites import REPO_ROOT
from bench.suites.base import Suite
from bench.types import Sample

CATEGORIES = ("animal", "human", "object", "style")
#: the release's collection-id prefix per category folder
ID_PREFIX = {"animal": "live_subject_animal", "human": "live_subject_human", "object": "object", "style": "style"}
PROMPTS_PER_IMAGE = 9
#: collections per category in the release (its README: 150 images; counted in its data.zip)
RELEASED_COUNTS = {"animal": 45, "human": 20, "object": 65, "style": 20}
#: the release's zip nests the two live-subject categories under this folder
LIVE_SUBJECT = "live_subject"
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


class CorruptCopy(BenchError):
    """A copy whose files contradict each other (a duplicate id, an image without its caption):
    re-downloading over it does not fix it, so the advice differs from "data missing"."""


def check_regular_file(path: Path, what: str) -> os.stat_result:
    """``path``'s stat when it is a regular file (through symlinks); a FIFO, a device, a folder,
    a dangling link or a symlink loop is one BenchError naming it, before anything reads it."""
    try:
        info = os.stat(path)
    except OSError as exc:
        why = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or type(exc).__name__)
        raise CorruptCopy(f"DreamBench++ {what} {path}: {why}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CorruptCopy(f"DreamBench++ {what} {path} is not a regular file")
    return info


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise BenchError(f"cannot list DreamBench++ folder {folder}: {exc.strerror or exc}") from None
    out = []
    for entry in entries:
        try:
            if entry.is_dir():
                out.append(entry)
        except OSError:             # a symlink loop among the folders: is_dir() says so on 3.11
            raise CorruptCopy(f"DreamBench++ folder {entry}: a symlink loop") from None
    return out


def category_folders(tree: Path) -> tuple[str, dict[str, Path]]:
    """(layout, {category: folder}) of ``images/`` or ``captions/``: "flat" (``animal/`` ...),
    "nested" (``live_subject/animal/`` ..., the release's zip), or "empty"."""
    found, layouts = {}, set()
    for folder in _subfolders(tree):
        if folder.name == LIVE_SUBJECT:
            for inner in _subfolders(folder):
                layouts.add("nested")                  # an empty live_subject/ is no layout
                if inner.name not in ("animal", "human"):
                    raise CorruptCopy(f"{inner}: unknown DreamBench++ category {LIVE_SUBJECT}/{inner.name} "
                                     "(expected live_subject/animal or live_subject/human)")
                found[inner.name] = inner
        elif folder.name in CATEGORIES:
            if folder.name in ("animal", "human"):
                layouts.add("flat")
            if folder.name in found:
                raise CorruptCopy(f"{folder} and {found[folder.name]}: category {folder.name!r} twice (flat and "
                                  f"nested layouts mixed in {tree}); keep one of them")
            found[folder.name] = folder
        else:
            raise CorruptCopy(f"{folder}: unknown DreamBench++ category {folder.name!r} (expected "
                             f"{', '.join(CATEGORIES)}, or {LIVE_SUBJECT}/animal and {LIVE_SUBJECT}/human as released)")
    if len(layouts) > 1:
        raise CorruptCopy(f"{tree}: both {LIVE_SUBJECT}/<animal|human>/ and <animal|human>/ folders; keep one layout")
    return (layouts.pop() if layouts else ("flat" if found else "empty")), found


def _files(folder: Path | None, suffix: str, what: str) -> dict[str, Path]:
    """{stem: path} of the ``*suffix`` files in ``folder``, each checked to be a regular file."""
    if folder is None:
        return {}
    out = {}
    for path in sorted(folder.glob(f"*{suffix}")):
        check_regular_file(path, what)
        out[path.stem] = path
    return out


def read_caption(path: Path) -> tuple[str, tuple[str, ...]]:
    """(subject name, 9 prompts) from one caption file; a bad file is one BenchError naming it."""
    path = Path(path)
    check_regular_file(path, "caption")             # a FIFO would block the read below forever
    from bench.files import read_text_file

    text = read_text_file(path, MAX_CAPTION_BYTES, "DreamBench++ caption")
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

    def layout(self) -> str:
        """"flat" or "nested" (the release's zip: ``live_subject/animal/`` ...), as this copy is laid out
        ("nested images/, flat captions/" when the two trees differ)."""
        images = category_folders(self.data_dir / "images")[0]
        captions = category_folders(self.data_dir / "captions")[0]
        return images if images == captions else f"{images} images/, {captions} captions/"

    def collections(self) -> list[dict]:
        """Every collection of the copy, ordered by id: {id, category, index, name, image, caption, prompts}."""
        out = {}
        images_dir, captions_dir = self.data_dir / "images", self.data_dir / "captions"
        _, image_folders = category_folders(images_dir)           # each tree in either layout (as the
        _, caption_folders = category_folders(captions_dir)       # release's recursive glob reads them)
        for category in CATEGORIES:
            captions = _files(caption_folders.get(category), ".txt", "caption")
            images = _files(image_folders.get(category), ".jpg", "image")
            for stem in sorted(set(captions) ^ set(images)):
                have = captions.get(stem) or images.get(stem)
                other = (image_folders if stem in captions else caption_folders).get(category)
                lacks = (other or (images_dir if stem in captions else captions_dir) / category) / \
                    f"{stem}{'.jpg' if stem in captions else '.txt'}"
                raise CorruptCopy(f"{have} has no partner {lacks} (every image needs its caption file)")
            for index in sorted(captions):
                check_path_part(index, str(captions[index]), "file name")
                name, prompts = read_caption(captions[index])
                cid = collection_id(category, index, name)
                check_path_part(cid, str(captions[index]), "collection id")
                if cid in out:
                    raise CorruptCopy(f"{captions[index]}: collection id {cid!r} twice (also {out[cid]['caption']}): "
                                      "the copy is corrupt; unpack the release's data.zip into an empty folder")
                out[cid] = {"id": cid, "category": category, "index": index, "name": name,
                            "image": images[index], "caption": captions[index], "prompts": prompts}
        if not out:
            raise BenchError(f"{self.data_dir}: no collections (images/<category>/<index>.jpg with "
                             "captions/<category>/<index>.txt, or the release's images/live_subject/animal/... layout)")
        return [out[k] for k in sorted(out)]

    def check_notes(self) -> list[str]:
        """What `bench data check` adds for this suite: the layout, and each category whose count
        differs from the release's (45 animal, 20 human, 65 object, 20 style)."""
        counts = {category: 0 for category in CATEGORIES}
        for c in self.collections():
            counts[c["category"]] += 1
        lines = [f"layout     {self.layout()}"]
        if self.selected is None and Path(self.root).resolve() != (REPO_ROOT / self.mini_root).resolve():
            wrong = [f"{c} {counts[c]} (released: {n})" for c, n in RELEASED_COUNTS.items() if counts[c] != n]
            if wrong:
                lines.append(f"note: per-category counts differ from the release: {', '.join(wrong)}")
        return lines

    @classmethod
    def requirements(cls, root: Path, **options) -> list:
        """As every suite's, but a corrupt copy (a duplicate id, an image without caption) is named
        as corrupt with its own advice, not as missing data to download over it."""
        needs = super().requirements(root, **options)
        try:
            if Path(root).is_dir():
                cls(Path(root), **options).collections()
        except CorruptCopy as exc:
            from bench.needs import probe
            problem = str(exc)
            return [probe(f"{cls.name} data (corrupt copy)", str(root),
                          f"move {root} aside and unpack the release's data.zip into an empty folder "
                          f"({cls.fetch_command(Path(root))})", lambda: problem)]
        except BenchError:
            pass
        return needs

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
