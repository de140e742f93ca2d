"""Hostile inputs, round three (issue 32): no command writes over its own input, a run's own files,
a file of another kind, a folder, a FIFO or a device; no FIFO is read; an ASCII console prints
every line; hostile names stay inside their markdown cells; leases bounded against clock skew,
pid 0 and long host names. Every case is bounded in seconds by an alarm: a hang fails the test."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from bench import BenchError
from bench.cli import main
from test_check import synthetic_run

REPO = Path(__file__).resolve().parents[1]
BOUND_S = 20


@pytest.fixture(autouse=True)
def bounded():
    """Every case ends within BOUND_S seconds (a FIFO opened by mistake would block forever)."""
    def expire(*_):
        raise TimeoutError(f"hung for {BOUND_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(BOUND_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_line(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


def fingerprint(path: Path):
    """What must not change: a regular file's bytes, else its kind."""
    st = os.lstat(path)
    return path.read_bytes() if path.is_file() and not path.is_symlink() else st.st_mode


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic scored run, a score table, a JSON file of another kind, a FIFO and a folder."""
    root = tmp_path_factory.mktemp("round3")
    run = synthetic_run(root / "run", subjects=4, prompts=1, seeds=2)
    (run / "generations").mkdir()
    table = root / "t.csv"
    rows = [("a", f"s{s}", 0, k, 0, "m", 0.5 + 0.1 * s + 0.01 * k) for s in range(4) for k in range(2)]
    pd.DataFrame(rows, columns=["run", "subject", "prompt", "seed", "image", "metric", "value"]).to_csv(table, index=False)
    (root / "config.json").write_text('{"name": "my settings"}\n')
    (root / "notes.csv").write_text("a,b\n1,2\n")
    os.mkfifo(root / "fifo")
    (root / "folder").mkdir()
    os.link(table, root / "hardlink.csv")
    os.symlink(table, root / "symlink.csv")
    other = synthetic_run(root / "other", subjects=4, prompts=1, seeds=2)
    return SimpleNamespace(root=root, run=run, table=table, other=other)


# ---- every command that writes: its target is never an input, a run's file or another kind ----
WRITE_CASES = [
    # (argv with {placeholders}, the target that must stay as it is, words of the error)
    ("stats {table} --json {table}", "{table}", "is an input of this command"),
    ("stats {table} --json {root}/hardlink.csv", "{table}", "is an input of this command"),
    ("stats {table} --json {root}/symlink.csv", "{table}", "is an input of this command"),
    ("stats {table} --json {run}/run.json", "{run}/run.json", "run.json of the run directory"),
    ("stats {table} --json {run}/scores.parquet", "{run}/scores.parquet", "scores.parquet of the run directory"),
    ("stats {table} --json {root}/notes.csv", "{root}/notes.csv", "is not a bench stats JSON list"),
    ("stats {table} --json {root}/config.json", "{root}/config.json", "is not a bench stats JSON list"),
    ("stats {table} --json {root}/fifo", "{root}/fifo", "is a FIFO"),
    ("stats {table} --json {root}/folder", "{root}/folder", "is a folder"),
    ("check {run} --baseline {run}/run.json --update", "{run}/run.json", "run.json of the run directory"),
    ("check {run} --baseline {run}/scores.parquet --update", "{run}/scores.parquet", "scores.parquet of the run"),
    ("check {run} --baseline {other}/run.json --update", "{other}/run.json", "run.json of the run directory"),
    ("check {run} --baseline {run}/generations/base.json --update", "{run}/generations", "generations of the run"),
    ("check {run} --baseline {run} --update", "{run}/run.json", "is a folder"),
    ("check {run} --baseline {root}/config.json --update", "{root}/config.json", "is not a baseline"),
    ("check {run} --baseline {table} --update", "{table}", "is not a baseline"),
    ("check {run} --baseline {root}/fifo --update", "{root}/fifo", "is a FIFO"),
    ("report {run} --out {run}", "{run}/run.json", "is an input of this command"),
    ("report {run} --out {other}", "{other}/run.json", "is a run directory"),
    ("report {run} --out {run}/images/x", "{run}/run.json", "inside images/ of the run directory"),
    ("report {run} --out {root}/fifo", "{root}/fifo", "is a FIFO, expected a folder"),
    ("report {run} --out {table}", "{table}", "is a file, expected a folder"),
    ("run --method sd --suite dreambench --preset smoke --dry-run --out {run}/generations/x", "{run}/generations",
     "inside generations/ of the run directory"),
    ("run --method sd --suite dreambench --preset smoke --dry-run --out {root}/fifo", "{root}/fifo", "fifo"),
    ("score --suite dreambench --mini --images {root}/folder --out {root}/folder", "{root}/folder",
     "is an input of this command"),
    ("score --suite dreambench --mini --images {root}/folder --out {run}/generations/z", "{run}/generations",
     "inside generations/ of the run directory"),
    ("train --method ezigen --preset smoke --out {run}", "{run}/run.json", "is a run directory"),
    ("train --method ezigen --preset smoke --out {root}/fifo", "{root}/fifo", "is a FIFO"),
    ("data fetch dreambench --dest {run}/images", "{run}/run.json", "inside images/ of the run directory"),
    ("data fetch dreambench --dest {root}/fifo", "{root}/fifo", "is a FIFO"),
]


@pytest.mark.parametrize("argv, target, words", WRITE_CASES, ids=[c[0].split(" {")[0] + f"-{i}"
                                                                for i, c in enumerate(WRITE_CASES)])
def test_no_command_writes_over_what_it_does_not_own(world, capsys, argv, target, words):
    fill = dict(table=world.table, run=world.run, other=world.other, root=world.root)
    target = Path(target.format(**fill))
    before = fingerprint(target)
    listing = sorted(p.name for p in world.run.iterdir())
    err = one_line(capsys, argv.format(**fill).split())
    assert words.lower() in err.lower(), err
    assert fingerprint(target) == before
    assert sorted(p.name for p in world.run.iterdir()) == listing       # nothing new in the run either


def test_writing_its_own_output_again_is_allowed(world, capsys, tmp_path):
    """Neighbours of the refusals: a new file, then the same command over its own earlier output."""
    out, baseline = tmp_path / "stats.json", tmp_path / "b" / "base.json"
    for _ in range(2):
        assert main(["stats", str(world.table), "--json", str(out)]) == 0
        assert main(["check", str(world.run), "--baseline", str(baseline), "--update"]) == 0
    assert json.loads(out.read_text())[0]["metric"] == "m"
    assert json.loads(baseline.read_text())["format"] == 2
    inside = world.run / "baseline.json"          # a new file beside (not one of) the run's own files
    assert main(["check", str(world.run), "--baseline", str(inside), "--update"]) == 0
    inside.unlink()
    capsys.readouterr()


def test_report_files_that_are_fifos_are_refused_before_writing(world, capsys, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    os.mkfifo(out / "leaderboard-dreambench.md")
    err = one_line(capsys, ["report", world.run, "--out", out])
    assert "leaderboard-dreambench.md" in err and "FIFO" in err
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard-dreambench.md"]


# ---- what the harness reads: never a FIFO or a device ----------------------------------------
@pytest.mark.parametrize("name, command", [
    ("generations/rank-00000.jsonl", "store"), ("baseline.json", "check-baseline"), ("generations/rank-00001.jsonl", "report"),
    ("scores.parquet", "report"), ("run.json", "report"), ("run.json", "score"), ("run.json", "check"),
])
def test_fifo_inside_a_run_is_one_line(tmp_path, capsys, name, command):
    run = synthetic_run(tmp_path / "run", subjects=2, prompts=1, seeds=1)
    (run / "generations").mkdir()
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    if command == "store":                     # what `bench run` (resume) and `bench score` read first
        from bench.store import RunStore

        with pytest.raises(BenchError) as caught:
            RunStore(run).done_keys()
        err = str(caught.value)
        with pytest.raises(BenchError):
            RunStore(run).writer(0)
    else:
        extra = {"report": ["--out", tmp_path / "r"], "score": ["--metric-preset", "tiny"],
                 "check": ["--baseline", tmp_path / "b.json", "--update"],
                 "check-baseline": ["--baseline", run / name]}[command]
        err = one_line(capsys, [command.split("-")[0], run, *extra])
    assert name.split("/")[-1] in err and ("FIFO" in err or "not a regular file" in err), err


def test_fifo_prompts_file_and_image_are_refused(tmp_path, capsys):
    from bench.images import load_rgb

    os.mkfifo(tmp_path / "image.png")
    with pytest.raises(BenchError, match="is a FIFO"):
        load_rgb(tmp_path / "image.png")
    root = tmp_path / "db"
    import shutil

    shutil.copytree(REPO / "datasets" / "mini-dreambench", root)
    prompts = root / "dataset" / "prompts_and_classes.txt"
    prompts.unlink()
    os.mkfifo(prompts)
    from bench.suites.dreambench import parse_prompts_file

    with pytest.raises(BenchError, match="is a FIFO"):
        parse_prompts_file(prompts)
    code = main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--dry-run",
                 "--data-root", str(root), "--out", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert code == 2 and len(err) == 1 and "prompts_and_classes.txt" in err[0]


# ---- an ASCII console, a non-ASCII name --------------------------------------------------------
ASCII_ENVIRONMENTS = [{"LC_ALL": "C", "PYTHONUTF8": "0"}, {"PYTHONIOENCODING": "ascii"}]


@pytest.mark.parametrize("env", ASCII_ENVIRONMENTS, ids=["C", "ascii"])
def test_ascii_console_prints_every_line(world, env):
    base = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LANG", "PYTHONUTF8", "PYTHONIOENCODING")}
    table = world.root / "names.csv"
    table.write_text("run,subject,prompt,seed,image,metric,value\né±,ü,0,0,0,m,0.5\né±,ö,0,0,0,m,0.6\n",
                     encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench", "stats", str(table)], cwd=REPO, capture_output=True,
                          timeout=60, env={**base, **env, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert b"\\xb1" in done.stdout or "±".encode() in done.stdout            # escaped, not a crash


def test_non_utf8_out_is_refused_at_planning(tmp_path):
    """Under LC_ALL=C PYTHONUTF8=0 a non-ASCII --out reaches Python as surrogates: pyarrow could not
    write the run's scores.parquet after generating, so the plan refuses it first."""
    from bench.plan import output_dir

    out = str(tmp_path) + "/r\udcc3\udca9sultat"
    args = SimpleNamespace(out=out, suite="dreambench", method="sd", preset="smoke", data_root=None, adapter=None)
    with pytest.raises(BenchError, match="UTF-8 locale"):
        output_dir(args)
    assert output_dir(SimpleNamespace(**{**vars(args), "out": str(tmp_path / "résultat")})) == tmp_path / "résultat"
    assert not list(tmp_path.iterdir())


def test_library_path_check_passes_utf8_names(tmp_path):
    from bench.output_guard import check_library_path

    assert check_library_path(tmp_path / "résultat-名", "--out") == tmp_path / "résultat-名"
    with pytest.raises(BenchError, match="UTF-8 locale"):
        check_library_path(str(tmp_path) + "/r\udcc3\udca9", "--out")


# ---- names: markdown cells, None/nan subjects, long names -----------------------------------------
HOSTILE_NAMES = ["a|b", "line\nbreak", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "tick`s",
                 "back\\slash|", "&amp;", "plain"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_markdown_cells_hold_any_name(name):
    from bench.report.mdtext import md_code, md_table

    table = pd.DataFrame({"Run": [name, "ok"], "Seeds": ["1 (0)", "2 (0,1)"]})
    lines = md_table(table).splitlines()
    assert len(lines) == 4                                  # header, rule, two rows: no row broken
    for line in lines:
        unescaped = line.replace("\\\\", "").replace("\\|", "")
        assert unescaped.count("|") == 3, line
        assert "<" not in line and ">" not in line
    code = md_code(name)
    assert "\n" not in code and ("<" not in code or code.startswith("`"))


def test_markdown_leaderboard_escapes_hostile_run_names(tmp_path):
    from bench.report.cli import write_reports

    run = synthetic_run(tmp_path / "x\n|<img src=x onerror=alert(1)>", subjects=3, prompts=1, seeds=1)
    paths = write_reports([run], tmp_path / "out")
    text = paths[0].read_text(encoding="utf-8")
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ours")]
    assert len(rows) == 1 and "1 (0)" in rows[0]           # the Seeds column: count and list
    header = next(ln for ln in text.splitlines() if ln.startswith("|  "))
    assert rows[0].replace("\\|", "").count("|") == header.count("|")


@pytest.mark.parametrize("seeds, shown", [([0], "1 (0)"), ([0, 1], "2 (0,1)"), (range(6), "6 (0-5)"),
                                          ([0, 2, 7], "3 (0,2,7)"), ([5], "1 (5)")])
def test_seeds_column_shows_count_and_list(seeds, shown):
    from bench.report.leaderboard import seeds_text

    assert seeds_text(seeds) == shown


@pytest.mark.parametrize("names", [("None", "nan"), ("NULL", "NA"), ("none", "NaN"), ("-", "n/a")])
def test_subjects_named_like_missing_values_are_names(tmp_path, capsys, names):
    table = tmp_path / "t.csv"
    table.write_text("run,subject,prompt,seed,image,metric,value\n"
                     + "".join(f"a,{s},0,{k},0,m,{0.5 + k / 10 + i / 5}\n" for i, s in enumerate(names) for k in (0, 1)))
    out = tmp_path / "o.json"
    assert main(["stats", str(table), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["units"] == 2
    capsys.readouterr()
    empty = tmp_path / "e.csv"
    empty.write_text("run,subject,prompt,seed,image,metric,value\na,,0,0,0,m,0.5\n")
    assert "column subject is empty" in one_line(capsys, ["stats", empty])       # the neighbour: truly empty


@pytest.mark.parametrize("subject, ok", [("a" * 240, True), ("a" * 241, False), ("é" * 120, True),
                                         ("é" * 121, False), ("a" * 300, False), ("dog", True)])
def test_subject_names_are_bounded_at_planning(subject, ok):
    from bench.plan import check_subject_names

    samples = [SimpleNamespace(subject=subject)]
    if ok:
        check_subject_names(samples, "dreambench")
    else:
        with pytest.raises(BenchError, match="MAX_NAME_BYTES"):
            check_subject_names(samples, "dreambench")


@pytest.mark.parametrize("name", ["é" * 100, "a" * 200, "名" * 66, "x/y?#%", "dog", ".hidden", "a" * 100, "%41"])
def test_gallery_page_names_fit_and_stay_unique(name):
    from bench.report.html import _subject_page

    from urllib.parse import unquote

    page = _subject_page("dreambench-plus", name)
    assert all(len(part.encode()) <= 255 for part in page.split("/")) and page.endswith(".html")
    assert unquote(page) == page and page.count("/") == 2       # a link to it finds the file as named
    assert _subject_page("dreambench-plus", name + "2") != page
    assert page == _subject_page("dreambench-plus", name)


# ---- shard leases --------------------------------------------------------------------------
@pytest.mark.parametrize("offset, live", [(-10, True), (-400, False), (10, True), (250, True), (400, False),
                                          (10 ** 7, False)])
def test_future_heartbeats_age_both_ways(offset, live):
    from bench.shard_lock import LEASE_EXPIRY_S, lease_is_live

    assert LEASE_EXPIRY_S == 300.0
    lease = {"host": "another-host", "pid": 1234, "heartbeat": time.time() + offset}
    assert lease_is_live(lease) is live


@pytest.mark.parametrize("pid", [0, -1, -99, True])
def test_pid_zero_or_negative_is_no_process(tmp_path, pid):
    from bench.files import hostname, pid_alive
    from bench.shard_lock import ShardLock, lease_is_live

    assert not pid_alive(pid)
    assert not lease_is_live({"host": hostname(), "pid": pid, "heartbeat": time.time()})
    (tmp_path / "rank-00000.lease").write_text(json.dumps({"host": hostname(), "pid": pid, "rank": 0, "world": 1}))
    lock = ShardLock(tmp_path, 0, 1, "shard 0")                 # taken over at once
    lock.release()
    assert pid_alive(os.getpid())


def test_long_host_names_stay_distinct(monkeypatch):
    from bench.files import _TEMP, hostname

    names = []
    for tail in ("a", "b"):
        monkeypatch.setenv("BENCH_HOSTNAME", "n" * 64 + ".cluster-" + tail)
        names.append(hostname())
    assert names[0] != names[1] and all(len(n) <= 64 for n in names)
    assert all(_TEMP.match(f".x.png.12@{n}.tmp") for n in names)
    monkeypatch.setenv("BENCH_HOSTNAME", "node-7")
    assert hostname() == "node-7"                                   # short names unchanged


# ---- the one-line errors: a full disk names its file, memory advice names real options -------
def test_full_disk_names_the_file(tmp_path, monkeypatch):
    from bench.cli import describe_os_error
    from bench.files import write_atomic

    real_open = open

    class Full:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", Full)
    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "run.json", b"{}")
    monkeypatch.undo()
    line = describe_os_error(caught.value)
    assert str(tmp_path / "run.json") in line and "disk is full" in line
    assert not list(tmp_path.iterdir())                         # no temporary file left


@pytest.mark.parametrize("command, module", [("stats", "bench.stats.cli"), ("report", "bench.report"),
                                             ("run", "bench.runner"), ("check", "bench.check"),
                                             ("ls", "bench.cli")])
def test_memory_advice_names_only_the_commands_options(capsys, monkeypatch, command, module):
    import importlib

    from bench.cli import OOM_OPTIONS, build_parser

    def boom(args):
        raise MemoryError

    monkeypatch.setattr(importlib.import_module(module), "run", boom)
    argv = {"stats": ["stats", "t.csv"], "report": ["report", "r"], "run": ["run", "--method", "sd", "--suite", "x"],
            "check": ["check", "r", "--baseline", "b"], "ls": ["ls"]}[command]
    err = one_line(capsys, argv)
    assert err.startswith("error: out of memory")
    parser, _ = build_parser(argv)
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices[command]
    for option in OOM_OPTIONS:
        assert (option in err) == (option in sub._option_string_actions), (option, err)


def test_run_help_lists_every_registered_suite(capsys, monkeypatch):
    from bench.registry import SUITES

    names = SUITES.names() + ["my-new-suite"]
    monkeypatch.setattr(SUITES, "names", lambda: names)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "dreambench-plus" in text and "my-new-suite" in text
    assert all(name in text for name in names)


def test_run_with_an_undecodable_name_still_reads_its_scores(tmp_path):
    """A run folder whose name is not UTF-8 (what a non-ASCII name is under LC_ALL=C): its scores
    are read through a file Python opened, not a path pyarrow must encode."""
    from bench.store import RunStore

    made = synthetic_run(tmp_path / "plain", subjects=2, prompts=1, seeds=1)
    odd = Path(str(tmp_path) + "/r\udcff")
    made.rename(odd)
    scores = RunStore(odd).read_scores()
    assert len(scores) == 2 * 3 and scores["value"].notna().all()


def test_paper_rows_named_like_missing_values_are_names(tmp_path):
    from bench.report.load import read_paper_rows

    (tmp_path / "dreambench.csv").write_text("method,source,base_model,CLIP-T,CLIP-I,DINO\n"
                                             "None,paper A,,0.3,NA,\nnan,paper B,SD 1.5,-,0.7,0.5\n")
    rows = read_paper_rows("dreambench", tmp_path)
    assert list(rows["method"]) == ["None", "nan"] and list(rows["source"]) == ["paper A", "paper B"]
    assert rows["CLIP-T"].isna().tolist() == [False, True] and rows["CLIP-I"].isna().tolist() == [True, False]
    assert rows["DINO"].tolist()[1] == 0.5 and pd.isna(rows["DINO"].tolist()[0])


@pytest.mark.parametrize("name, ok", [("x" * 300, False), ("é" * 100, True)])       # neighbours: MAX_NAME_BYTES above
def test_long_collection_names_are_refused_at_the_dry_run(tmp_path, capsys, name, ok):
    """DreamBench++ collection ids hold the caption's subject name: a long one is refused by the dry
    run (bench.limits.MAX_NAME_BYTES), not by the file system after the model has loaded."""
    from test_dreambench_plus import write_release

    root = write_release(tmp_path / "dbp" / "data", [("animal", "00", name), ("object", "00", "backpack")])
    argv = ["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "tiny", "--data-root", root,
            "--dry-run", "--out", tmp_path / "out", "--no-score"]
    if ok:
        assert main([str(a) for a in argv]) == 0
        capsys.readouterr()
    else:
        assert "MAX_NAME_BYTES" in one_line(capsys, argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["a\0b", "x" * 300, "loop/out.json", "t.csv/out.json"])
def test_impossible_target_names_are_one_line(world, name):
    from bench.output_guard import guard_file, guard_folder

    loop = world.root / "loop"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    target = name if name.startswith("a\0") else str(world.root / name)
    for guard in (guard_file, guard_folder):
        with pytest.raises(BenchError):
            guard(target, "--out")


def test_a_symlink_loop_below_the_data_root_is_no_internal_error(tmp_path, capsys):
    """The doctor measures a data folder's size by following its links: a link that points back to
    itself somewhere below --data-root (Path.resolve raises RuntimeError before Python 3.13) is
    skipped, not an internal error."""
    from bench.cli import main

    loop = tmp_path / "root" / "elsewhere" / "a.jpg"
    loop.parent.mkdir(parents=True)
    loop.symlink_to("a.jpg")
    rc = main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1", "--dry-run",
               "--out", str(tmp_path / "o"), "--data-root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    assert rc == 2 and "internal error" not in err and "prompts" in err


@pytest.mark.parametrize("reader", ["judge", "omnicontext", "caption"])
@pytest.mark.parametrize("kind", ["fifo", "loop", "large", "latin1"])
def test_judge_texts_and_captions_are_read_bounded(tmp_path, reader, kind):
    """The judge's instruction files, OmniContext's judge texts and DreamBench++ captions go through
    one bounded reader (bench.files.read_text_file): a FIFO (it would block), a symlink loop, a file
    over the limit and non-UTF-8 bytes are each one BenchError naming the file."""
    from bench.metrics.judge import MAX_PROMPT_FILE_BYTES, read_prompt_file
    from bench.metrics.omnicontext_judge import MAX_PROMPT_FILE_BYTES as OMNICONTEXT_LIMIT, load_texts
    from bench.suites.dreambench_plus import MAX_CAPTION_BYTES, read_caption

    read, limit = {"judge": (read_prompt_file, MAX_PROMPT_FILE_BYTES), "omnicontext": (load_texts, OMNICONTEXT_LIMIT),
                   "caption": (read_caption, MAX_CAPTION_BYTES)}[reader]
    path = tmp_path / "file.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "large":
        path.write_bytes(b"a" * (limit + 1))
    else:
        path.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(BenchError) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    expected = {"fifo": "regular file", "loop": "symlink loop", "large": "larger than", "latin1": "UTF-8"}[kind]
    assert expected in message
