"""`bench arena RUN_A RUN_B [RUN_C ...]`: method against method, judged pairwise (docs/judge.md, "Arena").

For every key two runs share, the judge compares their two images for CP and for PF, each pair in
both orders; ties are allowed and failed verdicts are recorded, never imputed. Bradley–Terry
ratings per run with cluster-bootstrap intervals over subjects, the win matrix and the position
bias are printed, written to ``<out>/arena-<id>.json`` (where `bench report --out` finds them when
``<out>`` is its ``arena/`` folder, the default) and with ``--json FILE`` to FILE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from bench import BenchError
from bench.limits import ARENA_MAX_RESAMPLES

ANSWERS = "arena_answers.jsonl"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN", help="two or more scored or unscored run directories "
                        "of one suite")
    parser.add_argument("--metric-param", action="append", default=[], metavar="judge.KEY=VALUE",
                        help="the judge's parameters, as for `bench score` (e.g. judge.endpoint=http://localhost:8000/v1, "
                             "judge.model=NAME, judge.concurrency=8, judge.kinds=cp); repeatable")
    parser.add_argument("--metric-preset", choices=["tiny"], default=None,
                        help="tiny: the tiny random judge (plumbing tests; its verdicts never parse)")
    parser.add_argument("--device", default=None, help="device of a local judge (default: cuda when available)")
    parser.add_argument("--out", default="reports/arena", help="folder for arena-<id>.json and the answers file "
                        "arena_answers.jsonl (default: reports/arena, where `bench report` looks)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the result to FILE")
    parser.add_argument("--resamples", type=int, default=1000, help="cluster-bootstrap replicates over subjects "
                        "(default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def judge_params(items: list[str]) -> dict:
    from bench.plan import metric_param_values

    params = metric_param_values(items)
    other = sorted(set(params) - {"judge"})
    if other:
        raise BenchError(f"--metric-param {other[0]}.*: bench arena takes the judge's parameters only (judge.KEY=VALUE)")
    return params.get("judge", {})


def check_outputs(args, run_dirs) -> tuple[Path, Path | None]:
    """--out and --json checked before any question is asked: never inside a compared run, never an input."""
    from bench.options import check_output_dir, check_output_file
    from bench.output_guard import arena_result, guard_file, guard_folder

    out = check_output_dir(args.out, "--out")
    guard_folder(out, "--out", run_dirs)         # not a file, not another run directory nor inside one
    target = check_output_file(args.json, "--json") if args.json else None
    runs = [Path(r).expanduser().resolve() for r in run_dirs]
    for option, path in (("--out", out), ("--json", target)):
        if path is None:
            continue
        resolved = path.resolve()
        for run in runs:
            if resolved == run or run in resolved.parents:
                raise BenchError(f"{option} {path}: inside the compared run {run}; the arena writes nothing into a "
                                 "run it did not make (name another folder or file)")
    if target is not None and target.resolve() == (out / ANSWERS).resolve():
        raise BenchError(f"--json {target}: that is the arena's answers file; name another file")
    if target is not None:      # an input, a run's file, or a file that is no arena result is left alone
        guard_file(target, "--json", run_dirs, arena_result, "a bench arena result")
    return out, target


def run(args) -> int:
    from bench.arena.match import Arena, load_entrants, questions
    from bench.arena.summary import summarise
    from bench.files import write_atomic
    from bench.metrics.judge import check_params, make_backend
    from bench.metrics.judge_log import AnswerLog
    from bench.options import check_device, default_device

    if not 0 <= args.resamples <= ARENA_MAX_RESAMPLES:
        raise BenchError(f"--resamples {args.resamples}: must be within 0-{ARENA_MAX_RESAMPLES} "
                         "(bench.limits.ARENA_MAX_RESAMPLES)")
    params = judge_params(args.metric_param)
    p = check_params(args.metric_preset, **params)
    out, target = check_outputs(args, args.run_dirs)
    suite, entrants = load_entrants(args.run_dirs)
    asked = questions(entrants, p["kinds"])
    device = check_device(args.device) or default_device()
    backend, name, decoding = make_backend(p, device, args.metric_preset, params.get("model", "Qwen/Qwen2.5-VL-7B-Instruct"),
                                           params.get("endpoint") or None,
                                           params.get("api_key_env", "OPENAI_API_KEY"))
    greedy = p["temperature"] == 0
    settings = {"backend": backend.describe(), "temperature": p["temperature"], "decoding": decoding,
                "max_new_tokens": backend.max_new_tokens}
    out.mkdir(parents=True, exist_ok=True)
    arena = Arena(backend, name, settings, p["temperature"], 1 if greedy else p["attempts"], AnswerLog(out / ANSWERS),
                  chunk=max(8, 4 * p["concurrency"]))
    print(f"arena: {len(entrants)} runs of {suite}, {len(asked)} questions ({', '.join(p['kinds'])}, both orders) "
          f"to {name}", file=sys.stderr)
    verdicts = arena.run(entrants, asked, progress=not args.no_progress)
    result = {"suite": suite, "judge": name, "judge_version": arena.version, "asked": arena.asked,
              "reused": arena.reused, **summarise(entrants, verdicts, p["kinds"], args.resamples, args.seed)}
    ident = hashlib.sha256(json.dumps([sorted(r["run_dir"] for r in result["runs"]), arena.version,
                                       result["kinds"]]).encode()).hexdigest()[:10]
    data = (json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode("utf-8")
    write_atomic(out / f"arena-{ident}.json", data)
    if target is not None:
        write_atomic(target, data)
    from bench.report.arena import arena_markdown
    print("\n".join(arena_markdown([result])))
    return 0
