"""A real OpenAI-compatible HTTP server on loopback that answers from a script.

Tests and benchmarks point litellm at it with ``api_base``; nothing in litellm is mocked. A
script is a function of (request body, request index) returning the reply text, or a dict:

- ``{"content": ..., "finish_reason": "length", "reasoning_content": ...}``: a reply as providers
  send it (a cut-off one; a reasoning model's separate reasoning field);
- ``{"status": 429, "error": "...", "code": "..."}``: an HTTP error with an OpenAI-style body
  (``AUTH_ERROR`` is what OpenAI answers a bad key);
- ``{"drop": True}``: the connection closed without an answer;
- ``"delay"``: seconds to wait first (the client's timeout).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[dict[str, Any], int], "str | dict[str, Any]"]
AUTH_ERROR = {"status": 401, "code": "invalid_api_key", "type": "invalid_request_error",
              "error": "Incorrect API key provided: sk-bad. You can find your API key at https://platform.openai.com."}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection the script dropped on purpose is not an error worth a traceback."""


class ScriptedServer:
    def __init__(self, script: Script, delay_s: float = 0.0):
        self.script = script
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def prompts(self) -> list[str]:
        """The user message of every chat request, in arrival order."""
        with self._lock:
            return [m["content"] for r in self.requests for m in r.get("messages", []) if m["role"] == "user"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(body)
                reply = server.script(body, index)
                if isinstance(reply, str):
                    reply = {"content": reply}
                time.sleep(reply.get("delay", server.delay_s))
                if reply.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    self.wfile = io.BytesIO()  # nothing left to flush to the closed socket
                    return
                if "status" in reply:
                    err = {"message": reply.get("error", "scripted error"), "type": reply.get("type", "scripted"),
                           "param": None, "code": reply.get("code", reply["status"])}
                    self._send(reply["status"], {"error": err})
                    return
                content = reply["content"]
                prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
                usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": max(1, len(content) // 4)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._send(200, {
                    "id": f"chatcmpl-{index}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "scripted"),
                    "choices": [{"index": 0, "finish_reason": reply.get("finish_reason", "stop"),
                                 "message": {"role": "assistant", "content": content,
                                             **({"reasoning_content": reply["reasoning_content"]}
                                                if "reasoning_content" in reply else {})}}],
                    "usage": usage,
                })

        return Handler


def fenced(source: str, prose: str = "Here is the kernel.") -> str:
    """A reply the way models write them: prose, then the module in a python block."""
    return f"{prose}\n\n```python\n{source.strip()}\n```\n"
