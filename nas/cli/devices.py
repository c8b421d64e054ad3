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

    def run(self, args: argparse.Namespace) -> None:
        from devices.agent import make_server, new_token
        from devices.remote import TOKEN_ENV

        if not 0 <= args.port <= 65535:
            raise UserError(f"`0 <= --port <= 65535` must hold, but got --port {args.port}")
        device = devices.get(args.device)
        token = args.token or os.environ.get(TOKEN_ENV) or new_token()
        server = make_server(device, token, args.host, args.port)
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
