"""`bench doctor` and `bench run --dry-run`: every missing piece of a run named at once, no model loaded.

The Hugging Face cache is a fake one in a temporary HF_HOME: empty, then with some pieces laid out
as huggingface_hub lays them (snapshots/<commit>/..., refs/main).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bench.cli import main
from bench.needs import DIFFUSERS_FILES
from bench.suites import REPO_ROOT

MINI = str(REPO_ROOT / "datasets" / "mini-dreambench")
HEADLINE = ["--method", "ezigen", "--suite", "dreambench"]


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """Empty Hugging Face and torch caches; loading any model fails the test."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("bench.models.load_components", lambda *a, **k: pytest.fail("a model was loaded"))
    return tmp_path


def cache_repo(home, repo: str, files) -> None:
    """Lay out ``repo`` in the fake hub cache with small placeholder files."""
    folder = home / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / "0123abcd"
    for name in files:
        path = snapshot / name.split("|")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0123abcd")


def lines_of(text: str) -> dict[str, str]:
    """{piece line: status} for the checklist's piece lines."""
    return {line.split(None, 2)[-1]: line.split()[0] for line in text.splitlines()
            if line.startswith(("  ok ", "  MISSING "))}


def test_an_empty_cache_names_every_missing_piece_at_once(empty_home, capsys):
    assert main(["doctor", *HEADLINE]) == 2
    captured = capsys.readouterr()
    out = captured.out
    status = lines_of(out)
    assert set(status.values()) == {"MISSING"}
    text = "\n".join(status)
    for piece in ("stabilityai/stable-diffusion-2-1-base", "EZIGen adapter", "grounding-dino-tiny", "sam-vit-huge",
                  "CLIP ViT-B-32 (openai)", "dreambench data", "vit_small_patch16_224.dino"):
        assert piece in text, piece
    assert len(status) == 7                        # CLIP is needed by EZIGen and by the metric: one line
    assert "[method ezigen, metric clip]" in text
    assert "checkpoint-200000.zip" in out and "1uucz9IQFT2NbwLvazdnOX2vAROn-0nxU" in out
    assert "hf download stabilityai/stable-diffusion-2-1-base" in out
    assert "7 of 7 pieces missing" in captured.err


def test_pieces_in_the_cache_count_as_present_and_the_rest_stay_missing(empty_home, capsys):
    cache_repo(empty_home, "stabilityai/stable-diffusion-2-1-base", DIFFUSERS_FILES)
    cache_repo(empty_home, "timm/vit_small_patch16_224.dino", ["model.safetensors"])
    adapter = empty_home / "checkpoint-200000"
    adapter.mkdir()
    save_file({"learnable_weights": torch.zeros(16)}, str(adapter / "model.safetensors"))
    assert main(["doctor", *HEADLINE, "--adapter", str(adapter), "--data-root", MINI]) == 2
    captured = capsys.readouterr()
    out = captured.out
    status = lines_of(out)
    present = {p for p, s in status.items() if s == "ok"}
    assert any("stable-diffusion-2-1-base" in p for p in present)
    assert any("EZIGen adapter" in p for p in present)
    assert any("dreambench data" in p for p in present)
    assert any("vit_small_patch16_224.dino" in p for p in present)
    missing = {p for p, s in status.items() if s == "MISSING"}
    assert len(missing) == 3 and all(any(k in p for p in missing) for k in ("grounding-dino", "sam-vit-huge", "ViT-B-32"))
    assert "3 of 7 pieces missing" in captured.err


def test_a_cached_copy_lacking_a_file_is_missing_and_says_which(empty_home, capsys):
    cache_repo(empty_home, "stabilityai/stable-diffusion-2-1-base", [f for f in DIFFUSERS_FILES if "unet/diff" not in f])
    assert main(["doctor", "--method", "sd", "--suite", "dreambench", "--data-root", MINI, "--no-score"]) == 2
    out = capsys.readouterr().out
    assert "lacks unet/diffusion_pytorch_model.safetensors" in out


def test_everything_in_place_exits_0(empty_home, capsys):
    cache_repo(empty_home, "stabilityai/stable-diffusion-2-1-base", DIFFUSERS_FILES)
    for repo, name in (("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors"),
                       ("timm/vit_small_patch16_224.dino", "pytorch_model.bin")):
        cache_repo(empty_home, repo, [name])
    assert main(["doctor", "--method", "sd", "--suite", "dreambench", "--data-root", MINI]) == 0
    assert "all 4 pieces in place" in capsys.readouterr().out


def test_dry_run_prints_the_checklist_then_the_plan_and_exits_2_when_a_piece_is_missing(empty_home, capsys):
    assert main(["run", *HEADLINE, "--data-root", MINI, "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "MISSING" in out and "EZIGen adapter" in out
    assert "total      " in out                    # the plan is printed too
    assert main(["run", *HEADLINE, "--preset", "smoke", "--dry-run", "--out", str(empty_home / "o")]) == 0
    assert "MISSING" not in capsys.readouterr().out


def test_a_method_without_requirements_falls_back_to_its_base_model(empty_home, capsys, monkeypatch):
    from bench.registry import METHODS, Entry

    monkeypatch.setitem(METHODS._entries, "bare", Entry("bare", "docs.examples.copy_subject:CopySubject", "", {}))
    assert main(["doctor", "--method", "bare", "--suite", "dreambench", "--data-root", MINI, "--no-score"]) == 2
    assert "the method declares no other pieces" in capsys.readouterr().out


def test_bad_options_fail_before_the_checklist(empty_home, capsys):
    assert main(["doctor", *HEADLINE, "--resolution", "7"]) == 2
    captured = capsys.readouterr()
    assert "--resolution" in captured.err and "MISSING" not in captured.out


def test_the_declared_hub_repos_are_where_the_libraries_fetch_from():
    from open_clip.pretrained import get_pretrained_cfg
    from timm.models import get_pretrained_cfg as timm_cfg

    from bench.needs import CLIP_HUB, TIMM_SIZES

    for (arch, tag), (repo, _) in CLIP_HUB.items():
        assert get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/") == repo
    for name in TIMM_SIZES:
        assert timm_cfg(name).hf_hub_id == f"timm/{name}"


# ---- every piece of every combination, with its size -------------------------------------------
@pytest.fixture
def no_metric_homes(empty_home, monkeypatch):
    """DreamSim's and insightface's folders inside the temporary home too."""
    monkeypatch.setenv("DREAMSIM_HOME", str(empty_home / "dreamsim"))
    monkeypatch.setenv("HOME", str(empty_home / "home"))
    return empty_home


def missing_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  MISSING ")]


def test_the_dreambench_plus_protocol_lists_the_judge_and_dreamsim_pieces(no_metric_homes, capsys):
    assert main(["doctor", "--method", "sd", "--suite", "dreambench-plus"]) == 2
    text = "\n".join(missing_lines(capsys.readouterr().out))
    for piece in ("dreambench-plus data", "DreamSim ensemble weights", "judge instruction files",
                  "judge model Qwen/Qwen2.5-VL-7B-Instruct"):
        assert piece in text, piece


def test_metric_params_change_what_is_needed(no_metric_homes, capsys):
    prompts = no_metric_homes / "prompts"
    prompts.mkdir()
    for name in ("user_prompt_subject_full.txt", "gpt_prompt_subject_full.txt"):
        (prompts / name).write_text("x")
    dreamsim = no_metric_homes / "ds"
    from bench.metrics.dreamsim import REQUIRED_FILES
    for name in REQUIRED_FILES["dino_vitb16"]:
        (dreamsim / name).mkdir(parents=True)
    argv = ["doctor", "--method", "sd", "--suite", "dreambench-plus", "--metrics", "judge,dreamsim",
            "--metric-param", "judge.endpoint=http://localhost:8000/v1", "--metric-param", f"judge.prompts={prompts}",
            "--metric-param", "dreamsim.variant=dino_vitb16", "--metric-param", f"dreamsim.cache_dir={dreamsim}"]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "Qwen2.5-VL" not in out                       # an endpoint judges: no local model
    assert "judge instruction files" in out and "DreamSim dino_vitb16 weights" in out
    assert not any("judge" in line or "DreamSim" in line for line in missing_lines(out))


def test_a_method_that_cannot_do_the_suites_task_is_one_error_before_any_list(no_metric_homes, capsys):
    assert main(["doctor", "--method", "sd", "--suite", "dreamedit"]) == 2
    captured = capsys.readouterr()
    assert "cannot do the 'edit' task" in captured.err and "MISSING" not in captured.out


def test_dreamedit_names_the_dreambench_data_it_reads_too(no_metric_homes, capsys):
    assert main(["doctor", "--method", "ezigen", "--suite", "dreamedit"]) == 2
    text = "\n".join(missing_lines(capsys.readouterr().out))
    assert "dreamedit data" in text and "dreambench data" in text and "tianleliphoebe/DreamEditBench" not in text


@pytest.mark.parametrize("suite", ["dreambench", "dreamedit", "fastcomposer", "dreambench-plus"])
def test_every_missing_piece_of_every_method_has_a_size_and_a_way_to_get_it(no_metric_homes, capsys, suite):
    from bench.registry import METHODS, SUITES

    task = SUITES.get(suite).load().task
    methods = [m for m in METHODS.names() if task in getattr(METHODS.get(m).load(), "tasks", {"generate"})
               and hasattr(METHODS.get(m).load(), "requirements")]    # not the docs' example methods, which
    #                                                                   # declare nothing (their base model: size "?")
    for method in methods:
        metrics = "judge,dreamsim,faceid,arcface" if method == methods[0] else None
        assert main(["doctor", "--method", method, "--suite", suite, *(["--metrics", metrics] if metrics else [])]) == 2
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1
        lines = captured.out.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  MISSING "):
                assert line.split()[1] != "?", (method, line)
                assert lines[i + 2].strip().startswith("get it: "), (method, line)


def test_the_trained_reference_variants_need_a_trained_folder_even_with_the_smoke_preset(no_metric_homes, capsys):
    out_dir = str(no_metric_homes / "o")
    assert main(["doctor", "--method", "ezigen", "--suite", "dreambench", "--preset", "smoke", "--out", out_dir]) == 0
    capsys.readouterr()
    assert main(["doctor", "--method", "ezigen-ref-trained-t1", "--suite", "dreambench", "--preset", "smoke",
                 "--out", out_dir]) == 2
    text = "\n".join(missing_lines(capsys.readouterr().out))
    assert "trained reference UNet" in text


def test_a_data_root_not_fetched_yet_is_a_missing_piece_among_the_others(no_metric_homes, capsys):
    target = no_metric_homes / "later" / "dreambench"
    assert main(["doctor", *HEADLINE, "--data-root", str(target)]) == 2
    captured = capsys.readouterr()
    assert len(missing_lines(captured.out)) == 7 and str(target) in captured.out
    assert "7 of 7 pieces missing" in captured.err
    (no_metric_homes / "file").write_text("x")
    assert main(["doctor", *HEADLINE, "--data-root", str(no_metric_homes / "file")]) == 2
    assert "expected a folder" in capsys.readouterr().err
