"""The `hwnas` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import devices
import search_spaces
from nas.spaces import load_space, read_archs, sample_archs


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def _space(args: argparse.Namespace) -> Any:
    return load_space(args.space)


def _policy(args: argparse.Namespace) -> devices.TimingPolicy | None:
    fields = {k: getattr(args, k) for k in ("runs_per_round", "min_rounds", "max_rounds") if getattr(args, k, None)}
    return devices.TimingPolicy(**fields) if fields else None


def cmd_spaces(args: argparse.Namespace) -> None:
    from rich.table import Table

    from nas.progress import Console

    table = Table("space", "architectures", "encoding", "input", "about")
    for name in search_spaces.names():
        space = search_spaces.create(name)
        arch = space.sample(__import__("numpy").random.default_rng(0))
        doc = (type(space).__doc__ or "").strip().splitlines()[0]
        module_doc = (sys.modules[type(space).__module__].__doc__ or "").strip().splitlines()[0]
        table.add_row(name, f"{space.size():.3g}" if space.size() > 1e6 else str(space.size()),
                      str(space.encoding_size), "x".join(map(str, space.input_shape(arch)[1:])), module_doc or doc)
    Console(width=120).print(table)


def cmd_sample(args: argparse.Namespace) -> None:
    space = _space(args)
    for arch in sample_archs(space, args.n, args.seed):
        print(space.to_str(arch))


def cmd_profile(args: argparse.Namespace) -> None:
    from nas.profile import check_output, profile
    from nas.progress import console, progress_bar

    space = _space(args)
    if (args.archs is None) == (args.n is None):
        raise UserError("profile needs exactly one of --archs FILE or -n N")
    archs = read_archs(space, args.archs) if args.archs else sample_archs(space, args.n, args.seed)
    device = devices.get(args.device)
    check_output(args.out)
    with progress_bar(f"profiling on {device.spec}") as update:
        rows = profile(space, device, archs, args.out, group_size=args.group, policy=_policy(args), progress=update)
    console.print(f"{len(rows)} new rows in {args.out} ({len(archs) - len(rows)} already there)")


def cmd_device_serve(args: argparse.Namespace) -> None:
    from devices.agent import make_server, new_token
    from devices.remote import TOKEN_ENV

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


def cmd_device_info(args: argparse.Namespace) -> None:
    print(json.dumps(devices.get(args.device).fingerprint(), indent=2))


def cmd_bench_device(args: argparse.Namespace) -> None:
    from rich.table import Table

    from nas.bench_device import bench_device
    from nas.progress import Console, console

    space = _space(args)
    device = devices.get(args.device)
    archs = sample_archs(space, args.n, args.seed)
    console.print(f"bench device: {len(archs)} {space.spec} architectures on {device.spec}, two passes per method")
    rows = bench_device(space, device, archs, group_size=args.group, log=console.print)
    table = Table("timing method", "rank agreement (Spearman)", "median |diff| %", "s / pass", "mean ms",
                  title=f"Repeatability on {device.spec} ({len(archs)} {space.spec} archs)")
    for r in rows:
        table.add_row(r["method"], f"{r['spearman']:.3f}", f"{r['mdape_pct']:.2f}", f"{r['seconds_per_pass']:.0f}", f"{r['mean_ms']:.2f}")
    Console(width=120).print(table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    sub = p.add_subparsers(dest="command", required=True)

    def space_arg(sp: argparse.ArgumentParser, default: str | None = None) -> None:
        sp.add_argument("--space", required=default is None, default=default,
                        help="search space, optionally with options: ofa_mbv3:resolutions=[160]")

    s = sub.add_parser("spaces", help="list the search spaces")
    s.set_defaults(func=cmd_spaces)

    s = sub.add_parser("sample", help="print N distinct random architectures, one per line")
    space_arg(s)
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("profile", help="measure architectures on a device into a CSV (resumable)")
    space_arg(s)
    s.add_argument("--device", required=True, help="e.g. ort-cpu:threads=1, torch-cuda, tensorrt:fp16, remote:http://host:8600")
    s.add_argument("--archs", help="file with one architecture string per line")
    s.add_argument("-n", type=int, help="number of random architectures instead of --archs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--group", type=int, default=10, help="architectures measured interleaved per group")
    s.add_argument("--runs-per-round", type=int)
    s.add_argument("--min-rounds", type=int)
    s.add_argument("--max-rounds", type=int)
    s.set_defaults(func=cmd_profile)

    d = sub.add_parser("device", help="device agent and information").add_subparsers(dest="device_command", required=True)
    s = d.add_parser("serve", help="run a measuring agent that remote:URL devices talk to")
    s.add_argument("--device", default="ort-cpu:threads=1")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8600)
    s.add_argument("--token", help="required bearer token (default: $HWNAS_DEVICE_TOKEN or a new random one)")
    s.set_defaults(func=cmd_device_serve)
    s = d.add_parser("info", help="print a device's fingerprint")
    s.add_argument("--device", required=True)
    s.set_defaults(func=cmd_device_info)

    b = sub.add_parser("bench", help="benchmarks, printed as tables").add_subparsers(dest="bench_command", required=True)
    s = b.add_parser("device", help="repeatability of profiling: naive vs interleaved, two passes")
    s.add_argument("--device", default="ort-cpu:threads=1")
    space_arg(s, default="ofa_mbv3:resolutions=[160]")
    s.add_argument("-n", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--group", type=int, default=10)
    s.set_defaults(func=cmd_bench_device)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, KeyError, RuntimeError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"hwnas: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted; rows already written are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
