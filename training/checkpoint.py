"""Atomic training checkpoints (temp file + fsync + rename) and their validated, code-free loading.

Checkpoints hold only tensors and plain Python data (numpy values are stored as tensors or numbers), so
they are read with ``torch.load(weights_only=True)``: a planted pickle is refused, never run.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "find_resume_checkpoint", "load_net", "rng_state",
           "set_rng_state"]

FORMAT = "vsstar-train-checkpoint"
# 2: numpy RNG state and values stored as tensors / plain numbers (loadable with weights_only=True).
_VERSION = 2


def rng_state() -> dict[str, Any]:
    """Every global RNG's state (python, numpy, torch CPU and CUDA) as tensors and plain Python values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"python": random.getstate(),
          "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore the states saved by rng_state."""
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    n = st["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python numbers, numpy arrays -> tensors, paths -> str, recursively."""
    if isinstance(obj, dict):
        # Keep OrderedDicts and a state dict's _metadata (module versions read by load_state_dict).
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _plain(v)
        if isinstance(out, OrderedDict) and hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash or SIGKILL leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _plain(dict(state, format=FORMAT, format_version=_VERSION))
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
    corrupt, foreign or a pickle that would run code (refused, never run)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: checkpoint {str(path)!r} does not exist")
    state = _torch_load(path, what)
    _validate(state, path, what)
    state["_path"] = str(path)
    return state


def _torch_load(path: Path, what: str) -> Any:
    from vsstar.model.official import refused_call

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        called = refused_call(e)
        if called:
            # Checkpoints of format version 1 held numpy objects, which this refuses as well.
            old = " (a checkpoint of format version 1, which stored numpy objects?)" if "numpy" in called else ""
            raise ValueError(f"{what}: refused {str(path)!r}: the pickle would run code ({called}){old}; only "
                             "tensors and plain data are loaded") from e
        raise ValueError(f"{what}: checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
                         "use an older checkpoint or start a new run") from e
    except Exception as e:
        raise ValueError(f"{what}: checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}); "
                         "use an older checkpoint or start a new run") from e


def _validate(state: Any, path: Path, what: str) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{what}: {str(path)!r} is not a vsstar training checkpoint")
    if state.get("format_version", 0) > _VERSION:
        raise ValueError(f"{what}: {str(path)!r} was written by a newer version (format "
                         f"{state.get('format_version')})")
    for k in ("step", "model", "optimizer", "config"):
        if k not in state:
            raise ValueError(f"{what}: checkpoint {str(path)!r} lacks {k!r}")


def find_resume_checkpoint(run_dir: str | os.PathLike, log=print) -> dict[str, Any]:
    """The state to resume RUN_DIR from: last.pt, or, when last.pt is damaged, the newest intact checkpoint
    of the run (step_N.pt, best.pt), named in a message through `log`. ValueError when none is intact."""
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    try:
        return load_checkpoint(last)
    except ValueError as exc:
        first = exc
    candidates = sorted(run_dir.glob("step_*.pt"), key=_step_of, reverse=True) + [run_dir / "best.pt"]
    best: dict[str, Any] | None = None
    for p in candidates:
        if not p.is_file():
            continue
        try:
            st = load_checkpoint(p)
        except ValueError:
            continue
        if best is None or int(st["step"]) > int(best["step"]):
            best = st
    if best is None:
        raise ValueError(f"{first}; no other intact checkpoint in {str(run_dir)!r}") from first
    log(f"resume: {first}; resuming from {best['_path']} (step {best['step']}), the newest intact checkpoint")
    return best


def _step_of(p: Path) -> int:
    m = re.fullmatch(r"step_(\d+)\.pt", p.name)
    return int(m.group(1)) if m else -1


def load_net(path: str | os.PathLike, what: str = "model"):
    """A StarNet (eval mode, CPU) from a training checkpoint, our safetensors, a bundled name or an authors'
    .pth, and the training checkpoint dict (None for the others). Pickles are read with weights_only=True;
    non-finite weights are refused; every failure is a ValueError prefixed with `what`."""
    from vsstar.flow import FlowSettings
    from vsstar.model import StarConfig, StarNet, load_model, load_official, objective_from_filename
    from vsstar.model.official import check_finite
    from vsstar.model.weights import is_pickled_checkpoint

    p = os.fspath(path)
    try:
        if not os.path.isfile(p):
            return load_model(p).eval(), None  # a bundled name (or a clear error)
        if not is_pickled_checkpoint(p):  # the same sniffing as load_model
            return load_model(p).eval(), None  # safetensors (or a clear error)
        obj = _torch_load(Path(p), what)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            _validate(obj, Path(p), what)
            check_finite(obj["model"], source=p)
            net = StarNet(StarConfig.from_dict(obj["config"]))
            net.load_state_dict(obj["model"])
            # Checkpoints from before the flow settings were recorded were all trained with STARnet's.
            net.flow_settings = FlowSettings.from_dict(obj.get("flow"))
            obj["_path"] = p
            return net.eval(), obj
        net = load_official(obj, objective=objective_from_filename(p) or "STAR")
        return net.eval(), None
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith(f"{what}:"):
            msg = f"{what}: {msg}" if p in msg else f"{what}: {p}: {msg}"
        raise ValueError(msg) from exc
