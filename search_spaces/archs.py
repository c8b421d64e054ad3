"""Architecture lists: read from a file of canonical strings, or drawn at random."""

from __future__ import annotations

from typing import Any

MAX_ARCHS_BYTES = 256 << 20


def read_archs(space: Any, path: str) -> list[tuple]:
    """Architectures from a file, one canonical string per line ('#' comments and blanks skipped); a FIFO, a device or
    a file over MAX_ARCHS_BYTES is refused before it is opened."""
    import os
    import stat

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"architectures file {path!r} is not a regular file")
        if info.st_size > MAX_ARCHS_BYTES:
            raise ValueError(f"architectures file {path!r} is over {MAX_ARCHS_BYTES >> 20} MiB")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read architectures file {path!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"architectures file {path!r} is not UTF-8 text") from None
    archs = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            archs.append(space.from_str(text))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    if not archs:
        raise ValueError(f"architectures file {path!r} lists no architecture (one canonical string per line)")
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
