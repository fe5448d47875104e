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
PREFLIGHT_TIMEOUT_S = 30.0


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
        self.unreachable: str | None = None  # no server answered (refused, no such host, no credentials)


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
    finish_reason: str = "stop"  # "length": cut off by max_tokens
    max_tokens: int = 0  # the limit the call was made with


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it, outermost first: litellm wraps the OpenAI client's error, which
    wraps httpx's, which wraps the socket's."""
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not x for x in out) and len(out) < 12:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "original_exception", None)
    return out


def unreachable(e: BaseException) -> str | None:
    """Why no server answered at all (refused, no such host, no credentials to send), whatever
    class litellm wrapped it in; None for a server that answered or timed out."""
    import socket

    chain = _chain(e)
    for x in chain:
        if isinstance(x, TimeoutError) or "Timeout" in type(x).__name__:
            return None
    for x in chain:  # the socket's own reason first, however deep
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, socket.gaierror):
            return "no such host"
    for x in chain:
        if type(x).__name__ == "ConnectError":  # httpx/httpcore: no connection was made
            return f"cannot connect ({' '.join(str(x).split())[:120]})"
        if type(x).__module__.startswith("openai") and type(x).__name__ == "OpenAIError":
            return f"the client refused to send it: {' '.join(str(x).split())[:160]}"  # missing credentials
    return None


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

    def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int | None = None,
                 retries: int | None = None, timeout_s: float | None = None) -> Reply:
        """One completion, retrying transient errors with exponential backoff."""
        s = self.settings
        limit = max_tokens or s.max_tokens
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                kw = self._kwargs(model)
                if timeout_s is not None:
                    kw["timeout"] = timeout_s
                response = self._ll.completion(messages=messages, temperature=s.temperature, max_tokens=limit, **kw)
                break
            except Exception as e:
                fatal, line = _classify(e)
                if fatal or attempt > (s.retries if retries is None else retries):
                    err = LLMError(line, fatal, attempt, time.monotonic() - start)
                    err.unreachable = unreachable(e)
                    raise err from None
                time.sleep(s.backoff_s * 2 ** (attempt - 1))
        choice = response.choices[0]
        finish = str(getattr(choice, "finish_reason", None) or "stop")
        text = choice.message.content or ""
        usage = getattr(response, "usage", None)
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        if not tokens_in:  # a server that reports no usage: count with the model's tokenizer
            tokens_in = self.count_tokens(model, messages)
            tokens_out = self.count_tokens(model, [{"role": "assistant", "content": text}])
        cost, priced = self.cost(model, tokens_in, tokens_out)
        return Reply(text, model, tokens_in, tokens_out, cost, priced, time.monotonic() - start, attempt, finish, limit)

    def count_tokens(self, model: str, messages: list[dict[str, str]]) -> int:
        """Tokens of a prompt by litellm's tokenizer for ``model`` (tiktoken's cl100k when unknown)."""
        try:
            return int(self._ll.token_counter(model=model, messages=messages))
        except Exception:
            return int(self._ll.token_counter(model="gpt-4o", messages=messages))

    def preflight(self, model: str) -> Reply | None:
        """Whether ``model`` can work at all, in seconds: a name litellm cannot route, missing
        credentials, a server that refuses the connection or does not exist, a bad key or an
        unknown model stop the run before any work (a fatal LLMError, one line saying what to fix).
        Returns the one-token reply (its cost is recorded like any other), or None when a live
        server timed out or answered 429/5xx: no verdict on the model, the run's calls retry."""
        try:
            self._ll.get_llm_provider(model)
        except Exception:
            raise LLMError(f"model {model}: litellm cannot route this name; write provider/model "
                           "(e.g. openai/gpt-4o-mini, anthropic/claude-3-5-sonnet-latest)", True) from None
        if not self.settings.api_base:
            try:
                env = self._ll.validate_environment(model)
            except Exception:
                env = {}
            missing = list(env.get("missing_keys") or []) if not env.get("keys_in_environment", True) else []
            if missing:
                raise LLMError(f"model {model}: no credentials: set {' and '.join(missing)} (or point --api-base "
                               "at an OpenAI-compatible server)", True)
        try:
            # A one-token answer is quick; a host that swallows the connection must not hold the run.
            return self.complete(model, [{"role": "user", "content": "Reply with OK."}], max_tokens=1,
                                 retries=min(self.settings.retries, 1),
                                 timeout_s=min(self.settings.timeout_s, PREFLIGHT_TIMEOUT_S))
        except LLMError as e:
            where = self.settings.api_base or "the provider"
            if e.fatal:
                raise LLMError(f"model {model}: {e}", True, e.attempts) from None
            if e.unreachable:
                raise LLMError(f"model {model}: cannot reach {where}: {e.unreachable}", True, e.attempts) from None
            return None
