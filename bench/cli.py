"""`python -m bench`: the command-line entry point.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand is used, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from bench import BenchError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2), naming the option."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

SUBCOMMANDS = {
    "run": ("bench.runner", "generate a suite with a method (then score it)"),
    "score": ("bench.score_cli", "score a run directory, or a folder of images made elsewhere"),
    "report": ("bench.report", "aggregate runs into pandas tables and markdown leaderboards"),
    "arena": ("bench.arena.cli", "method against method: a judge compares two runs' images pairwise (Bradley-Terry)"),
    "check": ("bench.check", "regression check of a run against a baseline (for CI)"),
    "stats": ("bench.stats.cli", "means, bootstrap intervals and paired comparisons of any score table"),
    "agree": ("bench.agree.cli", "do the scores agree with people? human ratings, inter-rater and metric-human agreement"),
    "power": ("bench.stats.power", "detectable effect sizes for given numbers of subjects and seeds"),
    "doctor": ("bench.doctor", "list every piece a run needs (weights, data), present or missing, and how to get it"),
    "metric": ("bench.metrics.cli", "compute one metric on given images and texts"),
    "data": ("bench.suites.data", "fetch, locate and validate benchmark data"),
    "train": ("methods.training.cli", "train an EZIGen adapter or a projector baseline"),
    "ls": ("bench.cli", "list methods, suites and metrics"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", choices=["methods", "suites", "metrics"],
                        help="list only this kind (default: all)")


#: `ls` groups methods by family: a class's ``family`` attribute, else its module
METHOD_FAMILIES = {"in-context": "in-context baselines", "methods.ezigen": "EZIGen and variants",
                   "methods.projector": "EZIGen and variants", "methods.sd": "SD-era baselines",
                   "methods.ip_adapter": "SD-era baselines", "methods.blip_diffusion": "SD-era baselines"}


def list_methods(entries) -> None:
    """Methods grouped by family, each with its base model and tasks."""
    from bench.types import LoadSpec
    groups: dict[str, list[str]] = {}
    for entry in entries:
        try:
            cls = entry.load()
        except BenchError:
            cls = None
        family = getattr(cls, "family", None) or entry.target.partition(":")[0]
        base = (entry.params.get("weights_id") or getattr(cls, "default_weights", LoadSpec.weights)) \
            if cls is not None else "?"                       # a registration may load other weights
        tasks = "+".join(sorted(getattr(cls, "tasks", ()))) or "?"
        groups.setdefault(METHOD_FAMILIES.get(family, "other methods"), []).append(
            f"  {entry.name:<30} {entry.description}\n  {'':<30} base: {base}; tasks: {tasks}")
    for title in ("EZIGen and variants", "SD-era baselines", "in-context baselines", "other methods"):
        if title in groups:
            print(f" {title}:")
            print("\n".join(groups[title]))


def run(args) -> int:
    from bench.registry import METHODS, METRICS, SUITES

    for title, registry in (("methods", METHODS), ("suites", SUITES), ("metrics", METRICS)):
        if args.what in (None, title):
            print(f"{title}:")
            if title == "methods":
                list_methods(registry.entries())
                continue
            for entry in registry.entries():
                print(f"  {entry.name:<30} {entry.description}")
    return 0


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict]:
    parser = OneLineParser(
        prog="python -m bench",
        description="Benchmark harness for zero-shot subject-driven image generation. "
                    "Start with: python -m bench run --method ezigen --suite dreambench --preset smoke")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    modules = {}
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        # Configure only the subcommand that runs: the others' modules are not imported.
        if name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name):
                    raise BenchError(f"the '{name}' command is not available in this version") from None
                raise
            module.configure(p)
            modules[name] = module
    return parser, modules


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and why."""
    reason = exc.strerror or str(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    hint = {errno.ENOSPC: " (the disk is full: free space and run the same command again to resume)",
            errno.EDQUOT: " (disk quota exceeded)",
            errno.EACCES: " (permission denied: choose another --out or fix the permissions)",
            errno.EROFS: " (read-only file system)"}.get(exc.errno, "")
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


#: What helps against running out of memory, in the order it is suggested; each command's
#: advice names only the options that command has.
OOM_OPTIONS = {"--batch-size": "a smaller --batch-size", "--resolution": "a smaller --resolution",
               "--resamples": "fewer --resamples", "--workers": "fewer --workers"}
GPU_OOM_OPTIONS = {"--batch-size": "a smaller --batch-size", "--resolution": "a smaller --resolution",
                   "--dtype": "--dtype fp16", "--device": "--device cpu"}


def memory_advice(parser, argv: list[str], options: dict[str, str]) -> str:
    """`` (try a smaller --batch-size or ...)`` with only the options the running subcommand
    accepts; empty when it has none of them."""
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        known = set(sub._option_string_actions)
    except (AttributeError, KeyError, StopIteration):
        return ""
    advice = [text for option, text in options.items() if option in known]
    if not advice:
        return ""
    return " (try " + (", ".join(advice[:-1]) + " or " + advice[-1] if len(advice) > 1 else advice[0]) + ")"


def safe_console() -> None:
    """Under an ASCII locale (LC_ALL=C with PYTHONUTF8=0, PYTHONIOENCODING=ascii) printing '±' or a
    subject's name would raise UnicodeEncodeError: write such characters as escapes instead."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if encoding not in ("utf8", "utf8sig") and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):          # a closed or detached stream: nothing to do
                pass


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. User and environment errors are one line on stderr and exit status 2;
    an unexpected exception (a bug) is one line and exit status 1, with the traceback when
    BENCH_DEBUG=1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    safe_console()
    debug = os.environ.get("BENCH_DEBUG", "") not in ("", "0")
    parser = None
    try:
        parser, modules = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return int(modules[args.command].run(args) or 0)
    except BenchError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"error: out of memory{memory_advice(parser, argv, OOM_OPTIONS)}", file=sys.stderr)
        return 2
    except OSError as exc:                     # a full disk, a permission, a vanished file
        if debug:
            raise
        print(f"error: {' '.join(describe_os_error(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:                   # a bug: say so in one line; BENCH_DEBUG=1 shows where
        if debug:
            raise
        if type(exc).__name__ == "OutOfMemoryError":          # torch's CUDA out of memory
            print(f"error: out of GPU memory{memory_advice(parser, argv, GPU_OOM_OPTIONS)}", file=sys.stderr)
            return 2
        if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from"):   # Path.resolve, Python < 3.13
            print(f"error: {' '.join(str(exc).split())[:500]}: a link that points back to itself; remove or fix it",
                  file=sys.stderr)
            return 2
        print(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]} "
              "(a bug; run again with BENCH_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
