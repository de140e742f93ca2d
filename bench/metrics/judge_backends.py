"""Where the judge's answers come from: a local transformers model or an OpenAI-compatible endpoint.

Both take conversations in one neutral form (a list of ``{"role", "content"}`` turns whose content
is a text or a list of ``("text", str)`` / ``("image", PIL.Image)`` parts) and return one
:class:`Answer` per conversation. Transport problems (an unreachable endpoint, a bad key, an HTTP
error after its retries) are errors (BenchError), never judge answers; what the model says, however
useless, is an answer and the metric decides whether it parses.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Sequence

from bench import BenchError

#: the most bytes read from one endpoint response (a judge answer is a few KiB)
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    text: str
    refused: bool = False          # the backend said so (an endpoint's refusal field or content filter)
    failure: str | None = None     # the reply holds no answer at all (no choices, no message): never parsed


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

    def _generate(self, conversations: Sequence[Conversation], temperature: float) -> list[str]:
        import torch

        inputs = self._processor.apply_chat_template(
            [self._hf_messages(c) for c in conversations], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", processor_kwargs={"padding": True})
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if temperature > 0 \
            else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self._processor.batch_decode(new, skip_special_tokens=True)]

    def answer(self, conversations: Sequence[Conversation], seeds: Sequence[int], temperature: float) -> list[Answer]:
        import torch

        if self._model is None:
            self._load()
        texts: list[str] = []
        if temperature <= 0:
            for start in range(0, len(conversations), self.batch_size):
                texts += self._generate(conversations[start:start + self.batch_size], temperature)
        else:
            devices = [torch.device(self.device)] if str(self.device).startswith("cuda") else []
            for conversation, seed in zip(conversations, seeds):
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    texts += self._generate([conversation], temperature)
        return [Answer(t) for t in texts]


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
    endpoint = endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise BenchError(f"--metric-param judge.endpoint={endpoint!r}: expected an http(s) URL such as "
                         "https://api.openai.com/v1 or http://localhost:8000/v1")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


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
    refused = bool(refusal) or choice.get("finish_reason") == "content_filter"
    return Answer(text if text or not refusal else str(refusal), refused=refused)


#: waits between tries of a request that failed in transport: 0.5, 2, 8, 30 s (a rate limit or a
#: restarting server gets about 40 s), or the server's Retry-After (HTTP 429/503), at most MAX_WAIT_S
BACKOFF_S, MAX_WAIT_S = 0.5, 30.0


def retry_after(header) -> float | None:
    """Seconds from an HTTP Retry-After header given in seconds (0-MAX_WAIT_S), else None."""
    try:
        value = float(str(header).strip())
    except (TypeError, ValueError):
        return None
    return min(max(value, 0.0), MAX_WAIT_S) if math.isfinite(value) else None


class EndpointJudge:
    """POST to an OpenAI-compatible ``/chat/completions`` (GPT-4o, a vLLM or SGLang server) with the
    standard library. The API key is read from the environment variable ``api_key_env``."""

    def __init__(self, endpoint: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 512,
                 timeout_s: float = 120.0, transport_retries: int = 4, workers: int = 8):
        self.url, self.model = completions_url(endpoint), model
        self.api_key_env, self.max_new_tokens = api_key_env, max_new_tokens
        self.timeout_s, self.transport_retries, self.workers = timeout_s, transport_retries, workers

    def describe(self) -> str:
        return f"endpoint:{self.model}"

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.transport_retries + 1):
            wait = None
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = response.read(MAX_RESPONSE_BYTES + 1)
                if len(payload) > MAX_RESPONSE_BYTES:
                    raise BenchError(f"judge endpoint {self.url} sent a response over {MAX_RESPONSE_BYTES >> 20} MiB; "
                                     "is judge.endpoint an OpenAI-compatible chat-completions server?")
                return json.loads(payload.decode("utf-8", "replace"))
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise BenchError(f"judge endpoint {self.url} refused the key (HTTP {exc.code}): set "
                                     f"${self.api_key_env} to a valid API key") from None
                if exc.code in (400, 404, 422):
                    detail = exc.read()[:200].decode("utf-8", "replace")
                    raise BenchError(f"judge endpoint {self.url} answered HTTP {exc.code} ({detail.strip()}): check "
                                     f"judge.endpoint and judge.model={self.model!r}") from None
                last = f"HTTP {exc.code}"
                wait = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
                # URLError, timeouts, resets, and replies that are not HTTP at all (BadStatusLine)
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.transport_retries:
                time.sleep(wait if wait is not None else min(BACKOFF_S * 4 ** attempt, MAX_WAIT_S))
        raise BenchError(f"judge endpoint {self.url} failed {self.transport_retries + 1} times ({last}); "
                         "check that the server runs and judge.endpoint is right")

    def _one(self, messages: list[dict], seed: int, temperature: float) -> Answer:
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "seed": seed, "max_tokens": self.max_new_tokens}
        return reply_answer(self._post(body))

    def answer(self, conversations: Sequence[Conversation], seeds: Sequence[int], temperature: float) -> list[Answer]:
        from concurrent.futures import ThreadPoolExecutor

        encoded: dict[int, list[dict]] = {}          # a conversation asked several times is encoded once
        for conversation in conversations:
            if id(conversation) not in encoded:
                encoded[id(conversation)] = openai_messages(conversation)
        messages = [encoded[id(c)] for c in conversations]
        if len(messages) <= 1 or self.workers <= 1:
            return [self._one(m, s, temperature) for m, s in zip(messages, seeds)]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(messages))) as pool:
            return list(pool.map(lambda ms: self._one(ms[0], ms[1], temperature), zip(messages, seeds)))
