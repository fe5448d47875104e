"""Calling language models through litellm: retries, error classes, tokens and dollars.

litellm downloads its price map when imported unless told to use the copy it ships; this
module sets that before the import, so the only network traffic is to the model itself.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from kernelevo.settings import LLMSettings, Price, api_key_from_env

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported anywhere
os.environ.setdefault("LITELLM_LOG", "ERROR")

_import_lock = threading.Lock()


def _litellm() -> Any:
    with _import_lock:  # the first import takes ~3 s; threads must not race it
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        return litellm


class LLMError(Exception):
    """A model call that failed. ``fatal`` errors (bad key, unknown model) stop the run."""

    def __init__(self, message: str, fatal: bool, attempts: int = 1, latency_s: float = 0.0):
        super().__init__(message)
        self.fatal = fatal
        self.attempts = attempts
        self.latency_s = latency_s


@dataclass(frozen=True)
class Reply:
    text: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    priced: bool  # False when neither litellm nor the settings know this model's price
    latency_s: float
    attempts: int


def _classify(e: Exception) -> tuple[bool, str]:
    """(fatal, one line). Anything not known to be transient after retries also ends up fatal
    only when it is a client error the same request would hit again."""
    ll = _litellm()
    name = type(e).__name__
    text = " ".join(str(e).split())[:300]
    fatal_types = tuple(getattr(ll, n) for n in (
        "AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError",
        "PaymentRequiredError", "UnsupportedParamsError",
    ) if hasattr(ll, n))
    transient_types = tuple(getattr(ll, n) for n in (
        "RateLimitError", "Timeout", "APIConnectionError", "InternalServerError", "ServiceUnavailableError",
        "BadGatewayError",
    ) if hasattr(ll, n))
    if isinstance(e, getattr(ll, "ContextWindowExceededError", ())):
        return False, f"{name}: {text}"  # this prompt was too long; the next one may not be
    if isinstance(e, transient_types):
        return False, f"{name}: {text}"
    if isinstance(e, fatal_types):
        return True, f"{name}: {text}"
    status = getattr(e, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status == 429):
        return False, f"{name}: {text}"
    if isinstance(status, int) and 400 <= status < 500:
        return True, f"{name}: {text}"
    return False, f"{name}: {text}"


class LLMClient:
    """One client for the run; thread-safe (each call is independent)."""

    def __init__(self, settings: LLMSettings, prices: dict[str, Price] | None = None):
        self.settings = settings
        self.prices = dict(prices or {})
        self._ll = _litellm()

    def _kwargs(self, model: str) -> dict[str, Any]:
        s = self.settings
        kw: dict[str, Any] = {"model": model, "timeout": s.timeout_s, "num_retries": 0, "max_retries": 0}
        if s.api_base:
            kw["api_base"] = s.api_base
            # A local server usually wants no key, but the OpenAI client insists on one.
            key = api_key_from_env()
            if key or not os.environ.get("OPENAI_API_KEY"):
                kw["api_key"] = key or "none"
        return kw

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> tuple[float, bool]:
        """Dollars for one response: the settings' price first (it is the user's), then litellm's map."""
        if model in self.prices:
            p = self.prices[model]
            return (tokens_in * p.input_per_mtok + tokens_out * p.output_per_mtok) / 1e6, True
        try:
            c_in, c_out = self._ll.cost_per_token(model=model, prompt_tokens=tokens_in, completion_tokens=tokens_out)
        except Exception:  # litellm raises for a model it has no price for
            return 0.0, False
        return float(c_in) + float(c_out), True

    def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int | None = None) -> Reply:
        """One completion, retrying transient errors with exponential backoff."""
        s = self.settings
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._ll.completion(messages=messages, temperature=s.temperature,
                                               max_tokens=max_tokens or s.max_tokens, **self._kwargs(model))
                break
            except Exception as e:
                fatal, line = _classify(e)
                if fatal or attempt > s.retries:
                    raise LLMError(line, fatal, attempt, time.monotonic() - start) from None
                time.sleep(s.backoff_s * 2 ** (attempt - 1))
        text = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        if not tokens_in:  # a server that reports no usage: count with the model's tokenizer
            tokens_in = self.count_tokens(model, messages)
            tokens_out = self.count_tokens(model, [{"role": "assistant", "content": text}])
        cost, priced = self.cost(model, tokens_in, tokens_out)
        return Reply(text, model, tokens_in, tokens_out, cost, priced, time.monotonic() - start, attempt)

    def count_tokens(self, model: str, messages: list[dict[str, str]]) -> int:
        """Tokens of a prompt by litellm's tokenizer for ``model`` (tiktoken's cl100k when unknown)."""
        try:
            return int(self._ll.token_counter(model=model, messages=messages))
        except Exception:
            return int(self._ll.token_counter(model="gpt-4o", messages=messages))

    def preflight(self, model: str) -> Reply | None:
        """A one-token call: a bad key or an unknown model stops the run before any work.
        Returns the reply (its cost is recorded like any other), or None after a transient failure,
        which is no verdict on the model; the run's own calls retry."""
        try:
            return self.complete(model, [{"role": "user", "content": "Reply with OK."}], max_tokens=1)
        except LLMError as e:
            if e.fatal:
                raise LLMError(f"model {model}: {e}", True, e.attempts) from None
            return None
