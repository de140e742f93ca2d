"""Register the three worked examples and run them at smoke scale (docs/architecture.md).

    python docs/examples/run_examples.py [OUT_DIR]

Registration here is for the example; a permanent addition goes into bench/registry.py (or, for
a method in another package, the ``bench.methods`` entry-point group).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cli import main  # noqa: E402
from bench.registry import METHODS, METRICS, SUITES  # noqa: E402


def register() -> None:
    if "copy-subject" not in METHODS:
        METHODS.add("copy-subject", "copy_subject:CopySubject", "the subject image itself (example method)")
        METHODS.add("copy-subject-mirrored", "copy_subject:CopySubject", "the subject image, mirrored",
                    mirror="horizontal")
        METRICS.add("sharpness", "sharpness:Sharpness", "mean absolute Laplacian (example metric)")
        SUITES.add("folders", "folder_suite:FolderSuite", "one folder per subject, three prompts (example suite)")


def run_all(out: Path) -> list[int]:
    register()
    codes = [
        # a new method on an existing suite, scored with the protocol metrics plus the new metric
        main(["run", "--method", "copy-subject", "--suite", "dreambench", "--preset", "smoke",
              "--metrics", "clip,dino,sharpness", "--out", str(out / "copy-subject")]),
        main(["run", "--method", "copy-subject-mirrored", "--suite", "dreambench", "--preset", "smoke",
              "--metrics", "clip,dino,sharpness", "--out", str(out / "copy-subject-mirrored")]),
        # an existing method on the new suite
        main(["run", "--method", "sd", "--suite", "folders", "--preset", "smoke", "--out", str(out / "sd-folders")]),
        main(["report", str(out / "copy-subject"), str(out / "copy-subject-mirrored"), str(out / "sd-folders"),
              "--out", str(out / "reports")]),
    ]
    return codes


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples")
    sys.exit(max(run_all(out)))
