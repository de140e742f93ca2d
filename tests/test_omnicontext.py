"""OmniContext (bench/suites/omnicontext.py) and its judge (bench/metrics/omnicontext_judge.py): the
released parquet schema read from any layout, planning-time refusals, the judge's questions,
parsing and the release's aggregation checked against an independent computation."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bench import BenchError
from bench.suites.omnicontext import OmniContext

MINI = Path("datasets/mini-omnicontext")
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(size=(96, 64), color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path: Path, rows: list[dict], drop: str | None = None) -> Path:
    columns = {"key": pa.string(), "task_type": pa.string(), "instruction": pa.string(),
               "instruction_language": pa.string(), "input_images": pa.list_(IMAGE)}
    schema = pa.schema([(k, t) for k, t in columns.items() if k != drop])
    data = {k: [r[k] for r in rows] for k in columns if k != drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data, schema=schema), path)
    return path


def row(key, task_type="single_object", images=None, language="en", instruction="The cup from image 1 on a table."):
    images = images if images is not None else [{"bytes": png(), "path": f"{key}.png"}]
    return {"key": key, "task_type": task_type, "instruction": instruction, "instruction_language": language,
            "input_images": images}


def test_mini_copy_has_the_released_schema_and_every_task_type():
    table = pq.read_table(next(MINI.rglob("*.parquet")))
    assert set(table.column_names) == {"key", "task_type", "instruction", "instruction_language", "input_images"}
    assert table.schema.field("input_images").type == pa.list_(IMAGE)
    samples = OmniContext(MINI).samples()
    assert sorted(s.category for s in samples) == sorted(OmniContext.released_task_types)
    counts = {s.category: len(s.subject_images) for s in samples}
    assert counts["single_object"] == 1 and counts["multi_object"] == 2 and counts["scene_character_object"] == 3
    for s in samples:
        assert s.prompt == s.eval_text and s.subject_images == s.reference_images
        assert dict(s.extra)["with_scene"] == str(s.category.startswith("scene"))
    sizes = {Image.open(p).size for s in samples for p in s.subject_images}
    assert any(w != h for w, h in sizes)                 # non-square pictures stay as they are


def test_shards_anywhere_under_the_copy_and_options(tmp_path):
    """As `hf download` writes it: shards in sub-folders, several of them; keys repeated across task
    types become <task_type>-<key>; the language and task_types options select."""
    write_shard(tmp_path / "data" / "a" / "train-00000-of-00002.parquet",
                [row("0001"), row("0002", "multi_object", [{"bytes": png(), "path": None}] * 2)])
    write_shard(tmp_path / "nested" / "deeper" / "train-00001-of-00002.parquet",
                [row("0001", "scene_object", [{"bytes": png((64, 128)), "path": "x.png"}] * 3), row("0003", language="zh")])
    samples = OmniContext(tmp_path).samples()
    assert [s.subject for s in samples] == ["multi_object-0002", "scene_object-0001", "single_object-0001"]
    assert len(OmniContext(tmp_path, language="all").samples()) == 4
    only = OmniContext(tmp_path, task_types="single_object,multi_object").samples()
    assert {s.category for s in only} == {"single_object", "multi_object"}
    with pytest.raises(BenchError, match="unknown task type.*scene_char.*this copy has multi_object"):
        OmniContext(tmp_path, task_types=["scene_char"]).samples()
    same = [p for s in samples for p in s.subject_images]
    assert len({p for p in same}) == 2                   # images stored once, by content


def test_a_copy_inside_the_hub_cache_is_read(tmp_path):
    """`hf download` without --local-dir leaves the copy under ~/.cache/huggingface/hub/.../snapshots/REV:
    every shard was skipped as hf's own .cache folder. The .cache inside the copy is still skipped."""
    root = tmp_path / ".cache" / "huggingface" / "hub" / "datasets--OmniGen2--OmniContext" / "snapshots" / "abc"
    write_shard(root / "data" / "train-00000-of-00001.parquet", [row("0001")])
    write_shard(root / ".cache" / "huggingface" / "stale.parquet", [row("0002")])
    assert [s.subject for s in OmniContext(root).samples()] == ["0001"]


@pytest.mark.parametrize("problem, message", [
    ("column", "no column.*instruction_language"),
    ("path-only", "stored by path only"),
    ("empty", "input_images holds no image"),
    ("bad-key", "key '../x' cannot be a folder name"),
    ("not-parquet", "not a readable parquet file"),
    ("corrupt-image", "row 0 input image 1: corrupt or unreadable image"),
    ("empty-shard", "an empty shard"),
    ("task-type", "row 0: unknown task type 'single_animal'"),
])
def test_bad_copies_are_one_line_errors(tmp_path, problem, message):
    shard = tmp_path / "data" / "test.parquet"
    if problem == "column":
        write_shard(shard, [row("1")], drop="instruction_language")
    elif problem == "path-only":
        write_shard(shard, [row("1", images=[{"bytes": None, "path": "/somewhere/1.png"}])])
    elif problem == "empty":
        write_shard(shard, [row("1", images=[])])
    elif problem == "bad-key":
        write_shard(shard, [row("../x")])
    elif problem == "corrupt-image":                 # named by its shard and row, not by the cache file
        write_shard(shard, [row("1", images=[{"bytes": b"\x89PNG\r\n\x1a\n cut short", "path": "1.png"}])])
    elif problem == "empty-shard":                   # a valid parquet file without rows, beside a good one
        write_shard(tmp_path / "data" / "good.parquet", [row("1")])
        write_shard(shard, [])
    elif problem == "task-type":
        write_shard(shard, [row("1", "single_animal")])
    else:
        shard.parent.mkdir(parents=True)
        shard.write_bytes(b"PAR1 not really")
    with pytest.raises(BenchError, match=message) as error:
        OmniContext(tmp_path).samples()
    assert "\n" not in str(error.value) and str(shard) in str(error.value)


def test_data_commands(capsys, tmp_path):
    from bench.cli import main
    assert main(["data", "check", "omnicontext", "--mini"]) == 0
    assert "prompts    8" in capsys.readouterr().out
    assert main(["data", "where", "omnicontext"]) == 0
    out = capsys.readouterr().out
    assert "hf download --repo-type dataset OmniGen2/OmniContext" in out and "VectorSpaceLab/OmniGen2" in out
    assert main(["data", "fetch", "omnicontext", "--dest", str(tmp_path / "none")]) == 2
    shutil.copytree(MINI / "data", tmp_path / "copy" / "data")
    assert main(["data", "fetch", "omnicontext", "--dest", str(tmp_path / "copy")]) == 0      # a present copy: checked


def test_single_image_methods_are_refused_at_planning(tmp_path, capsys):
    """EZIGen (all task types) is refused in one line, exit 2, before anything is generated or written;
    the single-image task types run; OmniGen's prompt_template without {images} and Kontext's
    max_sequence_length above 512 are refused at the dry run."""
    from bench.cli import main
    out = tmp_path / "run"
    assert main(["run", "--method", "ezigen", "--suite", "omnicontext", "--preset", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ezigen' takes 1 subject image" in err[0]
    assert "--suite-option task_types=single_character,single_object" in err[0] and not out.exists()
    assert main(["run", "--method", "ezigen", "--suite", "omnicontext", "--preset", "smoke", "--dry-run",
                 "--suite-option", "task_types=single_character,single_object", "--out", str(out)]) == 0
    assert main(["run", "--method", "flux-kontext", "--suite", "omnicontext", "--preset", "smoke", "--dry-run",
                 "--out", str(out)]) == 2
    assert main(["run", "--method", "omnigen", "--suite", "omnicontext", "--preset", "smoke", "--dry-run",
                 "--out", str(out)]) == 0
    assert main(["run", "--method", "sd", "--suite", "omnicontext", "--preset", "smoke", "--dry-run",
                 "--out", str(out)]) == 0            # text only: it reads no subject image, so none is too many
    assert main(["run", "--method", "omnigen", "--suite", "omnicontext", "--preset", "smoke", "--dry-run",
                 "--param", "max_subject_images=2", "--out", str(out)]) == 2
    capsys.readouterr()
    for method, param, message in [("omnigen", "prompt_template={prompt} in a photo", "placeholder {images}"),
                                   ("omnigen", "multi_prompt_template={prompt}", "placeholder {images}"),
                                   ("flux-kontext", "max_sequence_length=513", "1 to 512")]:
        assert main(["run", "--method", method, "--suite", "dreambench", "--preset", "smoke", "--dry-run",
                     "--param", param, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


# ---- the judge ----------------------------------------------------------------------------------
def test_parse_score_takes_the_json_score_and_guesses_nothing():
    from bench.metrics.omnicontext_judge import parse_score
    assert parse_score('{"score": 7, "reasoning": "fine"}') == (7, None)
    assert parse_score('Here: {\n "score": 10,\n "reasoning": "all there"\n} done') == (10, None)
    assert parse_score("8") == (8, None)
    assert parse_score('{"score": 4.0}') == (4, None)
    # as the release (json_util.mllm_output_to_dict): newlines dropped before parsing, so a line break
    # inside the reasoning text still parses; a fractional score is averaged as given
    assert parse_score('{\n"score": 7,\n"reasoning": "first line\nsecond line"\n}') == (7, None)
    assert parse_score('{"score": 6.5}') == (6.5, None)
    for text, why in [("", "empty"), ("no idea", "no JSON"), ('{"score": 11}', "outside"), ('{"score": "7"}', "not a number"),
                      ('{"score": 10.5}', "outside"), ('{"reasoning": "x"}', "no score"), ("{score: 7}", "not valid"),
                      ('{"score": true}', "not a number"), ('{"score": NaN}', "not a number"), ("12", "outside")]:
        value, reason = parse_score(text)
        assert value is None and why in reason, text
    assert parse_score('{"score": 9}', refused=True) == (None, "refusal")


def test_statistics_equal_an_independent_computation():
    """Per task type the mean of PF, SC and of sqrt(PF*SC) per item, then the unweighted mean over task
    types (calculate_statistics.py's "Average"), on simulated answers with unequal group sizes."""
    from bench.metrics.omnicontext_judge import statistics
    rng = np.random.default_rng(31)
    frame = pd.DataFrame({"task_type": rng.choice(["single_object", "multi_character", "scene_object"], 200,
                                                  p=[0.6, 0.3, 0.1]),
                          "pf": rng.integers(0, 11, 200).astype(float), "sc": rng.integers(0, 11, 200).astype(float)})
    ours = {r["task_type"]: r for r in statistics(frame)}
    per_type = {}
    for task_type in sorted(frame["task_type"].unique()):
        part = frame[frame["task_type"] == task_type]
        pf, sc = part["pf"].to_numpy(), part["sc"].to_numpy()
        per_type[task_type] = (pf.mean(), sc.mean(), np.sqrt(pf * sc).mean())
        assert ours[task_type]["PF"] == pytest.approx(pf.mean(), abs=1e-12)
        assert ours[task_type]["SC"] == pytest.approx(sc.mean(), abs=1e-12)
        assert ours[task_type]["Overall"] == pytest.approx(np.sqrt(pf * sc).mean(), abs=1e-12)
    for k, column in enumerate(("PF", "SC", "Overall")):
        assert ours["Average"][column] == pytest.approx(np.mean([v[k] for v in per_type.values()]), abs=1e-12)
    # not the pooled mean over items (the groups are unequal)
    assert abs(ours["Average"]["PF"] - frame["pf"].mean()) > 1e-6
    # a missing answer leaves its item out of that mean and out of the overall, never counts as a number
    frame.loc[0, "pf"] = math.nan
    first = frame.loc[0, "task_type"]
    again = {r["task_type"]: r for r in statistics(frame)}
    rest = frame[(frame["task_type"] == first)].iloc[1:]
    assert again[first]["missing"] == 1 and again[first]["PF"] == pytest.approx(rest["pf"].mean())
    assert again[first]["Overall"] == pytest.approx(np.sqrt(rest["pf"] * rest["sc"]).mean())


def test_run_statistics_never_pair_two_judges(tmp_path, capsys):
    """A run scored by two judges (the tiny one, then a real one) held oc_pf/A, oc_sc/A, oc_pf/B, oc_sc/B:
    the table paired the first non-missing PF and SC of any judge. One judge is named, and its table
    equals calculate_statistics.py's analyze_scores on that judge's answers."""
    from bench.metrics.omnicontext_judge import main, run_statistics
    rng = np.random.default_rng(5)
    rows, release = [], {}
    for task_type, n in (("single_object", 3), ("multi_object", 5), ("scene_object", 2)):
        for k in range(n):
            key, pf, sc = f"omnicontext/{task_type}-{k}/000/s0/i0", int(rng.integers(0, 11)), int(rng.integers(0, 11))
            release.setdefault(task_type, []).append((pf, sc))
            for judge, values in (("tiny", (math.nan, 10.0)), ("gpt", (pf, sc))):     # tiny's rows come first
                rows += [{"key": key, "seed": 0, "category": task_type, "metric": f"oc_{kind}/{judge}",
                          "value": float(v)} for kind, v in zip(("pf", "sc"), values)]
    pd.DataFrame(rows).to_parquet(tmp_path / "scores.parquet")
    with pytest.raises(BenchError, match="scored by 2 judges \\(gpt, tiny\\); name one with --judge"):
        run_statistics(tmp_path)
    assert main([str(tmp_path)]) == 2 and "--judge" in capsys.readouterr().err
    ours = {r["task_type"]: r for r in run_statistics(tmp_path, "gpt")[0]}
    overall = {t: np.mean([math.sqrt(p * s) for p, s in v]) for t, v in release.items()}
    for task_type, values in release.items():
        assert ours[task_type]["SC"] == pytest.approx(np.mean([s for _, s in values]))
        assert ours[task_type]["Overall"] == pytest.approx(overall[task_type])
    assert ours["Average"]["Overall"] == pytest.approx(np.mean(list(overall.values())))
    with pytest.raises(BenchError, match="no scores of judge 'gpt-4.1'; it has gpt, tiny"):
        run_statistics(tmp_path, "gpt-4.1")


def test_texts_are_read_from_the_clone_never_run(tmp_path):
    from bench.metrics.omnicontext_judge import PREAMBLE, RULES, load_texts, question, resolve_prompt_file
    clone = tmp_path / "OmniGen2"
    (clone / "omnicontext").mkdir(parents=True)
    body = "\n".join(f'{name} = """text of {name} for <instruction>."""' for name in RULES.values())
    (clone / "omnicontext" / "prompt_generator.py").write_text(
        f'raise SystemExit("never run")\n{PREAMBLE} = "Answer in JSON. "\n{body}\n', encoding="utf-8")
    texts, digest = load_texts(resolve_prompt_file(tmp_path))            # the folder holding the clone
    assert question(texts, "sc", True, "Put the cat in the room.") == \
        f"Answer in JSON. text of {RULES[('sc', True)]} for Put the cat in the room.."
    assert resolve_prompt_file(clone) == resolve_prompt_file(tmp_path)
    (clone / "omnicontext" / "prompt_generator.py").write_text(f'{PREAMBLE} = "x"\n', encoding="utf-8")
    with pytest.raises(BenchError, match="no text _prompts_0shot"):
        load_texts(resolve_prompt_file(clone))
    with pytest.raises(BenchError, match="judge texts not found"):
        resolve_prompt_file(tmp_path / "nothing")


class StubBackend:
    """Answers from a script; records the conversations it was asked."""

    def __init__(self, replies):
        self.replies, self.asked = list(replies), []

    def describe(self):
        return "stub"

    def answer(self, conversations, seeds, temperature):
        from bench.metrics.judge_backends import Answer
        self.asked += conversations
        return [Answer(self.replies.pop(0)) for _ in conversations]


def test_judge_asks_once_per_question_and_records_unparsable_as_missing(tmp_path):
    from bench.metrics.base import ScoreItem
    from bench.metrics.omnicontext_judge import OmniContextJudge
    samples = {s.category: s for s in OmniContext(MINI).samples()}
    judge = OmniContextJudge(preset="tiny")
    items = []
    for category in ("single_object", "scene_character_object"):
        s = samples[category]
        generated = tmp_path / f"{category}.png"
        Image.new("RGB", (64, 64), (10, 200, 10)).save(generated)
        items.append(ScoreItem(key=s.cell, image=generated, seed=0, subject=s.subject, class_noun=s.class_noun,
                               eval_text=s.eval_text, reference_images=s.reference_images,
                               subject_images=s.subject_images, category=s.category))
    judge.backend = StubBackend(['{"score": 9, "reasoning": "ok"}', '{"score": 4}',
                                 "I cannot tell.", '{"score": 6}'])
    judge.bind_run(tmp_path)
    rows = judge.score(items)
    name = judge.judge_name
    assert rows[0] == {f"oc_pf/{name}": 9, f"oc_sc/{name}": 4, f"oc_overall/{name}": pytest.approx(6.0)}
    assert math.isnan(rows[1][f"oc_pf/{name}"]) and rows[1][f"oc_sc/{name}"] == 6
    assert math.isnan(rows[1][f"oc_overall/{name}"])
    asked = judge.backend.asked
    assert len(asked) == 4                                # one answer per question: no hidden retries
    parts = asked[3][0]["content"]                        # SC of the scene item: text, 3 inputs, the output
    assert [kind for kind, _ in parts] == ["text", "image", "image", "image", "image"]
    assert "setting" in parts[0][1] and samples["scene_character_object"].prompt in parts[0][1]
    assert "setting" not in asked[1][0]["content"][0][1]
    assert parts[1][1].size == Image.open(samples["scene_character_object"].subject_images[0]).size
    lines = (tmp_path / "judge_answers.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"failure": "no JSON object"' in lines[2]


def test_input_view_scales_large_inputs_as_the_release():
    from bench.metrics.omnicontext_judge import input_view
    assert input_view(Image.new("RGB", (2048, 1024))).size == (1440, 720)    # sqrt(1024^2 / 2048x1024) = 0.7071
    assert input_view(Image.new("RGB", (100, 70))).size == (96, 64)
    assert input_view(Image.new("RGB", (64, 64))).size == (64, 64)


@pytest.mark.parametrize("method", ["omnigen", "qwen-image-edit", "flux2"])
def test_smoke_run_end_to_end(method, tmp_path, capsys):
    from bench.cli import main
    from bench.metrics.omnicontext_judge import main as statistics_main
    out = tmp_path / method
    assert main(["run", "--method", method, "--suite", "omnicontext", "--preset", "smoke", "--steps", "2",
                 "--subjects", "0000,0007", "--out", str(out)]) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["metric"].str.split("/").str[0]) == {"oc_pf", "oc_sc", "oc_overall"}
    records = [line for f in (out / "generations").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(records) == 2 and all('"vae_inputs"' in line for line in records)
    assert statistics_main([str(out)]) == 0
    table = capsys.readouterr().out
    assert "single_character: nan, nan, nan (1, 1)" in table and "Average: nan, nan, nan (2, 2)" in table
    from bench.metrics.omnicontext_judge import run_statistics
    scores.loc[scores["metric"].str.startswith(("oc_pf/", "oc_sc/")), "value"] = 6.0     # as if the judge answered
    scores.to_parquet(out / "scores.parquet")
    rows = {r["task_type"]: r for r in run_statistics(out)[0]}
    assert rows["Average"]["Overall"] == 6.0 and rows["Average"]["n"] == 2 and rows["Average"]["missing"] == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    board = (tmp_path / "report" / "leaderboard-omnicontext.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| ours") and f"| {method} " in line)
    assert "random weights" in row and "## By category" in board


def test_integer_keys_are_read_as_text(tmp_path):
    table = pa.table({"key": pa.array([7, 12], pa.int64()), "task_type": ["single_object"] * 2,
                      "instruction": ["The cup from image 1 on a shelf."] * 2, "instruction_language": ["en"] * 2,
                      "input_images": pa.array([[{"bytes": png(), "path": "a.png"}]] * 2, pa.list_(IMAGE))})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "x.parquet")
    assert [s.subject for s in OmniContext(tmp_path).samples()] == ["12", "7"]


def test_flux2_refuses_a_reference_image_its_pipeline_refuses_at_planning(tmp_path):
    """Flux2ImageProcessor refuses a reference image beyond 8:1 (bench.limits allows 10:1): a 10:1 item
    was an internal error mid-run, after the model had loaded and earlier items were generated."""
    from methods.in_context.flux2 import Flux2Method
    from methods.in_context.omnigen import OmniGenMethod
    write_shard(tmp_path / "data" / "a.parquet", [row("0001", images=[{"bytes": png((80, 10)), "path": None}]),
                                                  row("0002", images=[{"bytes": png((300, 30)), "path": None}])])
    samples = OmniContext(tmp_path).samples()
    with pytest.raises(BenchError, match="omnicontext/0002/000: subject image .* is 300x30 px; method 'flux2' "
                                         "takes reference images up to 8:1"):
        Flux2Method.check_subject_sizes("flux2", {}, samples)
    Flux2Method.check_subject_sizes("flux2", {}, samples[:1])          # 8:1 is taken
    OmniGenMethod.check_subject_sizes("omnigen", {}, samples)          # no such limit
