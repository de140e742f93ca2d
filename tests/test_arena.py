"""`bench arena`: pairwise judging with a stub judge whose preferences are known, Bradley–Terry
checked against its closed form and by simulation, the position bias it was given, resume, the
--json fields and the report section."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.arena.ask import parse_verdict
from bench.arena.rating import ELO_SCALE, bootstrap, fit, position_bias
from bench.metrics.judge import TINY_PROMPTS
from judge_stub import Stub, chat, reply

COLOURS = {"A": (200, 30, 30), "B": (30, 200, 30), "C": (30, 30, 200)}
RANK = {"A": 0, "B": 1, "C": 2}          # the stub's CP preference: A over B over C
SUBJECTS = ("live_subject_animal_00_kitten", "object_00_teapot", "style_00_pixel_mosaic")


# ---- Bradley–Terry ---------------------------------------------------------------------------
@pytest.mark.parametrize("wins, losses", [(7, 3), (1, 9), (5, 5), (30, 1)])
def test_two_methods_fit_the_closed_form(wins, losses):
    theta = fit(np.array([[0.0, wins], [losses, 0.0]]), prior=0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(wins / losses), abs=1e-6)
    assert theta.sum() == pytest.approx(0.0, abs=1e-9)
    # a tie is half a win each way; the default prior adds half a tie between every two runs
    theta = fit(np.array([[0.0, wins + 0.5], [losses + 0.5, 0.0]]), prior=0.5)
    assert theta[0] - theta[1] == pytest.approx(math.log((wins + 0.75) / (losses + 0.75)), abs=1e-6)


def test_simulated_games_recover_known_strengths_within_the_bootstrap_interval():
    rng = np.random.default_rng(5)
    truth = np.array([0.8, 0.0, -0.8])
    per_subject = np.zeros((40, 3, 3))
    for s in range(40):
        for i in range(3):
            for j in range(i + 1, 3):
                for _ in range(6):
                    won = rng.random() < 1 / (1 + math.exp(-(truth[i] - truth[j])))
                    per_subject[s, i, j] += won
                    per_subject[s, j, i] += 1 - won
    theta = fit(per_subject.sum(axis=0))
    assert list(np.argsort(-theta)) == [0, 1, 2] and np.abs(theta - truth).max() < 0.3
    low, high = bootstrap(per_subject, 200, seed=0)
    elo_truth = 1000 + ELO_SCALE * truth
    assert np.all(low <= elo_truth) and np.all(elo_truth <= high) and np.all(high - low < 250)


def test_replicates_fitted_together_equal_each_fitted_alone():
    from bench.arena.rating import fit_many

    wins = np.random.default_rng(1).integers(0, 30, (6, 4, 4)).astype(float)
    assert np.abs(fit_many(wins) - np.stack([fit(w) for w in wins])).max() < 1e-6


def test_one_run_winning_everything_stays_finite():
    theta = fit(np.array([[0.0, 20.0, 20.0], [0.0, 0.0, 10.0], [0.0, 10.0, 0.0]]))
    assert np.all(np.isfinite(theta)) and theta[0] > theta[1] == pytest.approx(theta[2], abs=1e-6)


@pytest.mark.parametrize("text, verdict, failure", [
    ("A keeps the ears. Better: A", "A", None), ("Better: B", "B", None), ("Better: tie", "tie", None),
    ("Better: Tie", "tie", None), ("Better: a bit of both", None, "no verdict"), ("better: A", None, "no verdict"),
    ("Better: A ... no, Better: B", None, "2 verdicts"), ("", None, "empty answer"), ("Both fine.", None, "no verdict"),
])
def test_parse_verdict(text, verdict, failure):
    assert parse_verdict(text) == (verdict, failure)


def test_position_bias_counts_pairs_that_pick_one_slot():
    assert position_bias([("A", "B"), ("B", "A")]) == (0.0, 2)        # the same image both times
    assert position_bias([("A", "A"), ("B", "B"), ("A", "B"), ("tie", "A"), (None, "A")]) == (2 / 3, 3)
    assert position_bias([]) == (None, 0)


# ---- end to end through a stub judge ---------------------------------------------------------------
def run_of(image_url: str) -> str:
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1]))).convert("RGB"))
    return "ABC"[int(pixels.reshape(-1, 3).mean(axis=0).argmax())]


def stub_judge(h, body):
    """Pointwise: Score: 2. Pairwise CP: the better-ranked run (A > B > C); PF: always the first image
    shown (pure position)."""
    parts = body["messages"][-1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    texts = " ".join(p["text"] for p in parts if p["type"] == "text")
    if "Image A:" not in texts:
        return reply(h, chat("Score: 2"))
    if "Prompt:" in texts:
        return reply(h, chat("Both show it; the first one a little more. Better: A"))
    first, second = run_of(images[1]), run_of(images[2])
    return reply(h, chat(f"Better: {'A' if RANK[first] < RANK[second] else 'B'}"))


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three imported runs of the mini DreamBench++ copy (3 subjects x 2 prompts, seed 42), one colour each."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("arena")
    with Stub(stub_judge) as stub:
        for name, colour in COLOURS.items():
            for subject in SUBJECTS:
                for prompt in (0, 1):
                    folder = root / f"img-{name}" / subject / str(prompt) / "s42"
                    folder.mkdir(parents=True)
                    Image.new("RGB", (64, 64), colour).save(folder / "i0.png")
            assert main(["score", "--images", str(root / f"img-{name}"), "--suite", "dreambench-plus", "--mini",
                         "--out", str(root / f"run-{name}"), "--name", f"method-{name}", "--metrics", "judge",
                         "--no-progress", "--workers", "0", "--metric-param", f"judge.endpoint={stub.url}",
                         "--metric-param", "judge.model=stub", "--metric-param", f"judge.prompts={TINY_PROMPTS}"]) == 0
    return root


def test_arena_recovers_the_known_order_and_the_position_bias_it_was_given(three_runs, tmp_path, capsys):
    from bench.cli import main

    runs = [str(three_runs / f"run-{n}") for n in "CAB"]          # the order given does not matter
    argv = ["arena", *runs, "--out", str(tmp_path / "rep" / "arena"), "--json", str(tmp_path / "arena.json"),
            "--resamples", "50", "--no-progress", "--metric-param", "judge.model=stub",
            "--metric-param", "judge.concurrency=4"]
    with Stub(stub_judge) as stub:
        assert main(argv + ["--metric-param", f"judge.endpoint={stub.url}"]) == 0, capsys.readouterr().err
        asked = stub.count
        port = stub.httpd.server_address[1]
    assert asked == 3 * 6 * 2 * 2            # 3 pairs x 6 shared keys x (CP, PF) x both orders
    result = json.loads((tmp_path / "arena.json").read_text())
    by_run = {r["run"]: r for r in result["runs"]}
    assert set(by_run) == {"run-A", "run-B", "run-C"}
    a, b, c = (by_run[f"run-{n}"] for n in "ABC")
    assert a["rating"] > b["rating"] > c["rating"]
    for r in (a, b, c):
        assert r["rating_low"] <= r["rating"] <= r["rating_high"]
    assert a["by_kind"]["cp"]["rating"] > b["by_kind"]["cp"]["rating"] > c["by_kind"]["cp"]["rating"]
    pf = [r["by_kind"]["pf"]["rating"] for r in (a, b, c)]
    assert max(pf) - min(pf) < 1e-6                            # answering by position carries no preference
    assert result["position_bias"] == pytest.approx(0.5) and result["position_bias_pairs"] == 36
    assert result["position_bias_by_kind"]["cp"]["position_bias"] == 0.0
    assert result["position_bias_by_kind"]["pf"]["position_bias"] == 1.0
    labels = result["win_matrix"]["runs"]
    rate = result["win_matrix"]["win_rate"][labels.index("run-A")][labels.index("run-C")]
    assert rate == pytest.approx(0.75)                          # CP: A always wins; PF: one of two orders
    assert (tmp_path / "rep" / "arena" / "arena_answers.jsonl").read_text().count("\n") == asked
    # a second arena on the same runs, same judge at the same URL, asks nothing
    with Stub(stub_judge, port=port) as stub:
        assert main(argv + ["--metric-param", f"judge.endpoint={stub.url}"]) == 0
        assert stub.count == 0
    out = capsys.readouterr().out
    assert "## Arena" in out and "run-A" in out
    # bench report with the arena's folder under its --out: the section is in the leaderboard
    assert main(["report", *runs, "--out", str(tmp_path / "rep"), "--html"]) == 0
    board = (tmp_path / "rep" / "leaderboard-dreambench-plus.md").read_text()
    assert "## Arena: pairwise judge stub" in board and "Position bias 0.50 over 36 pairs" in board and "CP 0.00" in board
    assert "Arena: pairwise judge stub" in (tmp_path / "rep" / "html" / "index.html").read_text()
    # a report of other runs ignores arena results that compared runs it does not show
    assert main(["report", runs[0], runs[1], "--out", str(tmp_path / "rep")]) == 0
    assert "## Arena" not in (tmp_path / "rep" / "leaderboard-dreambench-plus.md").read_text()


def test_arena_refuses_bad_input_in_one_line(three_runs, tmp_path, capsys):
    from bench.cli import main

    a, b = str(three_runs / "run-A"), str(three_runs / "run-B")
    cases = [
        ([a], "at least two runs"),
        ([a, b, "--json", f"{a}/run.json"], "inside the compared run"),
        ([a, b, "--out", f"{a}/arena"], "inside the compared run"),
        ([a, b, "--metric-param", "judge.endpoint=ftp://x/v1"], "http\\(s\\) URL"),
        ([a, b, "--metric-param", "judge.kinds=cp,zz"], "judge.kinds"),
        ([a, b, "--metric-param", "clip.mode=paired"], "judge's parameters only"),
        ([a, b, "--resamples", "1000000000"], "ARENA_MAX_RESAMPLES"),
        ([a, str(tmp_path / "nothing")], "nothing"),
        ([a, b, "--json", str(tmp_path / "notes.txt")], "not a bench arena result"),     # reviewer r1
        ([a, b, "--out", str(three_runs / "run-C")], "is a run directory"),
        ([a, b, "--json", f"{three_runs}/img-A/{SUBJECTS[0]}/0/s42/i0.png"], "not a bench arena result"),
    ]
    (tmp_path / "notes.txt").write_text("a user's own notes\n")
    import re
    for extra, message in cases:
        assert main(["arena", *extra, "--out", str(tmp_path / "o")] if "--out" not in extra else ["arena", *extra]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (three_runs / "run-A" / "arena").exists()
    assert (tmp_path / "notes.txt").read_text() == "a user's own notes\n"
    with pytest.raises(BenchError):
        from bench.arena.match import questions
        questions([], ("cp",))


def test_report_section_escapes_run_labels_and_shows_missing_as_dashes():
    from bench.report.arena import arena_html, arena_markdown

    result = {"judge": "j", "kinds": ["cp"], "games": 2, "subjects": 1, "resamples": 10, "seed": 0,
              "failures": {"cp": 1}, "position_bias": None, "position_bias_pairs": 0,
              "position_bias_by_kind": {"cp": {"position_bias": None, "pairs": 0}},
              "runs": [{"run": "a|b\n<script>x</script>", "rating": 1010.0, "rating_low": None, "rating_high": None,
                        "wins": 1, "ties": 0, "losses": 0, "by_kind": {"cp": {"rating": 1010.0}}},
                       {"run": "c", "rating": None, "by_kind": {}}],
              "win_matrix": {"runs": ["a|b\n<script>x</script>", "c"], "win_rate": [[None, 1.0], [0.0, None]]}}
    lines = arena_markdown([result])
    table = [line for line in lines if line.startswith("| a")]
    assert table and "<script>" not in "\n".join(lines) and "a\\|b &lt;script&gt;" in table[0]
    assert all(line.count("|") - line.count("\\|") == lines[4].count("|") for line in lines[4:8] if line.startswith("|"))
    assert "1010 [–, –]" in table[0]
    page = arena_html([result])
    assert "<script>" not in page and "&lt;script&gt;" in page
