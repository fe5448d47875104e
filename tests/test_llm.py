"""The LLM layer against a real loopback server: retries, error classes, prices, and no other network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kernelevo.propose.llm import LLMClient, LLMError
from kernelevo.settings import LLMSettings, Price
from tests.conftest import ROOT, closed_port
from tests.llm_server import ScriptedServer

MSG = [{"role": "user", "content": "x" * 400}]


def client(url: str, **kw: object) -> LLMClient:
    return LLMClient(LLMSettings(**{"api_base": url, "backoff_s": 0.01, **kw}),  # type: ignore[arg-type]
                     {"openai/priced": Price(input_per_mtok=2.0, output_per_mtok=10.0)})


def test_transient_errors_are_retried_then_counted() -> None:
    replies = [{"status": 429, "error": "rate limited"}, {"status": 503, "error": "overloaded"}, "done"]
    with ScriptedServer(lambda body, i: replies[min(i, 2)]) as srv:
        r = client(srv.url).complete("openai/priced", MSG)
    assert r.text == "done" and r.attempts == 3
    assert r.tokens_in == 100 and r.tokens_out == 1  # the server's usage: 400 chars / 4
    assert r.cost_usd == pytest.approx((100 * 2.0 + 1 * 10.0) / 1e6) and r.priced


def test_retries_give_up_after_the_configured_number() -> None:
    with ScriptedServer(lambda body, i: {"status": 500, "error": "boom"}) as srv:
        with pytest.raises(LLMError) as info:
            client(srv.url, retries=2).complete("openai/x", MSG)
        assert len(srv.requests) == 3
    assert not info.value.fatal and info.value.attempts == 3


@pytest.mark.parametrize("status,name", [(401, "AuthenticationError"), (404, "NotFoundError")])
def test_auth_and_unknown_model_are_fatal_without_retries(status: int, name: str) -> None:
    with ScriptedServer(lambda body, i: {"status": status, "error": "no"}) as srv:
        with pytest.raises(LLMError) as info:
            client(srv.url).preflight("openai/x")
        assert len(srv.requests) == 1
    assert info.value.fatal and name in str(info.value) and "openai/x" in str(info.value)
    assert "\n" not in str(info.value)


def test_unpriced_model_is_flagged_not_silently_free() -> None:
    with ScriptedServer(lambda body, i: "ok") as srv:
        r = client(srv.url).complete("openai/local-coder", MSG)
    assert r.cost_usd == 0.0 and not r.priced


def test_litellm_price_map_is_used_for_known_models() -> None:
    c = LLMClient(LLMSettings())
    cost, priced = c.cost("gpt-4o-mini", 1_000_000, 0)
    assert priced and 0.01 < cost < 10  # litellm's shipped map, not a download


def test_importing_and_calling_reaches_only_the_model_server() -> None:
    """Every socket the LLM layer opens goes to the loopback model server (no price-map download)."""
    code = textwrap.dedent("""
        import json, sys
        seen = []
        sys.addaudithook(lambda ev, args: seen.append(repr(args[1])) if ev == "socket.connect" else None)
        from tests.llm_server import ScriptedServer
        from kernelevo.propose.llm import LLMClient
        from kernelevo.settings import LLMSettings
        with ScriptedServer(lambda body, i: "hi") as srv:
            LLMClient(LLMSettings(api_base=srv.url)).complete("openai/m", [{"role": "user", "content": "hello"}])
        print(json.dumps(seen))
    """)
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen and all("127.0.0.1" in s for s in seen), seen


def _timed_preflight(c: LLMClient, model: str) -> tuple[LLMError, float]:
    import time

    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        c.preflight(model)
    return info.value, time.monotonic() - t0


@pytest.mark.parametrize("base", ["http://127.0.0.1:{port}/v1", "http://no-such-host.invalid/v1"])
def test_preflight_stops_at_once_when_no_server_answers(base: str) -> None:
    c = client(base.format(port=closed_port()), retries=5, backoff_s=5.0)
    err, took = _timed_preflight(c, "openai/m")
    assert err.fatal and "cannot reach" in str(err) and ("refused" in str(err) or "no such host" in str(err))
    assert took < 15 and "\n" not in str(err)  # no retries with back-off over a dead address


def test_preflight_names_missing_credentials_and_unroutable_names(monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "KERNELEVO_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    c = LLMClient(LLMSettings(retries=5, backoff_s=5.0))
    err, took = _timed_preflight(c, "openai/gpt-4o-mini")
    assert err.fatal and "OPENAI_API_KEY" in str(err) and took < 5
    err, _ = _timed_preflight(c, "anthropic/claude-3-5-sonnet-latest")
    assert "ANTHROPIC_API_KEY" in str(err)
    err, _ = _timed_preflight(c, "nosuchprovider/xyz")
    assert err.fatal and "cannot route" in str(err)


def test_preflight_bad_key_is_fatal_but_a_busy_or_slow_server_is_not() -> None:
    from tests.llm_server import AUTH_ERROR

    with ScriptedServer(lambda body, i: AUTH_ERROR) as srv:
        err, _ = _timed_preflight(client(srv.url), "openai/m")
        assert len(srv.requests) == 1
    assert err.fatal and "Incorrect API key" in str(err)
    with ScriptedServer(lambda body, i: {"status": 503, "error": "overloaded"}) as srv:
        assert client(srv.url, retries=3).preflight("openai/m") is None  # no verdict; at most one retry
        assert len(srv.requests) == 2
    with ScriptedServer(lambda body, i: {"content": "OK", "delay": 3.0}) as srv:
        assert client(srv.url, timeout_s=1.0, retries=0).preflight("openai/m") is None  # timed out: retryable
    with ScriptedServer(lambda body, i: {"drop": True}) as srv:
        with pytest.raises(LLMError) as info:
            client(srv.url, retries=0).complete("openai/m", MSG)
    assert not info.value.fatal  # a live server that dropped one request: transient


def test_finish_reason_and_limit_reach_the_reply() -> None:
    with ScriptedServer(lambda body, i: {"content": "```python\nclass ModelNew", "finish_reason": "length"}) as srv:
        r = client(srv.url).complete("openai/m", MSG, max_tokens=77)
        assert srv.requests[0]["max_tokens"] == 77
    assert r.finish_reason == "length" and r.max_tokens == 77
