"""Kill a real `bench run` process mid-run (SIGKILL, no cleanup) and resume it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def start(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke",
           "--no-score", "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def record_lines(out: Path) -> list[str]:
    files = sorted((out / "generations").glob("*.jsonl")) if (out / "generations").exists() else []
    return [line for f in files for line in f.read_text().splitlines()]


def kill_after(out: Path, n_records: int, timeout: float = 120) -> None:
    proc = start(out)
    deadline = time.time() + timeout
    while len(record_lines(out)) < n_records and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_runs_resume_to_every_key_exactly_once(tmp_path):
    out = tmp_path / "run"
    kill_after(out, 1)
    kill_after(out, 4)
    first = len(record_lines(out))
    assert 1 <= first < 12, "the kills must land mid-run for this test to mean anything"
    proc = start(out)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert f"{first} already done" in stderr.decode()

    records = [json.loads(line) for line in record_lines(out) if line.strip()]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 12
    for r in records:
        with Image.open(out / r["image"]) as im:
            im.load()                                   # decodable, not half-written
    pngs = [p for p in (out / "images").rglob("*") if p.is_file()]
    assert len(pngs) == 12                              # no stray temporaries left
