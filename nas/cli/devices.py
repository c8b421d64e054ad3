"""`hwnas device serve` and `hwnas device info`."""

from __future__ import annotations

import argparse
import json
import os

import devices
from nas.cli.base import Command, UserError


class Serve(Command):
    name, help = "serve", "run a measuring agent that remote:URL devices talk to"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default="ort-cpu:threads=1")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8600)
        parser.add_argument("--token", help="required bearer token (default: $HWNAS_DEVICE_TOKEN or a new random one)")
        parser.add_argument(
            "--max-request-mb",
            type=int,
            default=1024,
            help="largest request accepted (a group's models as base64 ONNX), refused before it is read",
        )

    def run(self, args: argparse.Namespace) -> None:
        from devices.agent import make_server, new_token
        from devices.remote import TOKEN_ENV

        if not 0 <= args.port <= 65535:
            raise UserError(f"`0 <= --port <= 65535` must hold, but got --port {args.port}")
        if args.max_request_mb < 1:
            raise UserError(f"`--max-request-mb >= 1` must hold, but got --max-request-mb {args.max_request_mb}")
        device = devices.get(args.device)
        token = args.token or os.environ.get(TOKEN_ENV) or new_token()
        try:
            server = make_server(device, token, args.host, args.port, args.max_request_mb << 20)
        except OSError as err:  # an address in use, a host that does not resolve, a port we may not bind
            raise UserError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from None
        host, port = server.server_address[:2]
        print(f"hwnas device agent for {device.spec} on http://{host}:{port}", flush=True)
        if not (args.token or os.environ.get(TOKEN_ENV)):
            print(f"token: {token}   (clients: export {TOKEN_ENV}={token})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


class Info(Command):
    name, help = "info", "print a device's fingerprint"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", required=True)

    def run(self, args: argparse.Namespace) -> None:
        print(json.dumps(devices.get(args.device).fingerprint(), indent=2))


HELP = "device agent and information"
COMMANDS = [Serve(), Info()]
