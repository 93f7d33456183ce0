"""Atomic training checkpoints (temp file + fsync + rename) and their validated loading."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "vsstar-train-checkpoint"
_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every global RNG's state (python, numpy, torch CPU and CUDA)."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash or SIGKILL leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(state, format=FORMAT, format_version=_VERSION)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # Make the rename itself durable.
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, what: str = "resume") -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint; a clear ValueError (prefixed ``what``) if it is missing,
    corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: checkpoint {str(path)!r} does not exist")
    try:
        # weights_only=False: the file holds RNG states (tuples, numpy arrays); it is our own file.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{what}: checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
                         "use an older checkpoint or start a new run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{what}: {str(path)!r} is not a vsstar training checkpoint")
    if state.get("format_version", 0) > _VERSION:
        raise ValueError(f"{what}: {str(path)!r} was written by a newer version (format "
                         f"{state.get('format_version')})")
    for k in ("step", "model", "optimizer", "config"):
        if k not in state:
            raise ValueError(f"{what}: checkpoint {str(path)!r} lacks {k!r}")
    return state
