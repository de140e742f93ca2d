"""Where the judge's answers come from: a local transformers model or an OpenAI-compatible endpoint.

Both take conversations in one neutral form (a list of ``{"role", "content"}`` turns whose content
is a text or a list of ``("text", str)`` / ``("image", PIL.Image)`` parts) and return one
:class:`Answer` per conversation::

    backend.answer(conversations, seeds, temperature, on_answer=None) -> list[Answer]

``on_answer(index, answer)``, when given, is called as each answer arrives (from a worker thread
for the endpoint; calls never overlap), so the caller can make it durable before the next request.
Transport problems (an unreachable endpoint, a bad key, an HTTP error after its retries) are errors
(BenchError), never judge answers; a refusal of one request (HTTP 400, a redirect) is that
request's failed Answer; what the model says, however useless, is an answer and the metric decides
whether it parses.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from bench import BenchError
from bench.limits import JUDGE_FIRST_REJECTS, JUDGE_MAX_RESPONSE_BYTES, JUDGE_REQUEST_DEADLINE_S, JUDGE_RETRIES
from bench.metrics.judge_http import BACKOFF_S, MAX_WAIT_S, Rejected, check_url, post_json, retry_after  # noqa: F401

MAX_RESPONSE_BYTES = JUDGE_MAX_RESPONSE_BYTES
OnAnswer = Callable[[int, "Answer"], None]
#: the default system turn Qwen2/2.5-VL's chat template inserts when a conversation has none;
#: the release's conversation has no system turn, so it is removed from the rendered prompt
DEFAULT_SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@dataclass(frozen=True)
class Answer:
    text: str
    refused: bool = False          # the backend said so (an endpoint's refusal field or content filter)
    failure: str | None = None     # the reply holds no answer at all (no choices, no message): never parsed
    finish_reason: str | None = None   # "stop", "length" (cut at max_new_tokens), "content_filter", ...


Conversation = list[dict]


# ---- local transformers model ---------------------------------------------------------------
class TransformersJudge:
    """Any ``AutoModelForImageTextToText`` id or folder with its ``AutoProcessor`` and chat template.

    bf16 on CUDA, fp32 on CPU. Greedy decoding runs batched; sampling runs one conversation at a
    time with torch seeded from that conversation's seed, so an answer never depends on which
    other conversations share its batch."""

    def __init__(self, source: str, device: str = "cpu", max_new_tokens: int = 512, batch_size: int = 8,
                 locate=None):
        # locate: a function returning the folder to load (the tiny judge is built only when first used)
        self.source, self.device, self.locate = source, device, locate
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._model = self._processor = None

    def describe(self) -> str:
        return f"transformers:{self.source}"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
        where = self.locate() if self.locate is not None else self.source
        try:
            self._processor = AutoProcessor.from_pretrained(where)
            model = AutoModelForImageTextToText.from_pretrained(where, dtype=dtype)
        except Exception as exc:
            raise BenchError(
                f"judge model {self.source!r} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): "
                f"pass a local folder with --metric-param judge.model=DIR, or download the id with network access "
                f"(`hf download {self.source}`), then HF_HUB_OFFLINE=1 works") from None
        self._processor.tokenizer.padding_side = "left"
        self._model = model.to(self.device).eval()

    @staticmethod
    def _hf_messages(conversation: Conversation) -> list[dict]:
        out = []
        for turn in conversation:
            content = turn["content"]
            if isinstance(content, str):
                content = [("text", content)]
            parts = [{"type": "text", "text": value} if kind == "text" else {"type": "image", "image": value}
                     for kind, value in content]
            out.append({"role": turn["role"], "content": parts})
        return out

    @staticmethod
    def generation_settings(temperature: float, max_new_tokens: int) -> dict:
        """Every decoding knob, given explicitly so that the model's own generation config (Qwen2.5-VL
        ships repetition_penalty 1.05, top_k 1, top_p 0.001) changes nothing: plain greedy, or plain
        sampling at ``temperature``, as an API judge decodes. Part of the metric version."""
        common = dict(max_new_tokens=max_new_tokens, repetition_penalty=1.0, num_beams=1)
        if temperature > 0:
            return dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0, **common)
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None, **common)

    def render(self, conversations: Sequence[Conversation]) -> list[str]:
        """The prompt texts, as the chat template writes them, without the default system turn a
        Qwen2/2.5-VL template adds to a conversation that has none (the release sends none)."""
        texts = self._processor.apply_chat_template([self._hf_messages(c) for c in conversations],
                                                    add_generation_prompt=True, tokenize=False)
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [t[len(DEFAULT_SYSTEM_TURN):] if t.startswith(DEFAULT_SYSTEM_TURN) and
                not any(turn["role"] == "system" for turn in c) else t for t, c in zip(texts, conversations)]

    def _generate(self, conversations: Sequence[Conversation], temperature: float) -> list[Answer]:
        import torch

        images = [value for c in conversations for turn in c if not isinstance(turn["content"], str)
                  for kind, value in turn["content"] if kind == "image"]
        inputs = self._processor(text=self.render(conversations), images=images or None, padding=True,
                                 return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self._model.generate(**inputs, **self.generation_settings(temperature, self.max_new_tokens))
        new = out[:, inputs["input_ids"].shape[1]:]
        config = self._model.generation_config
        ends = {t for t in (config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id])
                if t is not None} | ({config.pad_token_id} if config.pad_token_id is not None else set())
        texts = [t.strip() for t in self._processor.batch_decode(new, skip_special_tokens=True)]
        return [Answer(text, finish_reason="stop" if len(row) < self.max_new_tokens or ends & set(row.tolist())
                       else "length") for text, row in zip(texts, new)]

    def answer(self, conversations: Sequence[Conversation], seeds: Sequence[int], temperature: float,
               on_answer: OnAnswer | None = None) -> list[Answer]:
        import torch

        if self._model is None:
            self._load()
        answers: list[Answer] = []

        def done(batch: list[Answer]) -> None:
            for answer in batch:
                if on_answer is not None:
                    on_answer(len(answers), answer)
                answers.append(answer)
        if temperature <= 0:
            for start in range(0, len(conversations), self.batch_size):
                done(self._generate(conversations[start:start + self.batch_size], temperature))
        else:
            devices = [torch.device(self.device)] if str(self.device).startswith("cuda") else []
            for conversation, seed in zip(conversations, seeds):
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    done(self._generate([conversation], temperature))
        return answers


# ---- OpenAI-compatible endpoint -------------------------------------------------------------
def _jpeg_data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")          # the release sends Pillow's default JPEG
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(conversation: Conversation) -> list[dict]:
    """The conversation in the chat-completions format (images as JPEG data URLs, detail high)."""
    out = []
    for turn in conversation:
        content = turn["content"]
        if not isinstance(content, str):
            content = [{"type": "text", "text": value} if kind == "text" else
                       {"type": "image_url", "image_url": {"url": _jpeg_data_url(value), "detail": "high"}}
                       for kind, value in content]
        out.append({"role": turn["role"], "content": content})
    return out


def completions_url(endpoint: str) -> str:
    """``.../chat/completions`` as given, else appended to the base URL (``http://host:8000/v1``)."""
    return check_url(endpoint)


def _content_text(content) -> str | None:
    """A message's content as text: a string, nothing (""), or a list of text parts; None otherwise."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text", ""), str))
                                         for p in content):
        return "".join(p if isinstance(p, str) else p.get("text", "") for p in content)
    return None


def reply_answer(reply) -> Answer:
    """The answer in a chat-completions reply. A reply without ``choices[0].message`` (an error
    object, a list, anything else) is a failed answer whose raw JSON is kept, never parsed for a
    score: an error text such as "Score: 3 overloaded" must not become a number."""
    raw = json.dumps(reply, ensure_ascii=False)[:2000]
    choices = reply.get("choices") if isinstance(reply, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return Answer(raw, failure="reply without choices")
    message = choice.get("message")
    if message is None:
        return Answer(raw, failure="reply without a message")
    if not isinstance(message, dict):
        return Answer(raw, failure="message is not an object")
    text = _content_text(message.get("content"))
    if text is None:
        return Answer(raw, failure="content is not text")
    refusal = message.get("refusal")
    finish = choice.get("finish_reason")
    finish = str(finish)[:40] if finish is not None else None
    refused = bool(refusal) or finish == "content_filter"
    return Answer(text if text or not refusal else str(refusal), refused=refused, finish_reason=finish)


class EndpointJudge:
    """POST to an OpenAI-compatible ``/chat/completions`` (GPT-4o, a vLLM or SGLang server) with the
    standard library, ``workers`` requests at a time (judge.concurrency). The API key is read from the
    environment variable ``api_key_env`` and sent to the endpoint's origin only (no redirect is
    followed). ``max_new_tokens=0`` sends no ``max_tokens`` (the release sends none)."""

    def __init__(self, endpoint: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 512,
                 timeout_s: float = JUDGE_REQUEST_DEADLINE_S, transport_retries: int = JUDGE_RETRIES, workers: int = 8):
        self.url, self.model = completions_url(endpoint), model
        self.api_key_env, self.max_new_tokens = api_key_env, max_new_tokens
        self.timeout_s, self.transport_retries, self.workers = timeout_s, transport_retries, workers
        self._lock = threading.Lock()
        self._succeeded, self._rejected = 0, []        # answers received / refusals before the first success

    def describe(self) -> str:
        """The backend in the metric version: the URL too, so two servers that serve the same model
        name never share cached answers."""
        return f"endpoint:{self.url}:{self.model}"

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _one(self, messages: list[dict], seed: int, temperature: float, stop: threading.Event | None = None) -> Answer:
        body = {"model": self.model, "messages": messages, "temperature": temperature, "seed": seed}
        if self.max_new_tokens:
            body["max_tokens"] = self.max_new_tokens
        try:
            reply = post_json(self.url, body, self._headers(), deadline_s=self.timeout_s,
                              retries=self.transport_retries, api_key_env=self.api_key_env, model=self.model,
                              stop=stop)
        except Rejected as exc:
            with self._lock:
                if not self._succeeded:
                    self._rejected.append(str(exc))
                    if len(self._rejected) >= JUDGE_FIRST_REJECTS:
                        raise BenchError(f"judge endpoint {self.url} rejected the first {JUDGE_FIRST_REJECTS} requests "
                                         f"({self._rejected[-1][:300]}): check judge.endpoint and "
                                         f"judge.model={self.model!r}") from None
            return Answer(str(exc), failure=f"rejected: {str(exc)[:300]}")
        with self._lock:
            self._succeeded += 1
        return reply_answer(reply)

    def answer(self, conversations: Sequence[Conversation], seeds: Sequence[int], temperature: float,
               on_answer: OnAnswer | None = None) -> list[Answer]:
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        encoded: dict[int, list[dict]] = {}          # a conversation asked several times is encoded once
        for conversation in conversations:
            if id(conversation) not in encoded:
                encoded[id(conversation)] = openai_messages(conversation)
        messages = [encoded[id(c)] for c in conversations]
        out: list[Answer | None] = [None] * len(messages)
        stop, report = threading.Event(), threading.Lock()
        first: list[BaseException] = []              # the fault that stopped the pass, not those it stopped

        def one(j: int) -> None:
            if stop.is_set():
                return
            try:
                answer = self._one(messages[j], seeds[j], temperature, stop)
            except BaseException as exc:
                with report:
                    if not stop.is_set():
                        first.append(exc)
                    stop.set()                        # no other worker sends its next request
                raise
            with report:                              # recorded before this worker sends its next request
                out[j] = answer
                if on_answer is not None:
                    on_answer(j, answer)
        if len(messages) <= 1 or self.workers <= 1:
            for j in range(len(messages)):
                one(j)
            return out
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(messages)))
        futures = [pool.submit(one, j) for j in range(len(messages))]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:                         # Ctrl-C: what arrived is on disk; drop the rest
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            stop.set()                                # queued requests are not sent, waiting ones give up
        pool.shutdown(wait=True, cancel_futures=True)   # in-flight answers still arrive and are recorded
        if failed is not None:
            raise (first[0] if first else failed.exception())
        return out
