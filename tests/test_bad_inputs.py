"""Every bad input is one line on stderr, exit status 2, naming the culprit, with no traceback,
and (where it is checked up front) nothing written: one parametrised table over the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "datasets" / "mini-dreambench"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the bad inputs point at, built once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    files = {"root": root}
    (root / "a-file").write_text("not a folder")
    files["a-file"] = root / "a-file"
    noise = root / "adapter.safetensors"
    noise.write_bytes(os.urandom(4096))
    files["random-safetensors"] = noise
    overflow = root / "overflow.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    overflow.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    files["misshaped-safetensors"] = overflow
    empty = root / "no-weights"
    empty.mkdir()
    (empty / "notes.txt").write_text("no weights here")
    files["no-weights"] = empty

    # a DreamBench copy whose subject name climbs out of the run directory
    escape = root / "escape"
    shutil.copytree(MINI, escape)
    prompts = escape / "dataset" / "prompts_and_classes.txt"
    prompts.write_text(prompts.read_text().replace("dog,dog", "../../../x,dog"))
    files["escape"] = escape
    # a DreamBench copy with a truncated JPEG
    truncated = root / "truncated"
    shutil.copytree(MINI, truncated)
    victim = sorted((truncated / "dataset" / "vase").iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    files["truncated"] = truncated
    files["truncated-image"] = victim

    # manifests for `bench score --images`
    for name, target in (("dev-zero", "/dev/zero"), ("passwd", "/etc/passwd")):
        manifest = root / f"{name}.csv"
        manifest.write_text(f"path,key\n{target},dreambench/dog/0/s0/i0\n")
        files[f"manifest-{name}"] = manifest
    baseline = root / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"clip_t/x": {"std": 0.1}}}))
    files["baseline"] = baseline
    run_dir = root / "a-run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")
    files["a-run"] = run_dir
    return files


RUN = ["run", "--method", "sd", "--suite", "dreambench", "--preset", "smoke", "--limit", "1", "--no-score"]
EZ = ["run", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke", "--limit", "1", "--no-score"]

# (argv with {placeholders} from `world`, text the one line must contain)
CASES = {
    "resolution 0": (RUN + ["--resolution", "0"], "--resolution 0"),
    "resolution not /8": (RUN + ["--resolution", "100"], "multiple of 8"),
    "resolution huge": (RUN + ["--resolution", "100000"], "--resolution 100000"),
    "steps 0": (RUN + ["--steps", "0"], "--steps 0"),
    "steps negative": (RUN + ["--steps", "-3"], "--steps -3"),
    "steps too many": (RUN + ["--steps", "5000"], "--steps 5000"),
    "batch size 0": (RUN + ["--batch-size", "0"], "--batch-size 0"),
    "batch size text": (RUN + ["--batch-size", "four"], "--batch-size"),
    "images per prompt 0": (RUN + ["--images-per-prompt", "0"], "--images-per-prompt 0"),
    "limit 0": (RUN + ["--limit", "0"], "--limit 0"),
    "seeds huge range": (RUN + ["--seeds", "0-999999999"], "--seeds '0-999999999'"),
    "seeds reversed": (RUN + ["--seeds", "5-2"], "--seeds '5-2'"),
    "seeds negative": (RUN + ["--seeds", "-1"], "--seeds '-1'"),
    "seeds text": (RUN + ["--seeds", "a-b"], "--seeds 'a-b'"),
    "seeds empty": (RUN + ["--seeds", ","], "--seeds ','"),
    "shard out of range": (RUN + ["--shard", "2/2"], "--shard '2/2'"),
    "shard zero world": (RUN + ["--shard", "0/0"], "--shard '0/0'"),
    "shard text": (RUN + ["--shard", "x"], "--shard 'x'"),
    "unknown method": (["run", "--method", "sdd", "--suite", "dreambench", "--preset", "smoke"], "did you mean 'sd'"),
    "unknown suite": (["run", "--method", "sd", "--suite", "dreambenchh", "--preset", "smoke"], "unknown suite"),
    "param typo": (EZ + ["--param", "max_loop=3"], "did you mean 'max_loops'"),
    "param unknown to sd": (RUN + ["--param", "max_loops=3"], "its parameters: guidance_scale"),
    "param without value": (RUN + ["--param", "guidance_scale"], "--param 'guidance_scale'"),
    "param wrong type": (RUN + ["--param", "guidance_scale=high"], "--param guidance_scale='high'"),
    "param not finite": (RUN + ["--param", "guidance_scale=nan"], "--param guidance_scale=nan"),
    "param bool": (EZ + ["--param", "iterative=maybe"], "--param iterative='maybe'"),
    "param int": (EZ + ["--param", "max_loops=2.5"], "--param max_loops=2.5"),
    "param steps 0": (RUN + ["--param", "num_inference_steps=0"], "num_inference_steps=0"),
    "param runner-owned": (RUN + ["--param", "name=x"], "has no parameter 'name'"),
    "suite option": (RUN + ["--suite-option", "colour=red"], "unknown dreambench option"),
    "fastcomposer suite option": (["run", "--method", "sd", "--suite", "fastcomposer", "--preset", "smoke",
                                   "--no-score", "--suite-option", "colour=red"], "unknown fastcomposer option"),
    "dreamedit suite option": (["run", "--method", "ezigen", "--suite", "dreamedit", "--preset", "smoke",
                                "--no-score", "--dry-run", "--suite-option", "colour=red"], "unknown dreamedit option"),
    "loops without iteration": (["run", "--method", "ezigen-allstep", "--suite", "dreambench", "--preset", "smoke",
                                 "--no-score", "--param", "loops=2"], "needs iterative=true"),
    "unknown subject": (RUN + ["--subjects", "unicorn"], "unicorn"),
    "device": (RUN + ["--device", "tpu"], "--device 'tpu'"),
    "device index": (RUN + ["--device", "cuda:99"], "--device cuda:99"),
    "dtype": (RUN + ["--dtype", "fp8"], "--dtype"),
    "out is a file": (RUN + ["--out", "{a-file}"], "--out"),
    "out below a file": (RUN + ["--out", "{a-file}/run"], "is a file"),
    "model fails after the lock (deep --out)": (EZ + ["--param", "max_loops=-1", "--out", "{tmp}/deep/er/run"], "max_loops"),
    "data root is a file": (RUN + ["--data-root", "{a-file}"], "--data-root"),
    "data root missing": (RUN + ["--data-root", "{root}/nowhere"], "--data-root"),
    "weights with preset": (RUN + ["--weights", "x/y"], "--weights and --preset"),
    "adapter missing": (EZ + ["--adapter", "{root}/nowhere"], "--adapter"),
    "adapter random bytes": (EZ + ["--adapter", "{random-safetensors}"], "adapter.safetensors: not a valid"),
    "adapter misshaped": (EZ + ["--adapter", "{misshaped-safetensors}"], "overflow.safetensors: not a valid"),
    "adapter folder without weights": (EZ + ["--adapter", "{no-weights}"], "no weight files"),
    "adapter root folder": (EZ + ["--adapter", "/"], "--adapter /"),
    "adapter device file": (EZ + ["--adapter", "/dev/zero"], "not a regular file"),
    "subject escapes": (RUN[:5] + ["--data-root", "{escape}", "--no-score"],
                        "prompts_and_classes.txt:5: subject '../../../x'"),
    "truncated image": (RUN[:5] + ["--data-root", "{truncated}", "--no-score"], "{truncated-image}"),
    "data check truncated": (["data", "check", "dreambench", "--data-root", "{truncated}"], "{truncated-image}"),
    "data check subject escapes": (["data", "check", "dreambench", "--data-root", "{escape}"], "'../../../x'"),
    "data check root is a file": (["data", "check", "dreambench", "--data-root", "{a-file}"], "--data-root"),
    "data fetch dest is a file": (["data", "fetch", "dreambench", "--dest", "{a-file}"], "--dest"),
    "data no action": (["data"], "ACTION"),
    "score dev zero": (["score", "--suite", "dreambench", "--mini", "--images", "{manifest-dev-zero}",
                        "--out", "{root}/out"], "/dev/zero is not a regular image file"),
    "score passwd": (["score", "--suite", "dreambench", "--mini", "--images", "{manifest-passwd}",
                      "--out", "{root}/out"], "/etc/passwd"),
    "score missing images": (["score", "--suite", "dreambench", "--mini", "--images", "{root}/nowhere",
                              "--out", "{root}/out"], "--images"),
    "score out is a file": (["score", "--suite", "dreambench", "--mini", "--images", "{manifest-passwd}",
                             "--out", "{a-file}"], "--out"),
    "score not a run": (["score", "{root}"], "not a run directory"),
    "score batch 0": (["score", "{a-run}", "--batch-size", "0"], "--batch-size 0"),
    "score unknown metric": (["score", "{a-run}", "--metrics", "clipp"], "did you mean 'clip'"),
    "score metric param": (["score", "{a-run}", "--metric-param", "clip.colour=red"], "clip.colour"),
    "check baseline fields": (["check", "{a-run}", "--baseline", "{baseline}"], "older format"),
    "check baseline missing": (["check", "{a-run}", "--baseline", "{root}/nowhere.json"], "does not exist"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "plan too large": (RUN + ["--seeds", "0-9999", "--images-per-prompt", "1000"], "more than 1000000"),
    "subjects empty": (RUN + ["--subjects", ","], "--subjects ','"),
    "run unknown metric": (RUN + ["--metrics", "nope"], "unknown metric 'nope'"),
    "out empty": (RUN + ["--out", ""], "--out is empty"),
    "param out of range (method's own check)": (EZ + ["--param", "split_ratio=2"], "split_ratio"),
    "score run name escapes": (["score", "--suite", "dreambench", "--mini", "--images", "{manifest-passwd}",
                                "--name", "../x"], "--name"),
}


def _fill(argv, files):
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, world, tmp_path, capsys, monkeypatch):
    argv, culprit = CASES[case]
    files = {**world, "tmp": tmp_path}
    argv = _fill(argv, files)
    culprit = _fill([culprit], files)[0]
    if "--out" not in argv and argv[0] == "run":
        argv += ["--out", str(tmp_path / "out")]
    monkeypatch.chdir(tmp_path)                        # default output folders land here, if any
    monkeypatch.setattr("bench.models.load_components",
                        lambda *a, **k: pytest.fail("a model was loaded before the input was checked"))
    code = call(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and lines[0].startswith("error:"), captured.err
    assert culprit in lines[0], lines[0]
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "something was written"


def call(argv) -> int:
    """main(argv)'s exit status, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


class _Fake:
    def __init__(self, spec, name: str = "fake", mode: Literal["fast", "slow"] = "fast", steps: int = 5,
                 scale: float = 1.0, flag: bool = False, model: str | None = None):
        pass


def test_method_parameters_are_checked_against_the_constructor():
    from bench import BenchError
    from bench.registry import check_method_params

    ok = check_method_params("fake", _Fake, {"mode": "slow", "steps": 3, "scale": 2, "flag": 1, "model": None})
    assert ok == {"mode": "slow", "steps": 3, "scale": 2, "flag": True, "model": None}
    for params, message in (({"mode": "medium"}, "expects one of 'fast', 'slow'"),
                            ({"steps": 2.5}, "expects an integer"),
                            ({"scale": float("inf")}, "expects a finite number"),
                            ({"flag": "maybe"}, "expects a boolean"),
                            ({"stepz": 1}, "did you mean 'steps'? its parameters: flag, mode, model, scale, steps"),
                            ({"spec": 1}, "has no parameter 'spec'")):
        with pytest.raises(BenchError, match=message.replace("?", r"\?")):
            check_method_params("fake", _Fake, params)


@pytest.mark.parametrize("error, status, text", [
    (OSError(28, "No space left on device", "/runs/x/run.json"), 2,
     "error: /runs/x/run.json: No space left on device (the disk is full"),
    (PermissionError(13, "Permission denied", "/runs/x"), 2, "error: /runs/x: Permission denied"),
    (TypeError("a bug"), 1, "internal error: TypeError: a bug (a bug; run again with BENCH_DEBUG=1"),
])
def test_unexpected_errors_are_one_line_and_bugs_show_their_traceback_on_request(error, status, text, capsys,
                                                                                   monkeypatch):
    from bench.registry import Registry

    def fail(self):
        raise error

    monkeypatch.setattr(Registry, "entries", fail)
    monkeypatch.delenv("BENCH_DEBUG", raising=False)
    assert call(["ls"]) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(text), lines
    monkeypatch.setenv("BENCH_DEBUG", "1")
    with pytest.raises(type(error)):
        main(["ls"])
