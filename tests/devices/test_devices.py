"""Conformance suite: every device backend that can run here passes these."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import devices
from devices.agent import make_server
from devices.onnx_io import onnx_arch, to_onnx
from devices.timing import Runner, TimingPolicy, interleave

FAST = TimingPolicy(warmup_runs=1, warmup_seconds=0.0, runs_per_round=3, min_rounds=2, max_rounds=4)


def tiny(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


@pytest.fixture
def agent():
    server = make_server(devices.get("ort-cpu:threads=1"), token="secret", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# the specs each backend is tested with (default: its bare name); every registered backend is in the suite
SPECS = {"ort-cpu": ["ort-cpu:threads=1", "ort-cpu:threads=1,precision=int8"], "torch-cpu": ["torch-cpu:threads=1"]}
NEEDS_GPU = {"ort-cuda", "torch-cuda", "tensorrt"}
NOT_TIMED = {"table": "replays a recorded table: tested on its own below"}


def _conformance_params() -> list:
    params = []
    for name in devices.names():
        if name in NOT_TIMED:
            continue
        marks = (
            [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{name} needs a CUDA GPU")]
            if name in NEEDS_GPU
            else []
        )
        params += [pytest.param(spec, marks=marks, id=spec) for spec in SPECS.get(name, [name])]
    return params


@pytest.fixture(params=_conformance_params())
def device(request, agent):
    if request.param == "remote":
        return devices.get(f"remote:{agent},token=secret")
    return devices.get(request.param)


def test_every_registered_backend_is_in_the_suite():
    tested = {p.values[0].split(":")[0] for p in _conformance_params()}
    assert tested | set(NOT_TIMED) == set(devices.names())


def test_torch_cpu_gives_the_process_its_thread_count_back():
    before = torch.get_num_threads()
    devices.get("torch-cpu:threads=1").measure(tiny(4), (1, 3, 8, 8), policy=FAST)
    assert torch.get_num_threads() == before


def test_measure_returns_consistent_statistics(device):
    m = device.measure(tiny(8), (1, 3, 32, 32), policy=FAST)
    assert m.latency_ms > 0 and m.repeats >= 6 and m.rounds >= 2
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.cv >= 0


def test_a_model_with_far_more_work_measures_slower(device):
    small, big = device.measure_many([tiny(4), tiny(96)], [(1, 3, 32, 32), (1, 3, 64, 64)], policy=FAST)
    assert big.latency_ms > 3 * small.latency_ms


def test_fingerprint_names_the_machine(device):
    fp = device.fingerprint()
    for key in ("spec", "cpu_model", "cpu_cores", "cpu_threads", "torch", "onnxruntime", "python"):
        assert key in fp
    assert fp["cpu_threads"] >= 1


def test_batch_option_changes_the_input():
    one = devices.get("ort-cpu:threads=1,batch=1").measure(tiny(32), (1, 3, 32, 32), policy=FAST)
    many = devices.get("ort-cpu:threads=1,batch=16").measure(tiny(32), (1, 3, 32, 32), policy=FAST)
    assert many.latency_ms > 4 * one.latency_ms


def test_static_option_fixes_the_batch_axis_of_the_timed_onnx():
    import onnx

    def dims(spec: str) -> list:
        graph = onnx.load_from_string(devices.get(spec).export(tiny(4), (2, 3, 8, 8))).graph
        return [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]

    assert dims("ort-cpu:static=true") == [2, 3, 8, 8]
    assert dims("ort-cpu") == ["batch", 3, 8, 8]
    assert (
        devices.get("ort-cpu:threads=1,static=true,batch=4").measure(tiny(8), (1, 3, 32, 32), policy=FAST).latency_ms
        > 0
    )


def test_onnx_bytes_and_files_measure_like_modules(tmp_path):
    data = to_onnx(tiny(8), (1, 3, 32, 32), arch="tiny8")
    assert onnx_arch(data) == "tiny8"
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    dev = devices.get("ort-cpu")
    assert dev.measure(path, (1, 3, 32, 32), policy=FAST).latency_ms > 0
    with pytest.raises(ValueError, match="cannot read ONNX file"):
        dev.measure(tmp_path / "missing.onnx", (1, 3, 32, 32))


def test_the_int8_precision_option_times_the_quantized_deployment():
    from devices.int8 import int8_onnx, is_quantized

    data = to_onnx(tiny(32), (1, 3, 32, 32))
    q = int8_onnx(data, (1, 3, 32, 32))
    assert not is_quantized(data) and is_quantized(q)
    assert int8_onnx(q, (1, 3, 32, 32)) is q  # a quantized model is timed as it is
    dev = devices.get("ort-cpu:threads=1,precision=int8")
    assert dev.fingerprint()["precision"] == "int8"
    with pytest.raises(ValueError, match="precision='int4' is invalid: must be one of fp32, int8, int8-s8"):
        devices.get("ort-cpu:precision=int4")
    qop = devices.get("ort-cpu:threads=1,precision=int8,int8_format=qoperator")
    assert qop.fingerprint()["precision"] == "int8 (qoperator)"  # a different deployment: another device's rows
    assert qop.measure(tiny(32), (1, 3, 32, 32)).latency_ms > 0
    with pytest.raises(ValueError, match="int8_format='qop' is invalid: must be one of qdq, qoperator"):
        devices.get("ort-cpu:int8_format=qop")


def test_table_device_replays_the_recorded_value(tmp_path):
    path = tmp_path / "lat.csv"
    pd.DataFrame({"arch": ["a", "b"], "pixel9": [3.5, 7.25]}).to_csv(path, index=False)
    dev = devices.get(f"table:{path}:pixel9")
    assert dev.measure(tiny(4), (1, 3, 8, 8), arch="b").latency_ms == 7.25
    with pytest.raises(KeyError, match="no row for architecture 'c'"):
        dev.measure(tiny(4), (1, 3, 8, 8), arch="c")
    with pytest.raises(ValueError, match="has no device 'nope'.*pixel9"):
        devices.get(f"table:{path}:nope").measure(tiny(4), (1, 3, 8, 8), arch="a")


def test_spec_errors_name_the_spec_and_the_choices():
    with pytest.raises(KeyError, match="Unknown device 'phone'.*ort-cpu"):
        devices.get("phone")
    with pytest.raises(
        ValueError, match="unknown option 'thread'; allowed: batch, int8_format, opt, precision, static, threads"
    ):
        devices.get("ort-cpu:thread=2")
    with pytest.raises(ValueError, match="threads='two' is invalid"):
        devices.get("ort-cpu:threads=two")
    with pytest.raises(ValueError, match="table:PATH:COLUMN"):
        devices.get("table:only-a-path")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message seen without a GPU")
@pytest.mark.parametrize("spec", ["torch-cuda", "ort-cuda", "tensorrt:fp16"])
def test_gpu_backends_fail_clearly_without_a_gpu(spec):
    with pytest.raises(RuntimeError, match=spec.split(":")[0] + "|TensorRT|CUDA"):
        devices.get(spec).measure(tiny(4), (1, 3, 16, 16), policy=FAST)


def test_agent_refuses_a_wrong_token(agent):
    with pytest.raises(RuntimeError, match="401"):
        devices.get(f"remote:{agent},token=wrong").fingerprint()


def test_agent_binds_loopback_by_default():
    server = make_server(devices.get("ort-cpu"), token="t", port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
    with pytest.raises(ValueError, match="requires a token"):
        make_server(devices.get("ort-cpu"), token="")


class Drifting(Runner):
    """A fake model whose time is base x the machine's current slowness."""

    def __init__(self, base: float, machine: dict) -> None:
        self.base, self.machine = base, machine

    def run(self, n: int) -> np.ndarray:
        self.machine["calls"] += 1
        return np.full(n, self.base * self.machine["slow"](self.machine["calls"]))


def test_anchor_removes_drift_that_hits_some_models_but_not_others():
    # The machine is 1.5x slower during the second half of the calls: without interleaving,
    # models measured late look slow; round-robin + anchor recovers the true ratios.
    machine = {"calls": 0, "slow": lambda c: 1.5 if c > 60 else 1.0}
    bases = [2.0, 1.0, 3.0, 4.0]
    runners = [Drifting(b, machine) for b in bases]
    policy = TimingPolicy(
        warmup_runs=0, warmup_seconds=0.0, runs_per_round=2, min_rounds=30, max_rounds=30, percentile=50
    )
    stats = interleave(runners, policy, anchor=0)
    ratios = [s["latency_ms"] / stats[0]["latency_ms"] for s in stats]
    np.testing.assert_allclose(ratios, [b / bases[0] for b in bases], rtol=1e-6)


def test_timing_policy_states_its_rules():
    with pytest.raises(ValueError, match="min_rounds <= max_rounds.*min_rounds=5, max_rounds=2"):
        TimingPolicy(min_rounds=5, max_rounds=2)
    with pytest.raises(ValueError, match="`warmup_seconds >= 0` must hold, but got warmup_seconds=-1"):
        TimingPolicy(warmup_seconds=-1)
    with pytest.raises(ValueError, match=r"option threads='-3' is invalid: `>= 0` must hold"):
        devices.get("ort-cpu:threads=-3")


def _raw(url: str, request: bytes, wait: float = 5.0) -> bytes:
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                return b"<still open>"
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_the_agent_answers_bad_lengths_and_greedy_policies_with_400(agent):
    head = b"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nConnection: close\r\n"
    reply = _raw(agent, head + b"Content-Length: abc\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 400") and b"Content-Length must be a whole number" in reply
    import json as _json

    body = _json.dumps({"models": [], "input_shapes": [], "policy": {"max_seconds": 1e6}}).encode()
    reply = _raw(agent, head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert reply.startswith(b"HTTP/1.0 400") and b"caps max_seconds at 600" in reply


def test_the_agent_drops_a_client_that_stops_sending(monkeypatch):
    import time

    import devices.agent as agent_module

    monkeypatch.setattr(agent_module, "IDLE_SECONDS", 0.5)
    server = make_server(devices.get("ort-cpu:threads=1"), token="secret", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        started = time.perf_counter()
        assert _raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\n") == b""  # headers never finished: dropped
        head = b"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nConnection: close\r\n"
        reply = _raw(url, head + b"Content-Length: 100\r\n\r\n{}")  # promises more body than it sends
        assert reply.startswith(b"HTTP/1.0 408") and b"did not arrive within 0.5 s" in reply
        assert time.perf_counter() - started < 4.0  # closed by the agent, not by the client's 5 s timeout
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_in_the_spec_is_never_written_with_the_device():
    device = devices.get("remote:http://127.0.0.1:9,token=s3cret")
    assert device.spec == "remote:http://127.0.0.1:9" and "s3cret" not in repr(device.describe())


def test_the_agent_refuses_a_body_over_its_limit_before_reading_it():
    server = make_server(devices.get("ort-cpu:threads=1"), token="secret", port=0, max_body=1000)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        head = b"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nConnection: close\r\n"
        reply = _raw(url, head + b"Content-Length: 200000000\r\n\r\n")  # 200 MB promised, none sent
        assert reply.startswith(b"HTTP/1.0 413") and b"1..1000 bytes, got 200000000" in reply
        assert b"--max-request-mb" in reply
    finally:
        server.shutdown()
        server.server_close()


def test_table_device_replays_a_profile_whose_device_spec_holds_colons(tmp_path):
    path = tmp_path / "profile.csv"
    pd.DataFrame(
        {"arch": ["a", "a"], "device": ["ort-cpu:threads=1,batch=8", "ort-cpu:threads=2"], "latency_ms": [4.0, 2.5]}
    ).to_csv(path, index=False)
    for column, ms in (("ort-cpu:threads=1,batch=8", 4.0), ("ort-cpu:threads=2", 2.5)):
        assert devices.get(f"table:{path}:{column}").measure(tiny(4), (1, 3, 8, 8), arch="a").latency_ms == ms
    with pytest.raises(ValueError, match="latency table .*missing.csv' does not exist"):
        devices.get(f"table:{tmp_path}/missing.csv:ort-cpu:threads=2")
