"""`bench agree`: the readers (ImagenHub rater TSVs, DreamBench++'s release layout raw and merged,
a long table), equality with the anchors' own computations on files in their formats, the join of
scores to ratings, the JSON fields, and one-line errors for bad input."""

from __future__ import annotations

import json
import math

import krippendorff
import numpy as np
import pandas as pd
import pytest

from bench.cli import main

MODELS = ("ModelA", "Model-B", "model c")
LEVELS = (0.0, 0.5, 1.0)


def imagenhub_folder(root, raters=3, items=40, seed=0, models=MODELS, missing=False):
    """Rater TSVs in ImagenHub's layout: latent quality per (model, uid) plus rater noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    quality = rng.normal(size=(len(models), items, 2)) + np.array([0.0, 0.8])
    for k in range(1, raters + 1):
        noisy = quality + rng.normal(0, 0.6, quality.shape)
        cells = np.clip(np.round(noisy + 0.5) / 2, 0, 1)
        lines = ["uid\t" + "\t".join(models)]
        for i in range(items):
            row = [f"[{cells[m, i, 0]:g}, {cells[m, i, 1]:g}]" for m in range(len(models))]
            if missing and k == 2 and i % 7 == 0:
                row[0] = ""
            lines.append(f"sample_{i}.jpg\t" + "\t".join(row))
        (root / f"{root.name}_rater{k}.tsv").write_text("\n".join(lines) + "\n")
    return root


def humaneval_reference(folder):
    """ImagenHub humaneval.py's logic re-derived: per rater the column mean, then the mean over
    raters (apply_average=True); O = sqrt(SC * PQ) per rating; ordinal alpha of raters x items."""
    frames = [pd.read_csv(p, sep="\t") for p in sorted(folder.glob("*.tsv"))]
    out = {}
    for model in frames[0].columns[1:]:
        cells = np.array([[json.loads(c) for c in f[model]] for f in frames])      # raters x items x 2
        aspects = {"SC": cells[..., 0], "PQ": cells[..., 1], "O": np.sqrt(cells[..., 0] * cells[..., 1])}
        for aspect, data in aspects.items():
            out[(model, aspect)] = (float(np.mean([row.mean() for row in data])),
                                    krippendorff.alpha(data, level_of_measurement="ordinal"))
    return out


def run_json(capsys, *args):
    assert main(["agree", *map(str, args), "--resamples", "100", "--json", "-"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def error_line(capsys, *args) -> str:
    assert main(["agree", *map(str, args), "--resamples", "100"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_imagenhub_matches_humaneval_logic(tmp_path, capsys):
    folder = imagenhub_folder(tmp_path / "Subject-Driven_IG")
    result = run_json(capsys, folder)
    assert result["ratings"]["format"] == "imagenhub" and result["ratings"]["level"] == "ordinal"
    assert result["ratings"]["raters"] == ["rater1", "rater2", "rater3"] and result["ratings"]["unit"] == "item"
    ours = {(r["method"], r["aspect"]): r for r in result["humans"]}
    for key, (mean, alpha) in humaneval_reference(folder).items():
        assert ours[key]["mean"] == pytest.approx(mean, abs=1e-9)
        assert ours[key]["alpha"] == pytest.approx(alpha, abs=1e-9)
        assert ours[key]["mean_ci_low"] < mean < ours[key]["mean_ci_high"]
        assert ours[key]["alpha_ci_low"] < alpha < ours[key]["alpha_ci_high"]


def test_missing_cells_stay_missing(tmp_path, capsys):
    folder = imagenhub_folder(tmp_path / "task", missing=True)
    result = run_json(capsys, folder)
    assert result["ratings"]["missing"] == 3 * 6            # 6 blank cells of rater2, three aspects each
    row = next(r for r in result["humans"] if r["method"] == "ModelA" and r["aspect"] == "SC")
    frames = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in sorted(folder.glob("*.tsv"))]
    data = np.array([[json.loads(c)[0] if c else np.nan for c in f["ModelA"]] for f in frames])
    assert row["alpha"] == pytest.approx(krippendorff.alpha(data, level_of_measurement="ordinal"), abs=1e-12)
    assert row["mean"] == pytest.approx(np.nanmean(data, axis=0).mean(), abs=1e-12)


def dreambench_release(root, seed=0, merged=False, methods=("BLIP-Diffusion", "emu2"), subjects=8, prompts=3):
    rng = np.random.default_rng(seed)
    keys = [f"live_subject_{s:02d}_x-{p}" for s in range(subjects) for p in range(prompts)]
    human = root / "data_human_rating"
    truth = {}
    for method in methods:
        name = method.replace("-", "_").lower()
        q = rng.normal(size=(len(keys), 2))
        truth[name] = q
        for group in ("group1", "group2"):
            ratings = np.clip(np.round(2 + q + rng.normal(0, 0.7, q.shape)), 0, 4).astype(int)
            data = {k: [int(a), int(b)] for k, (a, b) in zip(keys, ratings)}
            data[keys[1]] = [None, int(ratings[1, 1])]                # one missing cp rating
            if merged:
                folder = human / "merged_data" / group
                folder.mkdir(parents=True, exist_ok=True)
                for i, aspect in enumerate(("cp", "pf")):
                    (folder / f"{name}-{aspect}.json").write_text(json.dumps({k: v[i] for k, v in data.items()}))
            else:
                folder = human / "raw_data" / group
                folder.mkdir(parents=True, exist_ok=True)
                half = len(keys) // 2
                (folder / f"part1-{name}.json").write_text(json.dumps(dict(list(data.items())[:half])))
                (folder / f"part2-{name}.json").write_text(json.dumps(dict(list(data.items())[half:])))
        judge = np.clip(np.round(2 + q + rng.normal(0, 0.9, q.shape)), 0, 4).astype(int)
        cp = root / "data_gpt_rating" / "concept_preservation_full"
        cp.mkdir(parents=True, exist_ok=True)
        (cp / f"{name}.json").write_text(json.dumps({k: int(v) for k, v in zip(keys, judge[:, 0])}))
        pf = root / "data_gpt_rating" / "prompt_following_full" / name
        pf.mkdir(parents=True, exist_ok=True)
        for k, v in zip(keys, judge[:, 1]):
            subject, _, prompt = k.rpartition("-")
            (pf / f"{k}.json").write_text(json.dumps({"collection_id": subject, "prompt_index": int(prompt),
                                                      "score": int(v)}))
    return root


def kd_alpha_files(paths):
    """DreamBench++'s kd_alpha re-derived: union of keys, NaN where a file lacks one, interval."""
    data = [json.loads(p.read_text()) for p in paths]
    keys = sorted(set().union(*data))
    rows = [[np.nan if d.get(k) is None else d[k] for k in keys] for d in data]
    return krippendorff.alpha(reliability_data=rows, level_of_measurement="interval")


@pytest.mark.parametrize("merged", [False, True])
def test_dreambench_plus_matches_release_analysis(tmp_path, capsys, merged):
    root = dreambench_release(tmp_path / "release", merged=merged)
    result = run_json(capsys, root)
    assert result["ratings"]["format"] == "dreambench-plus" and result["ratings"]["unit"] == "subject"
    assert result["ratings"]["raters"] == ["group1", "group2"]
    # the reference needs merged files: write them from the raw ones as merge_data.py does
    human = root / "data_human_rating"
    ref = tmp_path / "merged"
    for group in ("group1", "group2"):
        for name in ("blip_diffusion", "emu2"):
            if merged:
                src = human / "merged_data" / group
                for aspect in ("cp", "pf"):
                    (ref / group).mkdir(parents=True, exist_ok=True)
                    (ref / group / f"{name}-{aspect}.json").write_text((src / f"{name}-{aspect}.json").read_text())
            else:
                cells = {}
                for p in sorted((human / "raw_data" / group).glob(f"*-{name}.json")):
                    cells.update(json.loads(p.read_text()))
                (ref / group).mkdir(parents=True, exist_ok=True)
                for i, aspect in enumerate(("cp", "pf")):
                    (ref / group / f"{name}-{aspect}.json").write_text(json.dumps({k: v[i] for k, v in cells.items()}))
    humans = {(r["method"], r["aspect"]): r for r in result["humans"]}
    metrics = {(r["metric"], r["aspect"], r["method"]): r for r in result["metrics"]}
    gpt = root / "data_gpt_rating"
    merged_pf = tmp_path / "pf"
    merged_pf.mkdir()
    for name in ("blip_diffusion", "emu2"):
        assert humans[(name, "cp")]["alpha"] == pytest.approx(
            kd_alpha_files([ref / g / f"{name}-cp.json" for g in ("group1", "group2")]), abs=1e-9)
        judge_cp = np.mean([kd_alpha_files([ref / g / f"{name}-cp.json", gpt / "concept_preservation_full" /
                                            f"{name}.json"]) for g in ("group1", "group2")])
        assert metrics[("gpt/concept_preservation_full", "cp", name)]["alpha"] == pytest.approx(judge_cp, abs=1e-9)
        items = [json.loads(p.read_text()) for p in (gpt / "prompt_following_full" / name).glob("*.json")]
        (merged_pf / f"{name}.json").write_text(json.dumps({f"{d['collection_id']}-{d['prompt_index']}": d["score"]
                                                            for d in items}))
        judge_pf = np.mean([kd_alpha_files([ref / g / f"{name}-pf.json", merged_pf / f"{name}.json"])
                            for g in ("group1", "group2")])
        assert metrics[("gpt/prompt_following_full", "pf", name)]["alpha"] == pytest.approx(judge_pf, abs=1e-9)
    assert ("gpt/concept_preservation_full", "pf", "emu2") not in metrics      # a judge setting keeps its aspect
    inner = run_json(capsys, human / ("merged_data" if merged else "raw_data"))   # the ratings folder itself
    assert [r["alpha"] for r in inner["humans"]] == [r["alpha"] for r in result["humans"]]


def long_table(path, n_subjects=10, prompts=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("a", "b"):
        shift = 0.0 if method == "a" else 0.7
        for s in range(n_subjects):
            for p in range(prompts):
                q = shift + rng.normal()
                for r in ("r1", "r2", "r3"):
                    rows.append((r, method, f"s{s}", str(p), "", "quality", round(q + rng.normal(0, 0.5), 1)))
    df = pd.DataFrame(rows, columns=["rater", "method", "subject", "prompt", "item", "aspect", "value"])
    df.to_csv(path, index=False)
    return df


def test_long_table_and_scores_join(tmp_path, capsys):
    df = long_table(tmp_path / "ratings.csv")
    means = df.groupby(["method", "subject", "prompt"], as_index=False)["value"].mean()
    rng = np.random.default_rng(1)
    scores = pd.concat([
        means.assign(metric="human_mean", seed="0", image="0"),
        means.assign(metric="noise", value=rng.normal(size=len(means)), seed="0", image="0"),
    ]).rename(columns={"method": "run"})[["run", "subject", "prompt", "seed", "image", "metric", "value"]]
    scores.to_parquet(tmp_path / "scores.parquet", index=False)          # exact floats: ties stay ties
    result = run_json(capsys, tmp_path / "ratings.csv", "--scores", tmp_path / "scores.parquet")
    assert result["ratings"]["unit"] == "subject" and result["ratings"]["level"] == "interval"
    rows = {(r["metric"], r["method"]): r for r in result["metrics"]}
    best = rows[("human_mean", "all")]
    assert best["spearman"] == pytest.approx(1.0) and best["pearson"] == pytest.approx(1.0)
    assert best["kendall"] == pytest.approx(1.0) and best["n_items"] == len(means)
    noise = rows[("noise", "all")]
    assert noise["spearman_ci_low"] < 0 < noise["spearman_ci_high"]
    system = {r["metric"]: r for r in result["system"]}
    assert system["human_mean"]["top_metric"] == system["human_mean"]["top_human"] == "b"
    assert system["human_mean"]["p_same_top"] == pytest.approx(1.0)
    (cmp,) = result["comparisons"]
    assert (cmp["metric_a"], cmp["metric_b"]) == ("human_mean", "noise") and cmp["spearman_diff_ci_low"] > 0
    assert set(result) == {"ratings", "settings", "humans", "metrics", "system", "comparisons", "notes"}


def test_console_tables_and_too_little_data(tmp_path, capsys):
    long_table(tmp_path / "ratings.csv", n_subjects=3, prompts=1)
    assert main(["agree", str(tmp_path / "ratings.csv"), "--resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert "## Human ratings" in out and "| Method" in out
    assert "[no interval]" in out and "too few subjects (3, fewer than 5) for an interval" in out


def test_bad_inputs_are_one_line(tmp_path, capsys):
    folder = imagenhub_folder(tmp_path / "t1")
    other = folder / "t1_rater2.tsv"
    other.write_text(other.read_text().replace("model c", "model d", 1))
    err = error_line(capsys, folder)
    assert "t1_rater2.tsv" in err and "another set of models" in err

    folder = imagenhub_folder(tmp_path / "t2")
    bad = folder / "t2_rater3.tsv"
    lines = bad.read_text().splitlines()
    lines[4] = lines[4].replace("[", "(", 1).replace("]", ")", 1)
    bad.write_text("\n".join(lines) + "\n")
    err = error_line(capsys, folder)
    assert "t2_rater3.tsv line 5" in err and "is not [a, b]" in err

    lines[4] = lines[4].replace("(", "[", 1).replace(")", "]", 1)
    lines[6] = "\t".join([lines[6].split("\t")[0], "[0.7, 1]"] + lines[6].split("\t")[2:])
    bad.write_text("\n".join(lines) + "\n")
    err = error_line(capsys, folder)
    assert "t2_rater3.tsv line 7 column ModelA" in err and "value other than 0, 0.5 or 1" in err

    folder = imagenhub_folder(tmp_path / "t3", raters=1)
    err = error_line(capsys, folder)
    assert "only one rater" in err and "t3" in err

    df = long_table(tmp_path / "flat.csv")
    df.assign(value=3.0).to_csv(tmp_path / "flat.csv", index=False)
    err = error_line(capsys, tmp_path / "flat.csv")
    assert "flat.csv" in err and "aspect quality has no variance" in err

    long_table(tmp_path / "r.csv")
    pd.DataFrame({"run": ["a"], "subject": ["s99"], "prompt": ["0"], "seed": ["0"], "image": ["0"],
                  "metric": ["m"], "value": [0.5]}).to_csv(tmp_path / "s.csv", index=False)
    err = error_line(capsys, tmp_path / "r.csv", "--scores", tmp_path / "s.csv")
    assert "s.csv" in err and "no rating has" in err and "s99" in err
    pd.DataFrame({"run": ["zz"], "subject": ["s1"], "prompt": ["0"], "seed": ["0"], "image": ["0"],
                  "metric": ["m"], "value": [0.5]}).to_csv(tmp_path / "s.csv", index=False)
    assert "method zz is not among the rated methods" in error_line(capsys, tmp_path / "r.csv", "--scores",
                                                                    tmp_path / "s.csv")
    assert "holds 3 ImagenHub task folders (t1, t2, t3)" in error_line(capsys, tmp_path)


def test_imagenhub_scores_join_by_uid(tmp_path, capsys):
    folder = imagenhub_folder(tmp_path / "task", items=12)
    rng = np.random.default_rng(3)
    rows = [(model, f"sample_{i}.jpg", "0", "0", "0", "clip", rng.normal()) for model in MODELS for i in range(12)]
    table = pd.DataFrame(rows, columns=["run", "subject", "prompt", "seed", "image", "metric", "value"])
    table.to_csv(tmp_path / "scores.csv", index=False)
    result = run_json(capsys, folder, "--scores", tmp_path / "scores.csv", "--compare", "clip,clip")
    pooled = [r for r in result["metrics"] if r["method"] == "all"]
    assert {r["aspect"] for r in pooled} == {"SC", "PQ", "O"} and all(r["n_items"] == 36 for r in pooled)
    assert all(r["n_units"] == 12 for r in pooled)              # unit: the uid, shared by the models
    assert main(["agree", str(folder), "--scores", str(tmp_path / "scores.csv"), "--compare", "clip,dino"]) == 2
    assert "--compare clip,dino: no metric dino" in capsys.readouterr().err


def test_json_file_is_written(tmp_path, capsys):
    long_table(tmp_path / "ratings.csv")
    out = tmp_path / "agree.json"
    assert main(["agree", str(tmp_path / "ratings.csv"), "--resamples", "100", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    row = data["humans"][0]
    for key in ("method", "aspect", "mean", "mean_ci_low", "mean_ci_high", "alpha", "alpha_ci_low", "alpha_ci_high",
                "n_items", "n_units", "level", "rater_means"):
        assert key in row
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in row.values())


def test_rescale_puts_a_metric_on_the_human_scale(tmp_path, capsys):
    df = long_table(tmp_path / "ratings.csv", n_subjects=8, prompts=2)
    means = df.groupby(["method", "subject", "prompt"], as_index=False)["value"].mean()
    scores = means.assign(metric="cosine", value=0.5 + means["value"] / 50, seed="0", image="0").rename(
        columns={"method": "run"})[["run", "subject", "prompt", "seed", "image", "metric", "value"]]
    scores.to_parquet(tmp_path / "scores.parquet", index=False)
    plain = run_json(capsys, tmp_path / "ratings.csv", "--scores", tmp_path / "scores.parquet")
    scaled = run_json(capsys, tmp_path / "ratings.csv", "--scores", tmp_path / "scores.parquet", "--rescale", "minmax")
    pooled = [next(r for r in res["metrics"] if r["method"] == "all") for res in (plain, scaled)]
    assert pooled[0]["spearman"] == pytest.approx(1) and pooled[1]["spearman"] == pytest.approx(1)
    assert pooled[0]["alpha"] < 0.2 < 0.6 < pooled[1]["alpha"]          # same order, other scale
