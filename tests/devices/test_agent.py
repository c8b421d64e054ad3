"""The device agent against a neighbour on the network: floods, slow writers, guessed tokens, named files."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import onnx
import pytest
from onnx import TensorProto, helper

import devices
import devices.agent as agent_module
from devices.agent import check_token, external_data, make_server


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setattr(agent_module, "HEADER_SECONDS", 1.0)
    started = []

    def start(**kwargs):
        server = make_server(devices.get("ort-cpu:threads=1"), token="secret", port=0, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _get(url: str, token: str = "secret", timeout: float = 10.0) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_flood_of_idle_connections_is_bounded_and_a_legitimate_request_is_answered(serve):
    server, url = serve(max_connections=4)
    port = server.server_address[1]
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]  # no token, nothing sent
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + 4  # one thread per served connection, at most 4
        started = time.perf_counter()
        assert _get(url, timeout=30.0) == (200, {"ok": True, "spec": "ort-cpu:threads=1"})
        assert time.perf_counter() - started < 20.0  # idle ones are dropped at their header deadline
    finally:
        for s in idle:
            s.close()


def test_a_slow_writer_is_dropped_at_the_request_deadline_not_per_read(serve):
    _, url = serve()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        started = time.perf_counter()
        s.sendall(b"GET /health HTTP/1.1\r\n")
        dropped = None
        for i in range(20):  # one header line every 0.3 s: each read is quick, the request never ends
            time.sleep(0.3)
            try:
                s.sendall(f"X-Slow-{i}: y\r\n".encode())
            except OSError:
                dropped = time.perf_counter() - started
                break
            s.settimeout(0.01)
            try:
                if s.recv(1) == b"":
                    dropped = time.perf_counter() - started
                    break
            except TimeoutError:
                pass
        assert dropped is not None and dropped < 4.0


def test_wrong_tokens_are_slowed_down_together(serve):
    _, url = serve()
    results = []
    threads = [threading.Thread(target=lambda: results.append(_get(url, token="guess"))) for _ in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for code, _ in results] == [401] * 8
    assert time.perf_counter() - started >= 8 * agent_module.FAILURE_SECONDS * 0.9  # serialised, not parallel
    assert _get(url)[0] == 200  # the right token is not made to wait


def test_weak_tokens_are_refused_off_loopback():
    check_token("t", "127.0.0.1")  # loopback: the machine's own users only
    for weak in ("x", "short-token", "a token with blanks!"):
        with pytest.raises(ValueError, match="off loopback\\) must have at least 16 characters and no blanks"):
            check_token(weak, "0.0.0.0")
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="requires a token"):
            check_token(blank, "127.0.0.1")
    check_token(agent_module.new_token(), "0.0.0.0")


def _model_with_external_weights(location: str) -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [weight],
    )
    return helper.make_model(graph).SerializeToString()


def test_the_agent_opens_no_file_a_model_names(serve, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.bin").write_bytes(b"\0" * 4)
    assert external_data(_model_with_external_weights("exists.bin")) == ["exists.bin"]
    _, url = serve()
    replies = []
    for name in ("exists.bin", "missing.bin"):  # the same answer whether the file is there or not: no oracle
        payload = {"models": [base64.b64encode(_model_with_external_weights(name)).decode()], "input_shapes": [[1]]}
        req = urllib.request.Request(
            url + "/measure",
            data=json.dumps(payload).encode(),
            headers={"Authorization": "Bearer secret", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        replies.append((err.value.code, json.loads(err.value.read())["error"].replace(name, "NAME")))
    assert replies[0] == replies[1] and replies[0][0] == 400 and "external data" in replies[0][1]
    with pytest.raises(ValueError, match="not an ONNX model"):
        external_data(b"\xff\xfe garbage")
    assert onnx.load_from_string(_model_with_external_weights("a")).graph.initializer[0].name == "w"
