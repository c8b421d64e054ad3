"""`remote:http://host:port`: a device on another machine, reached through `hwnas device serve`."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from devices.base import Device, DeviceError, Measurement, ModelLike
from devices.onnx_io import to_onnx
from devices.registry import register
from devices.timing import TimingPolicy

TOKEN_ENV = "HWNAS_DEVICE_TOKEN"


@register("remote")
class RemoteDevice(Device):
    """Ships models as ONNX to an agent, which measures them interleaved and answers JSON."""

    options = {}

    def __init__(self, spec: str, url: str, token: str | None, timeout: float = 3600.0) -> None:
        super().__init__(spec)
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @classmethod
    def from_spec(cls, spec: str, rest: str) -> RemoteDevice:
        url, token = rest, os.environ.get(TOKEN_ENV)
        if ",token=" in rest:
            url, _, token = rest.partition(",token=")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"device {spec!r} must be remote:http://HOST:PORT")
        if not token:
            raise ValueError(f"device {spec!r} needs the agent's token: set {TOKEN_ENV} or add ',token=...'")
        return cls(f"remote:{url}", url, token)  # the spec is written into files: never with the token

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise DeviceError(f"device agent {self.url} answered {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            raise DeviceError(f"cannot reach device agent {self.url}: {err.reason}") from None

    def measure_many(
        self,
        models: Sequence[ModelLike],
        input_shapes: Sequence[Sequence[int]],
        archs: Sequence[str | None] | None = None,
        policy: TimingPolicy | None = None,
        anchor: int | None = None,
    ) -> list[Measurement]:
        archs = list(archs) if archs is not None else [None] * len(models)
        payload = {
            "models": [base64.b64encode(to_onnx(m, s, a)).decode() for m, s, a in zip(models, input_shapes, archs)],
            "input_shapes": [list(map(int, s)) for s in input_shapes],
            "archs": archs,
            "policy": asdict(policy) if policy is not None else None,
            "anchor": anchor,
        }
        return [Measurement.from_dict(m) for m in self._call("/measure", payload)["measurements"]]

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("remote devices measure through measure_many()")

    def fingerprint(self) -> dict[str, Any]:
        remote = self._call("/fingerprint")
        return {**remote, "spec": self.spec, "agent_spec": remote.get("spec", "")}
