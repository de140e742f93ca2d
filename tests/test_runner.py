"""The runner on a toy suite built in the test and the tiny sd baseline (in-process)."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bench import BenchError
from bench import runner
from bench.cli import main
from bench.registry import SUITES, Entry
from bench.store import RunStore
from bench.suites.base import Suite
from bench.types import Sample


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


def test_a_grown_plan_generates_only_the_new_keys(toy_root, tmp_path):
    out = tmp_path / "out"
    run_cli(*base_args(toy_root, out, "--seeds", "0", "--images-per-prompt", "1", "--subjects", "dog"))
    first = RunStore(out).records()
    run_cli(*base_args(toy_root, out, "--seeds", "0-1", "--images-per-prompt", "1"))
    second = RunStore(out).records()
    assert len(first) == 2 and len(second) == 8
    assert all(second[k]["sha256"] == first[k]["sha256"] for k in first)
    assert RunStore(out).read_run()["plan"]["seeds"] == [0, 1]


def test_mismatched_parameters_are_refused_naming_what_differs(toy_root, tmp_path):
    out = tmp_path / "out"
    run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1"))
    with pytest.raises(BenchError) as err:
        run_cli(*base_args(toy_root, out, "--seeds", "0", "--limit", "1", "--images-per-prompt", "1")[:-4],
                "--steps", "3", "--resolution", "64", "--device", "cpu", "--no-score", "--out", str(out))
    assert "steps: 2 -> 3" in str(err.value)


def test_same_request_same_bytes_whatever_the_batch(toy_root, tmp_path):
    common = ("--seeds", "0", "--images-per-prompt", "2", "--subjects", "dog")
    run_cli(*base_args(toy_root, tmp_path / "b1", *common, "--batch-size", "1"))
    run_cli(*base_args(toy_root, tmp_path / "b3", *common, "--batch-size", "3"))
    a, b = RunStore(tmp_path / "b1").records(), RunStore(tmp_path / "b3").records()
    assert len(a) == 4 and set(a) == set(b)
    assert {k: r["sha256"] for k, r in a.items()} == {k: r["sha256"] for k, r in b.items()}
    assert len({r["sha256"] for r in a.values()}) == 4          # and the images do differ


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
    assert "data for suite 'toy' not found at" in capsys.readouterr().err


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
    assert "huggingface-cli download someone/not-cached-model" in str(err.value)


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
