"""The DreamBench++ judge: a vision-language model rates concept preservation (CP) and prompt
following (PF) of each generated image on a 0-4 scale (docs/judge.md).

Conversations as the release builds them (its ``eval_concept_preservation.py`` and
``eval_prompt_following.py``, ablation setting "full"): no system message; a user turn holding the
task instruction, an assistant turn holding the release's scripted acknowledgement, then a user
turn with the images (and for PF the prompt text first)::

    CP: user <user_prompt_{subject|style}_full.txt>, assistant <gpt_prompt_{subject|style}_full.txt>,
        user [reference image, generated image]
    PF: user <user_prompt_text_full.txt>, assistant <gpt_prompt_text_full.txt>,
        user [prompt text, generated image]

The style instruction is used for items of category ``style``, the subject one for every other.
Both images are resized to 512x512 (bicubic, aspect not kept, as released). The instruction
texts are not part of this project: they are read from the user's copy of the official
repository (``--metric-param judge.prompts=DIR``: its ``prompts/`` folder, the repository, or a
folder holding the repository).

An answer holds a score when the release's pattern (``score:`` or ``Score:``, optional letters,
digits) matches exactly once and the integer is 0-4. Anything else (no match, several, out of
range, a decimal, an empty answer, a refusal) is a failed attempt: retried up to ``attempts``
times, then recorded as missing with its raw text. A score is never invented. Every answer
(raw text, parsed score or failure reason, seed, finish reason, request id) is appended to
``judge_answers.jsonl`` in the run folder as it arrives, and a later pass reuses it instead of
asking again (bench.metrics.judge_log). Parameters are checked by :func:`check_params` (their
limits in bench.limits) before anything is generated.

Ids: ``cp/<judge>`` and ``pf/<judge>``: per image the mean over ``repeats`` of score/4, NaN when
any repeat failed; with several repeats also ``cp/<judge>/r<k>``, repeat k's score/4. Decoding: greedy by default (``temperature=0``; deterministic, so one answer per
item and no retries); ``temperature>0`` samples with a seed derived from the image key, the kind,
the repeat and the attempt, as reproducible as the backend allows (``temperature=1, repeats=3,
attempts=3`` is the release's setting).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from bench import BenchError
from bench.limits import (JUDGE_MAX_ATTEMPTS, JUDGE_MAX_CONCURRENCY, JUDGE_MAX_NEW_TOKENS, JUDGE_MAX_REPEATS,
                          JUDGE_MAX_REQUEST_DEADLINE_S, JUDGE_MAX_RETRIES, JUDGE_REQUEST_DEADLINE_S, JUDGE_RETRIES)
from bench.metrics.base import Metric, ScoreItem
from bench.suites import REPO_ROOT

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
#: download sizes of known judge models (bf16 safetensors: 8.3B parameters x 2 bytes)
JUDGE_SIZES = {DEFAULT_MODEL: int(16.6e9)}
DEFAULT_PROMPTS = REPO_ROOT / "datasets" / "dreambench-plus" / "dreambench_plus"
TINY_PROMPTS = REPO_ROOT / "datasets" / "mini-dreambench-plus" / "judge-prompts"
ANSWERS_FILE = "judge_answers.jsonl"
#: the release's instruction files per conversation (ablation setting "full")
PROMPT_FILES = {
    "subject": ("user_prompt_subject_full.txt", "gpt_prompt_subject_full.txt"),
    "style": ("user_prompt_style_full.txt", "gpt_prompt_style_full.txt"),
    "text": ("user_prompt_text_full.txt", "gpt_prompt_text_full.txt"),
}
KINDS = ("cp", "pf")
#: metric-id prefixes whose missing values are judge failures (the report counts them)
FAILURE_PREFIXES = KINDS
IMAGE_SIZE = 512
MAX_PROMPT_FILE_BYTES = 256 * 1024
MAX_STORED_ANSWER = 20_000
REFERENCE_CACHE = 32          # reference images kept resized (items come sorted by subject)
SCORE_PATTERN = re.compile(r"(score|Score):\s*[a-zA-Z]*\s*(\d+)")
PARSER_VERSION = "2"          # 2: replies without choices are failures, never parsed


# ---- parsing --------------------------------------------------------------------------------
def parse_score(text: str, refused: bool = False) -> tuple[int | None, str | None]:
    """(score 0-4, None) or (None, why it failed)."""
    if refused:
        return None, "refusal"
    if not text or not text.strip():
        return None, "empty answer"
    matches = list(SCORE_PATTERN.finditer(text))
    if not matches:
        return None, "no score"
    if len(matches) > 1:
        return None, f"{len(matches)} scores"
    match = matches[0]
    rest = text[match.end():]
    if re.match(r"[.,]\d", rest):
        return None, "not an integer score"
    value = int(match.group(2))
    if not 0 <= value <= 4:
        return None, f"score {value} outside 0-4"
    return value, None


# ---- instruction files ----------------------------------------------------------------------
def resolve_prompts_dir(path: Path | str) -> Path:
    """The folder holding the release's instruction files: DIR, DIR/prompts, DIR/dreambench_plus/prompts
    or DIR/dreambench_plus/dreambench_plus/prompts (a clone placed inside the data folder)."""
    path = Path(path).expanduser()
    first = PROMPT_FILES["subject"][0]
    for candidate in (path, path / "prompts", path / "dreambench_plus" / "prompts",
                      path / "dreambench_plus" / "dreambench_plus" / "prompts"):
        if (candidate / first).is_file():
            return candidate
    raise BenchError(f"judge instruction files not found under {path} (looked for {first}): clone "
                     "https://github.com/yuangpeng/dreambench_plus (its dreambench_plus/prompts/ folder) and pass "
                     "--metric-param judge.prompts=DIR, or see `python -m bench data where dreambench-plus`")


def read_prompt_file(path: Path) -> str:
    from bench.files import read_text_file

    text = read_text_file(path, MAX_PROMPT_FILE_BYTES, "judge instruction file").strip()
    if not text:
        raise BenchError(f"judge instruction file {path} is empty")
    return text


def load_instructions(folder: Path) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """{set: (user text, assistant text)} and {file name: sha256} for the three instruction sets."""
    texts, hashes = {}, {}
    for name, files in PROMPT_FILES.items():
        pair = []
        for file in files:
            text = read_prompt_file(folder / file)
            hashes[file] = hashlib.sha256(text.encode()).hexdigest()[:16]
            pair.append(text)
        texts[name] = tuple(pair)
    return texts, hashes


def item_seed(key: str, kind: str, repeat: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{key}|{kind}|{repeat}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def judge_image(path):
    """An image as the judge sees it: the project's RGB reading, resized to 512x512 (bicubic)."""
    from PIL import Image

    from bench.images import load_rgb

    image = path if isinstance(path, Image.Image) else load_rgb(path)
    return image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)


def model_slug(name: str) -> str:
    base = Path(name.rstrip("/")).name if "/" in name or Path(name).exists() else name
    return "".join(c if c.isalnum() or c == "." else "-" for c in base.lower()).strip("-") or "judge"


def _number(name: str, value, kind=int, low=None, high=None, zero_note: str = ""):
    """A judge parameter as a number within its bounds, else one line naming it."""
    try:
        number = kind(value)
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError
        if kind is float and not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise BenchError(f"--metric-param judge.{name}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise BenchError(f"--metric-param judge.{name}={value}: must be within {low:g}-{high:g}{zero_note}")
    return number


def check_params(preset=None, endpoint=None, temperature=0.0, repeats=3, attempts=3, max_new_tokens=512,
                 batch_size=8, kinds="cp,pf", workers=8, concurrency=None, timeout_s=JUDGE_REQUEST_DEADLINE_S,
                 retries=JUDGE_RETRIES, **_) -> dict:
    """Every judge parameter checked and converted, without loading anything: the constructor, the
    doctor (``requirements``) and the run's plan (``precheck``) all refuse the same values, before
    any image is generated. Returns the converted values."""
    from bench.metrics.judge_http import check_url

    if preset not in (None, "tiny"):
        raise BenchError(f"unknown metric preset {preset!r} (only 'tiny')")
    out = {"endpoint": check_url(endpoint) if endpoint not in (None, "") else None,
           "temperature": _number("temperature", temperature, float, 0, 2, " (0 = greedy)"),
           "repeats": _number("repeats", repeats, int, 1, JUDGE_MAX_REPEATS, " (bench.limits.JUDGE_MAX_REPEATS)"),
           "attempts": _number("attempts", attempts, int, 1, JUDGE_MAX_ATTEMPTS, " (bench.limits.JUDGE_MAX_ATTEMPTS)"),
           "max_new_tokens": _number("max_new_tokens", max_new_tokens, int, 0 if endpoint else 1, JUDGE_MAX_NEW_TOKENS,
                                     " (0: no limit sent to an endpoint)" if endpoint else ""),
           "batch_size": _number("batch_size", batch_size, int, 1, 1024),
           "concurrency": _number("concurrency" if concurrency is not None else "workers",
                                  concurrency if concurrency is not None else workers, int, 1, JUDGE_MAX_CONCURRENCY,
                                  " (bench.limits.JUDGE_MAX_CONCURRENCY)"),
           "timeout_s": _number("timeout_s", timeout_s, float, 1, JUDGE_MAX_REQUEST_DEADLINE_S),
           "retries": _number("retries", retries, int, 0, JUDGE_MAX_RETRIES)}
    chosen = [k.strip() for k in str(kinds).split(",") if k.strip()]
    if not chosen or any(k not in KINDS for k in chosen):
        raise BenchError(f"--metric-param judge.kinds={kinds!r}: a comma-separated subset of {', '.join(KINDS)}")
    out["kinds"] = tuple(k for k in KINDS if k in chosen)
    return out


def make_backend(p: dict, device: str = "cpu", preset: str | None = None, model: str = DEFAULT_MODEL,
                 endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY"):
    """(backend, judge name, decoding settings for the version) from checked parameters
    (:func:`check_params`): an endpoint, the tiny random judge (preset "tiny"), or a local model.
    The pointwise judge and ``bench arena`` both build theirs here."""
    from bench.metrics.judge_backends import EndpointJudge, TransformersJudge

    max_new_tokens, locate = p["max_new_tokens"], None
    if preset == "tiny" and not endpoint:
        from bench.metrics.judge_tiny import TINY_JUDGE_VERSION, tiny_judge_folder
        source, locate, name = f"tiny-random-qwen2.5-vl-v{TINY_JUDGE_VERSION}", tiny_judge_folder, "tiny-random-qwen2.5-vl"
        max_new_tokens = min(max_new_tokens, 8)
    else:
        source, name = model, model_slug(model)
    if endpoint:
        backend = EndpointJudge(endpoint, model, api_key_env, max_new_tokens, timeout_s=p["timeout_s"],
                                transport_retries=p["retries"], workers=p["concurrency"])
        return backend, name, {"max_tokens": max_new_tokens or None}
    backend = TransformersJudge(source, device, max_new_tokens, p["batch_size"], locate=locate)
    return backend, name, {**TransformersJudge.generation_settings(p["temperature"], max_new_tokens),
                           "system_turn": "none (a template's default removed)"}


class JudgeMetric(Metric):
    family = "judge"

    def __init__(self, device: str = "cpu", preset: str | None = None, model: str = DEFAULT_MODEL,
                 endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY", prompts: str | None = None,
                 temperature: float = 0.0, repeats: int = 3, attempts: int = 3, max_new_tokens: int = 512,
                 batch_size: int = 8, kinds: str = "cp,pf", workers: int = 8, concurrency: int | None = None,
                 timeout_s: float = JUDGE_REQUEST_DEADLINE_S, retries: int = JUDGE_RETRIES):
        p = check_params(preset, endpoint, temperature, repeats, attempts, max_new_tokens, batch_size, kinds,
                         workers, concurrency, timeout_s, retries)
        self.kinds = p["kinds"]
        self.temperature = p["temperature"]
        greedy = self.temperature == 0
        # greedy decoding gives the same answer every time: one repeat, no retries
        self.repeats = 1 if greedy else p["repeats"]
        self.attempts = 1 if greedy else p["attempts"]
        self.backend, self.judge_name, decoding = make_backend(p, device, preset, model, endpoint, api_key_env)
        max_new_tokens = self.backend.max_new_tokens
        prompts_dir = resolve_prompts_dir(prompts if prompts else (TINY_PROMPTS if preset == "tiny" else DEFAULT_PROMPTS))
        self.instructions, self.prompt_hashes = load_instructions(prompts_dir)
        self.prompts_dir = prompts_dir
        self.max_new_tokens = max_new_tokens
        settings = {"backend": self.backend.describe(), "prompts": self.prompt_hashes,
                    "temperature": self.temperature, "repeats": self.repeats, "attempts": self.attempts,
                    "max_new_tokens": self.max_new_tokens, "decoding": decoding, "image_size": IMAGE_SIZE,
                    "parser": PARSER_VERSION}
        self.settings = settings
        self.version = "2-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self._references: OrderedDict[str, object] = OrderedDict()   # resized reference images, most recent last
        self.answers_path: Path | None = None
        self.log = None                          # the run's AnswerLog once bound
        self.answers: list[dict] = []            # this session's records (also appended to answers_path)
        self.reused = 0                          # answers taken from the log instead of asked again
        self._lock = threading.Lock()

    @classmethod
    def precheck(cls, preset: str | None = None, prompts: str | None = None, **params) -> None:
        """The parameters and the instruction files, checked before a run generates anything (no
        model is loaded)."""
        check_params(preset, **params)
        load_instructions(resolve_prompts_dir(prompts if prompts else (TINY_PROMPTS if preset == "tiny"
                                                                       else DEFAULT_PROMPTS)))

    @classmethod
    def requirements(cls, preset: str | None = None, model: str = DEFAULT_MODEL, endpoint: str | None = None,
                     prompts: str | None = None, **params) -> list:
        """The release's instruction files and, without an endpoint, the judge model (bench/needs.py)."""
        from bench import needs

        check_params(preset, endpoint=endpoint, **params)      # a bad value is the option's error, not a piece
        out = []
        if preset is None or prompts:
            folder = Path(prompts).expanduser() if prompts else DEFAULT_PROMPTS
            get = ("pass --metric-param judge.prompts=DIR (a copy of the release's prompts/ folder)" if prompts else
                   f"git clone --depth 1 https://github.com/yuangpeng/dreambench_plus {DEFAULT_PROMPTS}")

            def problem() -> str | None:
                try:
                    resolve_prompts_dir(folder)
                except BenchError:
                    return f"no {PROMPT_FILES['subject'][0]} in it, its prompts/ or dreambench_plus/prompts/"
                return None
            out.append(needs.probe("judge instruction files (DreamBench++ release, prompts/)", f"judge-prompts:{folder}",
                                   get, problem, where=str(folder), size=int(3.6 * needs.MB)))
        if preset is None and not endpoint:
            files = ("config.json", "preprocessor_config.json", "tokenizer_config.json",
                     "model*.safetensors|pytorch_model*.bin")
            if model.startswith(("/", ".", "~")) or Path(model).expanduser().exists():     # a local folder
                out.append(needs.local_folder(f"judge model {model}", Path(model), files,
                                              f"{model}: a folder holding the judge model (config.json, its "
                                              "processor, *.safetensors)", JUDGE_SIZES.get(model)))
            else:
                out.append(needs.hf_weights(f"judge model {model}", model, files, JUDGE_SIZES.get(model),
                                            f'hf download {model} --include "*.json" "*.safetensors" "*.txt"'))
        return out

    @property
    def ids(self) -> tuple[str, ...]:
        """``cp/<judge>``, ``pf/<judge>``, and with several repeats each repeat's own score as
        ``cp/<judge>/r<k>`` (the report's ± over repeats comes from them)."""
        base = [f"{kind}/{self.judge_name}" for kind in self.kinds]
        repeats = [f"{b}/r{r}" for b in base for r in range(self.repeats)] if self.repeats > 1 else []
        return tuple(base + repeats)

    def bind_run(self, run_dir: Path) -> None:
        """Append every answer to ``<run>/judge_answers.jsonl`` (called by the scoring stage), and
        reuse the answers it already holds: a stopped or killed pass resumes without asking again."""
        from bench.metrics.judge_log import AnswerLog

        self.answers_path = Path(run_dir) / ANSWERS_FILE
        self.log = AnswerLog(self.answers_path)

    # ---- conversations ----------------------------------------------------------------------
    def conversation(self, kind: str, item: ScoreItem, generated) -> list[dict]:
        if kind == "cp":
            if not item.subject_images:
                raise BenchError(f"{item.key}: no reference image for the judge's concept preservation")
            instruction = self.instructions["style" if item.category == "style" else "subject"]
            final = [("image", self.reference_image(item.subject_images[0])), ("image", generated)]
        else:
            instruction = self.instructions["text"]
            final = [("text", item.eval_text), ("image", generated)]
        return [{"role": "user", "content": instruction[0]}, {"role": "assistant", "content": instruction[1]},
                {"role": "user", "content": final}]

    def reference_image(self, path):
        """The judge's view of a reference image, loaded once while its subject is being scored."""
        key = str(path)
        if key in self._references:
            self._references.move_to_end(key)
        else:
            self._references[key] = judge_image(path)
            while len(self._references) > REFERENCE_CACHE:
                self._references.popitem(last=False)
        return self._references[key]

    def _record(self, **fields) -> None:
        text = fields.get("answer") or ""
        if len(text) > MAX_STORED_ANSWER:
            fields["answer"], fields["truncated_from"] = text[:MAX_STORED_ANSWER], len(text)
        fields["version"] = self.version
        with self._lock:
            self.answers.append(fields)
        if self.log is not None:
            self.log.append(fields)              # on disk (fsync) before this worker's next request

    def _request(self, item: ScoreItem, kind: str, digest: str, repeat: int, attempt: int) -> str:
        from bench.metrics.judge_log import request_id

        context = (str(item.subject_images[:1]), item.category) if kind == "cp" else (item.eval_text,)
        return request_id(self.version, kind, item.key, digest, *context, repeat, attempt)

    def outcome(self, answer) -> tuple[int | None, str | None]:
        """(score, None) or (None, why) for one answer; a cut answer without a score says so."""
        value, why = (None, answer.failure) if answer.failure else parse_score(answer.text, answer.refused)
        if value is None and getattr(answer, "finish_reason", None) == "length" and why == "no score":
            why = f"no score (cut at max_new_tokens={self.max_new_tokens})"
        return value, why

    # ---- scoring ----------------------------------------------------------------------------
    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        """Per image the CP and PF values. Answers already in the run's answers file (same request,
        same version) are reused; the others are asked, ``concurrency`` at a time through an
        endpoint, and each is recorded as it arrives."""
        from bench.metrics.judge_log import file_digest

        if not items:
            return []
        digests = [file_digest(item.image) for item in items]
        generated: dict[int, object] = {}
        conversations: dict[tuple[int, str], list] = {}

        def conversation(i: int, kind: str) -> list:
            if (i, kind) not in conversations:
                if i not in generated:
                    generated[i] = judge_image(items[i].image)
                conversations[(i, kind)] = self.conversation(kind, items[i], generated[i])
            return conversations[(i, kind)]

        scores: dict[tuple[int, str, int], int] = {}
        pending = [(i, kind, r) for i in range(len(items)) for kind in self.kinds for r in range(self.repeats)]
        for attempt in range(self.attempts):
            if not pending:
                break
            failed, ask = [], []
            for task in pending:
                i, kind, r = task
                record = self.log.get(self._request(items[i], kind, digests[i], r, attempt)) if self.log else None
                if record is None:
                    ask.append(task)
                    continue
                self.reused += 1
                value = record.get("score")
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4:
                    scores[task] = value
                else:
                    failed.append(task)
            if ask:
                seeds = [item_seed(items[i].key, kind, r, attempt) for i, kind, r in ask]

                def arrived(j: int, answer) -> None:
                    i, kind, r = ask[j]
                    value, why = self.outcome(answer)
                    self._record(key=items[i].key, metric=f"{kind}/{self.judge_name}", repeat=r, attempt=attempt,
                                 seed=seeds[j] if self.temperature > 0 else None, answer=answer.text, score=value,
                                 failure=why, refused=answer.refused, finish_reason=answer.finish_reason,
                                 request=self._request(items[i], kind, digests[i], r, attempt))
                    if value is None:
                        failed.append(ask[j])
                    else:
                        scores[ask[j]] = value
                self.backend.answer([conversation(i, kind) for i, kind, _ in ask], seeds, self.temperature,
                                    on_answer=arrived)
            pending = failed
        out = []
        for i in range(len(items)):
            row = {}
            for kind in self.kinds:
                values = [scores.get((i, kind, r)) for r in range(self.repeats)]
                row[f"{kind}/{self.judge_name}"] = (math.nan if any(v is None for v in values)
                                                     else sum(values) / len(values) / 4)
                if self.repeats > 1:
                    for r, v in enumerate(values):
                        row[f"{kind}/{self.judge_name}/r{r}"] = math.nan if v is None else v / 4
            out.append(row)
        return out
