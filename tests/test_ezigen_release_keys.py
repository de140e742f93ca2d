"""The release's adapter keys for SD 2.1-base (tests/fixtures/ezigen-official-adapter-keys.txt, read
from the reference code's own model for SD 2.1-base): our export must name and shape them exactly,
and a checkpoint with those keys must load into the real architecture (built on the meta device)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from methods.ezigen import CheckpointError, attach_adapter, load_adapter_state

FIXTURE = Path(__file__).parent / "fixtures" / "ezigen-official-adapter-keys.txt"


def _release_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in FIXTURE.read_text().splitlines():
        name, shape = line.split()
        keys[name] = tuple(int(d) for d in shape.split("x"))
    return keys


@pytest.fixture(scope="module")
def meta_adapter():
    from bench.models import build_preset
    components = build_preset("sd21-random", device="meta")
    return attach_adapter(components.unet)


def test_fixture_is_the_release_list():
    keys = _release_keys()
    assert len(keys) == 113 and keys["learnable_weights"] == (16,)


def test_export_names_and_shapes_equal_the_release(meta_adapter):
    ours = {k: tuple(v.shape) for k, v in meta_adapter.official_state_dict().items()}
    assert ours == _release_keys()


def test_release_state_loads_and_a_missing_key_is_refused_in_one_line(meta_adapter):
    state = {k: torch.empty(shape, device="meta") for k, shape in _release_keys().items()}
    load_adapter_state(meta_adapter, state, "release-shaped state")
    missing = "mid_block.attentions.0.transformer_blocks.0.adapter.to_q.weight"
    del state[missing]
    with pytest.raises(CheckpointError) as info:
        load_adapter_state(meta_adapter, state, "release-shaped state")
    assert missing in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BENCH_SLOW") != "1", reason="real SD 2.1-base architecture: BENCH_SLOW=1")
def test_release_folder_runs_through_bench_run_on_sd21(tmp_path):
    """An accelerate folder with the release's keys (random values) for the real SD 2.1-base
    architecture loads through `bench run --adapter` and generates; one key missing: one line."""
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.ones(s) if k == "learnable_weights" else torch.randn(s, generator=gen) * 0.02)
             for k, s in _release_keys().items()}
    folder = tmp_path / "checkpoint-release"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    cmd = [sys.executable, "-m", "bench", "run", "--method", "ezigen-allstep", "--suite", "dreambench",
           "--preset", "sd21-random", "--data-root", str(Path(__file__).parents[1] / "datasets" / "mini-dreambench"), "--adapter", str(folder), "--limit", "1",
           "--images-per-prompt", "1", "--seeds", "0", "--resolution", "64", "--steps", "2", "--no-score",
           "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "run").rglob("*.png"))
    del state["learnable_weights"]
    save_file(state, str(folder / "model.safetensors"))
    done = subprocess.run(cmd[:-1] + [str(tmp_path / "run2")], capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 2 and "learnable_weights" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2
