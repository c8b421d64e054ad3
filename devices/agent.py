"""The measuring agent behind `hwnas device serve`: HTTP + JSON, token required, one job at a time."""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devices.base import Device
from devices.timing import TimingPolicy

MAX_BODY = 1 << 30
# what one client may ask of the shared measuring lock, and how long a connection may sit idle
LIMITS = {"max_seconds": 600.0, "max_rounds": 100, "runs_per_round": 1000, "warmup_runs": 100, "warmup_seconds": 60.0}
IDLE_SECONDS = 30.0


def new_token() -> str:
    return secrets.token_urlsafe(24)


def make_server(
    device: Device, token: str, host: str = "127.0.0.1", port: int = 8600, max_body: int = MAX_BODY
) -> ThreadingHTTPServer:
    """An HTTP server measuring on `device`; requests must carry `Authorization: Bearer <token>`, and a request
    body (the group's ONNX models, base64) may hold at most `max_body` bytes (it is refused before it is read)."""
    if not token:
        raise ValueError("the device agent requires a token")
    if max_body < 1:
        raise ValueError(f"`max_body >= 1` must hold, but got max_body={max_body}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        timeout = IDLE_SECONDS  # a client that stops sending (headers or body) is dropped, not waited for

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            pass

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return True
            self._reply(401, {"error": "missing or wrong token"})
            return False

        def do_GET(self) -> None:  # http.server's naming
            if not self._authorised():
                return
            if self.path == "/fingerprint":
                self._reply(200, device.fingerprint())
            elif self.path == "/health":
                self._reply(200, {"ok": True, "spec": device.spec})
            else:
                self._reply(404, {"error": f"no such path {self.path!r}; try /measure, /fingerprint, /health"})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            if self.path != "/measure":
                self._reply(404, {"error": f"no such path {self.path!r}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                self._reply(
                    400, {"error": f"Content-Length must be a whole number, got {self.headers['Content-Length']!r}"}
                )
                return
            if not 0 < length <= max_body:
                self._reply(
                    413,
                    {
                        "error": f"request body must be 1..{max_body} bytes, got {length} (the agent's "
                        "--max-request-mb; or measure smaller groups: hwnas profile --group)"
                    },
                )
                return
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                self._reply(408, {"error": f"the request body did not arrive within {IDLE_SECONDS:g} s"})
                return
            try:
                if len(body) < length:
                    raise ValueError(f"the body ended after {len(body)} of {length} bytes")
                req = json.loads(body)
                del body  # the models are decoded next: never hold three copies of a large request
                models = [base64.b64decode(m) for m in req.pop("models")]
                shapes = [tuple(int(v) for v in s) for s in req["input_shapes"]]
                if len(shapes) != len(models):
                    raise ValueError("models and input_shapes differ in length")
                policy = TimingPolicy(**req["policy"]) if req.get("policy") else None
                over = {k: getattr(policy, k) for k, cap in LIMITS.items() if policy and getattr(policy, k) > cap}
                if over:
                    raise ValueError(f"this agent caps {', '.join(f'{k} at {LIMITS[k]}' for k in over)}; got {over}")
                archs = req.get("archs") or [None] * len(models)
                with lock:
                    results = device.measure_many(models, shapes, archs, policy=policy, anchor=req.get("anchor"))
            except (KeyError, TypeError, ValueError) as err:
                self._reply(400, {"error": f"bad request: {err}"})
                return
            except Exception as err:  # the client gets the reason, the agent lives on
                self._reply(500, {"error": f"{type(err).__name__}: {err}"})
                return
            self._reply(200, {"measurements": [m.to_dict() for m in results]})

    return ThreadingHTTPServer((host, port), Handler)
