"""The runner on a toy suite built in the test and the tiny sd baseline (in-process)."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench import runner
from bench.cli import main
from bench.registry import SUITES, Entry
from bench.store import RunStore
from bench.suites.base import Suite
from bench.types import GenRequest, Sample


class ToySuite(Suite):
    name = "toy"
    default_images_per_prompt = 2
    default_seeds = (0, 1)
    default_metrics = ()

    def samples(self):
        out = []
        for subject, noun in (("dog", "dog"), ("vase", "vase")):
            image = self.root / f"{subject}.png"
            for i, place in enumerate(("in the jungle", "on the beach")):
                text = f"a {noun} {place}"
                out.append(Sample("toy", subject, noun, i, text, text, (image,), (image,), "object"))
        return out


class EditToySuite(ToySuite):
    name = "toy-edit"
    task = "edit"


@pytest.fixture
def toy_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for name, colour in (("dog", (200, 120, 40)), ("vase", (30, 60, 200))):
        Image.new("RGB", (32, 32), colour).save(root / f"{name}.png")
    monkeypatch.setitem(SUITES._entries, "toy", Entry("toy", f"{__name__}:ToySuite", "toy suite"))
    monkeypatch.setitem(SUITES._entries, "toy-edit", Entry("toy-edit", f"{__name__}:EditToySuite", "toy edit"))
    return root


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    runner.configure(parser)
    args = parser.parse_args(list(argv))
    return runner.run(args)


def base_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--method", "sd", "--suite", "toy", "--data-root", str(root), "--preset", "tiny",
            "--steps", "2", "--resolution", "64", "--device", "cpu", "--no-score", "--out", str(out), *extra]


def test_dry_run_prints_the_plan_without_loading_a_model(toy_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("bench.models.load_components", lambda *a, **k: pytest.fail("model loaded"))
    assert run_cli(*base_args(toy_root, tmp_path / "out", "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "subjects   2" in text and "prompts    4" in text
    assert "per seed   8 images" in text and "total      16 images" in text
    assert not (tmp_path / "out").exists()


def test_the_plan_is_a_frozen_configuration_that_execute_carries_out(toy_root, tmp_path, monkeypatch, capsys):
    from dataclasses import FrozenInstanceError

    from bench.plan import plan_run

    parser = argparse.ArgumentParser()
    runner.configure(parser)
    out = tmp_path / "out"
    args = parser.parse_args(base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1", "--limit", "3"))
    with monkeypatch.context() as patched:
        patched.setattr("bench.models.load_components", lambda *a, **k: pytest.fail("model loaded"))
        config = plan_run(args)
    assert not out.exists()                                   # nothing written by the plan
    assert (config.plan.total, config.plan.subjects, config.random_weights) == (3, ["dog", "vase"], True)
    with pytest.raises(FrozenInstanceError):
        config.batch_size = 8
    assert runner.execute(config) == 0
    assert sorted(RunStore.open_existing(out).records()) == sorted(r.key for r in config.plan.requests())
    assert "weights: random weights" in capsys.readouterr().err      # as every report of the run says


def test_run_records_every_key_once_and_resume_does_nothing(toy_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(*base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1")) == 0
    store = RunStore.open_existing(out)
    records = store.records()
    assert len(records) == 4
    assert all(Image.open(out / r["image"]).size == (64, 64) for r in records.values())
    assert all(r["unet_calls"] == 4 for r in records.values())        # 2 steps x guided pair
    run = store.read_run()
    assert run["random_weights"] is True and run["weights_status"] == "random weights"
    assert run["identity"]["model"] == "preset:tiny"

    from methods.sd import StableDiffusionMethod
    monkeypatch.setattr(StableDiffusionMethod, "__init__", lambda *a, **k: pytest.fail("reloaded"))
    assert run_cli(*base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1")) == 0
    lines = (out / "generations" / "rank-00000.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_grown_plan_generates_only_the_new_keys(toy_root, tmp_path, monkeypatch):
    from methods.sd import StableDiffusionMethod
    generated = []
    original = StableDiffusionMethod.generate
    monkeypatch.setattr(StableDiffusionMethod, "generate",
                        lambda self, batch: generated.extend(r.key for r in batch) or original(self, batch))
    out = tmp_path / "out"
    run_cli(*base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1", "--subjects", "dog"))
    first = RunStore(out).records()
    generated.clear()
    run_cli(*base_args(toy_root, out, "--seeds", "0-1", "--images-per-prompt", "1"))
    second = RunStore(out).records()
    assert len(first) == 2 and len(second) == 8
    # more seeds and subjects form new batches: no recorded image goes through the model again
    assert sorted(generated) == sorted(set(second) - set(first))
    plan = RunStore(out).read_run()["plan"]
    assert plan["seeds"] == [0, 1] and plan["images_per_seed"] * len(plan["seeds"]) == len(second)


def test_mismatched_parameters_are_refused_naming_what_differs(toy_root, tmp_path):
    out = tmp_path / "out"
    run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1"))
    with pytest.raises(BenchError) as err:
        run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1")[:-4],
                "--steps", "3", "--resolution", "64", "--device", "cpu", "--no-score", "--out", str(out))
    assert "steps: 2 -> 3" in str(err.value)


def _hashes(out: Path) -> dict[str, str]:
    return {k: r["sha256"] for k, r in RunStore(out).records().items()}


def test_interrupted_resumed_and_sharded_runs_give_the_same_bytes(toy_root, tmp_path):
    """Same command, same machine: uninterrupted == killed mid-batch and resumed == 2 shards."""
    common = ("--seeds", "0", "--images-per-prompt", "2", "--batch-size", "3")   # batches of 3, 1 per subject
    assert run_cli(*base_args(toy_root, tmp_path / "whole", *common)) == 0
    whole = _hashes(tmp_path / "whole")
    assert len(whole) == 8 and len(set(whole.values())) == 8                     # the images do differ

    for shard in ("1/2", "0/2"):
        assert run_cli(*base_args(toy_root, tmp_path / "sharded", *common, "--shard", shard)) == 0
    assert _hashes(tmp_path / "sharded") == whole

    # A kill in the middle of the first batch: 2 of its 3 records made it, the third image was
    # written but its line was not, everything after is missing.
    out = tmp_path / "resumed"
    assert run_cli(*base_args(toy_root, out, *common)) == 0
    records_file = out / "generations" / "rank-00000.jsonl"
    lines = records_file.read_text().splitlines()
    kept = [json.loads(line) for line in lines[:2]]
    for line in lines[3:]:
        (out / json.loads(line)["image"]).unlink()
    records_file.write_text("".join(line + "\n" for line in lines[:2]))
    assert run_cli(*base_args(toy_root, out, *common)) == 0
    assert _hashes(out) == whole
    lines = records_file.read_text().splitlines()
    assert len(lines) == 8 and [json.loads(line) for line in lines[:2]] == kept   # nothing rewritten


def test_batch_size_is_part_of_the_run_identity(toy_root, tmp_path):
    out = tmp_path / "out"
    run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1", "--batch-size", "2"))
    with pytest.raises(BenchError, match="batch_size: 2 -> 1"):
        run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1",
                           "--batch-size", "1"))


def test_batches_are_cut_by_position_within_a_subject():
    requests = [GenRequest(key=f"toy/{s}/000/s0/i{k}", prompt="p", class_noun="n", subject_images=(Path(s),), seed=k)
                for s in ("a", "b") for k in range(5)]
    batches = runner.plan_batches(requests, 2)
    assert [[r.key[-6:] for r in b] for b in batches] == [
        ["/s0/i0", "/s0/i1"], ["/s0/i2", "/s0/i3"], ["/s0/i4"], ["/s0/i0", "/s0/i1"], ["/s0/i2", "/s0/i3"], ["/s0/i4"]]
    assert [b[0].subject_images for b in batches] == [(Path("a"),)] * 3 + [(Path("b"),)] * 3


# Across batch sizes images agree within the cross-kernel tolerance (tests/tolerance.py).
from tolerance import MEAN_TOLERANCE, PIXEL_TOLERANCE  # noqa: E402


def test_images_agree_across_batch_sizes_within_a_measured_tolerance(toy_root, tmp_path):
    common = ("--seeds", "0", "--images-per-prompt", "2", "--subjects", "dog")
    run_cli(*base_args(toy_root, tmp_path / "b1", *common, "--batch-size", "1"))
    run_cli(*base_args(toy_root, tmp_path / "b3", *common, "--batch-size", "3"))
    a, b = RunStore(tmp_path / "b1").records(), RunStore(tmp_path / "b3").records()
    assert len(a) == 4 and set(a) == set(b)
    for key in a:
        x = np.asarray(Image.open(tmp_path / "b1" / a[key]["image"]), dtype=np.int16)
        y = np.asarray(Image.open(tmp_path / "b3" / b[key]["image"]), dtype=np.int16)
        assert np.abs(x - y).max() <= PIXEL_TOLERANCE and np.abs(x - y).mean() <= MEAN_TOLERANCE, key
    assert len({r["sha256"] for r in a.values()}) == 4          # and the images do differ,
    first, second = (np.asarray(Image.open(tmp_path / "b1" / r["image"]), dtype=np.int16) for r in list(a.values())[:2])
    assert np.abs(first - second).mean() > 20 * MEAN_TOLERANCE  # by far more than the tolerance


def test_shards_split_the_plan_without_overlap(toy_root, tmp_path):
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        run_cli(*base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1", "--shard", shard))
    files = sorted((out / "generations").glob("rank-*.jsonl"))
    keys = [json.loads(line)["key"] for f in files for line in f.read_text().splitlines()]
    assert len(files) == 2 and len(keys) == 4 and len(set(keys)) == 4


@pytest.mark.parametrize("extra, message", [
    (("--seeds", "zero"), "--seeds 'zero'"),
    (("--subjects", "dog,unicorn"), "unknown subject(s) unicorn"),
    (("--limit", "0"), "--limit 0: must be at least 1"),
    (("--param", "novalue"), "--param 'novalue': expected KEY=VALUE"),
    (("--shard", "2/2"), "--shard '2/2'"),
    (("--adapter", "/no/such/adapter"), "--adapter /no/such/adapter: no such file"),
])
def test_bad_options_give_one_clear_message(toy_root, tmp_path, extra, message):
    with pytest.raises(BenchError, match=None) as err:
        run_cli(*base_args(toy_root, tmp_path / "out", *extra))
    assert message in str(err.value)


def test_cli_prints_one_line_and_exits_2(toy_root, tmp_path, capsys):
    assert main(["run", "--method", "sdd", "--suite", "toy", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown method 'sdd'; did you mean 'sd'? (see `python -m bench ls`)"]
    assert main(["run", "--method", "sd", "--suite", "toy", "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_methods_without_the_suites_task_are_refused(toy_root, tmp_path):
    with pytest.raises(BenchError, match="cannot do the 'edit' task"):
        run_cli("--method", "sd", "--suite", "toy-edit", "--data-root", str(toy_root), "--preset", "tiny",
                "--out", str(tmp_path / "out"))


def test_missing_real_weights_give_one_clear_message(toy_root, tmp_path):
    args = base_args(toy_root, tmp_path / "out")
    args[args.index("--preset"):args.index("--preset") + 2] = ["--weights", str(tmp_path / "no-model")]
    with pytest.raises(BenchError, match="neither an existing folder nor a Hugging Face id"):
        run_cli(*args)
    args[args.index("--weights") + 1] = "someone/not-cached-model"
    with pytest.raises(BenchError) as err:
        run_cli(*args)
    assert "model weights 'someone/not-cached-model' are not available" in str(err.value)
    assert "hf download someone/not-cached-model" in str(err.value)


class UnmaskedEditSuite(ToySuite):
    """An edit suite where one source has no mask (e.g. Grounded-SAM found nothing)."""
    name = "toy-unmasked"
    task = "edit"

    def samples(self):
        out = []
        for s in super().samples():
            mask = None if (s.subject, s.prompt_index) == ("dog", 0) else s.subject_images[0]
            out.append(replace(s, suite=self.name, source_image=s.subject_images[0], mask=mask))
        return out


def test_edit_samples_without_a_mask_are_skipped_and_recorded(toy_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SUITES._entries, "toy-unmasked",
                        Entry("toy-unmasked", f"{__name__}:UnmaskedEditSuite", "toy"))
    assert run_cli("--method", "ezigen", "--adapter", "init", "--suite", "toy-unmasked", "--data-root",
                   str(toy_root), "--preset", "tiny", "--dry-run", "--out", str(tmp_path / "out")) == 0
    captured = capsys.readouterr()
    assert "1 edit sample(s) have no mask and are skipped: toy-unmasked/dog/000" in captured.err
    assert "prompts    3" in captured.out


def test_smoke_preset_runs_adapter_methods_with_the_untrained_adapter(tmp_path, capsys):
    assert run_cli("--method", "ezigen", "--suite", "dreambench", "--preset", "smoke", "--limit", "1",
                   "--steps", "2", "--param", "max_loops=1", "--param", "min_loops=1", "--no-score",
                   "--out", str(tmp_path / "out")) == 0
    assert "runs with --adapter init" in capsys.readouterr().err
    run = RunStore(tmp_path / "out").read_run()
    assert run["identity"]["adapter"] == "init"
    assert "untrained adapter" in run["weights_status"] and "random weights" in run["weights_status"]
    record = next(iter(RunStore(tmp_path / "out").records().values()))
    assert record["loops"] == 1 and record["unet_calls"] > 0


def test_the_same_shard_started_twice_is_refused(toy_root, tmp_path, monkeypatch):
    import os
    out = tmp_path / "out"
    args = ("--seeds", "0", "--limit", "1", "--images-per-prompt", "1")
    run_cli(*base_args(toy_root, out, *args))
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with RunStore(out).lock_shard(0):             # as if another process held shard 0 right now
        monkeypatch.setattr("bench.models.load_components", lambda *a, **k: pytest.fail("model loaded"))
        with pytest.raises(BenchError, match=f"already being written by process {os.getpid()}"):
            run_cli(*base_args(toy_root, out, *args, "--images-per-prompt", "2"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_a_damaged_image_is_regenerated_with_the_recorded_bytes(toy_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("--seeds", "0", "--subjects", "dog", "--images-per-prompt", "1", "--batch-size", "2")
    run_cli(*base_args(toy_root, out, *args))
    before = _hashes(out)
    victim = out / next(iter(RunStore(out).records().values()))["image"]
    victim.write_bytes(victim.read_bytes()[:50])
    capsys.readouterr()
    run_cli(*base_args(toy_root, out, *args))
    assert "1 recorded image(s) fail their check and are regenerated" in capsys.readouterr().err
    assert _hashes(out) == before and RunStore(out).done_keys(verify=True) == set(before)


def test_a_subject_name_from_a_data_file_cannot_leave_the_run(tmp_path, monkeypatch):
    import shutil
    from bench.suites import REPO_ROOT
    data = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "datasets" / "mini-dreambench", data)
    prompts = data / "dataset" / "prompts_and_classes.txt"
    prompts.write_text(prompts.read_text().replace("dog,dog", "../../../escaped,dog"))
    (data / "dataset" / "dog").rename(data / "escaped")            # so that the folder would resolve
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchError, match=r"prompts_and_classes.txt:5: subject '\.\./\.\./\.\./escaped'"):
        run_cli("--method", "sd", "--suite", "dreambench", "--data-root", str(data), "--preset", "tiny",
                "--steps", "1", "--resolution", "64", "--no-score", "--out", str(tmp_path / "run" / "a" / "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
