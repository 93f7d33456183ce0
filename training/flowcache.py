"""Optical flows of LR pairs, cached on disk keyed by the pair's content and the flow parameters.

A second epoch (or a second run on the same data) reads the flows instead of recomputing them. The key
is a hash of both frames' bytes and shapes plus every flow parameter and a format version, so a change of
data, scale or parameters can never return a stale flow.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vsstar.flow import FlowSettings

__all__ = ["compute_flows", "FlowCache"]

# Part of every key. The key hashes FlowSettings.to_dict() (the same dict, and so the same keys, as the
# parameter dict used before FlowSettings existed): bump this only when the flows themselves change.
_VERSION = 1


def _settings(params: FlowSettings | dict | None) -> FlowSettings:
    try:
        return FlowSettings.from_dict(params)
    except ValueError as exc:
        raise ValueError(f"params: {exc}") from exc


def compute_flows(a: np.ndarray | Sequence[np.ndarray], b: np.ndarray | Sequence[np.ndarray],
                  params: FlowSettings | dict | None = None,
                  device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Forward (a -> b) and backward (b -> a) pixel flows of uint8 (H, W, 3) frames, or of equally sized
    lists of them (then arrays of shape (N, 2, H, W)). Uses vsstar.flow.coarse2fine_flow_batch with
    `params` (a FlowSettings, or a dict of changes to STARnet's settings) on `device` (the CPU's exact
    raster order; a CUDA device runs the red-black order)."""
    from vsstar.flow import coarse2fine_flow_batch

    single = isinstance(a, np.ndarray)
    aa = [a] if single else list(a)
    bb = [b] if single else list(b)
    ta = torch.stack([torch.from_numpy(np.array(x)).permute(2, 0, 1).float() / 255 for x in aa])
    tb = torch.stack([torch.from_numpy(np.array(x)).permute(2, 0, 1).float() / 255 for x in bb])
    p = _settings(params).to_dict()
    # Both directions in one batch: the solver's cost is per image, batching amortises the Python overhead.
    both = coarse2fine_flow_batch(torch.cat([ta, tb]).to(device), torch.cat([tb, ta]).to(device), **p)
    both = both.cpu().numpy().astype(np.float32)
    n = len(aa)
    ff, fb = both[:n], both[n:]
    return (ff[0], fb[0]) if single else (ff, fb)


class FlowCache:
    """Directory of ``<key>.npz`` files, each holding the forward and backward flow of one LR pair."""

    def __init__(self, root: str | os.PathLike, params: FlowSettings | dict | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.root = Path(root)
        self.settings = _settings(params)
        # Where missing flows are computed. A CUDA device solves in red-black order, which differs from the
        # CPU's raster order by a few thousandths of a pixel: its flows get keys of their own.
        self.device = torch.device(device)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, a: np.ndarray, b: np.ndarray) -> str:
        h = hashlib.sha256()
        meta = {"v": _VERSION, "params": self.settings.to_dict(), "shape": [a.shape, b.shape]}
        if self.device.type != "cpu":
            meta["order"] = "redblack"  # absent for the CPU, so the keys of existing caches stay valid
        h.update(json.dumps(meta, sort_keys=True).encode())
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(np.ascontiguousarray(b).tobytes())
        return h.hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def _load(self, p: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(p) as z:
                return z["flow_f"], z["flow_b"]
        except FileNotFoundError:
            return None
        except Exception:  # a truncated file from a killed writer: recompute (the write below is atomic anyway)
            return None

    def _store(self, p: Path, ff: np.ndarray, fb: np.ndarray) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, flow_f=ff.astype(np.float32), flow_b=fb.astype(np.float32))
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flow_f, flow_b) of the pair, from disk when cached, else computed and stored."""
        p = self.path(self.key(a, b))
        got = self._load(p)
        if got is not None:
            self.hits += 1
            return got
        self.misses += 1
        ff, fb = compute_flows(a, b, self.settings, self.device)
        self._store(p, ff, fb)
        return ff, fb

    def fill(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], progress: bool = True, batch: int = 8) -> int:
        """Compute and store every missing pair (equally sized pairs batched together); returns how many."""
        todo: dict[tuple, list[tuple[Path, np.ndarray, np.ndarray]]] = {}
        seen = set()
        for a, b in pairs:
            p = self.path(self.key(a, b))
            if p in seen or p.exists():
                continue
            seen.add(p)
            todo.setdefault(a.shape, []).append((p, a, b))
        total = sum(len(v) for v in todo.values())
        bar = None
        if progress and total:
            from tqdm import tqdm
            bar = tqdm(total=total, desc="flows", unit="pair")
        for items in todo.values():
            for i in range(0, len(items), batch):
                chunk = items[i:i + batch]
                ff, fb = compute_flows([c[1] for c in chunk], [c[2] for c in chunk], self.settings, self.device)
                for (p, _, _), f1, f2 in zip(chunk, ff, fb):
                    self._store(p, f1, f2)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        self.misses += total
        return total
