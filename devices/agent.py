"""The measuring agent behind `hwnas device serve`: HTTP + JSON, token required, one job at a time.

What a neighbour on the network can do to it is bounded: at most `MAX_CONNECTIONS` connections are served at
once (more wait in the listen queue, not in threads), a request's headers must arrive within `HEADER_SECONDS`
of the connection; a body that stalls for `IDLE_SECONDS` is answered 408, and one that trickles is dropped at twice
that plus one second per MiB (a deadline, not per read; the margin lets the stall's answer come first), a wrong
token costs `FAILURE_SECONDS` of a lock every failure shares (a few guesses a second in all), a token off
loopback must be strong, and a model may not name files (ONNX external data) for the agent to open."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devices.base import Device
from devices.timing import TimingPolicy

MAX_BODY = 1 << 30
# what one client may ask of the shared measuring lock, and how long a connection may sit idle
LIMITS = {"max_seconds": 600.0, "max_rounds": 100, "runs_per_round": 1000, "warmup_runs": 100, "warmup_seconds": 60.0}
IDLE_SECONDS = 30.0
HEADER_SECONDS = 10.0
MAX_CONNECTIONS = 16
FAILURE_SECONDS = 0.25
MIN_TOKEN_CHARS = 16  # off loopback


def check_token(token: str, host: str) -> None:
    """A token is required; off loopback it must be at least `MIN_TOKEN_CHARS` characters, none of them blank."""
    if not token or not token.strip():
        raise ValueError("the device agent requires a token")
    if _loopback(host):
        return
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(
            f"a token for {host} (off loopback) must have at least {MIN_TOKEN_CHARS} characters and no blanks, "
            f"but got one of {len(token)}; leave --token out for a random one"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def external_data(model: bytes) -> list[str]:
    """The files an ONNX model asks its reader to open (initializers stored as external data), in every graph."""
    import onnx

    try:
        proto = onnx.load_from_string(model)
    except Exception:  # protobuf's DecodeError and its kin
        raise ValueError(f"a model of {len(model)} bytes is not an ONNX model") from None
    graphs, found = [proto.graph], []
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                found += [e.value for e in tensor.external_data if e.key == "location"] or [tensor.name]
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                    found += [e.value for e in attr.t.external_data if e.key == "location"] or [attr.name]
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    return found


class _Deadline:
    """A connection's deadline: `Watchdog` shuts the connection down when it passes, unless cancelled first, so a
    slow writer cannot stretch a request by sending one byte at a time."""

    def __init__(self, conn: socket.socket, seconds: float) -> None:
        self.conn, self.at, self.expired, self.cancelled = conn, time.monotonic() + seconds, False, False

    def expire(self) -> None:
        self.expired = True
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self.cancelled = True


class Watchdog:
    """One thread for every connection's deadlines (never a thread per connection)."""

    def __init__(self, tick: float = 0.1) -> None:
        self.tick, self.deadlines, self.lock = tick, set(), threading.Lock()
        threading.Thread(target=self._loop, daemon=True, name="hwnas-agent-watchdog").start()

    def watch(self, conn: socket.socket, seconds: float) -> _Deadline:
        deadline = _Deadline(conn, seconds)
        with self.lock:
            self.deadlines.add(deadline)
        return deadline

    def _loop(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self.lock:
                done = {d for d in self.deadlines if d.cancelled or d.at <= now}
                self.deadlines -= done
            for d in done:
                if not d.cancelled:
                    d.expire()


class AgentServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` connections in threads; the next one is accepted only when
    one of them ends (until then it waits in the kernel's listen queue). Holds what every request reads: the
    device, the token, the body limit, the measuring lock and the lock wrong tokens wait on."""

    request_queue_size = 256
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], device: Device, token: str, max_body: int, max_connections: int
    ) -> None:
        self.device, self.token, self.max_body = device, token, max_body
        self.measuring, self.failures = threading.Lock(), threading.Lock()
        self.slots = threading.BoundedSemaphore(max_connections)
        self.watchdog = Watchdog()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    """One connection of an `AgentServer`: GET /health and /fingerprint, POST /measure."""

    server: AgentServer

    def setup(self) -> None:
        self.timeout = IDLE_SECONDS  # a client that stops sending (headers or body) is dropped, not waited for
        super().setup()
        self.deadline = self.server.watchdog.watch(self.connection, HEADER_SECONDS)

    def finish(self) -> None:
        self.deadline.cancel()
        super().finish()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.deadline.cancel()  # the headers arrived in time
        return ok

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
        if hmac.compare_digest(given.encode(errors="replace"), f"Bearer {self.server.token}".encode()):
            return True
        with self.server.failures:  # every wrong guess waits its turn: a few a second, however many connections
            time.sleep(FAILURE_SECONDS)
        self.close_connection = True
        self._reply(401, {"error": "missing or wrong token"})
        return False

    def do_GET(self) -> None:  # http.server's naming
        if not self._authorised():
            return
        if self.path == "/fingerprint":
            self._reply(200, self.server.device.fingerprint())
        elif self.path == "/health":
            self._reply(200, {"ok": True, "spec": self.server.device.spec})
        else:
            self._reply(404, {"error": f"no such path {self.path!r}; try /measure, /fingerprint, /health"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        if self.path != "/measure":
            self._reply(404, {"error": f"no such path {self.path!r}"})
            return
        body = self._body()
        if body is None:
            return
        try:
            results = self._measure(body)
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            self._reply(400, {"error": f"bad request: {str(err)[:300]}"})
            return
        except Exception as err:  # the client gets the reason, the agent lives on
            self._reply(500, {"error": f"{type(err).__name__}: {err}"})
            return
        self._reply(200, {"measurements": [m.to_dict() for m in results]})

    def _body(self) -> bytes | None:
        """The request body within its size limit and deadline (None: refused or dropped, the reply sent)."""
        max_body = self.server.max_body
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._reply(
                400, {"error": f"Content-Length must be a whole number, got {self.headers['Content-Length']!r}"}
            )
            return None
        if not 0 < length <= max_body:
            self._reply(
                413,
                {
                    "error": f"request body must be 1..{max_body} bytes, got {length} (the agent's "
                    "--max-request-mb; or measure smaller groups: hwnas profile --group)"
                },
            )
            return None
        self.deadline = self.server.watchdog.watch(self.connection, 2 * IDLE_SECONDS + length / (1 << 20))
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._reply(408, {"error": f"the request body did not arrive within {IDLE_SECONDS:g} s"})
            return None
        except OSError:
            return None
        finally:
            self.deadline.cancel()
        if self.deadline.expired:
            return None  # the connection is shut: the body took longer than its deadline
        if len(body) < length:
            self._reply(400, {"error": f"bad request: the body ended after {len(body)} of {length} bytes"})
            return None
        return body

    def _measure(self, body: bytes) -> list[Any]:
        """The request's models measured interleaved on the device (one request at a time)."""
        req = json.loads(body)
        del body  # the models are decoded next: never hold three copies of a large request
        models = [base64.b64decode(m) for m in req.pop("models")]
        named = sorted({f for m in models for f in external_data(m)})
        if named:
            raise ValueError(
                f"a model names external data files ({', '.join(named[:3])}): the agent measures only "
                "what a request carries; save each model with its weights inside"
            )
        shapes = [tuple(int(v) for v in s) for s in req["input_shapes"]]
        if len(shapes) != len(models):
            raise ValueError("models and input_shapes differ in length")
        policy = TimingPolicy(**req["policy"]) if req.get("policy") else None
        over = {k: getattr(policy, k) for k, cap in LIMITS.items() if policy and getattr(policy, k) > cap}
        if over:
            raise ValueError(f"this agent caps {', '.join(f'{k} at {LIMITS[k]}' for k in over)}; got {over}")
        archs = req.get("archs") or [None] * len(models)
        with self.server.measuring:
            return self.server.device.measure_many(models, shapes, archs, policy=policy, anchor=req.get("anchor"))


def new_token() -> str:
    return secrets.token_urlsafe(24)


def make_server(
    device: Device,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8600,
    max_body: int = MAX_BODY,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    """An HTTP server measuring on `device`; requests must carry `Authorization: Bearer <token>`, and a request
    body (the group's ONNX models, base64) may hold at most `max_body` bytes (it is refused before it is read)."""
    check_token(token, host)
    if max_body < 1:
        raise ValueError(f"`max_body >= 1` must hold, but got max_body={max_body}")
    if max_connections < 1:
        raise ValueError(f"`max_connections >= 1` must hold, but got max_connections={max_connections}")
    return AgentServer((host, port), device, token, max_body, max_connections)
