"""The interface of a suite loader."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

from bench.types import Sample


class Suite(ABC):
    name: str = ""
    version: str = "1"
    task: str = "generate"                      # "generate" or "edit"
    default_images_per_prompt: int = 4
    default_seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    default_metrics: tuple[str, ...] = ()
    #: where `bench data fetch` puts it and where `run` looks without --data-root
    default_root: str = ""
    #: the embedded mini copy used by --preset smoke (relative to the repo root)
    mini_root: str = ""
    #: leaderboard columns: metric-id prefix (before the "/") -> column title, in order
    leaderboard_columns: dict[str, str] = {}
    #: how reports aggregate: "seeds" (per seed the mean over images, then mean ± std over
    #: seeds) or "images" (mean ± std over all images)
    aggregate: str = "seeds"
    #: the report's scatter plot: (x, y) leaderboard column titles (text alignment vs identity)
    scatter_axes: tuple[str, str] = ("CLIP-T", "DINO")

    def __init__(self, root: Path, **options):
        self.root = Path(root)
        self.options = options

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Every (subject, prompt) cell, validated: bad input raises BenchError naming the file."""

    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        return f"no download instructions for {cls.name}"

    #: the download size of the full data in bytes, when known (`bench doctor` shows it)
    download_size: int | None = None

    @classmethod
    def fetch_command(cls, root: Path) -> str | None:
        """The command that puts the data at ``root``, for `bench doctor` when `bench data fetch`
        cannot download it (None: `bench data fetch` does)."""
        return None

    @classmethod
    def requirements(cls, root: Path, **options) -> list:
        """What a run on this suite needs on disk (bench/needs.py): its data at ``root``, in place
        when the suite loads from it (its sample list; images are decoded by the run's plan)."""
        from bench import BenchError
        from bench.needs import probe
        from bench.suites import REPO_ROOT

        mini = getattr(cls, "mini_root", None)
        if mini and (REPO_ROOT / mini).is_dir():
            cls(REPO_ROOT / mini, **options)    # a bad option is the option's error, not "data missing"

        def problem() -> str | None:
            if not Path(root).is_dir():
                return "no such folder"
            try:
                cls(Path(root), **options).samples()
            except BenchError as exc:
                return str(exc)
            return None

        default = Path(root).resolve() == (REPO_ROOT / cls.default_root).resolve()
        get = cls.fetch_command(Path(root)) or (
            f"python -m bench data fetch {cls.name}" + ("" if default else f" --dest {root}")
            + f"  (by hand: `python -m bench data where {cls.name}`)")
        return [probe(f"{cls.name} data", str(root), get, problem, size=cls.download_size, measure=Path(root))]

    @classmethod
    def fetch(cls, dest: Path) -> Path:
        """Download the suite into dest; raise BenchError with instructions when offline."""
        from bench import BenchError
        raise BenchError(cls.fetch_instructions(dest))


def samples_hash(samples: list[Sample]) -> str:
    """A content hash of the sample list (prompts, subjects, file names) for run identity."""
    h = hashlib.sha256()
    for s in samples:
        row = [s.cell, s.prompt, s.eval_text, s.class_noun, [p.name for p in s.subject_images],
               [p.name for p in s.reference_images], s.source_image and s.source_image.name]
        h.update(json.dumps(row).encode())
    return h.hexdigest()[:16]
