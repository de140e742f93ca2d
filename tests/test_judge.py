"""The DreamBench++ judge: parsing, conversations, the endpoint backend against a local server with
canned and hostile answers (retries, failures, raw answers, caching end to end), and a tiny random
Qwen2.5-VL loaded through the same from_pretrained path as a real judge."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from judge_stub import Stub, chat, reply, topic

from bench import BenchError
from bench.metrics.base import ScoreItem
from bench.metrics.judge import (ANSWERS_FILE, PROMPT_FILES, TINY_PROMPTS, JudgeMetric, item_seed, parse_score,
                                 resolve_prompts_dir)

INSTRUCTIONS = {name: f"instruction {name} written for this test" for files in PROMPT_FILES.values() for name in files}


@pytest.fixture
def prompts(tmp_path):
    folder = tmp_path / "repo" / "dreambench_plus" / "prompts"
    folder.mkdir(parents=True)
    for name, text in INSTRUCTIONS.items():
        (folder / name).write_text(text + "\n")
    return tmp_path / "repo"


# ---- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, score, failure", [
    ("The subject matches closely.\nScore: 3", 3, None),
    ("score: 0", 0, None),
    ("Final Score: 4.", 4, None),
    ("Score: excellent 2", 2, None),              # the release's pattern allows words before the digits
    ("Score: 7", None, "score 7 outside 0-4"),
    ("Score: 3.5", None, "not an integer score"),
    ("Score: 2 ... on reflection Score: 3", None, "2 scores"),
    ("Score: 3\nScore: 3", None, "2 scores"),
    ("SCORE: 3", None, "no score"),
    ("I'm sorry, I can't help with that.", None, "no score"),
    ("", None, "empty answer"),
    ("   \n ", None, "empty answer"),
    # formats decided as the release's pattern reads them (docs/judge.md)
    ("### Score: 3", 3, None),
    ("**Score: 3**", 3, None),
    ("Score: 3/4", 3, None),
    ("Score: \uff13", 3, None),                   # fullwidth digit: Python's \d, as in the release
    ("Score: \u0663", 3, None),                   # Arabic-Indic digit
    ("**Score:** 3", None, "no score"),           # the release finds no score here either
    ("Score: **3**", None, "no score"),
    ("Score: three", None, "no score"),
    ("Score: -1", None, "no score"),
    ("Score: 2.5", None, "not an integer score"),  # the release would keep 2
])
def test_parse_score(text, score, failure):
    assert parse_score(text) == (score, failure)


def test_refusal_is_a_failure_even_with_a_score():
    assert parse_score("Score: 4", refused=True) == (None, "refusal")


# ---- instruction files and conversations -------------------------------------------------------
def test_prompts_dir_is_found_in_the_repository_layouts(prompts):
    inner = prompts / "dreambench_plus" / "prompts"
    for given in (prompts, inner, prompts / "dreambench_plus", prompts.parent / "repo"):
        assert resolve_prompts_dir(given) == inner
    with pytest.raises(BenchError, match="judge.prompts=DIR"):
        resolve_prompts_dir(prompts / "nowhere")


def test_missing_or_empty_instruction_file_is_one_line(prompts):
    (prompts / "dreambench_plus" / "prompts" / "gpt_prompt_text_full.txt").write_text("  \n")
    with pytest.raises(BenchError, match="gpt_prompt_text_full.txt is empty"):
        JudgeMetric(endpoint="http://127.0.0.1:9/v1", model="m", prompts=str(prompts))
    (prompts / "dreambench_plus" / "prompts" / "gpt_prompt_text_full.txt").unlink()
    with pytest.raises(BenchError, match="gpt_prompt_text_full.txt"):
        JudgeMetric(endpoint="http://127.0.0.1:9/v1", model="m", prompts=str(prompts))


def make_item(tmp_path, name: str, text: str = "a cat on a sofa", category: str = "object", color=(200, 30, 30)):
    generated, reference = tmp_path / f"{name}.png", tmp_path / f"{name}-ref.jpg"
    Image.new("RGB", (64, 48), color).save(generated)
    Image.new("RGB", (40, 40), (10, 10, 250)).save(reference)
    return ScoreItem(key=f"suite/{name}/000/s0/i0", image=generated, seed=0, subject=name, class_noun="cat",
                     eval_text=text, reference_images=(reference,), subject_images=(reference,), category=category)


def test_conversations_are_built_as_the_release_builds_them(prompts, tmp_path):
    metric = JudgeMetric(endpoint="http://127.0.0.1:9/v1", model="gpt-4o-2024-05-13", prompts=str(prompts))
    assert metric.ids == ("cp/gpt-4o-2024-05-13", "pf/gpt-4o-2024-05-13")
    item = make_item(tmp_path, "a", text="a cat wearing a hat")
    generated = Image.new("RGB", (512, 512))
    for category, instruction in (("object", "subject"), ("animal", "subject"), ("style", "style")):
        item = make_item(tmp_path, "a", category=category)
        user, assistant, final = metric.conversation("cp", item, generated)
        assert user == {"role": "user", "content": INSTRUCTIONS[f"user_prompt_{instruction}_full.txt"]}
        assert assistant == {"role": "assistant", "content": INSTRUCTIONS[f"gpt_prompt_{instruction}_full.txt"]}
        (k1, reference), (k2, image) = final["content"]
        assert final["role"] == "user" and (k1, k2) == ("image", "image") and image is generated
        assert reference.size == (512, 512) and max(abs(a - b) for a, b in zip(reference.getpixel((9, 9)), (10, 10, 250))) <= 3
    user, assistant, final = metric.conversation("pf", item, generated)
    assert user["content"] == INSTRUCTIONS["user_prompt_text_full.txt"]
    assert assistant["content"] == INSTRUCTIONS["gpt_prompt_text_full.txt"]
    assert final["content"] == [("text", item.eval_text), ("image", generated)]


def test_version_names_every_setting_that_changes_answers(prompts):
    base = dict(endpoint="http://127.0.0.1:9/v1", model="m", prompts=str(prompts))
    version = JudgeMetric(**base).version
    assert JudgeMetric(**base).version == version
    assert JudgeMetric(**{**base, "model": "n"}).version != version
    assert JudgeMetric(**{**base, "temperature": 1.0}).version != version
    assert JudgeMetric(**{**base, "max_new_tokens": 64}).version != version
    (prompts / "dreambench_plus" / "prompts" / "user_prompt_style_full.txt").write_text("changed")
    assert JudgeMetric(**base).version != version


@pytest.mark.parametrize("param, value", [("repeats", 0), ("attempts", 0), ("temperature", -1.0), ("kinds", "cp,xx")])
def test_bad_parameters_are_refused(prompts, param, value):
    with pytest.raises(BenchError, match=f"judge.{param}"):
        JudgeMetric(endpoint="http://127.0.0.1:9/v1", model="m", prompts=str(prompts), **{param: value})


# ---- a local OpenAI-compatible server -------------------------------------------------------------
class FakeJudgeServer(Stub):
    """Answers /v1/chat/completions from a script: the PF prompt text (or "cp") -> answers in turn
    (the last one repeats); an int or (status, headers) answer is that HTTP status."""

    def __init__(self, script: dict[str, list], port: int = 0):
        self.script = {k: list(v) for k, v in script.items()}
        super().__init__(self.answer, port)

    @property
    def requests(self) -> list[dict]:
        return self.bodies

    def answer(self, handler, body: dict) -> None:
        if handler.path != "/v1/chat/completions":
            reply(handler, {}, 404)
            return
        with self.lock:
            answers = self.script[topic(body)]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, (int, tuple)):         # an HTTP status (with headers)
            status, extra = answer if isinstance(answer, tuple) else (answer, {})
            reply(handler, {}, status, extra)
        else:
            reply(handler, chat(answer) if isinstance(answer, str) else answer)


REFUSAL = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't rate this."},
                        "finish_reason": "stop"}]}
FILTERED = {"choices": [{"message": {"role": "assistant", "content": "Score: 4"}, "finish_reason": "content_filter"}]}


def test_endpoint_answers_retries_and_failures(prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "secret-key")
    script = {"good": ["The cat and sofa are there. Score: 3"], "too high": ["Score: 7"], "empty": [""],
              "refuse": [REFUSAL], "filtered": [FILTERED], "flaky": ["hmm", "no idea", "Score: 2"],
              "twice": ["Score: 1 or maybe Score: 2"], "broken json": [{"unexpected": True}],
              "server hiccup": [503, "Score: 4"], "rambling": ["blah " * 6000 + "Score: 1"]}
    items = [make_item(tmp_path, name.replace(" ", "-"), text=name) for name in script]
    with FakeJudgeServer(script) as server:
        metric = JudgeMetric(endpoint=server.url, model="judge-x", api_key_env="JUDGE_TEST_KEY", prompts=str(prompts),
                             kinds="pf", temperature=1.0, repeats=1, attempts=3)
        metric.bind_run(tmp_path)
        rows = metric.score(items)
    values = {item.eval_text: row["pf/judge-x"] for item, row in zip(items, rows)}
    assert values["good"] == 0.75 and values["flaky"] == 0.5 and values["server hiccup"] == 1.0
    assert values["rambling"] == 0.25                    # parsed in full, stored cut
    for name in ("too high", "empty", "refuse", "filtered", "twice", "broken json"):
        assert math.isnan(values[name]), name
    # every attempt is recorded with its raw text; a failure is retried up to the bound
    lines = [json.loads(line) for line in (tmp_path / ANSWERS_FILE).read_text().splitlines()]
    assert lines == metric.answers
    by_text = {}
    for line in lines:
        by_text.setdefault(line["key"].split("/")[1], []).append(line)
    assert [(a["attempt"], a["answer"], a["failure"]) for a in by_text["flaky"]] == \
        [(0, "hmm", "no score"), (1, "no idea", "no score"), (2, "Score: 2", None)]
    assert [a["failure"] for a in by_text["too-high"]] == ["score 7 outside 0-4"] * 3
    assert by_text["refuse"][0]["answer"] == "I can't rate this." and by_text["refuse"][0]["failure"] == "refusal"
    assert by_text["filtered"][0]["refused"] is True
    assert by_text["broken-json"][0]["answer"] == '{"unexpected": true}'
    assert len(by_text["rambling"][0]["answer"]) == 20_000 and by_text["rambling"][0]["truncated_from"] == 30_008
    assert len(server.requests) == 2 + 3 * 6 + 3 + 2      # good and rambling, six failing x3, flaky x3, the 503 retried
    # the request: the release's turns, a JPEG of 512x512, the derived seed, the key from the environment
    body = next(b for b in server.requests if b["messages"][-1]["content"][0]["text"] == "good")
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == INSTRUCTIONS["user_prompt_text_full.txt"]
    url = body["messages"][-1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (512, 512)
    assert body["model"] == "judge-x" and body["temperature"] == 1.0
    assert body["seed"] == item_seed(items[0].key, "pf", 0, 0)
    assert all(h.get("Authorization") == "Bearer secret-key" for h in server.headers)


def test_repeats_average_and_any_failed_repeat_makes_the_image_missing(prompts, tmp_path):
    script = {"steady": ["Score: 4", "Score: 2", "Score: 3"], "one bad": ["Score: 4", "Score: 9", "x", "y"]}
    items = [make_item(tmp_path, n.replace(" ", "-"), text=n) for n in script]
    with FakeJudgeServer(script) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf", temperature=1.0,
                             repeats=3, attempts=2, workers=1)
        rows = metric.score(items)
    assert metric.ids == ("pf/j", "pf/j/r0", "pf/j/r1", "pf/j/r2")
    assert rows[0] == pytest.approx({"pf/j": (4 + 2 + 3) / 3 / 4, "pf/j/r0": 1.0, "pf/j/r1": 0.5, "pf/j/r2": 0.75})
    assert math.isnan(rows[1]["pf/j"]) and rows[1]["pf/j/r0"] == 1.0
    assert len(server.requests) == 3 + 3 + 2              # "one bad": 3 first attempts, 2 failed repeats retried once


def test_greedy_asks_once_per_item(prompts, tmp_path):
    with FakeJudgeServer({"cp": ["Score: 1"], "t": ["nothing useful"]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), repeats=3, attempts=3)
        row = metric.score([make_item(tmp_path, "a", text="t")])[0]
    assert row == pytest.approx({"cp/j": 0.25, "pf/j": math.nan}, nan_ok=True)
    assert len(server.requests) == 2 and all(r["temperature"] == 0.0 for r in server.requests)


def test_endpoint_problems_are_errors_not_answers(prompts, tmp_path):
    item = make_item(tmp_path, "a", text="t")
    with FakeJudgeServer({"cp": [401], "t": [401]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        with pytest.raises(BenchError, match="OPENAI_API_KEY"):
            metric.score([item])
    with FakeJudgeServer({"cp": [500], "t": [500]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        metric.backend.transport_retries = 1
        with pytest.raises(BenchError, match="failed 2 times \\(HTTP 500\\)"):
            metric.score([item])
    with pytest.raises(BenchError, match="http\\(s\\) URL"):
        JudgeMetric(endpoint="localhost:8000", model="j", prompts=str(prompts))


# ---- end to end: a run scored through the endpoint, cached, reported ----------------------------
def test_run_scored_by_endpoint_records_failures_and_caches(tmp_path, capsys):
    from bench.cli import main

    script = {"cp": ["Looks the same. Score: 4"]}
    collection = "style_00_pixel_mosaic"
    prompts = [line for line in (Path(__file__).parents[1] / "datasets/mini-dreambench-plus/captions/style/00.txt")
               .read_text().splitlines()[1:4]]
    script.update({prompts[0]: ["Score: 2"], prompts[1]: [""], prompts[2]: [REFUSAL]})
    out = tmp_path / "run"
    with FakeJudgeServer(script) as server:
        argv = ["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "smoke", "--subjects", collection,
                "--limit", "3", "--metrics", "judge", "--out", str(out),
                "--metric-param", f"judge.endpoint={server.url}", "--metric-param", "judge.model=judge-y",
                "--metric-param", f"judge.prompts={TINY_PROMPTS}"]
        assert main(argv) == 0, capsys.readouterr().err
        first = len(server.requests)
        capsys.readouterr()
        assert main(["score", str(out)]) == 0                      # everything from the cache
        assert len(server.requests) == first == 6
        summary = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "/judge-y" in line}
        assert "1 of 3 images have a value" in summary["pf/judge-y"]    # the two missing answers are not counted
        assert "over 3 images" in summary["cp/judge-y"]
    scores = pd.read_parquet(out / "scores.parquet").set_index(["metric", "prompt_index"])["value"]
    assert scores[("cp/judge-y", 0)] == 1.0 and scores[("pf/judge-y", 0)] == 0.5
    assert math.isnan(scores[("pf/judge-y", 1)]) and math.isnan(scores[("pf/judge-y", 2)])
    answers = [json.loads(line) for line in (out / ANSWERS_FILE).read_text().splitlines()]
    failed = sorted((a["key"].split("/")[2], a["failure"], a["answer"]) for a in answers if a["failure"])
    assert failed == [("001", "empty answer", ""), ("002", "refusal", "I can't rate this.")]
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    board = (tmp_path / "rep" / "leaderboard-dreambench-plus.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| ours"))
    assert "2 judge answers missing" in row


# ---- the local backend: a tiny random Qwen2.5-VL through from_pretrained ----------------------------
@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    from bench.metrics.judge_tiny import build_tiny_judge

    return build_tiny_judge(tmp_path_factory.mktemp("tiny-judge"))


def test_tiny_vlm_answers_through_the_local_backend_as_the_library_does(tiny_judge_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    metric = JudgeMetric(model=str(tiny_judge_dir), prompts=str(TINY_PROMPTS), max_new_tokens=6, batch_size=2)
    assert metric.ids == (f"cp/{tiny_judge_dir.name}", f"pf/{tiny_judge_dir.name}")
    items = [make_item(tmp_path, "a", text="a red cube"), make_item(tmp_path, "b", text="a blue ball", color=(0, 0, 255))]
    rows = metric.score(items)
    assert all(math.isnan(v) for row in rows for v in row.values())           # random text never holds a score
    assert len(metric.answers) == 4 and all(a["failure"] in ("no score", "empty answer") for a in metric.answers)
    # independent: the same conversation through the library's documented API, one at a time
    processor = AutoProcessor.from_pretrained(tiny_judge_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_judge_dir).eval()
    from bench.metrics.judge import judge_image
    generated = judge_image(items[1].image)
    instruction = (TINY_PROMPTS / "user_prompt_text_full.txt").read_text().strip()
    reply = (TINY_PROMPTS / "gpt_prompt_text_full.txt").read_text().strip()
    messages = [{"role": "user", "content": [{"type": "text", "text": instruction}]},
                {"role": "assistant", "content": [{"type": "text", "text": reply}]},
                {"role": "user", "content": [{"type": "text", "text": "a blue ball"}, {"type": "image", "image": generated}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    single = JudgeMetric(model=str(tiny_judge_dir), prompts=str(TINY_PROMPTS), max_new_tokens=6, batch_size=1,
                         kinds="pf")
    single.score([items[1]])
    assert single.answers[0]["answer"] == expected


def test_local_judge_sends_no_system_turn_and_ignores_the_models_generation_config(tiny_judge_dir, tmp_path):
    from bench.metrics.judge import judge_image
    from bench.metrics.judge_backends import DEFAULT_SYSTEM_TURN, TransformersJudge
    from bench.metrics.judge_tiny import CHAT_TEMPLATE

    # the family's template: a default system turn when the conversation has none (as Qwen2/2.5-VL's)
    qwen_like = ("{%- if messages[0]['role'] != 'system' %}{{ '" + DEFAULT_SYSTEM_TURN.replace("\n", "\\n")
                 + "' }}{% endif -%}" + CHAT_TEMPLATE)
    image = judge_image(make_item(tmp_path, "a").image)
    conversation = [{"role": "user", "content": "rate it"}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [("text", "a red cube"), ("image", image)]}]
    plain, family = TransformersJudge(str(tiny_judge_dir), max_new_tokens=5), TransformersJudge(str(tiny_judge_dir), max_new_tokens=5)
    plain._load()
    family._load()
    family._processor.chat_template = qwen_like
    family._model.generation_config.repetition_penalty = 3.0       # as a model's own config may say
    family._model.generation_config.top_k = 1
    raw = family._processor.apply_chat_template(TransformersJudge._hf_messages(conversation),
                                                add_generation_prompt=True, tokenize=False)
    assert raw.startswith(DEFAULT_SYSTEM_TURN)                     # the template does add it ...
    rendered = family.render([conversation])[0]
    assert not rendered.startswith("<|im_start|>system") and rendered == plain.render([conversation])[0]   # ... we do not
    with_system = [{"role": "system", "content": "be strict"}] + conversation
    kept = family.render([with_system])[0]
    assert kept.startswith("<|im_start|>system") and "be strict" in kept and "helpful" not in kept
    assert [a.text for a in family.answer([conversation], [0], 0.0)] == [a.text for a in plain.answer([conversation], [0], 0.0)]
    settings = TransformersJudge.generation_settings(0.0, 5)
    assert settings["repetition_penalty"] == 1.0 and settings["do_sample"] is False
    assert JudgeMetric(model=str(tiny_judge_dir), prompts=str(TINY_PROMPTS)).settings["decoding"]["repetition_penalty"] == 1.0


def test_missing_local_judge_is_one_line(tmp_path):
    metric = JudgeMetric(model=str(tmp_path / "no-such-model"), prompts=str(TINY_PROMPTS))
    with pytest.raises(BenchError, match="judge.model=DIR"):
        metric.score([make_item(tmp_path, "a")])


def test_repeats_give_the_spread_over_repeats_and_the_cp_pf_product(tmp_path, capsys):
    from bench.cli import main

    captions = (Path(__file__).parents[1] / "datasets/mini-dreambench-plus/captions/object/00.txt").read_text()
    first, second = captions.splitlines()[1:3]
    # one request at a time, in task order: item 0's three CP repeats, its PF ones, then item 1's
    script = {"cp": ["Score: 4", "Score: 2", "Score: 3", "Score: 1", "Score: 1", "Score: 4"],
              first: ["Score: 4"], second: ["Score: 2"]}
    out = tmp_path / "run"
    with FakeJudgeServer(script) as server:
        argv = ["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "smoke", "--subjects",
                "object_00_teapot", "--limit", "2", "--metrics", "judge", "--out", str(out)]
        for param in (f"endpoint={server.url}", "model=j", f"prompts={TINY_PROMPTS}", "temperature=1",
                      "repeats=3", "workers=1", "batch_size=1"):
            argv += ["--metric-param", f"judge.{param}"]
        assert main(argv) == 0, capsys.readouterr().err
    scores = pd.read_parquet(out / "scores.parquet")
    assert sorted(scores["metric"].unique()) == sorted(
        ["cp/j", "pf/j"] + [f"{k}/j/r{r}" for k in ("cp", "pf") for r in range(3)])
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    board = (tmp_path / "rep" / "leaderboard-dreambench-plus.md").read_text()
    header = next(line for line in board.splitlines() if line.startswith("|  "))
    row = next(line for line in board.splitlines() if line.startswith("| ours"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    # repeat means: CP (4+1)/8, (2+1)/8, (3+4)/8 -> 0.625 ± 0.25; PF (4+2)/8 each time -> 0.75 ± 0
    assert cells["CP"] == "0.625 ± 0.250" and cells["PF"] == "0.750 ± 0.000"
    assert cells["CP·PF"] == f"{0.625 * 0.75:.3f}" and cells["Check"] == "ok"
    assert not any(h.startswith("CP (") for h in cells)          # repeat ids are no columns of their own
    kinds = board.split("## By prompt kind", 1)[1]
    assert "| photorealistic |" in kinds and "imaginative" not in kinds      # prompts 0 and 1 only


@pytest.mark.parametrize("suite, extra", [("dreambench", []), ("dreamedit", ["--task", "replacement"])])
def test_judge_scores_dreambench_and_dreamedit_runs(tmp_path, capsys, suite, extra):
    from bench.cli import main
    from bench.metrics.judge import judge_image
    from bench.suites import load_suite

    out = tmp_path / "run"
    with FakeJudgeServer({"cp": ["Score: 3"], "photo of a backpack": ["Score: 2"], "a backpack in the jungle": ["Score: 2"]}) \
            as server:
        argv = ["run", "--method", "sd" if suite == "dreambench" else "ezigen", "--suite", suite, "--preset", "smoke",
                "--subjects", "backpack", "--limit", "1", "--metrics", "judge", "--out", str(out), *extra,
                "--metric-param", f"judge.endpoint={server.url}", "--metric-param", "judge.model=j",
                "--metric-param", f"judge.prompts={TINY_PROMPTS}"]
        assert main(argv) == 0, capsys.readouterr().err
    scores = pd.read_parquet(out / "scores.parquet").set_index("metric")["value"]
    assert scores["cp/j"] == 0.75 and scores["pf/j"] == 0.5
    # CP compares with the subject's DreamBench photo, whatever the suite (DreamEdit: not the source image)
    sample = load_suite(suite, mini=True, **({"annotator_preset": "tiny"} if suite == "dreamedit" else {})).samples()
    photo = next(s for s in sample if s.subject == "backpack").subject_images[0]
    assert photo.parent.name == "backpack" and "mini-dreambench" in str(photo)
    cp = next(r for r in server.requests if r["messages"][-1]["content"][0]["type"] == "image_url")
    sent = Image.open(io.BytesIO(base64.b64decode(cp["messages"][-1]["content"][0]["image_url"]["url"].split(",")[1])))
    expected = judge_image(photo)
    diff = sum(abs(a - b) for a, b in zip(sent.convert("RGB").resize((8, 8)).tobytes(), expected.resize((8, 8)).tobytes()))
    assert diff / 192 < 6                              # the same picture, through one JPEG round trip


def test_missing_instruction_files_fail_before_anything_is_generated(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "run"
    argv = ["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "smoke", "--limit", "1",
            "--out", str(out), "--metric-param", f"judge.prompts={tmp_path / 'nowhere'}"]
    assert main(argv) == 2
    assert "judge instruction files not found" in capsys.readouterr().err
    assert not (out / "images").exists()
    assert main(argv + ["--no-score"]) == 0                    # generation alone does not need them


# ---- hostile replies (independent check of issue 22) ------------------------------------------
def test_replies_without_an_answer_are_failures_never_numbers(prompts, tmp_path):
    # an error object, a list, an empty choices list or a message that is not an object can hold
    # the text "Score: 3": it is kept as the raw answer and never parsed into a number
    script = {"error object": [{"error": {"message": "Score: 3 (server overloaded)"}}],
              "a list": [["Score: 3"]], "no choices": [{"choices": []}],
              "string message": [{"choices": [{"message": "Score: 3"}]}],
              "dict content": [{"choices": [{"message": {"content": {"text": "Score: 3"}}}]}],
              "text parts": [{"choices": [{"message": {"content": [{"type": "text", "text": "Score: 2"}]}}]}]}
    items = [make_item(tmp_path, name.replace(" ", "-"), text=name) for name in script]
    with FakeJudgeServer(script) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        rows = metric.score(items)
    values = {item.eval_text: row["pf/j"] for item, row in zip(items, rows)}
    assert values.pop("text parts") == 0.5                 # content as a list of text parts is read as text
    assert all(math.isnan(v) for v in values.values()), values
    failures = {a["key"].split("/")[1]: (a["failure"], a["answer"]) for a in metric.answers}
    assert failures["error-object"][0] == "reply without choices" and "overloaded" in failures["error-object"][1]
    assert failures["a-list"] == ("reply without choices", '["Score: 3"]')
    assert failures["string-message"][0] == "message is not an object"
    assert failures["dict-content"][0] == "content is not text"


def test_a_server_that_does_not_speak_http_is_one_line(prompts, tmp_path):
    import socketserver

    class NotHttp(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), NotHttp) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            metric = JudgeMetric(endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1", model="j",
                                 prompts=str(prompts), kinds="pf")
            metric.backend.transport_retries = 1
            with pytest.raises(BenchError, match="failed 2 times \\(BadStatusLine"):
                metric.score([make_item(tmp_path, "a", text="t")])
        finally:
            server.shutdown()


def test_two_judges_in_one_leaderboard_each_get_their_cp_pf_product():
    from bench.report.leaderboard import leaderboard_table

    rows = []
    for run, judge, cp, pf in (("a", "j1", 1.0, 0.5), ("b", "j2", 0.75, 0.25)):
        for subject in ("s1", "s2", "s3"):
            for kind, value in (("cp", cp), ("pf", pf)):
                rows.append({"key": f"dreambench-plus/{subject}/000/s42/i0", "seed": 42, "subject": subject,
                             "category": "object", "prompt_index": 0, "metric": f"{kind}/{judge}",
                             "metric_version": "1", "value": value, "sha256": "x", "context": "", "run": run,
                             "suite": "dreambench-plus", "method": "m"})
    runs = pd.DataFrame([{"run": run, "run_dir": run, "suite": "dreambench-plus", "method": "m", "label": "m",
                          "base_model": "b", "weights": "w", "random_weights": False, "seeds": [42], "recorded": 3,
                          "expected": 3, "expected_per_seed": 3} for run in ("a", "b")])
    table, _, numeric = leaderboard_table(pd.DataFrame(rows), runs, "dreambench-plus", warnings={})
    ours = table[table[""] == "ours"].set_index("Run")
    assert ours.loc["a", "CP·PF (j1)"] == "0.500" and ours.loc["b", "CP·PF (j2)"] == "0.188"        # 0.75 x 0.25
    assert ours.loc["a", "CP·PF (j2)"] == ours.loc["b", "CP·PF (j1)"] == "–"


def test_doctor_lists_the_judge_model_and_instruction_files_with_the_users_parameters(tmp_path, capsys, prompts):
    from bench.cli import main

    base = ["doctor", "--method", "sd", "--suite", "dreambench-plus", "--metrics", "judge",
            "--data-root", str(Path(__file__).parents[1] / "datasets/mini-dreambench-plus")]
    main(base + ["--metric-param", f"judge.model={tmp_path / 'no-judge'}"])
    out = capsys.readouterr().out
    assert f"judge model {tmp_path / 'no-judge'}" in out and "no such folder" in out
    assert "judge instruction files" in out
    main(base + ["--metric-param", f"judge.prompts={prompts}", "--metric-param", "judge.endpoint=http://127.0.0.1:9/v1"])
    out = capsys.readouterr().out
    assert "judge model" not in out                         # the endpoint holds the model
    line = next(line for line in out.splitlines() if "judge instruction files" in line)
    assert line.split()[0] == "ok"


def test_a_pass_stopped_by_the_endpoint_keeps_what_it_computed_and_resumes(tmp_path, capsys, monkeypatch):
    from bench.cli import main

    monkeypatch.setattr("bench.metrics.judge_http.pause", lambda s, stop: None)   # no waits between retries

    collection = "style_00_pixel_mosaic"
    prompts = [line for line in (Path(__file__).parents[1] / "datasets/mini-dreambench-plus/captions/style/00.txt")
               .read_text().splitlines()[1:4]]
    out = tmp_path / "run"
    assert main(["run", "--method", "sd", "--suite", "dreambench-plus", "--preset", "smoke", "--subjects", collection,
                 "--limit", "3", "--no-score", "--out", str(out)]) == 0, capsys.readouterr().err
    params = ["--metrics", "judge", "--batch-size", "1", "--metric-param", "judge.model=j",
              "--metric-param", f"judge.prompts={TINY_PROMPTS}", "--metric-param", "judge.kinds=pf"]
    # the endpoint answers the first prompt, then fails for the third (every retry): the pass stops
    with FakeJudgeServer({prompts[0]: ["Score: 4"], prompts[1]: ["Score: 2"], prompts[2]: [500]}) as server:
        assert main(["score", str(out), "--metric-param", f"judge.endpoint={server.url}"] + params) == 2
        port = server.httpd.server_address[1]      # the server restarts on the same URL (part of the cache key)
    assert "failed 5 times (HTTP 500)" in capsys.readouterr().err
    kept = pd.read_parquet(out / "scores.parquet").set_index("prompt_index")["value"]
    assert kept.to_dict() == {0: 1.0, 1: 0.5}                 # the images scored before the endpoint went down
    with FakeJudgeServer({prompts[2]: ["Score: 1"]}, port=port) as server:
        assert main(["score", str(out), "--metric-param", f"judge.endpoint={server.url}"] + params) == 0
        assert len(server.requests) == 1                     # only the image the stopped pass lacked
    scores = pd.read_parquet(out / "scores.parquet").set_index("prompt_index")["value"]
    assert scores.sort_index().tolist() == [1.0, 0.5, 0.25]


def test_transport_retries_wait_longer_each_time_or_as_the_server_asks(prompts, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr("bench.metrics.judge_http.pause", lambda s, stop: waits.append(s))
    item = make_item(tmp_path, "a", text="t")
    with FakeJudgeServer({"t": [(429, {"Retry-After": "7"}), (503, {"Retry-After": "soon"}), "Score: 2"]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        assert metric.score([item]) == [{"pf/j": 0.5}]
    assert waits == [7.0, 2.0]                 # the server's Retry-After, else the second step of the ladder
    waits.clear()
    with FakeJudgeServer({"t": [(500, {"Retry-After": "3600"})]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        with pytest.raises(BenchError, match="failed 3 times .*Retry-After 3600 s capped at 30 s.*60 s of waits"):
            metric.score([item])
    assert waits == [30.0] * 2 and len(server.requests) == 3        # bounded: waits capped at 30 s, 60 s in all
    waits.clear()
    with FakeJudgeServer({"t": [500]}) as server:
        metric = JudgeMetric(endpoint=server.url, model="j", prompts=str(prompts), kinds="pf")
        with pytest.raises(BenchError, match="failed 5 times"):
            metric.score([item])
    assert waits == [0.5, 2.0, 8.0, 30.0]
