"""Search spaces by spec: 'ofa_mbv3' or 'ofa_mbv3:resolutions=[160],num_classes=10'."""
from __future__ import annotations

from typing import Any

import yaml

import search_spaces


def parse_space_spec(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.strip().partition(":")
    options: dict[str, Any] = {}
    depth, part, parts = 0, "", []
    for ch in rest:  # split on commas outside brackets
        depth += ch in "[(" 
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    for p in filter(None, (p.strip() for p in parts)):
        key, eq, value = p.partition("=")
        if not eq:
            raise ValueError(f"space {spec!r}: option {p!r} must be key=value")
        options[key.strip()] = yaml.safe_load(value)
    return name, options


def load_space(spec: str) -> Any:
    """The search space a spec names, with its options; errors name the spec."""
    name, options = parse_space_spec(spec)
    if name not in search_spaces.names():
        raise KeyError(f"Unknown search space {name!r}; known: {', '.join(search_spaces.names())}")
    try:
        space = search_spaces.create(name, **options)
    except TypeError as err:
        raise ValueError(f"space {spec!r}: {err}") from None
    space.spec = spec.strip()
    return space


def read_archs(space: Any, path: str) -> list[tuple]:
    """Architectures from a file, one canonical string per line ('#' comments and blanks skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read architectures file {path!r}: {err.strerror}") from None
    archs = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            archs.append(space.from_str(text))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    return archs


def sample_archs(space: Any, n: int, seed: int) -> list[tuple]:
    """`n` distinct architectures drawn with `seed` (fewer only if the space is smaller)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[tuple, None] = {}
    tries = 0
    while len(out) < n and tries < 100 * n + 1000:
        out.setdefault(space.sample(rng))
        tries += 1
    return list(out)
