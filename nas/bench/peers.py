"""The tools hwnas is compared with side by side (`pip install -e ".[peers]"`), imported only when a bench asks."""

from __future__ import annotations

import importlib
from types import ModuleType

PEERS = {
    "ofa": ("ofa", "Once-for-All's reference code (ofa)"),
    "inc": ("onnx_neural_compressor", "Intel Neural Compressor's ONNX Runtime line (onnx-neural-compressor)"),
}


def need(peer: str, module: str | None = None) -> ModuleType:
    """`module` (default: the peer's package), or an error saying what to install."""
    if peer not in PEERS:
        raise ValueError(f"Unknown peer {peer!r}; known: {', '.join(PEERS)}")
    package, what = PEERS[peer]
    try:
        return importlib.import_module(module or package)
    except ImportError as err:
        raise ValueError(
            f"--peer {peer} needs {what}, which cannot be imported ({err}); install it with pip install -e '.[peers]'"
        ) from None
