"""`python -m bench data`: fetch, locate and validate benchmark data, for any registered suite.

    python -m bench data fetch dreambench [--dest DIR]
    python -m bench data check dreambench [--data-root DIR | --mini] [--suite-option KEY=VALUE]
    python -m bench data where dreambench
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from bench import BenchError
from bench.images import check_image
from bench.options import check_input_dir, parse_params
from bench.suites import REPO_ROOT


def suite_class(name: str):
    """The registered suite class; a loader that cannot be imported is a one-line BenchError."""
    from bench.registry import SUITES

    entry = SUITES.get(name)
    try:
        return entry.load()
    except BenchError:
        raise
    except Exception as exc:  # a broken or half-written loader module: say which, no traceback
        raise BenchError(f"the loader of suite {name!r} ({entry.target}) cannot be imported: "
                         f"{type(exc).__name__}: {exc}") from None


def suite_counts(suite) -> dict[str, object]:
    """What `check` prints, computed from samples() alone so it works for every suite."""
    samples = suite.samples()
    subjects = {s.subject for s in samples}
    by_category = {(s.category, s.subject) for s in samples}   # a subject may be in several
    files = {p for s in samples for p in (*s.reference_images, *s.subject_images)}
    sources = {s.source_image for s in samples if s.source_image is not None}
    masks = {s.mask for s in samples if s.mask is not None}
    for path in sorted(files | sources | masks):
        check_image(path)                  # the same full decode as `bench run` does up front
    return {
        "subjects": len(subjects),
        "categories": dict(sorted(Counter(category for category, _ in by_category).items())),
        "prompts": len(samples),
        "images": len(files),
        "sources": len(sources),
        "per_seed": len(samples) * suite.default_images_per_prompt,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="download a suite's data (or print how to get it)")
    fetch.add_argument("name", help="suite name (see `python -m bench ls suites`)")
    fetch.add_argument("--dest", type=Path, default=None,
                       help="where to put it (default: the suite's folder under datasets/, "
                            "where `bench run` looks without --data-root)")
    check = actions.add_parser("check", help="load and validate a suite's data; print its counts")
    check.add_argument("name", help="suite name (see `python -m bench ls suites`)")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--data-root", type=Path, default=None,
                       help="the data to check (default: the suite's folder under datasets/)")
    where.add_argument("--mini", action="store_true", help="check the embedded mini copy instead")
    check.add_argument("--suite-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a suite option, as for `bench run` (repeatable)")
    locate = actions.add_parser("where", help="print where a suite's data goes and how to get it")
    locate.add_argument("name", help="suite name (see `python -m bench ls suites`)")


def default_dest(cls) -> Path:
    return REPO_ROOT / cls.default_root


def run(args) -> int:
    cls = suite_class(args.name)
    if args.action == "fetch":
        from bench.output_guard import guard_folder

        dest = guard_folder(args.dest or default_dest(cls), "--dest")     # not a file, a FIFO or a run's folder
        path = cls.fetch(dest)
        print(f"{args.name}: data in {path}")
        print(f"check it with: python -m bench data check {args.name}"
              + (f" --data-root {path}" if args.dest else ""))
        return 0
    if args.action == "where":
        dest = default_dest(cls)
        state = "present" if dest.exists() else "not downloaded"
        print(f"{args.name}: default location {dest} ({state})")
        if cls.mini_root:
            print(f"{args.name}: embedded mini copy {REPO_ROOT / cls.mini_root}")
        print(cls.fetch_instructions(dest))
        return 0
    if args.action == "check":
        from bench.suites import load_suite

        check_input_dir(args.data_root, "--data-root")
        suite = load_suite(args.name, args.data_root, mini=args.mini, **parse_params(args.suite_option, "--suite-option"))
        counts = suite_counts(suite)
        categories = ", ".join(f"{n} {c}" for c, n in counts["categories"].items() if c)
        print(f"{args.name} at {suite.root}: ok")
        print(f"subjects   {counts['subjects']}" + (f" ({categories})" if categories else ""))
        print(f"prompts    {counts['prompts']}   (subject x prompt cells)")
        print(f"images     {counts['images']}   (subject and reference images)")
        if counts["sources"]:
            print(f"sources    {counts['sources']}   (images to edit)")
        print(f"per seed   {counts['per_seed']} images at {suite.default_images_per_prompt} per prompt")
        for line in getattr(suite, "check_notes", list)():              # a suite's own lines (layout, counts)
            print(line)
        released = getattr(suite, "released_subjects", None)          # a suite may say how large the release is
        if released and counts["subjects"] != released and not args.mini and not getattr(suite, "selected", None):
            print(f"note: the released {args.name} data has {released} subjects, this copy {counts['subjects']} "
                  "(an incomplete download or unpacking?)")
        return 0
    raise BenchError(f"unknown data action {args.action!r}")
