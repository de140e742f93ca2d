"""OmniContext (OmniGen2's in-context generation benchmark, Wu et al. 2025, arXiv:2506.18871):
instructions with 1-3 reference images each, in 8 task types (single / multiple / scene x
character / object / both), judged for prompt following (PF) and subject consistency (SC)
(docs/suites.md, "OmniContext"; the judge: docs/judge.md, "OmniContext's judge").

Data: a local copy of the Hugging Face dataset ``OmniGen2/OmniContext`` as
``hf download --repo-type dataset OmniGen2/OmniContext --local-dir DIR`` writes it: parquet shards
anywhere under DIR, one row per item with the columns the release's ``omnicontext/inference.py``
reads: ``key``, ``task_type``, ``instruction``, ``instruction_language`` and ``input_images`` (a
list of images in the ``datasets`` Image encoding: structs of ``bytes`` and ``path``). The images
are written once, by content hash, under the cache folder (``$BENCH_CACHE``), and the samples
point at those files.

One sample per item: subject = the item's key (``<task_type>-<key>`` when keys repeat across task
types), category = its task type, the instruction is both what the method sees and what the judge
reads, every input image conditions the method and is the judge's reference. Protocol as the
release runs it: one image per item, seed 0, 1024 x 1024.

Options: ``task_types`` (a list or comma-separated string; e.g. the single-image types
``single_character,single_object`` for methods that take one image) and ``language``
(``en`` by default, as ``calculate_statistics.py`` counts only that language; ``all`` keeps every item).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from bench import BenchError
from bench.files import cache_root, check_path_part, write_atomic
from bench.limits import MAX_PROMPT_CHARS
from bench.suites.base import Suite
from bench.types import Sample

COLUMNS = ("key", "task_type", "instruction", "instruction_language", "input_images")
#: the released task types (the paper's Tab. and the dataset's task_type column)
TASK_TYPES = ("single_character", "single_object", "multi_character", "multi_object", "multi_character_object",
              "scene_character", "scene_object", "scene_character_object")
#: bounds on a copy: a parquet shard's size, items, images per item, one image's encoded size
MAX_SHARD_BYTES = 16 * 2**30
MAX_ITEMS = 100_000
MAX_INPUT_IMAGES = 8
MAX_IMAGE_BYTES = 64 * 2**20
IMAGE_SUFFIXES = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"RIFF": ".webp", b"GIF8": ".gif", b"BM": ".bmp"}


def is_single(task_type: str) -> bool:
    return task_type.startswith("single")


def with_scene(task_type: str) -> bool:
    """The release's rule (test_omnicontext_score.py): a task type naming "scene" uses the scene instructions."""
    return "scene" in task_type


def _suffix(data: bytes) -> str:
    for magic, suffix in IMAGE_SUFFIXES.items():
        if data.startswith(magic):
            return suffix
    return ".img"                              # check_image refuses it with one line if it is no image


def image_file(data: bytes, folder: Path, where: str = "image") -> Path:
    """The image bytes as a file named by their sha256 (written once, atomically), decoded in full
    (once per process): bytes that are no image are one line naming ``where`` (the shard and row)."""
    from bench.images import check_image

    digest = hashlib.sha256(data).hexdigest()
    path = folder / digest[:2] / (digest + _suffix(data))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, fsync=False)
    try:
        check_image(path)
    except BenchError as exc:
        path.unlink(missing_ok=True)
        raise BenchError(f"{where}: {exc}") from None
    return path


def _as_list(value, option: str) -> list[str] | None:
    from bench.options import as_list
    return as_list(value, option)


def shards(root: Path) -> list[Path]:
    # hf download's own bookkeeping folder (.cache) inside the copy is skipped; a copy that itself lies
    # under a .cache folder (the hub cache's snapshots/<revision>) is read
    found = sorted(p for p in Path(root).rglob("*.parquet")
                   if p.is_file() and ".cache" not in p.relative_to(root).parts)
    if not found:
        raise BenchError(f"{root}: no parquet shard under it; an OmniContext copy is what "
                         "`hf download --repo-type dataset OmniGen2/OmniContext --local-dir DIR` writes "
                         "(see `python -m bench data where omnicontext`)")
    return found


def read_rows(path: Path) -> list[dict]:
    """The rows of one shard, columns checked; one BenchError naming the file otherwise."""
    import pyarrow.parquet as pq

    if path.stat().st_size > MAX_SHARD_BYTES:
        raise BenchError(f"{path}: larger than {MAX_SHARD_BYTES} bytes; not an OmniContext shard")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise BenchError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise BenchError(f"{path}: no column(s) {', '.join(missing)}; OmniContext rows have {', '.join(COLUMNS)}")
    if table.num_rows > MAX_ITEMS:
        raise BenchError(f"{path}: {table.num_rows} rows, more than {MAX_ITEMS}")
    if table.num_rows == 0:
        raise BenchError(f"{path}: an empty shard (no rows); download the copy again")
    return table.select(list(COLUMNS)).to_pylist()


def _text(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"{where}: column {column!r} is {type(value).__name__ if value is not None else 'empty'}, "
                         "expected a text")
    if len(value) > MAX_PROMPT_CHARS:
        raise BenchError(f"{where}: {column} of {len(value)} characters, more than {MAX_PROMPT_CHARS} "
                         "(bench.limits.MAX_PROMPT_CHARS)")
    return value.strip()


def _image_bytes(value, where: str) -> bytes:
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            raise BenchError(f"{where}: the image is stored by path only ({value['path']!r}), not embedded; "
                             "use the parquet shards as the Hub serves them")
    else:
        data = value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise BenchError(f"{where}: expected an image struct {{bytes, path}} with the image's bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise BenchError(f"{where}: an image of {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    return bytes(data)


class OmniContext(Suite):
    name = "omnicontext"
    version = "1"
    task = "generate"
    default_images_per_prompt = 1            # the release's inference.py: num_images_per_prompt=1
    default_seeds = (0,)                     # ... and seed=0
    default_metrics = ("omnicontext-judge",)
    default_root = "datasets/omnicontext"
    mini_root = "datasets/mini-omnicontext"
    leaderboard_columns = {"oc_pf": "PF", "oc_sc": "SC", "oc_overall": "Overall"}
    aggregate = "seeds"
    scatter_axes = ("PF", "SC")
    #: the subject images of a sample are different subjects (a person, an object, a scene), not
    #: views of one: a method must declare that it composes several (bench/plan.py)
    distinct_subject_images = True
    dataset_id = "OmniGen2/OmniContext"
    repository_url = "https://github.com/VectorSpaceLab/OmniGen2"
    released_task_types = TASK_TYPES

    def __init__(self, root: Path, task_types: Iterable[str] | str | None = None, language: str = "en", **unknown):
        if unknown:
            raise BenchError(f"unknown omnicontext option(s) {', '.join(sorted(unknown))}; valid: task_types, language")
        selected = _as_list(task_types, "omnicontext option task_types")
        if not isinstance(language, str) or not language.strip():
            raise BenchError(f"omnicontext option language={language!r}: a language code such as en, or all")
        options = {"language": language}
        if selected is not None:
            options["task_types"] = selected
        super().__init__(root, **options)
        self.selected, self.language = selected, language
        self._samples: list[Sample] | None = None

    @classmethod
    def fetch_command(cls, root: Path) -> str:
        return f"hf download --repo-type dataset {cls.dataset_id} --local-dir {root}"

    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        return (f"OmniContext is the Hugging Face dataset {cls.dataset_id}: with network access run "
                f"`{cls.fetch_command(Path(dest))}` (parquet shards; any folder layout under {dest} is read). "
                f"The judge's instruction texts are in {cls.repository_url} (omnicontext/prompt_generator.py): "
                f"`git clone --depth 1 {cls.repository_url} {Path(dest) / 'OmniGen2'}` puts them where the judge "
                "looks by default (or pass --metric-param omnicontext-judge.prompts=DIR).")

    @classmethod
    def fetch(cls, dest: Path) -> Path:
        """Nothing is downloaded here: a present copy is validated, else the instructions are raised."""
        dest = Path(dest)
        if dest.exists() and any(dest.rglob("*.parquet")):
            cls(dest).samples()
            return dest
        raise BenchError(cls.fetch_instructions(dest))

    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self._build()
        return list(self._samples)

    def items(self) -> list[dict]:
        """Every row of the copy, checked: {key, task_type, instruction, language, images (bytes), where}."""
        out = []
        for shard in shards(self.root):
            for index, row in enumerate(read_rows(shard)):
                where = f"{shard} row {index}"
                if isinstance(row.get("key"), int) and not isinstance(row.get("key"), bool):
                    row["key"] = str(row["key"])             # a copy that stores keys as integers
                key = check_path_part(_text(row, "key", where), where, "key")
                task_type = check_path_part(_text(row, "task_type", where), where, "task_type")
                if task_type not in TASK_TYPES:
                    raise BenchError(f"{where}: unknown task type {task_type!r}; OmniContext's are "
                                     f"{', '.join(TASK_TYPES)}")
                images = row.get("input_images")
                if not isinstance(images, list) or not images:
                    raise BenchError(f"{where}: input_images holds no image")
                if len(images) > MAX_INPUT_IMAGES:
                    raise BenchError(f"{where}: {len(images)} input images, more than {MAX_INPUT_IMAGES}")
                out.append({"key": key, "task_type": task_type, "instruction": _text(row, "instruction", where),
                            "language": _text(row, "instruction_language", where), "where": where,
                            "images": [_image_bytes(v, f"{where} input image {k + 1}") for k, v in enumerate(images)]})
        if not out:
            raise BenchError(f"{self.root}: the parquet shards hold no rows")
        return out

    def _build(self) -> list[Sample]:
        items = self.items()
        present = sorted({i["task_type"] for i in items})
        if self.selected is not None:
            unknown = [t for t in self.selected if t not in present]
            if unknown:
                raise BenchError(f"omnicontext option task_types: unknown task type(s) {', '.join(unknown)}; "
                                 f"this copy has {', '.join(present)}")
            items = [i for i in items if i["task_type"] in self.selected]
        if self.language != "all":
            items = [i for i in items if i["language"] == self.language]
            if not items:
                raise BenchError(f"omnicontext option language={self.language!r}: no item of that language "
                                 f"(use language=all)")
        keys = [i["key"] for i in items]
        repeated = len(set(keys)) != len(keys)
        folder = cache_root() / "omnicontext-images"
        samples, seen = [], {}
        for item in sorted(items, key=lambda i: (i["task_type"], i["key"])):
            subject = f"{item['task_type']}-{item['key']}" if repeated else item["key"]
            if subject in seen:
                raise BenchError(f"{item['where']}: item {subject!r} twice (also {seen[subject]})")
            seen[subject] = item["where"]
            paths = tuple(image_file(data, folder, f"{item['where']} input image {k + 1}")
                          for k, data in enumerate(item["images"]))
            samples.append(Sample(
                suite=self.name, subject=subject, class_noun="subject", prompt_index=0,
                prompt=item["instruction"], eval_text=item["instruction"], subject_images=paths,
                reference_images=paths, category=item["task_type"],
                extra=(("instruction_language", item["language"]), ("key", item["key"]),
                       ("with_scene", str(with_scene(item["task_type"]))))))
        return samples

    def fewer_images_hint(self, taken: int) -> str:
        """How to select the items a method that takes ``taken`` images can run (bench/plan.py)."""
        fits = sorted({s.category for s in self.samples() if len(s.subject_images) <= taken})
        if not fits:
            return "no task type of this copy fits"
        return f"select the task types it can run with --suite-option task_types={','.join(fits)}"

    def describe(self) -> str:
        return "one image per item, seed 0, judged PF and SC 0-10, overall sqrt(PF*SC) (docs/suites.md)"
