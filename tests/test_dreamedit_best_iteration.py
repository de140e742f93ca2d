"""DreamEdit's official best-iteration rule (suite option official_iteration=best): the metric, the
records that keep every iteration's image, and EZIGen's edits that produce them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.dreamedit import OfficialDreamEditMetric

SIZE = 48


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _save(arr, path: Path) -> Path:
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("best")
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (SIZE, SIZE, 3))
    refs = tuple(_save(rng.integers(0, 255, (SIZE, SIZE, 3)), folder / f"ref{i}.png") for i in range(2))
    outputs = []
    for k in range(4):          # iterations drifting from the source towards a reference
        w = k / 4
        mixed = (1 - w) * source + w * np.asarray(Image.open(refs[0])) + rng.normal(0, 20, source.shape)
        outputs.append(_save(mixed.clip(0, 255), folder / f"iter{k + 1}.png"))
    return {"source": _save(source, folder / "source.png"), "refs": refs, "iterations": tuple(outputs)}


def _item(scene, image, iterations=()) -> ScoreItem:
    return ScoreItem(key="dreamedit/dog/000/s0/i0", image=image, seed=0, subject="dog", class_noun="dog",
                     eval_text="photo of a dog", reference_images=scene["refs"], subject_images=scene["refs"][:1],
                     source_image=scene["source"], iteration_images=tuple(iterations))


def _released_best(per_iteration: list[dict]) -> dict:
    """DreamEdit's src/auto_evaluation.py, transcribed: per iteration the geometric mean (negatives
    as 0.001) of [dino_sub, clip_sub, dino_back, dino_back]; the sample keeps
    iterations_geo_avg.index(max(iterations_geo_avg)) and that iteration's four scores."""
    geo = []
    for row in per_iteration:
        values = np.array([row["official_dino_sub"], row["official_clip_i_sub"], row["official_dino_back"],
                           row["official_dino_back"]])
        values = np.where(values < 0, 0.001, values)
        geo.append(values.prod() ** (1.0 / len(values)))
    best = geo.index(max(geo))
    return {**per_iteration[best], "geo": geo[best], "index": best}


def _prefixes(row: dict) -> dict:
    return {k.split("/")[0]: v for k, v in row.items()}


def test_best_iteration_follows_the_released_rule(scene):
    final = OfficialDreamEditMetric(preset="tiny")
    best = OfficialDreamEditMetric(preset="tiny", iteration="best")
    per_iteration = [_prefixes(r) for r in final.score([_item(scene, p) for p in scene["iterations"]])]
    expected = _released_best(per_iteration)
    got = _prefixes(best.score([_item(scene, scene["iterations"][-1], scene["iterations"])])[0])
    for part in ("dino_sub", "dino_back", "clip_i_sub", "clip_i_back"):
        assert got[f"official_best_{part}"] == pytest.approx(expected[f"official_{part}"], abs=1e-6)
    assert got["official_best_overall_as_released"] == pytest.approx(expected["geo"], abs=1e-6)
    assert got["official_best_overall"] == pytest.approx(expected["official_overall"], abs=1e-6)
    # the scene is built so that the best is not the last iteration: the option changes the score
    assert expected["index"] != len(scene["iterations"]) - 1
    assert got["official_best_overall_as_released"] > per_iteration[-1]["official_overall_as_released"]
    assert all(i.startswith("official_best_") for i in best.ids) and not set(best.ids) & set(final.ids)


def test_without_kept_iterations_best_scores_the_final_image(scene):
    final = OfficialDreamEditMetric(preset="tiny")
    best = OfficialDreamEditMetric(preset="tiny", iteration="best")
    image = scene["iterations"][2]
    a = _prefixes(final.score([_item(scene, image)])[0])
    b = _prefixes(best.score([_item(scene, image)])[0])
    assert b["official_best_overall"] == pytest.approx(a["official_overall"], abs=1e-6)
    with pytest.raises(BenchError, match="iteration"):
        OfficialDreamEditMetric(preset="tiny", iteration="first")


def test_records_keep_every_iteration_and_scoring_reads_them(tmp_path, scene):
    from bench.store import RunStore
    store = RunStore(tmp_path / "run")
    store.root.mkdir(parents=True, exist_ok=True)
    final = Image.open(scene["iterations"][-1]).convert("RGB")
    final.info["bench"] = {"loops": 4}
    final.info["bench_iterations"] = [Image.open(p).convert("RGB") for p in scene["iterations"]]
    with store.writer(0) as writer:
        record = writer.write("dreamedit/dog/000/s0/i0", 0, final, 1.0, final.info["bench"])
    assert [it["image"] for it in record["iterations"]] == [f"images/dog/000/s0/i0.iter{k}.png" for k in range(1, 5)]
    for it, original in zip(record["iterations"], scene["iterations"]):
        assert np.array_equal(np.asarray(Image.open(store.root / it["image"])), np.asarray(Image.open(original)))
    assert store.records()["dreamedit/dog/000/s0/i0"]["iterations"] == record["iterations"]


def test_suite_option_sets_the_metric_and_is_checked():
    from bench.suites import REPO_ROOT
    from bench.suites.dreamedit import DreamEdit
    root = REPO_ROOT / DreamEdit.mini_root
    assert DreamEdit(root).metric_params() == {"dreamedit-official": {"iteration": "final"}}
    assert DreamEdit(root, official_iteration="best").metric_params() == {"dreamedit-official": {"iteration": "best"}}
    with pytest.raises(BenchError, match="official_iteration"):
        DreamEdit(root, official_iteration="last")
    labels = DreamEdit.leaderboard_columns
    assert "final image" in labels["official_overall"] and "best iteration" in labels["official_best_overall"]


def test_ezigen_edits_keep_every_loop_when_asked(tmp_path):
    from bench.types import GenRequest, LoadSpec
    from methods.ezigen import EZIGenMethod
    rng = np.random.default_rng(1)
    subject = _save(rng.integers(0, 255, (32, 32, 3)), tmp_path / "subject.png")
    source = _save(rng.integers(0, 255, (32, 32, 3)), tmp_path / "source.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    mask = _save(mask, tmp_path / "mask.png")
    request = GenRequest(key="dreamedit/dog/000/s0/i0", prompt="photo of a sks dog", class_noun="dog",
                         subject_images=(subject,), seed=1, source_image=source, mask=mask)
    spec = LoadSpec(preset="tiny", adapter="init", num_inference_steps=5, resolution=32)
    method = EZIGenMethod(spec, loops=2, subject_background="keep", keep_iterations=True)
    (image,) = method.generate([request])
    kept = image.info["bench_iterations"]
    assert len(kept) == 2 == image.info["bench"]["loops"]
    assert kept[-1].tobytes() == image.tobytes() and kept[0].tobytes() != image.tobytes()
    plain = EZIGenMethod(spec, loops=2, subject_background="keep")
    (again,) = plain.generate([request])
    assert "bench_iterations" not in again.info and again.tobytes() == image.tobytes()
