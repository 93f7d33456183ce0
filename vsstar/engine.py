"""Device-side STARnet pipeline shared by the VapourSynth filter, the GStreamer element and the CLI.

:class:`StarEngine` turns batches of frame pairs into STARnet outputs: it loads the model, picks
the device, computes the optical flow of both directions of every pair in one batched call,
runs the network (fp16 autocast on CUDA), tiles large frames with overlapping, blended tiles, and
hands back CPU float32 tensors. It has no VapourSynth dependency.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backends import DEFAULT_PRECISION
from .choices import QUALITIES, SCALES
from .pairs import PairParts
from .schedule import DEFAULT_DEPTH, MODES, dyadic_path, dyadic_time

if TYPE_CHECKING:
    from .flow import FlowSettings

_log = logging.getLogger(__name__)

__all__ = [
    "MODES",
    "MODE_OUTPUTS",
    "PairOutput",
    "EngineStats",
    "StarEngine",
    "resolve_device",
    "resolve_model",
    "default_model_name",
    "QUALITIES",
    "check_quality",
    "check_model_mode",
    "modes_for_objective",
    "flow_settings_for",
    "tile_grid",
    "available_ram",
]

#: The network outputs each mode delivers (StarOutput field names).
MODE_OUTPUTS = {"st": ("h1", "ht", "h2"), "s": ("h1", "h2"), "t": ("l",)}

# Objectives of the paper models that suit each mode, in order of preference (for model=None). Only
# objectives that train every output the mode reads (check_model_mode) may appear here.
_MODE_OBJECTIVES = {
    "st": ("STAR-ST", "STAR"),
    "s": ("STAR-S", "STAR-ST", "STAR"),
    "t": ("STAR-T_HR", "STAR-T_LR", "STAR"),
}


def modes_for_objective(objective: str) -> tuple[str, ...]:
    """The modes a model trained as `objective` can serve: those whose outputs it was trained to produce.

    STAR-T_HR is fed HR frames in training, so only mode "t" (in-between frame at the input size) fits it.
    """
    from .model import OBJECTIVE_OUTPUTS

    if objective == "STAR-T_HR":
        return ("t",)
    trained = set(OBJECTIVE_OUTPUTS[objective])
    return tuple(m for m in MODES if set(MODE_OUTPUTS[m]) <= trained)


def check_model_mode(config: Any, mode: str) -> None:
    """ValueError unless a model of this StarConfig was trained for the outputs `mode` needs."""
    from .model import OBJECTIVE_OUTPUTS

    objective = getattr(config, "objective", None)
    if objective is None:
        return
    ok = modes_for_objective(objective)
    if mode in ok:
        return
    if objective == "STAR-T_HR":
        why = "it expects HR frames as input and only interpolates them"
    else:
        names = {"h1": "HR frame t", "h2": "HR frame t+1", "ht": "HR in-between frame",
                 "l": "in-between frame at the input size"}
        missing = [names[o] for o in MODE_OUTPUTS[mode] if o not in OBJECTIVE_OUTPUTS[objective]]
        why = f"it was not trained to produce the {' and the '.join(missing)}"
    raise ValueError(f"model: a {objective} model cannot run mode={mode!r} ({why}); use "
                     f"mode={' or '.join(repr(m) for m in ok)}, or a model trained for mode {mode!r}")


class PairOutput(NamedTuple):
    """Outputs for a batch of pairs (CPU float32, [0, 1], (N, 3, H, W)).

    sr_first / sr_second: the two input frames super-resolved (None in mode "t").
    mid: the frame between them, at the high resolution in mode "st", at the input size in mode "t",
    None in mode "s".
    """

    sr_first: Tensor | None
    mid: Tensor | None
    sr_second: Tensor | None


class TimedOutput(NamedTuple):
    """Outputs of :meth:`StarEngine.process_times`: sr_first / sr_second as in :class:`PairOutput`
    ((N, 3, H, W) or None); mids[i] maps each requested t of pair i to its (3, H, W) frame."""

    sr_first: Tensor | None
    mids: list[dict[Fraction, Tensor]]
    sr_second: Tensor | None

    def parts(self, i: int) -> PairParts:
        """Pair i's outputs: its SR frames ((3, H, W) or None) and its in-between frames by t."""
        return PairParts(None if self.sr_first is None else self.sr_first[i], self.mids[i],
                         None if self.sr_second is None else self.sr_second[i])


class _Batch(NamedTuple):
    """What one network call gives, on the CPU in [0, 1]: sr_first / sr_second (N, 3, H, W) or None;
    mids: the in-between frames, one (N, 3, H, W) per column of times (the t = 1/2 one for a call
    without times; none in mode "s"); lr_mid: the LR middle frame when asked for, else None."""

    sr_first: Tensor | None
    mids: list[Tensor]
    sr_second: Tensor | None
    lr_mid: Tensor | None

    def pair_output(self) -> PairOutput:
        return PairOutput(self.sr_first, self.mids[0] if self.mids else None, self.sr_second)


@dataclass
class EngineStats:
    """Counters of the work done (read by tests and the benchmark)."""

    pairs: int = 0
    calls: int = 0
    flow_s: float = 0.0
    net_s: float = 0.0
    tiles: int = 0
    batch_sizes: Counter = field(default_factory=Counter)  # pairs per network call -> calls (bounded)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else CPU. Asking for CUDA without one is a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but CUDA is not available here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def _bundled() -> dict[str, Any]:
    from .model import bundled_models

    return dict(bundled_models())


def _info_get(info: Any, key: str) -> Any:
    """Read `key` from a bundled-model record (dict, object or a StarConfig inside it)."""
    for obj in (info, getattr(info, "config", None), info.get("config") if isinstance(info, dict) else None):
        if obj is None:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj[key]
        if hasattr(obj, key):
            return getattr(obj, key)
    return None




def _quality_of(info: Any) -> str:
    return _info_get(info, "quality") or "fast"


def check_quality(quality: Any, model: Any = None) -> str:
    """Validate ``quality`` (ValueError naming it); a tier other than "fast" cannot go with an explicit model."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(map(repr, QUALITIES))}, got {quality!r}")
    if quality != "fast" and model is not None:
        raise ValueError(f"quality={quality!r} picks the bundled weights; it cannot go with model={model!r} "
                         "(pass one of them)")
    return quality


def default_model_name(scale: int, mode: str = "st", quality: str = "fast") -> str:
    """Name of the bundled weights used when model=None: one of the ``quality`` tier trained for `mode` at
    `scale`, not marked opt-in, with time input where there is one (ValueError when none is; a model
    trained for another mode is never picked)."""
    check_quality(quality)
    models = _bundled()
    for objective in _MODE_OBJECTIVES[mode]:
        fits = [name for name, info in models.items()
                if _info_get(info, "scale") == scale and _info_get(info, "objective") == objective
                and _quality_of(info) == quality]
        if fits:
            # Opt-in files (metadata opt_in) only when nothing else fits; then a model with time input
            # (it synthesises every t exactly) before one that knows only t = 1/2.
            return sorted(fits, key=lambda n: (bool(_info_get(models[n], "opt_in")),
                                               not _info_get(models[n], "time_input")))[0]
    if quality != "fast":
        tier = [f"{n} (x{_info_get(i, 'scale')})" for n, i in models.items() if _quality_of(i) == quality]
        raise ValueError(f"quality={quality!r}: no bundled weights of that tier for scale={scale} in mode={mode!r} "
                         f"(that tier has: {', '.join(tier) or 'none'}); use quality='fast' or pass model=")
    have = ", ".join(f"{n} (x{_info_get(i, 'scale')} {_info_get(i, 'objective')})"
                     for n, i in models.items()) or "none"
    raise ValueError(
        f"model=None: no bundled weights for scale={scale} trained for mode={mode!r} "
        f"(objective {' or '.join(_MODE_OBJECTIVES[mode])}; bundled: {have}); "
        "pass model= a bundled name, a .safetensors file or an official .pth checkpoint"
    )


def resolve_model(model: Any, scale: int, mode: str = "st", quality: str = "fast") -> nn.Module:
    """Build the user-level `Star` wrapper from a name, a path, a StarNet, a Star, or None (the bundled
    weights of the ``quality`` tier)."""
    from .model import Star, StarNet, load_model

    check_quality(quality, model)
    if model is None:
        model = default_model_name(scale, mode, quality)
    if isinstance(model, Star):
        star = model
    elif isinstance(model, StarNet):
        star = Star(model)
    elif isinstance(model, (str, os.PathLike)):
        try:
            net = load_model(os.fspath(model))
        except FileNotFoundError as exc:
            raise ValueError(f"model={os.fspath(model)!r}: not a bundled name nor an existing file ({exc})") from exc
        except ValueError as exc:
            raise ValueError(f"model={os.fspath(model)!r}: {exc}") from exc
        except Exception as exc:  # unreadable/corrupt files surface as many exception types
            raise ValueError(f"model={os.fspath(model)!r}: cannot read weights ({type(exc).__name__}: {exc})") from exc
        star = Star(net)
    else:
        raise ValueError(f"model must be None, a bundled name, a path or a StarNet, got {type(model).__name__}")
    cfg = _config_of(star)
    if cfg is not None and cfg.scale != scale:
        raise ValueError(f"scale={scale} but the model is a x{cfg.scale} model; pass scale={cfg.scale}")
    check_model_mode(cfg, mode)
    return star


def _config_of(star: nn.Module) -> Any:
    net = getattr(star, "net", None)
    for obj in (star, net):
        cfg = getattr(obj, "config", None)
        if cfg is not None:
            return cfg
    return None


def flow_settings_for(star: nn.Module, flow_options: dict[str, Any] | None = None) -> FlowSettings:
    """The FlowSettings to run `star` with: those its weights were trained with, changed by `flow_options`
    (ValueError naming the bad key or value)."""
    from .flow import FlowSettings

    net = getattr(star, "net", star)
    base = getattr(net, "flow_settings", None) or FlowSettings()
    try:
        return FlowSettings.from_dict(flow_options, base=base)
    except ValueError as exc:
        raise ValueError(f"flow_options: {exc}") from exc


def tile_grid(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/stop of overlapping tiles covering [0, size) (the last tile is flush with the end)."""
    if tile >= size:
        return [(0, size)]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile, step)) + [size - tile]
    out: list[tuple[int, int]] = []
    for s in starts:
        if not out or out[-1][0] != s:
            out.append((s, s + tile))
    return out


def _ramp(length: int, lo_overlap: int, hi_overlap: int, device: torch.device) -> Tensor:
    """1-D blending weight of a tile along one axis.

    Over an overlap of n pixels the weight is ~0 for the outer quarter (the pixels that saw the
    truncated context), rises linearly over the middle half and is 1 for the inner quarter; the
    neighbouring tile's mirror-image ramp makes the two sum to 1, so there is no seam.
    """
    w = torch.ones(length, device=device)
    d = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    for n, dist in ((lo_overlap, d), (hi_overlap, length - d)):
        if n > 0:
            r = ((dist - n / 4) / (n / 2)).clamp(1e-4, 1.0)
            w = torch.minimum(w, r)
    return w


def _as_tensor(x: Any, name: str) -> Tensor:
    """numpy / torch / DLPack (CuPy) batch of RGB frames -> float tensor (N, 3, H, W), no copy when possible."""
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
    elif hasattr(x, "__dlpack__"):
        t = torch.from_dlpack(x)  # CuPy arrays and other DLPack producers, zero-copy
    else:
        raise ValueError(f"{name} must be a torch tensor, numpy array or DLPack array, got {type(x).__name__}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W) or (3, H, W), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be float RGB in [0, 1], got dtype {t.dtype}")
    return t


class StarEngine:
    """STARnet inference on batches of frame pairs.

    Args:
        model: bundled weights name, path to our .safetensors or an official .pth checkpoint, a
            ``StarNet``/``Star`` module, or None for the bundled weights of ``scale`` (and ``mode``).
        scale: 2, 4 or 8; must match the model.
        mode: "st" (super-resolved frames + HR in-between), "s" (super-resolution only) or "t"
            (in-between frame at the input size). The model must have been trained for the outputs
            of the mode (its objective; see check_model_mode), else ValueError.
        device: None (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or a torch.device.
        fp16: autocast the network to float16 (default: True on CUDA; CPU needs False).
        batch_size: pairs per network call (default 1 on CPU, 4 on CUDA).
        tile: LR tile size (int or (h, w)); None = automatic (tiles only when the estimated memory
            would not fit), 0 = never tile.
        tile_overlap: LR pixels shared by neighbouring tiles (blended with linear ramps).
        flow_options: changes to the flow settings the weights were trained with (a dict of
            :class:`vsstar.flow.FlowSettings` fields, e.g. ``{"n_outer": 3}`` for speed); checked here.
        memory_budget: bytes the network may use for activations (default: 80% of free CUDA memory,
            50% of available RAM on CPU); drives automatic tiling. (The flow has its own cap,
            ``vsstar.flow.memory.DEFAULT_MAX_BYTES`` on the CPU: exact below it, see docs/flow.md.)
        backend: "auto" (OpenVINO on the CPU when installed, else torch), "torch" or "openvino" (CPU only;
            compiles once per input shape and caches it on disk, see docs/openvino.md).
        precision: OpenVINO precision, "auto" (default: bf16 where the CPU has native bfloat16 and a once-per-model
            check agrees, f32 otherwise; ``precision`` then says which runs), "f32", "bf16" (CPUs with bfloat16;
            the flow-warp path stays float32) or "int8" (post-training quantization with NNCF, once per
            model); docs/openvino.md has their measured speed and drift.
        quality: with model=None, the tier of bundled weights: "fast" (default) or "high" (larger and slower,
            better pictures; x4 only so far).
    """

    def __init__(
        self,
        model: Any = None,
        *,
        scale: int = 4,
        mode: str = "st",
        device: str | torch.device | None = None,
        fp16: bool | None = None,
        batch_size: int | None = None,
        tile: int | Sequence[int] | None = None,
        tile_overlap: int = 16,
        flow_options: dict[str, Any] | None = None,
        memory_budget: int | None = None,
        backend: str = "auto",
        precision: str = DEFAULT_PRECISION,
        quality: str = "fast",
    ) -> None:
        if scale not in SCALES or isinstance(scale, bool):
            raise ValueError(f"scale must be {', '.join(map(str, SCALES[:-1]))} or {SCALES[-1]}, got {scale!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.scale = int(scale)
        self.mode = mode
        self.device = resolve_device(device)
        if fp16 is None:
            fp16 = self.device.type == "cuda"
        if not isinstance(fp16, bool):
            raise ValueError(f"fp16 must be None, True or False, got {fp16!r}")
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16=True needs a CUDA device (CPU half precision is slower than float32)")
        self.fp16 = fp16
        if batch_size is None:
            batch_size = 4 if self.device.type == "cuda" else 1
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.tile = self._check_tile(tile)
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be an int >= 0, got {tile_overlap!r}")
        self.tile_overlap = tile_overlap
        if flow_options is not None and not isinstance(flow_options, dict):
            raise ValueError(f"flow_options must be None or a dict, got {type(flow_options).__name__}")
        if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget <= 0):
            raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")
        self.memory_budget = memory_budget

        star = resolve_model(model, self.scale, mode, quality)
        self.star = star.to(self.device).eval()
        self.config = _config_of(self.star)
        from .model import OBJECTIVE_OUTPUTS
        # Outputs the weights were trained for (the LR middle frame drives recursive midpoints).
        self._trained = set(OBJECTIVE_OUTPUTS.get(getattr(self.config, "objective", None) or "STAR",
                                                  OBJECTIVE_OUTPUTS["STAR"]))
        #: The flow settings in use: the model's (what its weights were trained with) with flow_options applied.
        self.flow = flow_settings_for(self.star, flow_options)
        self.backend, self.precision, self._runner = _make_runner(self.star, backend, precision, self.device)
        #: The model synthesises any t in (0, 1) (config.time_input); otherwise only t = 1/2.
        self.takes_time = bool(getattr(self.config, "time_input", False))
        #: What runs the network, in words for logs and progress lines: backend and precision ("openvino bf16",
        #: "torch fp16"), and why that precision ("asked for", or precision="auto"'s reason).
        self.runs = f"{self.backend} {'fp16' if self.fp16 else self.precision}"
        self.runs_why = getattr(self._runner, "precision_reason", "the torch backend")
        self.stats = EngineStats()
        # One device, one stream of work: calls from several threads are serialised.
        self._lock = threading.Lock()
        # Tile size learnt after an out-of-memory error (CUDA), reused for later calls.
        self._oom_tile: tuple[int, int] | None = None
        self._flow_plans_logged: set[str] = set()  # the flow's memory plans already logged
        self._pinned: dict[tuple[int, ...], Tensor] = {}

    # ---------------------------------------------------------------- argument checks
    @staticmethod
    def _check_tile(tile: Any) -> tuple[int, int] | None | int:
        if tile is None:
            return None
        if isinstance(tile, bool):
            raise ValueError(f"tile must be None, 0, an int >= 16 or (h, w), got {tile!r}")
        if isinstance(tile, int):
            if tile == 0:
                return 0
            tile = (tile, tile)
        try:
            th, tw = (int(v) for v in tile)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"tile must be None, 0, an int >= 16 or (h, w), got {tile!r}") from exc
        if th < 16 or tw < 16:
            raise ValueError(f"tile must be at least 16 LR pixels per side, got {tile!r}")
        return (th, tw)

    # ---------------------------------------------------------------- buffers
    def host_buffer(self, n: int, height: int, width: int) -> Tensor:
        """A reusable CPU float32 (n, 3, H, W) buffer to fill with frames (pinned on CUDA).

        Callers copy frame planes straight into it (the one unavoidable copy); on CUDA, pinned
        memory lets the host-to-device transfer run asynchronously. Not thread-safe: use it under
        your own lock, and only until the next call with the same shape.
        """
        key = (n, height, width)
        buf = self._pinned.get(key)
        if buf is None:
            buf = torch.empty((n, 3, height, width), dtype=torch.float32)
            if self.device.type == "cuda":
                buf = buf.pin_memory()
            if len(self._pinned) > 8:
                self._pinned.clear()
            self._pinned[key] = buf
        return buf

    def _to_device(self, t: Tensor) -> Tensor:
        if t.device == self.device:
            return t.float()
        if self.device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
            t = t.pin_memory()
        return t.to(self.device, dtype=torch.float32, non_blocking=True)

    # ---------------------------------------------------------------- memory / tiling
    def bytes_per_pixel(self) -> float:
        """Rough peak activation bytes per LR pixel of one pair (used to decide automatic tiling)."""
        cfg = self.config
        feat = getattr(cfg, "feat", 64)
        base = getattr(cfg, "base_filter", 256)
        s2 = self.scale * self.scale
        floats = 12 * feat * s2 + 10 * base + 30 * feat
        if getattr(cfg, "flow_refine", False):
            floats += 3 * max(getattr(cfg, "fr_widths", (64,)))
        # Measured peaks run ~1.5x above the count of live feature maps (allocator, temporaries).
        bytes_ = 4 * 1.5 * floats
        return bytes_ * (0.6 if self.fp16 else 1.0)

    def _budget(self) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return int(free * 0.8)
        avail = available_ram()
        return int(avail * 0.5) if avail else 8 << 30

    def plan_tile(self, n: int, height: int, width: int) -> tuple[int, int] | None:
        """LR tile (h, w) for a batch of n pairs of this size, or None for whole frames."""
        if self.tile == 0:
            return None
        if isinstance(self.tile, tuple):
            th, tw = self.tile
            return None if th >= height and tw >= width else (min(th, height), min(tw, width))
        if self._oom_tile is not None:
            return self._oom_tile
        need = self.bytes_per_pixel() * n * height * width
        budget = self._budget()
        if need <= budget:
            return None
        # Square tiles whose padded area (overlap on both sides) fits the budget.
        px = budget / (self.bytes_per_pixel() * n)
        side = int(math.sqrt(px)) - 2 * self.tile_overlap
        side = max(32, side // 8 * 8)
        return (min(side, height), min(side, width))

    # ---------------------------------------------------------------- processing
    def process(self, first: Any, second: Any) -> PairOutput:
        """Run flow + network on a batch of pairs; see :class:`PairOutput` for the result.

        first, second: (N, 3, H, W) (or (3, H, W)) float RGB in [0, 1]: torch tensors (any device),
        numpy arrays or DLPack arrays (CuPy). Batches larger than ``batch_size`` are split.
        """
        a, b = self._pair_inputs(first, second)
        n = a.shape[0]
        with self._lock:
            parts = [self._process_batch(a[i:i + self.batch_size], b[i:i + self.batch_size]).pair_output()
                     for i in range(0, n, self.batch_size)]
        if len(parts) == 1:
            return parts[0]
        return PairOutput(*(None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(3)))

    def _pair_inputs(self, first: Any, second: Any) -> tuple[Tensor, Tensor]:
        """The two batches of a call as tensors, checked: same shape, at least the network's minimum size."""
        a = _as_tensor(first, "first")
        b = _as_tensor(second, "second")
        if a.shape != b.shape:
            raise ValueError(f"first and second must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        h, w = a.shape[-2:]
        min_side = max(8, getattr(self.config, "min_size", 1))
        if h < min_side or w < min_side:
            raise ValueError(f"frames must be at least {min_side}x{min_side} pixels, got {w}x{h}")
        return a, b

    def made_time(self, t: Fraction, depth: int = DEFAULT_DEPTH) -> Fraction:
        """The time :meth:`process_times` actually synthesises when asked for t: t itself with a
        model with time input, else t rounded to the nearest multiple of 1/2**depth."""
        return Fraction(t) if self.takes_time and self.mode != "s" else dyadic_time(Fraction(t), depth)

    def process_times(self, first: Any, second: Any, times: Sequence[Sequence[Fraction]],
                      exact_time: bool = False, depth: int = DEFAULT_DEPTH) -> TimedOutput:
        """Like :meth:`process`, with the in-between frames at the given times of each pair.

        times[i]: the fractions t in (0, 1) wanted between first[i] and second[i]. A model with time
        input (``takes_time``) synthesises each t exactly: the flows and the t-independent half of the
        network run once per pair, the t-dependent half once per distinct t. A model that synthesises
        only t = 1/2 gets t rounded to the nearest multiple of 1/2**depth
        (:func:`vsstar.schedule.dyadic_time`) and reached by recursive midpoints: the pass on the
        pair gives the middle frame at the input size (``l``), the pass on (first, l) the frame at
        1/4, and so on. Every distinct pass runs once, batched across the pairs of one recursion
        level; ``exact_time=True`` raises ValueError instead of rounding a time that is not dyadic.
        ``mids[i]`` maps each requested t (exact, as given) to its frame.
        """
        a, b = self._pair_inputs(first, second)
        n = a.shape[0]
        if len(times) != n:
            raise ValueError(f"times must list the wanted t of each of the {n} pairs, got {len(times)}")
        if self.mode == "s" and any(times):
            raise ValueError("times: mode 's' synthesises no in-between frames")
        for ts in times:
            for t in ts:
                if not 0 < Fraction(t) < 1:
                    raise ValueError(f"times: every t must lie strictly between 0 and 1, got {t}")
        if self.takes_time and self.mode != "s":
            return self._process_exact_times(a, b, times)
        want: list[dict[Fraction, Fraction]] = []  # per pair: requested t -> dyadic t
        for ts in times:
            m = {}
            for t in ts:
                d = self.made_time(t, depth)
                if exact_time and d != t:
                    raise ValueError(f"exact_time: t = {t} cannot be synthesised exactly by a model that knows "
                                     f"only t = 1/2 (nearest reachable: {d}); use exact_time=False")
                m[Fraction(t)] = d
            want.append(m)
        # The passes each pair needs: intervals (lo, hi) on the path to every dyadic t, by level.
        needed: list[set[tuple[Fraction, Fraction]]] = [{(Fraction(0), Fraction(1))} for _ in range(n)]
        for i, m in enumerate(want):
            for d in m.values():
                needed[i].update(dyadic_path(d))
        lr: list[dict[Fraction, Tensor]] = [{Fraction(0): a[i], Fraction(1): b[i]} for i in range(n)]
        frames: list[dict[Fraction, Tensor]] = [{} for _ in range(n)]
        sr_first = sr_second = None
        level = 0
        while True:
            width = Fraction(1, 2 ** level)
            jobs = [(i, iv) for i in range(n) for iv in sorted(needed[i]) if iv[1] - iv[0] == width]
            if not jobs:
                break
            deeper = any(iv[1] - iv[0] < width for i in range(n) for iv in needed[i])
            x = torch.stack([lr[i][iv[0]] for i, iv in jobs])
            y = torch.stack([lr[i][iv[1]] for i, iv in jobs])
            outs: list[PairOutput] = []
            lows: list[Tensor] = []
            if not deeper:  # the last level (for factor 2 the only one) is a plain process() call
                outs.append(self.process(x, y))
            else:
                with self._lock:
                    for s in range(0, len(jobs), self.batch_size):
                        res = self._process_batch(x[s:s + self.batch_size], y[s:s + self.batch_size],
                                                  lr_mid=True)
                        outs.append(res.pair_output())
                        lows.append(res.lr_mid)
            mid = torch.cat([o.mid for o in outs]) if outs[0].mid is not None else None
            lmid = torch.cat(lows) if deeper else None
            if level == 0 and self.mode != "t":
                sr_first = torch.cat([o.sr_first for o in outs])
                sr_second = torch.cat([o.sr_second for o in outs])
            for r, (i, (lo, hi)) in enumerate(jobs):
                t = (lo + hi) / 2
                if mid is not None:
                    frames[i][t] = mid[r]
                if lmid is not None:
                    lr[i][t] = lmid[r].to(a.device)
            level += 1
        mids = [{t: frames[i][d] for t, d in want[i].items()} for i in range(n)]
        return TimedOutput(sr_first, mids, sr_second)

    def _process_exact_times(self, a: Tensor, b: Tensor, times: Sequence[Sequence[Fraction]]) -> TimedOutput:
        """process_times for a model with time input: each pair's flows and t-independent network parts
        once, then the t-dependent part once per distinct t (pairs of a batch are padded to the same
        number of times by repeating their last one; a pair with none runs t = 1/2 for its SR frames)."""
        n = a.shape[0]
        wanted = [sorted({Fraction(t) for t in ts}) or [Fraction(1, 2)] for ts in times]
        sr1: list[Tensor] = []
        sr2: list[Tensor] = []
        frames: list[dict[Fraction, Tensor]] = []
        with self._lock:
            for s in range(0, n, self.batch_size):
                rows = wanted[s:s + self.batch_size]
                depth = max(len(r) for r in rows)
                cols = [torch.tensor([float(r[min(c, len(r) - 1)]) for r in rows]) for c in range(depth)]
                res = self._process_batch(a[s:s + self.batch_size], b[s:s + self.batch_size], ts=cols)
                if res.sr_first is not None:
                    sr1.append(res.sr_first)
                    sr2.append(res.sr_second)
                for i, r in enumerate(rows):
                    frames.append({t: res.mids[c][i] for c, t in enumerate(r)})
        mids = [{t: frames[i][Fraction(t)] for t in ts} for i, ts in enumerate(times)]
        return TimedOutput(torch.cat(sr1) if sr1 else None, mids, torch.cat(sr2) if sr2 else None)

    @torch.no_grad()
    def _process_batch(self, a: Tensor, b: Tensor, lr_mid: bool = False,
                       ts: list[Tensor] | None = None) -> _Batch:
        """One network call on at most ``batch_size`` pairs (the only one): flows, network, results on
        the CPU. ``ts``: columns of times for a model with time input (one in-between frame each);
        ``lr_mid``: also the LR middle frame, for the next recursive midpoint pass."""
        from .flow import coarse2fine_flow_batch

        n = a.shape[0]
        a = self._to_device(a)
        b = self._to_device(b)
        t0 = time.perf_counter()
        # Both directions of every pair in one batched solve: forward = first -> second.
        x, y = torch.cat([a, b]), torch.cat([b, a])
        self._log_flow_plan(x)
        flows = coarse2fine_flow_batch(x, y, **self.flow.to_dict())
        flow_f, flow_b = flows[:n], flows[n:]
        self._sync()
        t1 = time.perf_counter()
        outs = self._network(a, b, flow_f, flow_b, lr_mid, ts)
        if ts is None:
            mid_keys = [k for k in (("ht",) if self.mode == "st" else ("l",)) if k in outs]
        else:  # a model with time input gives h1, h2 and one in-between frame "mid<c>" per column of times
            mid_keys = [f"mid{c}" for c in range(len(ts))]
        host = self._hosted({k: outs[k] for k in ("h1", "h2", *mid_keys) if k in outs})
        lm = None
        if lr_mid:
            # The LR middle frame feeds the next midpoint pass (recursive midpoints).
            lm = outs.get("l")
            if lm is None:  # a model not trained for it: the HR middle frame, area-downscaled
                lm = F.avg_pool2d(outs["ht"], self.scale) if self.mode == "st" else outs["l"]
            lm = lm.clamp(0.0, 1.0).float().cpu()
        result = _Batch(host.get("h1"), [host[k] for k in mid_keys], host.get("h2"), lm)
        t2 = time.perf_counter()
        st = self.stats
        st.pairs += n
        st.calls += 1
        st.flow_s += t1 - t0
        st.net_s += t2 - t1
        st.batch_sizes[n] += 1
        return result

    def _log_flow_plan(self, x: Tensor) -> None:
        """Log (info, once per plan) when the flow of a batch is split or solved in strips."""
        from .flow.batch import plan_for

        s = self.flow
        plan = plan_for(x.shape, dtype=x.dtype, device=x.device, ratio=s.ratio, min_width=s.min_width,
                        col_type=s.col_type)
        if plan.in_flight < x.shape[0] or plan.tiled:
            msg = plan.describe()
            if msg not in self._flow_plans_logged:
                self._flow_plans_logged.add(msg)
                _log.info("%s", msg)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _wanted(self, lr_mid: bool = False) -> tuple[str, ...]:
        out = MODE_OUTPUTS[self.mode]
        if lr_mid and "l" not in out and "l" in self._trained:
            out = out + ("l",)
        return out

    def _run_star(self, a: Tensor, b: Tensor, ff: Tensor, fb: Tensor, lr_mid: bool = False,
                  ts: list[Tensor] | None = None) -> dict[str, Tensor]:
        from .model.precision import exact_float32

        # float32 on CUDA is exact float32 (no TF32): the authors' checkpoints give the authors' outputs.
        precision = (torch.autocast("cuda", dtype=torch.float16) if self.fp16
                     else exact_float32() if self.device.type == "cuda" else contextlib.nullcontext())
        with precision:
            if ts is None:
                out = self._runner(a, b, ff, fb)
            else:
                outs = self._runner.times(a, b, ff, fb, [t.to(a.device) for t in ts])
        if ts is None:
            return {k: getattr(out, k).float() for k in self._wanted(lr_mid)}
        # The SR frames of the first time's pass; the in-between frame of every time.
        res = {k: getattr(outs[0], k).float() for k in ("h1", "h2") if k in MODE_OUTPUTS[self.mode]}
        mid = "ht" if self.mode == "st" else "l"
        res.update({f"mid{c}": getattr(o, mid).float() for c, o in enumerate(outs)})
        return res

    def _network(self, a: Tensor, b: Tensor, ff: Tensor, fb: Tensor, lr_mid: bool = False,
                 ts: list[Tensor] | None = None) -> dict[str, Tensor]:
        n, _, h, w = a.shape
        tile = self.plan_tile(n, h, w)
        while True:
            try:
                if tile is None:
                    return self._run_star(a, b, ff, fb, lr_mid, ts)
                return self._run_tiled(a, b, ff, fb, tile, lr_mid, ts)
            except torch.cuda.OutOfMemoryError:
                # Retry with smaller tiles rather than failing the whole clip.
                torch.cuda.empty_cache()
                cur = tile or (h, w)
                if max(cur) <= 32 or self.tile == 0:
                    raise
                tile = (max(32, cur[0] // 2), max(32, cur[1] // 2))
                self._oom_tile = tile

    def _run_tiled(self, a: Tensor, b: Tensor, ff: Tensor, fb: Tensor, tile: tuple[int, int],
                   lr_mid: bool = False, ts: list[Tensor] | None = None) -> dict[str, Tensor]:
        n, _, h, w = a.shape
        ov = self.tile_overlap
        ys = tile_grid(h, tile[0], ov)
        xs = tile_grid(w, tile[1], ov)
        acc: dict[str, Tensor] = {}
        wsum: dict[str, Tensor] = {}
        for iy, (y0, y1) in enumerate(ys):
            for ix, (x0, x1) in enumerate(xs):
                sl = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
                out = self._run_star(a[sl], b[sl], ff[sl], fb[sl], lr_mid, ts)
                self.stats.tiles += 1
                # Overlap with the previous / next tile along each axis (0 at the frame border).
                oy0 = ys[iy - 1][1] - y0 if iy > 0 else 0
                oy1 = y1 - ys[iy + 1][0] if iy + 1 < len(ys) else 0
                ox0 = xs[ix - 1][1] - x0 if ix > 0 else 0
                ox1 = x1 - xs[ix + 1][0] if ix + 1 < len(xs) else 0
                for k, o in out.items():
                    f = o.shape[-1] // (x1 - x0)
                    wy = _ramp((y1 - y0) * f, oy0 * f, oy1 * f, o.device)
                    wx = _ramp((x1 - x0) * f, ox0 * f, ox1 * f, o.device)
                    wgt = wy[:, None] * wx[None, :]
                    if k not in acc:
                        acc[k] = o.new_zeros(n, 3, h * f, w * f)
                        wsum[k] = o.new_zeros(h * f, w * f)
                    acc[k][..., y0 * f:y1 * f, x0 * f:x1 * f] += o * wgt
                    wsum[k][y0 * f:y1 * f, x0 * f:x1 * f] += wgt
        return {k: acc[k] / wsum[k] for k in acc}

    def _hosted(self, outs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every output clamped to [0, 1] on the CPU (from CUDA: pinned buffers, asynchronous copies, one sync)."""
        res = {}
        for k, t in outs.items():
            t = t.clamp(0.0, 1.0)
            if t.device.type == "cpu":
                res[k] = t.contiguous()
            else:
                res[k] = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
                res[k].copy_(t, non_blocking=True)
        self._sync()
        return res

    def __repr__(self) -> str:
        return (f"StarEngine(scale={self.scale}, mode={self.mode!r}, device={str(self.device)!r}, "
                f"fp16={self.fp16}, batch_size={self.batch_size}, tile={self.tile!r}, backend={self.backend!r})")


def _make_runner(star: nn.Module, backend: str, precision: str, device: torch.device) -> tuple[str, str, Any]:
    """(backend, precision, callable like Star) for the user's backend/precision choice."""
    from .backends import PRECISIONS, resolve_backend

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    chosen = resolve_backend(backend, device.type)
    if chosen != "openvino":
        if precision not in ("auto", "f32"):
            raise ValueError(f"precision={precision!r} is an OpenVINO setting, but the backend is torch; "
                             "use backend='openvino' (CPU) or fp16= on CUDA")
        return chosen, "f32", star
    from .backends.openvino import OpenVINOStar

    runner = OpenVINOStar(star, precision=precision)
    return chosen, runner.precision, runner  # "auto" resolved: the precision that runs


def available_ram() -> int | None:
    """Bytes of memory available now (MemAvailable, Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
