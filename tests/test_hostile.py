"""Hostile inputs, round two: bounds before work (bench.limits), no catastrophic regular
expression, nothing accepted silently, and several hosts writing one run directory."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bench import BenchError
from bench.cli import main

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "datasets" / "mini-dreambench"
#: generous: a linear scan of 1 MB takes milliseconds; a quadratic one takes hours
TIME_BOUND_S = 5.0


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def copy_mini(tmp_path: Path, name: str = "db") -> Path:
    root = tmp_path / name
    shutil.copytree(MINI, root)
    return root


def replace_prompt(root: Path, old: str, new: str) -> Path:
    prompts = root / "dataset" / "prompts_and_classes.txt"
    text = prompts.read_text()
    assert old in text
    prompts.write_text(text.replace(old, new, 1))
    return prompts


DRY = ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--dry-run"]


# ---- prompt templates and lines -------------------------------------------------------------
@pytest.mark.parametrize("template, words", [
    ("'a red {0} {1:>1000000000}'", "format spec"),
    ("'a red {0} {1!r}'", "conversion"),
    ("'a red {0} {1} {2}'", "field {2}"),
    ("'a red {0.__class__} {1}'", "field {0.__class__}"),
    ("'a red {0} {1[0]}'", "field {1[0]}"),
])
def test_prompt_templates_insert_only_their_fields(tmp_path, capsys, template, words):
    root = copy_mini(tmp_path)
    prompts = replace_prompt(root, "'a red {0} {1}'", template)
    start = time.perf_counter()
    line = one_line_error(capsys, DRY + ["--data-root", str(root), "--out", str(tmp_path / "out")])
    assert time.perf_counter() - start < TIME_BOUND_S
    lineno = next(i for i, text in enumerate(prompts.read_text().splitlines(), 1) if template in text)
    assert f"{prompts}:{lineno}" in line and words in line


@pytest.mark.parametrize("line", [
    "'a {1}'" + "'" + " " * 1_000_000 + "x",                 # made to backtrack the old pattern
    "'" + "'.format(" * 120_000,
    "'a {0} {1}'.format(" + "a, " * 350_000,
])
def test_a_one_megabyte_prompt_line_is_refused_before_parsing(tmp_path, capsys, line):
    root = copy_mini(tmp_path)
    prompts = replace_prompt(root, "'a red {0} {1}'.format(unique_token, class_token)", line)
    start = time.perf_counter()
    err = one_line_error(capsys, DRY + ["--data-root", str(root), "--out", str(tmp_path / "out")])
    assert time.perf_counter() - start < TIME_BOUND_S
    assert str(prompts) in err and "MAX_PROMPT_LINE_CHARS" in err


def test_the_prompt_line_parser_is_linear_on_adversarial_lines():
    from bench.suites.dreambench import split_prompt_line

    assert split_prompt_line("'a {0} {1} in the snow'.format(unique_token, class_token),") == "a {0} {1} in the snow"
    assert split_prompt_line('"a {1}" ,') == "a {1}"
    assert split_prompt_line("'a {1}'.format(x, y") is None
    for line in ("'" * 1_000_000, "'" + " " * 1_000_000 + "x", "'" + "'.format(" * 120_000,
                 "'" + "(" * 1_000_000 + ")", "'a'.format(" + ")" * 1_000_000):
        start = time.perf_counter()
        split_prompt_line(line)
        assert time.perf_counter() - start < TIME_BOUND_S


def _module_patterns() -> list[tuple[str, re.Pattern]]:
    """Every compiled regular expression at module level in bench/ and methods/ (the parsers'
    patterns), found by importing each module: a new one is covered without listing it."""
    out, seen = [], set()
    for folder in ("bench", "methods"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if name.endswith("__main__"):
                continue
            try:
                module = importlib.import_module(name)
            except Exception:             # optional dependencies: not a parser of ours at import
                continue
            for attr, value in vars(module).items():
                if isinstance(value, re.Pattern) and id(value) not in seen:
                    seen.add(id(value))
                    out.append((f"{name}.{attr}", value))
    return out


def _adversarial(pattern: re.Pattern, size: int = 1_000_000) -> list[str]:
    """1 MB lines built from the pattern's own characters: runs of one character, and a
    leading character followed by a run and a character that makes the match fail at the end."""
    chars = sorted({c for c in pattern.pattern if c.isprintable() and c not in "\\^$()[]{}?*+|"}
                   | set(" a0'./-_@"))[:16]
    lines = [c * size for c in chars]
    lines += [first + run * size + "\x00" for first in chars[:4] for run in (" ", "a", "0")]
    return lines


def test_no_parser_regex_backtracks_catastrophically():
    patterns = _module_patterns()
    names = {name for name, _ in patterns}
    assert {"bench.external_images._LAYOUT", "bench.files._TEMP", "bench.suites.dreamedit.SOURCE_PATTERN"} <= names
    for name, pattern in patterns:
        for line in _adversarial(pattern):
            start = time.perf_counter()
            pattern.match(line)
            pattern.search(line[:20_000])
            elapsed = time.perf_counter() - start
            assert elapsed < TIME_BOUND_S, f"{name} took {elapsed:.1f} s on {line[:20]!r}..."


def test_blip_diffusion_subject_context_is_linear_on_adversarial_prompts():
    from methods.blip_diffusion import subject_context

    assert subject_context("a dog in the snow", "dog") == "in the snow"
    for prompt in (" " * 1_000_000, "a" + " " * 1_000_000 + "b", "an " + "dog " * 250_000, "a dog" + " " * 1_000_000):
        start = time.perf_counter()
        subject_context(prompt, "dog")
        assert time.perf_counter() - start < TIME_BOUND_S


def test_inline_patterns_are_linear_on_one_megabyte_values(monkeypatch):
    """The regular expressions written inline (not at module level): device names, host names."""
    from bench.files import hostname
    from bench.options import check_device

    for value in ("cuda:" + "1" * 1_000_000 + "x", "cpu" * 333_333, "cuda" + ":" * 1_000_000):
        start = time.perf_counter()
        with pytest.raises(BenchError):
            check_device(value)
        assert time.perf_counter() - start < TIME_BOUND_S
    monkeypatch.setenv("BENCH_HOSTNAME", "a.-" * 333_333)
    start = time.perf_counter()
    assert len(hostname()) == 64 and time.perf_counter() - start < TIME_BOUND_S


# ---- tokenizer inputs -----------------------------------------------------------------------
def test_tokenizer_input_is_cut_before_tokenizing():
    from bench.limits import MAX_TOKENIZER_CHARS, clip_text
    from bench.models import load_tokenizer

    assert clip_text("a dog in the snow") == "a dog in the snow"
    huge = "a photo of a dog " * 700_000                       # 11.9 MB
    start = time.perf_counter()
    cut = clip_text(huge)
    assert time.perf_counter() - start < TIME_BOUND_S and len(cut) <= MAX_TOKENIZER_CHARS
    tokenizer = load_tokenizer()
    full = tokenizer(huge[:200_000], truncation=True, max_length=77).input_ids
    assert tokenizer(cut, truncation=True, max_length=77).input_ids == full   # what survives is the same


# ---- images ---------------------------------------------------------------------------------
def test_a_5000x1_subject_image_is_one_line_naming_file_and_limit(tmp_path, capsys):
    root = copy_mini(tmp_path)
    victim = root / "dataset" / "dog" / "00.jpg"
    Image.new("RGB", (5000, 1), "red").save(victim)
    err = one_line_error(capsys, ["run", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke",
                                  "--data-root", str(root), "--out", str(tmp_path / "out"), "--no-score"])
    assert str(victim) in err and "5000x1" in err and "MAX_IMAGE_ASPECT" in err
    assert not (tmp_path / "out").exists()


def test_image_size_is_checked_from_the_header_before_decoding(tmp_path):
    """A 60000x60000 PNG of a few hundred bytes (a decompression bomb) is refused from its
    header: nothing is decoded, so it costs no memory."""
    import struct
    import zlib

    from bench.images import check_image

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(BenchError, match=r"bomb.png (is 60000x60000 pixels, over|has more pixels than) the limit"):
        check_image(bomb)
    wide = tmp_path / "wide.png"                # under PIL's own bomb limit: our header check
    wide.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 100, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(BenchError, match=r"wide.png is 20000x100 pixels, over the limit of 16384 px a side"):
        check_image(wide)


# ---- JSON, run.json, scores.parquet ---------------------------------------------------------
def test_json_reader_refuses_deep_nesting_non_utf8_and_size(tmp_path):
    from bench.files import read_json

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BenchError, match="deep.json: nested deeper than the limit of 64"):
        read_json(deep)
    shallow_but_deep = tmp_path / "d70.json"
    shallow_but_deep.write_text("[" * 70 + "]" * 70)
    with pytest.raises(BenchError, match="nested deeper"):
        read_json(shallow_but_deep)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(BenchError, match="latin.json: not UTF-8"):
        read_json(latin)
    with pytest.raises(BenchError, match="more than the limit of 10"):
        read_json(latin, max_bytes=10)
    fine = tmp_path / "fine.json"
    fine.write_text('{"a": [1, {"b": 2}]}')
    assert read_json(fine) == {"a": [1, {"b": 2}]}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-run") / "run"
    assert main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "2",
                 "--out", str(out)]) == 0
    return out


def _copy_run(finished_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    return out


@pytest.mark.parametrize("field, value", [("plan.seeds", "0-5"), ("plan", 5), ("suite", [1]), ("metrics", 7),
                                          ("identity", "x"), ("suite.options", 3), ("plan.seeds", [0, "1"]),
                                          ("random_weights", "yes")])
@pytest.mark.parametrize("command", ["score", "report", "run"])
def test_run_json_with_wrong_field_types_is_one_line(finished_run, tmp_path, capsys, field, value, command):
    out = _copy_run(finished_run, tmp_path)
    data = json.loads((out / "run.json").read_text())
    *parents, last = field.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    (out / "run.json").write_text(json.dumps(data))
    argv = {"score": ["score", str(out)], "report": ["report", str(out), "--out", str(tmp_path / "rep")],
            "run": ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "2",
                    "--out", str(out)]}[command]
    err = one_line_error(capsys, argv)
    assert f"field '{field}'" in err and str(out / "run.json") in err


def test_scores_parquet_of_random_bytes_is_one_line(finished_run, tmp_path):
    from bench.store import RunStore

    out = _copy_run(finished_run, tmp_path)
    (out / "scores.parquet").write_bytes(os.urandom(5000))
    with pytest.raises(BenchError, match=r"scores.parquet: not a parquet file .*bench score"):
        RunStore(out).read_scores()
    assert len(RunStore(finished_run).read_scores()) > 0


# ---- nothing accepted silently --------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--seeds", "1,,2"), ("--seeds", "0,1,"), ("--seeds", ",3"),
                                           ("--subjects", "dog,,vase"), ("--metrics", "clip,")])
def test_empty_list_items_are_refused(tmp_path, capsys, option, value):
    err = one_line_error(capsys, DRY + [option, value, "--out", str(tmp_path / "out")])
    assert option in err and "is empty" in err


@pytest.mark.parametrize("value, prompts", [("5", "1"), ("0", "1"), ("0,10", "2")])
def test_fastcomposer_prompt_indices_select_what_they_say(tmp_path, capsys, value, prompts):
    assert main(["run", "--method", "sd", "--suite", "fastcomposer", "--preset", "smoke", "--dry-run",
                 "--suite-option", f"prompt_indices={value}", "--out", str(tmp_path / "out")]) == 0
    assert f"'prompts': {prompts}," in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-1", "40", "abc", "1,,2", "true"])
def test_fastcomposer_bad_prompt_indices_are_refused(tmp_path, capsys, value):
    err = one_line_error(capsys, ["run", "--method", "sd", "--suite", "fastcomposer", "--preset", "smoke",
                                  "--dry-run", "--suite-option", f"prompt_indices={value}",
                                  "--out", str(tmp_path / "out")])
    assert "prompt" in err


@pytest.mark.parametrize("option, value, words", [
    ("--lr", "nan", "finite"), ("--lr", "-1", "--lr -1"), ("--lr", "0", "--lr 0"), ("--lr", "inf", "finite"),
    ("--epochs", "0", "--epochs 0"), ("--keep-checkpoints", "-1", "--keep-checkpoints -1"),
    ("--max-steps", "0", "--max-steps 0"), ("--weight-decay", "nan", "finite"),
    ("--subject-dropout", "1", "--subject-dropout 1"), ("--save-every", "0", "--save-every 0"),
    ("--seed", "-1", "--seed -1"), ("--workers", "-2", "--workers -2"), ("--device", "cuda:99", "--device"),
])
def test_train_options_that_mean_nothing_are_refused(tmp_path, capsys, option, value, words):
    err = one_line_error(capsys, ["train", "--preset", "smoke", "--out", str(tmp_path / "t"), option, value])
    assert words in err
    assert not (tmp_path / "t").exists()


def test_metric_device_without_a_gpu_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    err = one_line_error(capsys, ["metric", "clip-t", "--images", str(image), "--texts", "a", "--preset", "tiny",
                                  "--device", "cuda"])
    assert "--device cuda" in err


def test_method_text_parameter_with_a_bad_format_field_is_refused(tmp_path, capsys):
    err = one_line_error(capsys, ["run", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke",
                                  "--dry-run", "--out", str(tmp_path / "o"),
                                  "--param", "reference_prompt=a photo of {0.__class__}"])
    assert "reference_prompt" in err and "allowed fields: {class_noun}" in err
    err = one_line_error(capsys, ["run", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke",
                                  "--dry-run", "--out", str(tmp_path / "o"),
                                  "--param", "reference_prompt=a photo of a {class_noun:>999999999}"])
    assert "format spec" in err
    assert main(["run", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke", "--dry-run",
                 "--out", str(tmp_path / "o"), "--param", "reference_prompt=a picture of a {class_noun}"]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, ["run", "--method", "clip-projector", "--suite", "dreambench", "--preset", "smoke",
                                  "--dry-run", "--out", str(tmp_path / "o"), "--param", "reference_prompt={0}"])
    assert "reference_prompt" in err and "allowed fields: {class_noun}" in err      # forwarded parameters too


# ---- messages that finish their sentence ----------------------------------------------------
def test_backbone_load_failure_is_whole_and_suggests_the_tiny_preset():
    from bench.metrics.clip import weights_missing

    reason = ("An error happened while trying to locate the file on the Hub and we cannot find the requested "
              "files in the local cache. Please check your connection and try again or make sure your "
              "Internet connection is on.")
    message = str(weights_missing("CLIP ViT-L-14 (openai) with open_clip", "run once online", OSError(reason)))
    assert "locate the file on the Hub" in message and "Internet connection is on." in message
    assert "--metric-preset tiny" in message
    long = OSError("word " * 400)
    message = str(weights_missing("x", "y", long))
    assert "[...]" in message and "wor [" not in message and message.endswith("(bench metric)")
    from bench.limits import reason
    assert reason(OSError("x" * 5000)).endswith(" [...]") and len(reason(OSError("x" * 5000))) < 700


# ---- temporaries and leases on a folder several hosts share ---------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_carry_host_and_pid_and_only_provably_dead_ones_go(tmp_path, monkeypatch):
    from bench import files

    monkeypatch.setenv("BENCH_HOSTNAME", "node-a")
    assert files.temporary_name(tmp_path / "i0.png").name == f".i0.png.{os.getpid()}@node-a.tmp"
    dead = _dead_pid()
    old = time.time() - files.STALE_TEMPORARY_AGE_S - 60
    cases = {
        f".a.png.{dead}@node-a.tmp": (None, True),            # this host, dead pid
        f".b.png.{os.getpid()}@node-a.tmp": (None, False),    # this host, live pid
        f".c.png.{dead}@node-b.tmp": (None, False),           # another host, fresh: may be live there
        f".d.png.{dead}@node-b.tmp": (old, True),             # another host, older than the limit
        f".e.png.{os.getpid()}@node-b.tmp": (None, False),    # our pid number on another host: not ours
        f".f.png.{dead}.tmp": (None, True),                   # the older form: this host's
    }
    for name, (mtime, _gone) in cases.items():
        (tmp_path / name).write_bytes(b"x")
        if mtime:
            os.utime(tmp_path / name, (mtime, mtime))
    assert files.remove_stale_temporaries(tmp_path) == sum(g for _, g in cases.values())
    for name, (_mtime, gone) in cases.items():
        assert (tmp_path / name).exists() != gone, name


def _lease(folder: Path, rank: int, world: int, host: str, pid: int, age: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank-{rank:05d}.lease"
    path.write_text(json.dumps({"host": host, "pid": pid, "rank": rank, "world": world, "started": "x"}))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_a_shard_live_on_another_host_is_refused_naming_host_and_pid(tmp_path, monkeypatch):
    from bench.store import LEASE_EXPIRY_S, RunStore

    monkeypatch.setenv("BENCH_HOSTNAME", "node-a")
    store = RunStore(tmp_path / "run")
    _lease(store.generations_dir, 0, 2, "node-b", 4242)
    with pytest.raises(BenchError, match=r"shard 0/2 of .* is already being written by process 4242 on host "
                                         r"node-b \(shard 0/2, heartbeat \d+ s ago\)"):
        store.lock_shard(0, 2)
    # the same lease, silent for longer than the expiry: its writer is presumed dead, taken over
    _lease(store.generations_dir, 0, 2, "node-b", 4242, age=LEASE_EXPIRY_S + 30)
    with store.lock_shard(0, 2) as lock:
        held = json.loads(lock.lease_path.read_text())
        assert (held["host"], held["pid"], held["world"]) == ("node-a", os.getpid(), 2)
    assert not lock.lease_path.exists()                    # released: the lease is gone
    # this host, a dead pid: taken over at once
    _lease(store.generations_dir, 1, 2, "node-a", _dead_pid())
    store.lock_shard(1, 2).release()
    # this host, a live pid that is not the writer (a killed writer's pid reused): the flock,
    # free on this host, proves the lease stale
    reuser = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lease(store.generations_dir, 1, 2, "node-a", reuser.pid)
        store.lock_shard(1, 2).release()
    finally:
        reuser.kill()
        reuser.wait()


def test_live_shards_of_different_world_sizes_are_refused(tmp_path, monkeypatch):
    from bench.store import RunStore

    monkeypatch.setenv("BENCH_HOSTNAME", "node-a")
    store = RunStore(tmp_path / "run")
    _lease(store.generations_dir, 1, 2, "node-b", 777)
    with pytest.raises(BenchError, match=r"shard 0/1 of .* cannot start: process 777 on host node-b "
                                         r"\(shard 1/2, .*with 2 shards, this one with 1"):
        store.lock_shard(0, 1)
    assert not (store.generations_dir / "rank-00000.lease").exists()     # nothing left behind
    store.lock_shard(0, 2).release()                                     # the same N is fine


def test_two_hosts_write_the_two_shards_of_one_run(tmp_path):
    """Two processes playing two machines (BENCH_HOSTNAME) run the shards of one run into one
    folder at the same time, one as a SLURM array task (--shard from the array's variables), one
    as `accelerate launch --num_machines 2` starts it (RANK / WORLD_SIZE / LOCAL_RANK in the
    environment, no --shard): both finish, every key is recorded once, no temporary is left, and
    `bench score` once afterwards scores every image."""
    out = tmp_path / "run"
    argv = ["-m", "bench", "run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "4",
            "--batch-size", "1", "--no-score", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    slurm = {**env, "BENCH_HOSTNAME": "node-0", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    accelerate = {**env, "BENCH_HOSTNAME": "node-1", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    shard = f"{slurm['SLURM_ARRAY_TASK_ID']}/{slurm['SLURM_ARRAY_TASK_COUNT']}"
    procs = [subprocess.Popen([sys.executable, *argv, *extra], cwd=tmp_path, env=process_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for extra, process_env in ((["--shard", shard], slurm), ([], accelerate))]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output
    keys = [json.loads(line)["key"] for f in sorted((out / "generations").glob("rank-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.lease"))
    from bench.store import RunStore
    good, bad = RunStore(out).verified_records(verify=True)
    assert len(good) == 4 and not bad
    assert main(["score", str(out), "--no-progress"]) == 0
    assert set(RunStore(out).read_scores()["key"]) == set(keys)


def test_report_of_the_same_run_twice_counts_it_once(finished_run, tmp_path, capsys):
    assert main(["report", str(finished_run), str(finished_run), "--out", str(tmp_path / "twice")]) == 0
    err = capsys.readouterr().err
    assert "is the same folder as" in err and "counted once" in err
    assert main(["report", str(finished_run), "--out", str(tmp_path / "once")]) == 0
    twice = (tmp_path / "twice" / "leaderboard-dreambench.md").read_text()
    assert twice == (tmp_path / "once" / "leaderboard-dreambench.md").read_text()


def test_report_of_a_random_bytes_scores_file_is_one_line(finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path)
    (out / "scores.parquet").write_bytes(os.urandom(5000))
    err = one_line_error(capsys, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert str(out / "scores.parquet") in err and "not a parquet file" in err


def test_a_shard_without_a_batch_is_refused_and_a_finished_resume_says_nothing_to_do(finished_run, tmp_path, capsys):
    err = one_line_error(capsys, DRY + ["--limit", "2", "--shard", "3/4", "--out", str(tmp_path / "o")])
    assert "--shard 3/4" in err and "nothing to do" in err
    out = _copy_run(finished_run, tmp_path)
    assert main(["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "2",
                 "--out", str(out), "--no-score"]) == 0
    assert "nothing to do: all 2 images" in capsys.readouterr().err


def test_resolution_beyond_the_presets_models_is_refused(tmp_path, capsys):
    err = one_line_error(capsys, ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke",
                                  "--resolution", "4096", "--out", str(tmp_path / "o")])
    assert "--resolution 4096" in err and "at most 512" in err


def test_external_images_scored_with_random_metric_models_carry_the_stamp(finished_run, tmp_path, capsys):
    ext = tmp_path / "ext"
    assert main(["score", "--images", str(finished_run / "images"), "--suite", "dreambench", "--mini",
                 "--metric-preset", "tiny", "--out", str(ext), "--no-progress"]) == 0
    from bench.store import RunStore, weights_status
    assert "random weights (metric models)" in weights_status(RunStore(ext).read_run())
    assert main(["report", str(ext), "--out", str(tmp_path / "rep")]) == 0
    board = (tmp_path / "rep" / "leaderboard-dreambench.md").read_text()
    assert "random weights (metric models)" in board and "**Note:**" in board


@pytest.mark.parametrize("content, words", [
    (b'{"found0.jpg": [NaN, 0, 100, 100]}', "finite numbers"),
    (b'{"found0.jpg": [0, 0, 1e300, 100]}', "finite numbers"),
    (b'{"found0.jpg": [true, 0, 100, 100]}', "finite numbers"),
    ('{"found0.jpg": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
    (b"[" * 50_000 + b"]" * 50_000, "nested deeper"),
])
def test_dreamedit_boxes_file_is_bounded_and_checked(tmp_path, capsys, content, words):
    root = tmp_path / "de"
    shutil.copytree(REPO / "datasets" / "mini-dreamedit", root)
    boxes = root / "data" / "addition_source" / "dog" / "bbox.json"
    boxes.write_bytes(content)
    err = one_line_error(capsys, ["data", "check", "dreamedit", "--data-root", str(root), "--suite-option",
                                  f"dreambench_root={MINI}", "--suite-option", "annotator_preset=tiny"])
    assert str(boxes) in err and words in err


def test_absurd_record_lines_are_skipped_as_malformed(finished_run, tmp_path, capsys):
    from bench.store import RunStore

    out = _copy_run(finished_run, tmp_path)
    with open(out / "generations" / "rank-00000.jsonl", "ab") as f:
        f.write(b"[" * 200_000 + b"\n" + b'{"key": "' + b"a" * 2_000_000 + b'"}\n')
    store = RunStore(out)
    assert len(store.records()) == 2
    assert "skipped 2 malformed line(s)" in capsys.readouterr().err


@pytest.mark.parametrize("data, words", [("coco:/no/such/folder", "is not a folder"),
                                         ("synthetic:0", "pair count"), ("bogus:/tmp", "KIND:DIR")])
def test_training_data_is_checked_before_any_model_loads(tmp_path, capsys, data, words):
    err = one_line_error(capsys, ["train", "--data", data, "--out", str(tmp_path / "t")])
    assert words in err and "model weights" not in err


def test_huge_numbers_in_method_parameters_are_refused_or_made_floats():
    from bench.registry import METHODS, check_method_params

    sd = METHODS.get("sd").load()
    params = check_method_params("sd", sd, {"guidance_scale": 99999999999999999999})
    assert params == {"guidance_scale": 1e20} and isinstance(params["guidance_scale"], float)
    with pytest.raises(BenchError, match="finite number"):
        check_method_params("sd", sd, {"guidance_scale": 10**400})
    ez = METHODS.get("ezigen").load()
    with pytest.raises(BenchError, match="64-bit"):
        check_method_params("ezigen", ez, {"min_loops": 2**70})


def test_blip_diffusion_refuses_a_prompt_repeated_beyond_the_limit(tmp_path, capsys):
    err = one_line_error(capsys, ["run", "--method", "blip-diffusion", "--suite", "dreambench", "--preset", "smoke",
                                  "--limit", "1", "--no-score", "--out", str(tmp_path / "o"),
                                  "--param", "prompt_strength=99999999999999999999"])
    assert "prompt_strength x prompt_reps" in err
    assert not (tmp_path / "o" / "run.json").exists()
