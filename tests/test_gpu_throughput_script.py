"""benchmarks/gpu_throughput.py runs start to finish on CPU (tiny preset, two steps) and writes
the JSON the performance table reads. Not a timing test: it checks keys, counts and that the
ratios are positive finite numbers."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from tolerance import PIXEL_TOLERANCE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
REQUIRED = ("date", "device", "versions", "ezigen_images_per_s", "sd_images_per_s", "overhead_ratio",
            "speedup_vs_release", "scoring_images_per_s", "peak_memory_gib")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_cpu_run_writes_the_report(script, tmp_path):
    path = script.main(["--device", "cpu", "--quick", "--steps", "2", "--batch-sizes", "2",
                        "--scoring-images", "4", "--score-batch", "2", "--unet-repeats", "1",
                        "--levers", "--out", str(tmp_path)])
    data = json.loads(Path(path).read_text())
    assert path.parent == tmp_path and path.name.startswith("throughput-cpu-tiny-")
    assert set(REQUIRED) <= set(data)
    for key in ("ezigen_images_per_s", "sd_images_per_s", "overhead_ratio", "speedup_vs_release",
                "scoring_images_per_s"):
        assert _positive_finite(data[key]), key
    assert data["peak_memory_gib"] is None and data["errors"] == {}   # CPU: no GPU memory to report
    assert data["versions"]["torch"] and data["config"]["preset"] == "tiny"
    # The replay really runs the released cost: 1 + 3 x 2 x 2 steps + 3 loops x 2 x 1 step.
    assert data["release"]["units_per_image"] == data["release"]["expected_units_per_image"] == 19
    # Ours: reference pass + 2 guided steps + 3 loops x 1 guided step.
    assert data["ezigen"]["2"]["units_per_image"] == 1 + 4 + 3 * 2 and data["ezigen"]["2"]["loops"] == 3
    assert set(data["levers"]) == {"default", "kv_cache_off", "vae_batched", "channels_last"}
    for name in ("kv_cache_off", "vae_batched", "channels_last"):
        assert data["levers"][name]["max_pixel_diff_vs_default"] <= PIXEL_TOLERANCE, name   # other kernels
    assert data["scoring"]["prefetch_max_score_diff"] == 0.0      # same decoder, same metrics
    assert _positive_finite(data["scoring"]["prefetch_images_per_s"])


def test_suggested_batch_size_follows_memory(script):
    assert script.suggested_batch_size({4: 6.0, 8: 10.0}, total_gib=100.0) == 88
    assert script.suggested_batch_size({4: 6.0}, total_gib=100.0) is None


def test_a_failing_section_is_recorded_not_fatal(script, capsys):
    errors = {}

    def broken():
        raise RuntimeError("out of memory")

    assert script.attempt(errors, "levers", broken) == {}
    assert errors == {"levers": "RuntimeError: out of memory"}
    assert script.attempt(errors, "sd", lambda: {"2": 1.0}) == {"2": 1.0} and set(errors) == {"levers"}
