"""OmniContext's judge: a vision-language model rates prompt following (PF) and subject consistency
(SC) of each generated image 0-10; overall = sqrt(PF * SC) per item; means per task type, and their
mean over task types, as OmniContext's ``calculate_statistics.py`` (docs/judge.md, "OmniContext's judge").

Questions as the release asks them (its ``omnicontext_score.py``, ``prompt_generator.py``,
``openai_util.py``): one user turn holding the instruction text, then every input image (scaled
down to at most 1024^2 pixels, sides floored to multiples of 16, as its
``test_omnicontext_score.py``), then the generated image. The text is the release's answer-format
preamble plus the PF or SC rule for the item's kind (a task type naming "scene" uses the scene
rules), with ``<instruction>`` replaced by the item's instruction. Those texts are not part of this
project: they are read from the user's clone of the OmniGen2 repository
(``omnicontext/prompt_generator.py``, its string constants parsed, never executed;
``--metric-param omnicontext-judge.prompts=DIR``); the mini copy has short texts of our own.

Two deliberate differences from the release: each question is asked once (the release's retry loop
has no ``break``, so it asks every question three times and keeps the last answer; ``repeats=k``
asks k times and averages, missing when any answer is), and an answer without a parsable score is a
recorded missing value (NaN), never a random number (the release scores it ``random.randint(0, 10)``).
Every answer is appended to ``judge_answers.jsonl`` in the run folder.

Backends: bench/metrics/judge_backends.py (a local transformers model or an OpenAI-compatible
endpoint; the release used GPT-4.1 with ``max_tokens=1400``). Ids ``oc_pf/<judge>``,
``oc_sc/<judge>``, ``oc_overall/<judge>``, on the release's 0-10 scale.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import threading
from pathlib import Path
from typing import Sequence

from bench import BenchError
from bench.metrics.base import Metric, ScoreItem
from bench.suites import REPO_ROOT

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_PROMPTS = REPO_ROOT / "datasets" / "omnicontext" / "OmniGen2"
TINY_PROMPTS = REPO_ROOT / "datasets" / "mini-omnicontext" / "judge-prompts"
PROMPT_FILE = Path("omnicontext") / "prompt_generator.py"
#: the release's string constants: the answer-format preamble, then (kind, scene?) -> rule
PREAMBLE = "_context_no_delimit"
RULES = {("pf", False): "_prompts_0shot_in_context_generation_rule_PF_Single_and_Multiple",
         ("pf", True): "_prompts_0shot_in_context_generation_rule_PF_Scene",
         ("sc", False): "_prompts_0shot_in_context_generation_rule_SC_Single_and_Multiple",
         ("sc", True): "_prompts_0shot_in_context_generation_rule_SC_Scene"}
KINDS = ("pf", "sc")
ANSWERS_FILE = "judge_answers.jsonl"
MAX_PROMPT_FILE_BYTES = 512 * 1024
MAX_STORED_ANSWER = 20_000
INPUT_AREA = 1024 * 1024
PARSER_VERSION = "1"


# ---- parsing ----------------------------------------------------------------------------------
def parse_score(text: str, refused: bool = False) -> tuple[float | None, str | None]:
    """(score 0-10, None) or (None, why it failed). A score is the number ``score`` (0-10; the
    release averages a fractional one as given) of the JSON object between the answer's first ``{``
    and last ``}``, newlines dropped (the release's format and parsing), or an answer that is only an
    integer (the release accepts that too). Nothing else is guessed."""
    if refused:
        return None, "refusal"
    if not text or not text.strip():
        return None, "empty answer"
    stripped = text.strip()
    if stripped.isdigit():
        value = int(stripped)
        return (value, None) if 0 <= value <= 10 else (None, f"score {value} outside 0-10")
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        return None, "no JSON object"
    try:                                 # the release drops the newlines first (a line break inside
        obj = json.loads(stripped[start:end + 1].replace("\n", ""))      # the reasoning text parses)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(obj, dict) or "score" not in obj:
        return None, "no score field"
    value = obj["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, "score is not a number"
    if not 0 <= value <= 10:
        return None, f"score {value} outside 0-10"
    return (int(value) if float(value).is_integer() else float(value)), None


# ---- instruction texts ------------------------------------------------------------------------
def resolve_prompt_file(path: Path | str) -> Path:
    """``omnicontext/prompt_generator.py`` under DIR (the clone), DIR/OmniGen2, or DIR itself."""
    path = Path(path).expanduser()
    for candidate in (path / PROMPT_FILE, path / "OmniGen2" / PROMPT_FILE, path / PROMPT_FILE.name, path):
        if candidate.is_file() and candidate.name == PROMPT_FILE.name:
            return candidate
    raise BenchError(f"OmniContext judge texts not found under {path} (looked for {PROMPT_FILE}): clone "
                     "https://github.com/VectorSpaceLab/OmniGen2 and pass --metric-param omnicontext-judge.prompts=DIR, "
                     "or see `python -m bench data where omnicontext`")


def load_texts(path: Path) -> tuple[dict[str, str], str]:
    """The release's string constants from its prompt_generator.py (parsed, not run) and their sha256."""
    from bench.files import read_text_file

    data = read_text_file(path, MAX_PROMPT_FILE_BYTES, "OmniContext judge texts")
    try:
        tree = ast.parse(data)
    except (SyntaxError, ValueError):
        raise BenchError(f"OmniContext judge texts {path}: not a readable Python file") from None
    texts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    texts[target.id] = node.value.value
    wanted = [PREAMBLE, *RULES.values()]
    missing = [name for name in wanted if not texts.get(name, "").strip()]
    if missing:
        raise BenchError(f"OmniContext judge texts {path}: no text {', '.join(missing)} (an OmniGen2 "
                         "omnicontext/prompt_generator.py defines them)")
    if any("<instruction>" not in texts[name] for name in RULES.values()):
        raise BenchError(f"OmniContext judge texts {path}: a rule text lacks the <instruction> placeholder")
    digest = hashlib.sha256(json.dumps([texts[n] for n in wanted]).encode()).hexdigest()[:16]
    return {name: texts[name] for name in wanted}, digest


def question(texts: dict[str, str], kind: str, scene: bool, instruction: str) -> str:
    """The release's PromptGenerator: preamble + rule, the instruction put in."""
    return (texts[PREAMBLE] + texts[RULES[(kind, scene)]]).replace("<instruction>", instruction)


def input_view(image):
    """An input image as the release shows it to the judge: at most 1024^2 pixels, sides floored to 16."""
    width, height = image.size
    if width * height > INPUT_AREA:
        ratio = math.sqrt(INPUT_AREA / (width * height))
        width, height = int(width * ratio), int(height * ratio)
    size = (max(16, width // 16 * 16), max(16, height // 16 * 16))
    return image if size == image.size else image.resize(size)


# ---- aggregation ------------------------------------------------------------------------------
def statistics(rows) -> list[dict]:
    """Per task type the mean PF, SC and overall (sqrt(PF*SC) per item), then "Average": the mean of
    the task types' means, as calculate_statistics.py. ``rows``: dicts (or a DataFrame) with
    ``task_type``, ``pf``, ``sc``. A missing (NaN) PF or SC leaves that item out of that mean and
    out of the overall; ``missing`` counts such items."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row["task_type"]), []).append(row)

    def mean(values):
        values = [v for v in values if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    out = []
    for task_type in sorted(groups):
        items = groups[task_type]
        pf, sc = [float(r["pf"]) for r in items], [float(r["sc"]) for r in items]
        overall = [math.sqrt(p * s) for p, s in zip(pf, sc) if not (math.isnan(p) or math.isnan(s))]
        out.append({"task_type": task_type, "PF": mean(pf), "SC": mean(sc), "Overall": mean(overall),
                    "n": len(items), "missing": sum(math.isnan(p) or math.isnan(s) for p, s in zip(pf, sc))})
    if out:
        out.append({"task_type": "Average", **{k: mean([r[k] for r in out]) for k in ("PF", "SC", "Overall")},
                    "n": sum(r["n"] for r in out), "missing": sum(r["missing"] for r in out)})
    return out


def run_statistics(run_dir: Path, judge: str | None = None) -> dict[int, list[dict]]:
    """statistics() of a scored run, per seed, from its scores.parquet: one judge's answers (``judge``,
    needed when the run was scored by several; PF and SC are never paired across judges)."""
    import pandas as pd

    path = Path(run_dir) / "scores.parquet"
    if not path.is_file():
        raise BenchError(f"{path}: no scores (score the run first: `python -m bench score {run_dir}`)")
    frame = pd.read_parquet(path)
    frame = frame[frame["metric"].str.startswith(("oc_pf/", "oc_sc/"))]
    if frame.empty:
        raise BenchError(f"{path}: no OmniContext judge scores (oc_pf/..., oc_sc/...)")
    judges = frame["metric"].str.split("/", n=1).str[1]
    names = sorted(judges.unique())
    if judge is None and len(names) > 1:
        raise BenchError(f"{path}: scored by {len(names)} judges ({', '.join(names)}); name one with --judge")
    if judge is not None and judge not in names:
        raise BenchError(f"{path}: no scores of judge {judge!r}; it has {', '.join(names)}")
    frame = frame[judges == (judge or names[0])]
    frame = frame.assign(kind=frame["metric"].str.split("/").str[0].str[3:])
    wide = frame.groupby(["key", "seed", "category", "kind"])["value"].first().unstack("kind").reset_index()
    return {int(seed): statistics(group.rename(columns={"category": "task_type"}))
            for seed, group in wide.groupby("seed")}


# ---- the metric -------------------------------------------------------------------------------
class OmniContextJudge(Metric):
    family = "omnicontext-judge"

    def __init__(self, device: str = "cpu", preset: str | None = None, model: str = DEFAULT_MODEL,
                 endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY", prompts: str | None = None,
                 temperature: float = 0.0, repeats: int = 1, max_new_tokens: int = 1400, batch_size: int = 8,
                 workers: int = 8):
        from bench.metrics.judge import model_slug
        from bench.metrics.judge_backends import EndpointJudge, TransformersJudge

        if preset not in (None, "tiny"):
            raise BenchError(f"unknown metric preset {preset!r} (only 'tiny')")
        for name, value in (("repeats", repeats), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                            ("workers", workers)):
            if int(value) < 1:
                raise BenchError(f"--metric-param omnicontext-judge.{name}={value}: must be at least 1")
        if not 0 <= float(temperature) <= 2:
            raise BenchError(f"--metric-param omnicontext-judge.temperature={temperature}: within 0-2 (0 = greedy)")
        self.temperature = float(temperature)
        self.repeats = 1 if self.temperature == 0 else int(repeats)     # greedy: the same answer every time
        locate = None
        if preset == "tiny" and endpoint is None:
            from bench.metrics.judge_tiny import TINY_JUDGE_VERSION, tiny_judge_folder
            source, locate, self.judge_name = f"tiny-random-qwen2.5-vl-v{TINY_JUDGE_VERSION}", tiny_judge_folder, \
                "tiny-random-qwen2.5-vl"
            max_new_tokens = min(int(max_new_tokens), 8)
        else:
            source, self.judge_name = model, model_slug(model)
        self.prompt_file = resolve_prompt_file(prompts if prompts else (TINY_PROMPTS if preset == "tiny" else DEFAULT_PROMPTS))
        self.texts, texts_hash = load_texts(self.prompt_file)
        if endpoint:
            self.backend = EndpointJudge(endpoint, model, api_key_env, int(max_new_tokens), workers=int(workers))
        else:
            self.backend = TransformersJudge(source, device, int(max_new_tokens), int(batch_size), locate=locate)
        self.settings = {"backend": self.backend.describe(), "texts": texts_hash, "temperature": self.temperature,
                         "repeats": self.repeats, "max_new_tokens": int(max_new_tokens), "parser": PARSER_VERSION}
        self.version = "1-" + hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        self.answers_path: Path | None = None
        self.answers: list[dict] = []
        self._lock = threading.Lock()

    @classmethod
    def precheck(cls, preset: str | None = None, prompts: str | None = None, **_) -> None:
        """The instruction texts, checked before a run generates anything (no model is loaded)."""
        load_texts(resolve_prompt_file(prompts if prompts else (TINY_PROMPTS if preset == "tiny" else DEFAULT_PROMPTS)))

    @classmethod
    def requirements(cls, preset: str | None = None, model: str = DEFAULT_MODEL, endpoint: str | None = None,
                     prompts: str | None = None, **params) -> list:
        from bench import needs

        out = []
        if preset is None or prompts:
            folder = Path(prompts).expanduser() if prompts else DEFAULT_PROMPTS
            get = ("pass --metric-param omnicontext-judge.prompts=DIR (a clone of VectorSpaceLab/OmniGen2)" if prompts
                   else f"git clone --depth 1 https://github.com/VectorSpaceLab/OmniGen2 {DEFAULT_PROMPTS}")

            def problem() -> str | None:
                try:
                    load_texts(resolve_prompt_file(folder))
                except BenchError as exc:
                    return str(exc)
                return None
            out.append(needs.probe("OmniContext judge texts (OmniGen2 repository, omnicontext/prompt_generator.py)",
                                   f"omnicontext-judge-texts:{folder}", get, problem, where=str(folder)))
        if preset is None and not endpoint:
            from bench.metrics.judge import JUDGE_SIZES
            out.append(needs.hf_weights(f"judge model {model}", model,
                                        ("config.json", "preprocessor_config.json", "tokenizer_config.json",
                                         "model*.safetensors|pytorch_model*.bin"), JUDGE_SIZES.get(model),
                                        f'hf download {model} --include "*.json" "*.safetensors" "*.txt"'))
        return out

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(f"oc_{kind}/{self.judge_name}" for kind in (*KINDS, "overall"))

    def bind_run(self, run_dir: Path) -> None:
        self.answers_path = Path(run_dir) / ANSWERS_FILE

    def _record(self, **fields) -> None:
        text = fields.get("answer") or ""
        if len(text) > MAX_STORED_ANSWER:
            fields["answer"], fields["truncated_from"] = text[:MAX_STORED_ANSWER], len(text)
        fields["version"] = self.version
        self.answers.append(fields)
        if self.answers_path is not None:
            with self._lock, open(self.answers_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(fields, ensure_ascii=False) + "\n")

    def conversation(self, kind: str, item: ScoreItem, generated) -> list[dict]:
        from bench.images import load_rgb

        if not item.subject_images:
            raise BenchError(f"{item.key}: no input image for the OmniContext judge")
        text = question(self.texts, kind, "scene" in item.category, item.eval_text)
        parts = [("text", text)] + [("image", input_view(load_rgb(p))) for p in item.subject_images]
        return [{"role": "user", "content": parts + [("image", generated)]}]

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        from bench.images import load_rgb
        from bench.metrics.judge import item_seed

        if not items:
            return []
        tasks = [(i, kind, r) for i in range(len(items)) for kind in KINDS for r in range(self.repeats)]
        generated = [load_rgb(item.image) for item in items]
        conversations = {(i, kind): self.conversation(kind, items[i], generated[i])
                         for i in range(len(items)) for kind in KINDS}
        seeds = [item_seed(items[i].key, kind, r, 0) for i, kind, r in tasks]
        answers = self.backend.answer([conversations[(i, kind)] for i, kind, _ in tasks], seeds, self.temperature)
        values: dict[tuple[int, str, int], int | None] = {}
        for (i, kind, r), seed, answer in zip(tasks, seeds, answers):
            value, why = (None, answer.failure) if answer.failure else parse_score(answer.text, answer.refused)
            values[(i, kind, r)] = value
            self._record(key=items[i].key, metric=f"oc_{kind}/{self.judge_name}", repeat=r,
                         seed=seed if self.temperature > 0 else None, answer=answer.text, score=value, failure=why,
                         refused=answer.refused)
        out = []
        for i in range(len(items)):
            row = {}
            for kind in KINDS:
                got = [values[(i, kind, r)] for r in range(self.repeats)]
                row[f"oc_{kind}/{self.judge_name}"] = math.nan if any(v is None for v in got) else sum(got) / len(got)
            pf, sc = row[f"oc_pf/{self.judge_name}"], row[f"oc_sc/{self.judge_name}"]
            row[f"oc_overall/{self.judge_name}"] = math.nan if math.isnan(pf) or math.isnan(sc) else math.sqrt(pf * sc)
            out.append(row)
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.metrics.omnicontext_judge RUN_DIR``: the release's table (calculate_statistics.py)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.metrics.omnicontext_judge",
                                     description="OmniContext's statistics of a scored run: per task type PF, SC, "
                                                 "overall, and their mean over task types")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--judge", help="the judge's name (the part after oc_pf/) when the run has several")
    args = parser.parse_args(argv)
    try:
        tables = run_statistics(args.run_dir, args.judge)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for seed, rows in tables.items():
        print(f"seed {seed}: task type: PF, SC, overall (items, missing)")
        for r in rows:
            print(f"{r['task_type']}: {r['PF']:.3f}, {r['SC']:.3f}, {r['Overall']:.3f} ({r['n']}, {r['missing']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
