"""The hostile sweep: every typed option of every subcommand, and every method, metric and suite
parameter, fed NaN, +-inf, negative, zero, empty, huge and wrong-type values. Whatever the
value, the command either works (exit 0) or refuses it in one line (exit 2): never exit 1 (an
internal error), never a traceback. The options are read from the parsers and the parameters
from the constructors, so a new option or parameter joins the sweep without a line here.

Runs in-process (``bench.cli.main``); almost every value is refused before a model loads, and the
rest run on the smoke preset's tiny models (`bench train`'s training loop is replaced by a stub:
its options are what is under test)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench.cli import build_parser, main

HOSTILE = ["nan", "inf", "-inf", "-1", "0", "", "1e400", "99999999999999999999", "1.5", "abc", "true",
           "1,,2", "{0:>999999999}"]
#: values a text option gets on top (paths, devices, names)
HOSTILE_TEXT = ["/dev/zero", "/nonexistent/x", "cuda:7", ".."]
#: options not swept: they take no value, or pick the command (positionals are swept by hand)
SKIP = {"-h", "--help", "--dry-run", "--no-score", "--verify", "--no-progress", "--mini", "--update", "--html",
        "--resume", "--pairwise"}
#: options that name a folder to write: their values are moved under the test's folder (a value
#: such as /nonexistent/x would otherwise create it), except for `run`, whose --dry-run writes nothing
OUT_OPTIONS = {"--out", "--dest"}


def swept_options(command: str, action_path: tuple[str, ...] = ()) -> list[str]:
    """The value-taking optional arguments of a subcommand (or of its sub-action)."""
    parser, _ = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for name in action_path:
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    out = []
    for action in sub._actions:
        if not action.option_strings or action.nargs == 0 or action.option_strings[0] in SKIP:
            continue
        out.append(next(o for o in action.option_strings if o.startswith("--")))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    run = root / "run"
    assert main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                 "--out", str(run)]) == 0
    image = root / "x.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    return {"root": root, "run": run, "image": image}


def assert_clean(capsys, argv, allow=(0, 2)):
    try:
        rc = main(argv)
    except SystemExit as exc:                 # argparse's own exits (--help) are not under test
        rc = exc.code
    captured = capsys.readouterr()
    assert rc in allow, f"exit {rc} for {argv}: {captured.err.strip()[-600:]}"
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    if rc == 2:
        lines = [line for line in captured.err.strip().splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1, f"{argv}: {captured.err}"
    return rc


def base_argv(command: str, world, tmp_path: Path) -> list[str]:
    run_copy = tmp_path / "run"
    if command in ("score", "report") and not run_copy.exists():     # these may write into the run
        shutil.copytree(world["run"], run_copy)
    return {
        "run": ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                "--dry-run", "--out", str(tmp_path / "o")],
        "score": ["score", str(run_copy), "--no-progress"],
        "report": ["report", str(run_copy), "--out", str(tmp_path / "rep")],
        "metric": ["metric", "clip-t", "--images", str(world["image"]), "--texts", "a dog", "--preset", "tiny"],
        "train": ["train", "--preset", "smoke", "--out", str(tmp_path / "t")],
        "data": ["data", "check", "dreambench"],
    }[command]


COMMANDS = ["run", "score", "report", "metric", "train"]
CASES = [(command, option, value) for command in COMMANDS for option in swept_options(command)
         for value in HOSTILE + HOSTILE_TEXT]
CASES += [("data", option, value) for option in swept_options("data", ("check",)) for value in HOSTILE + HOSTILE_TEXT]


@pytest.fixture
def stub_training(monkeypatch):
    """`bench train` with its training loop replaced: the options and the config are checked as
    always; what would train returns a summary at once."""
    import methods.training.train as train_module

    monkeypatch.setattr(train_module, "train", lambda cfg: {"steps": 0, "stub": True})


@pytest.mark.parametrize("command, option, value", CASES, ids=[f"{c} {o}={v!r}" for c, o, v in CASES])
def test_every_typed_option_refuses_or_works(world, tmp_path, capsys, monkeypatch, stub_training, command, option,
                                             value):
    monkeypatch.chdir(tmp_path)               # a value taken as a relative path lands here
    argv = base_argv(command, world, tmp_path)
    if command == "data" and option != "--data-root":   # --data-root and --mini exclude each other
        argv = argv + ["--mini"]
    if option in OUT_OPTIONS and value != "/dev/zero" and command != "run":   # (run: --dry-run writes nothing)
        value = str(tmp_path / "out-value" / (value.strip("/.") or "empty"))
    if command == "score" and option in ("--suite", "--data-root", "--suite-option", "--name", "--out"):
        argv = ["score", "--images", str(world["run"] / "images"), "--suite", "dreambench", "--mini",
                "--out", str(tmp_path / "ext"), "--metric-preset", "tiny", "--no-progress"]
    assert_clean(capsys, argv + [option, value])


@pytest.mark.parametrize("value", HOSTILE + ["methods", "nothing"])
def test_ls_refuses_or_works(capsys, value):
    assert_clean(capsys, ["ls", value])


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("option", ["--tol", "--baseline"])
def test_check_options_parse_or_refuse_in_one_line(capsys, option, value):
    """`bench check` itself is another engineer's; here only its command line is swept."""
    parser, modules = build_parser(["check"])
    try:
        parser.parse_args(["check", "RUN", "--baseline", "b.json", option, value])
    except SystemExit as exc:
        assert exc.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")


# ---- parameters of methods, metrics and suites ---------------------------------------------
def _method_classes():
    from bench.registry import METHODS

    seen, out = set(), []
    for entry in METHODS.entries():
        if entry.target not in seen:
            seen.add(entry.target)
            out.append(entry.name)
    return out


def _params_of(kind: str, name: str) -> list[str]:
    from bench.registry import METHODS, METRICS, SUITES, method_parameters

    registry = {"method": METHODS, "metric": METRICS, "suite": SUITES}[kind]
    params = method_parameters(registry.get(name).load())
    params.pop("**", None)
    return sorted(k for k in params if k not in ("root", "device", "preset"))


PARAM_VALUES = ["nan", "inf", "-inf", "-1", "0", "", "1e400", "99999999999999999999", "abc", "true",
                "{0:>999999999}"]
METHOD_CASES = [(m, p, v) for m in _method_classes() for p in _params_of("method", m) for v in PARAM_VALUES]


@pytest.mark.parametrize("method, param, value", METHOD_CASES, ids=[f"{m} {p}={v!r}" for m, p, v in METHOD_CASES])
def test_every_method_parameter_refuses_or_plans(tmp_path, capsys, monkeypatch, method, param, value):
    """Checked with the plan (--dry-run): a value the checks let through is planned (exit 0)."""
    monkeypatch.chdir(tmp_path)               # a value taken as a relative path lands here
    suite = "dreamedit" if method == "ezigen" and param.startswith("edit_") else "dreambench"
    assert_clean(capsys, ["run", "--method", method, "--suite", suite, "--preset", "smoke", "--limit", "1",
                          "--dry-run", "--out", str(tmp_path / "o"), "--param", f"{param}={value}"])


SUITE_CASES = [(s, p, v) for s in ("dreambench", "dreamedit", "fastcomposer") for p in _params_of("suite", s)
               for v in PARAM_VALUES + ["/nonexistent", "cuda"]]


@pytest.mark.parametrize("suite, param, value", SUITE_CASES, ids=[f"{s} {p}={v!r}" for s, p, v in SUITE_CASES])
def test_every_suite_option_refuses_or_plans(tmp_path, capsys, monkeypatch, suite, param, value):
    monkeypatch.chdir(tmp_path)
    assert_clean(capsys, ["run", "--method", "sd" if suite != "dreamedit" else "ezigen", "--suite", suite,
                          "--preset", "smoke", "--limit", "1", "--dry-run", "--out", str(tmp_path / "o"),
                          "--suite-option", f"{param}={value}"])


def _metric_names():
    from bench.registry import METRICS

    return [e.name for e in METRICS.entries()]


METRIC_CASES = [(m, p, v) for m in _metric_names() for p in _params_of("metric", m) for v in PARAM_VALUES]


@pytest.mark.parametrize("metric, param, value", METRIC_CASES, ids=[f"{m} {p}={v!r}" for m, p, v in METRIC_CASES])
def test_every_metric_parameter_refuses_or_scores(world, tmp_path, capsys, monkeypatch, metric, param, value):
    """Checked by `bench score` before any model loads; a value let through is scored with the
    tiny metric models on a run of one image, or refused in one line."""
    monkeypatch.chdir(tmp_path)
    run_copy = tmp_path / "run"
    shutil.copytree(world["run"], run_copy)
    assert_clean(capsys, ["score", str(run_copy), "--metrics", metric, "--metric-preset", "tiny", "--no-progress",
                          "--metric-param", f"{metric}.{param}={value}"])


def test_the_sweep_is_broad():
    """The table covers every command and every parameter (a count, so that a parser change that
    empties it fails here)."""
    total = len(CASES) + len(METHOD_CASES) + len(SUITE_CASES) + len(METRIC_CASES)
    assert {c for c, _, _ in CASES} == set(COMMANDS) | {"data"}
    assert len(METHOD_CASES) > 200 and len(SUITE_CASES) > 50 and len(METRIC_CASES) > 50
    assert total > 1000


def test_the_sweep_wrote_nothing_into_the_repository():
    """Runs after the sweep in file order: hostile values taken as paths went to tmp folders."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                            capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip("not a git checkout")
    strays = [line for line in status.stdout.splitlines() if line.startswith("??")
              and line[3:].split("/")[0] in set(HOSTILE + HOSTILE_TEXT + PARAM_VALUES)]
    assert not strays, strays
