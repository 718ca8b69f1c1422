"""Sampling from a remote OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, `transformers serve`).

A model spec ``openai:http://HOST:PORT/v1#MODEL`` names the server's API root and the model it
serves; the chat endpoint (``/chat/completions``) is used unless the URL names the legacy
completions endpoint itself (``openai:http://HOST:PORT/v1/completions#MODEL``), which gets the
conversation as a plain ``User: ... Assistant:`` transcript (there is no local tokenizer to apply
the model's chat template; the server's chat endpoint applies it).

K samples per prompt: one request with ``n=K`` where the server honours ``n`` and reports each
choice's tokens (``logprobs``), else K parallel requests with seeds ``seed, seed+1, ...`` (the
same seed K times would draw the same answer K times). Either way every sample's token count is
exact. Transient failures (connection refused, timeouts, 429 and 5xx answers) are retried with
exponential back-off; a prompt gets all K samples or :meth:`sample` raises, so callers never store
a half-sampled item.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from alignment.chat import Messages, render_prompt, validate_messages
from alignment.sampling import FinishReason, GenerationBackend, Sample, SamplingParams

log = logging.getLogger(__name__)

SPEC_PREFIX = "openai:"
CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class RemoteGenerationError(RuntimeError):
    """The server could not produce the samples (down, refusing, or answering nonsense)."""


def is_remote_spec(spec: str) -> bool:
    return spec.strip().startswith(SPEC_PREFIX)


@dataclass(frozen=True)
class RemoteModel:
    """A parsed ``openai:URL#MODEL`` spec."""

    base_url: str  # the API root, e.g. http://127.0.0.1:8000/v1
    model: str
    endpoint: str  # CHAT_PATH or COMPLETIONS_PATH

    @classmethod
    def parse(cls, spec: str) -> RemoteModel:
        spec = spec.strip()
        if not spec.startswith(SPEC_PREFIX):
            raise ValueError(f"a remote model spec starts with {SPEC_PREFIX!r}, got {spec!r}")
        url, _, model = spec[len(SPEC_PREFIX):].partition("#")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"remote model {spec!r}: expected openai:http://HOST:PORT/v1#MODEL")
        if not model.strip():
            raise ValueError(f"remote model {spec!r} names no model: add #MODEL (the name the server serves)")
        if parts.query:
            raise ValueError(f"remote model {spec!r}: the URL takes no query string")
        path = parts.path.rstrip("/")
        endpoint = CHAT_PATH
        for candidate in (CHAT_PATH, COMPLETIONS_PATH):
            if path.endswith(candidate):
                path, endpoint = path[:-len(candidate)], candidate
                break
        return cls(base_url=f"{parts.scheme}://{parts.netloc}{path}", model=model.strip(), endpoint=endpoint)

    @property
    def url(self) -> str:
        return self.base_url + self.endpoint

    @property
    def chat(self) -> bool:
        return self.endpoint == CHAT_PATH


class OpenAICompatibleBackend(GenerationBackend):
    """K samples per prompt from an OpenAI-compatible HTTP server."""

    def __init__(self, remote: RemoteModel, timeout_s: float = 120.0, connect_timeout_s: float = 5.0,
                 max_retries: int = 3, backoff_s: float = 0.5, max_parallel: int = 8,
                 api_key: str | None = None) -> None:
        if max_parallel < 1 or max_retries < 0:
            raise ValueError("max_parallel must be >= 1 and max_retries >= 0")
        self.remote = remote
        self.name = f"openai:{remote.url}#{remote.model}"
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_parallel = max_parallel
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), headers=headers,
                                    limits=httpx.Limits(max_connections=max_parallel))
        # None until the first K > 1 request tells whether the server honours `n`.
        self._server_honours_n: bool | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> OpenAICompatibleBackend:
        return cls(RemoteModel.parse(spec), **kwargs)

    def close(self) -> None:
        self._client.close()

    # -- public API ------------------------------------------------------------------------

    def sample(self, prompts: list[Messages], k: int, params: SamplingParams) -> list[list[Sample]]:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        for messages in prompts:
            validate_messages(messages)
        if k > 1 and self._server_honours_n is not False:
            first = self._sample_with_n(prompts[0], k, params) if prompts else None
            if first is not None:
                rest = self._map(lambda m: self._sample_with_n(m, k, params), prompts[1:])
                if all(r is not None for r in rest):
                    return [first, *rest]
        # One request per sample, K x prompts of them, a few at a time.
        jobs = [(messages, j) for messages in prompts for j in range(k)]
        flat = self._map(lambda job: self._one_sample(job[0], params, job[1]), jobs)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    # -- strategies ------------------------------------------------------------------------

    def _sample_with_n(self, messages: Messages, k: int, params: SamplingParams) -> list[Sample] | None:
        """K samples from one request, or None when the server ignores `n` (remembered)."""
        body = self._body(messages, params, params.seed)
        body["n"] = k
        # Per-choice token counts come from the per-token logprobs: `usage` sums over all choices.
        body.update({"logprobs": True} if self.remote.chat else {"logprobs": 0})
        choices = self._post(body)
        counts = [_logprob_token_count(c, self.remote.chat) for c in choices]
        honours = len(choices) == k and all(n is not None for n in counts)
        with self._lock:
            if self._server_honours_n is None:
                self._server_honours_n = honours
                log.info("%s %s `n`: %s", self.name, "honours" if honours else "ignores",
                         "one request per prompt" if honours else "one request per sample")
        if not honours:
            return None
        return [self._to_sample(c, count) for c, count in zip(choices, counts)]

    def _one_sample(self, messages: Messages, params: SamplingParams, index: int) -> Sample:
        seed = None if params.seed is None else params.seed + index
        body = self._body(messages, params, seed)
        data = self._post_raw(body)
        choices = data.get("choices") or []
        if len(choices) != 1:
            raise RemoteGenerationError(f"{self.name} answered {len(choices)} choices to a request for one")
        usage = data.get("usage") or {}
        count = usage.get("completion_tokens")
        if not isinstance(count, int):
            raise RemoteGenerationError(f"{self.name} reported no completion token count (usage.completion_tokens)")
        return self._to_sample(choices[0], count)

    def _map(self, fn, jobs: list) -> list:
        if len(jobs) <= 1:
            return [fn(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs))) as pool:
            return list(pool.map(fn, jobs))  # re-raises the first failure: no partial result escapes

    # -- HTTP ------------------------------------------------------------------------------

    def _body(self, messages: Messages, params: SamplingParams, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.remote.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature}
        if self.remote.chat:
            body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
        else:
            body["prompt"] = render_prompt(None, messages)  # no tokenizer here: the plain transcript
        if not params.greedy:
            body["top_p"] = params.top_p
        if seed is not None:
            body["seed"] = seed
        return body

    def _post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        choices = self._post_raw(body).get("choices")
        if not isinstance(choices, list):
            raise RemoteGenerationError(f"{self.name} answered without a `choices` list")
        return sorted(choices, key=lambda c: c.get("index", 0))

    def _post_raw(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on transient failures; a clear error once they are used up."""
        url = self.remote.url
        for attempt in range(self.max_retries + 1):
            last_try = attempt == self.max_retries
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError as exc:  # refused, reset, DNS, timeouts
                why = _transport_reason(exc)
                if last_try:
                    raise RemoteGenerationError(
                        f"generation server {self.remote.base_url} {why} after {attempt + 1} attempt(s): is it "
                        f"running and serving {self.remote.model!r}? ({type(exc).__name__}: {exc})") from exc
                log.warning("%s %s; retrying (%d/%d)", url, why, attempt + 1, self.max_retries)
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise RemoteGenerationError(f"{url} answered 200 with a body that is not JSON") from exc
                detail = response.text[:300]
                if response.status_code not in RETRYABLE_STATUS or last_try:
                    raise RemoteGenerationError(
                        f"generation server {url} answered HTTP {response.status_code}"
                        f"{' after ' + str(attempt + 1) + ' attempts' if attempt else ''}: {detail}")
                log.warning("%s answered HTTP %d; retrying (%d/%d)", url, response.status_code, attempt + 1,
                            self.max_retries)
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------

    def _to_sample(self, choice: dict[str, Any], num_tokens: int) -> Sample:
        if self.remote.chat:
            text = (choice.get("message") or {}).get("content")
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise RemoteGenerationError(f"{self.name} answered a choice without text: {str(choice)[:200]}")
        # "length" is the only cut-off; "stop", "eos", "content_filter", ... all ended the reply.
        reason: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Sample(text=text, num_tokens=num_tokens, finish_reason=reason)


def _logprob_token_count(choice: dict[str, Any], chat: bool) -> int | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    tokens = logprobs.get("content") if chat else logprobs.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "refused the connection (or could not be reached)"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return "dropped the connection"
