"""Batched coarse-to-fine variational flow (Ce Liu's Coarse2Fine with STARnet's parameters)."""
from __future__ import annotations

import logging

import torch

from . import cuda_graphs
from .memory import DEFAULT_MAX_BYTES, FlowPlan, plan_flow
from .ops import resize_to, warp
from .pyramid import build_pyramid, effective_ratio, features, level_sizes
from .settings import FlowSettings, check_params
from .solver import smooth_flow_sor, sor_redblack, use_triton

_DEFAULT = FlowSettings()
_log = logging.getLogger("vsstar.flow")
#: SOR sweep orders: the reference's raster order (compiled CPU kernels), red-black (torch, any device).
ORDERINGS = ("auto", "raster", "redblack")

# Whole-flow CUDA graphs, one per (input shape, parameters): a clip has one frame size, and the
# last batch may be smaller, so a few entries suffice (each holds one call's working memory).
_FLOW_GRAPHS = cuda_graphs.GraphCache("flow", max_entries=4)


def _flow_core(im1: torch.Tensor, im2: torch.Tensor, alpha: float, ratio: float, min_width: int,
               n_outer: int, n_inner: int, n_sor: int, col_type: int, sor=None) -> torch.Tensor:
    """The torch pipeline (any device); `sor` is the inner solver (default solver.sor_redblack)."""
    ratio = effective_ratio(ratio)
    p1 = build_pyramid(im1, ratio, min_width)
    p2 = build_pyramid(im2, ratio, min_width)
    u = v = None
    for k in range(len(p1) - 1, -1, -1):
        f1 = features(p1[k], col_type)
        f2 = features(p2[k], col_type)
        h, w = f1.shape[-2:]
        if u is None:
            u = f1.new_zeros(f1.shape[0], h, w)
            v = f1.new_zeros(f1.shape[0], h, w)
            w2 = f2
        else:
            # The C++ code scales by 1/ratio, not by the true size ratio of the levels.
            u = resize_to(u.unsqueeze(1), h, w).squeeze(1) * (1.0 / ratio)
            v = resize_to(v.unsqueeze(1), h, w).squeeze(1) * (1.0 / ratio)
            w2 = warp(f1, f2, u, v)
        # More outer iterations and sweeps at coarser levels, as in the C++ code.
        u, v = smooth_flow_sor(f1, f2, w2, u, v, alpha, n_outer + k, n_sor + 3 * k, n_inner, sor=sor)
    return torch.stack([u, v], dim=1)


def _have_numba() -> bool:
    from .cpu import HAVE_NUMBA  # imported on first use: loading numba costs time

    return HAVE_NUMBA


def _resolve_ordering(ordering: str, device: torch.device) -> str:
    if ordering == "auto":
        return "raster" if (device.type == "cpu" and _have_numba()) else "redblack"
    return ordering


def check_max_bytes(max_bytes: object) -> None:
    """One-line ValueError unless max_bytes is None or an int > 0."""
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
        raise ValueError(f"max_bytes: expected None or an int > 0 (bytes), got {max_bytes!r}")


def plan_for(shape: tuple[int, ...] | torch.Size, *, dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu", ratio: float = _DEFAULT.ratio,
             min_width: int = _DEFAULT.min_width, col_type: int = _DEFAULT.col_type, ordering: str = "auto",
             max_bytes: int | None = None) -> FlowPlan:
    """The memory plan `coarse2fine_flow_batch` follows for inputs of `shape` (N, C, H, W): images at
    once, threads and the levels in strips (see vsstar.flow.memory). Hosts use it to log what is tiled."""
    check_max_bytes(max_bytes)
    device = torch.device(device)
    ordering = _resolve_ordering(ordering, device)
    n, c, h, w = (int(x) for x in shape)
    c = 3 if col_type == 0 else c
    itemsize = torch.empty((), dtype=dtype).element_size()
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
        if device.type == "cuda":
            max_bytes = torch.cuda.mem_get_info(device)[0] // 2
    threads = torch.get_num_threads() if ordering == "raster" else n
    return plan_flow(n, c, h, w, ratio=effective_ratio(ratio), min_width=min_width, col_type=col_type,
                     threads=threads, max_bytes=max_bytes, out_itemsize=itemsize,
                     strips=ordering == "raster", torch_itemsize=itemsize)


def check_pyramid(height: int, width: int, ratio: float, min_width: int, name: str = "im1") -> None:
    """Every pyramid level must be at least 2x2 (frames narrower than min_width/ratio get one level)."""
    if height < 2 or width < 2:
        raise ValueError(f"{name}: expected frames of at least 2x2 pixels, got {height}x{width}")
    sizes = level_sizes(height, width, ratio, min_width)
    h, w = sizes[-1]
    if h < 2 or w < 2:
        raise ValueError(f"{name}: expected every pyramid level to be at least 2x2, but a {height}x{width} "
                         f"frame is too short for its {len(sizes)}-level pyramid (ratio {effective_ratio(ratio)}, "
                         f"min width {min_width}: coarsest level {h}x{w})")


def coarse2fine_flow_batch(im1: torch.Tensor, im2: torch.Tensor, *, alpha: float = _DEFAULT.alpha,
                           ratio: float = _DEFAULT.ratio, min_width: int = _DEFAULT.min_width,
                           n_outer: int = _DEFAULT.n_outer, n_inner: int = _DEFAULT.n_inner,
                           n_sor: int = _DEFAULT.n_sor, col_type: int = _DEFAULT.col_type,
                           ordering: str = "auto", max_bytes: int | None = None) -> torch.Tensor:
    """Flow from im1 to im2 for a batch: (N,3,H,W) RGB in [0,1] -> (N,2,H,W) pixels.

    The solver parameters default to STARnet's (:class:`FlowSettings`; pass
    ``**settings.to_dict()``). Channel 0 is horizontal; im2(x+u, y+v) ~ im1(x, y). Runs on the inputs' device and in their
    dtype (float32 default, float64 for exactness checks). `ordering` picks the SOR sweep order:
    "raster" (the reference's, compiled CPU kernel, needs numba and CPU tensors), "redblack"
    (parallel torch ops, any device) or "auto" (raster on CPU when numba is installed).
    `max_bytes` caps the working memory (inputs excluded; default: `memory.DEFAULT_MAX_BYTES` on the
    CPU, half the free device memory on CUDA): fewer images at once, then (raster path) the largest
    pyramid levels in row strips, which changes the flow slightly near the strip seams (docs/flow.md).
    What was split is logged at debug level on the "vsstar.flow" logger; `plan_for` gives the plan.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering: expected 'auto', 'raster' or 'redblack', got {ordering!r}")
    check_max_bytes(max_bytes)
    check_params(alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type)
    need_c = 3 if col_type == 0 else 1
    for name, t in (("im1", im1), ("im2", im2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] < need_c:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a (N,{need_c if need_c == 1 else 3},H,W) torch tensor, got {shape}")
        if t.dtype not in (torch.float32, torch.float64):
            # Half precision cannot hold the solver's 1e-6 regularisers: the flow would be silently wrong.
            raise ValueError(f"{name}: expected a float32 or float64 tensor, got {t.dtype}")
    if im1.shape != im2.shape:
        raise ValueError(f"im2: expected the shape of im1 {tuple(im1.shape)}, got {tuple(im2.shape)}")
    if im1.dtype != im2.dtype or im1.device != im2.device:
        raise ValueError(f"im2: expected dtype {im1.dtype} on {im1.device} like im1, got {im2.dtype} on {im2.device}")
    check_pyramid(im1.shape[-2], im1.shape[-1], ratio, min_width)
    for name, t in (("im1", im1), ("im2", im2)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
    if col_type == 0:
        im1, im2 = im1[:, :3], im2[:, :3]
    if im1.shape[0] == 0:
        return im1.new_zeros(0, 2, *im1.shape[-2:])
    on_cpu = im1.device.type == "cpu"
    ordering = _resolve_ordering(ordering, im1.device)
    if ordering == "raster" and not on_cpu:
        raise ValueError("ordering: 'raster' runs on CPU tensors only; use 'redblack' or 'auto' on "
                         f"{im1.device.type}")
    if ordering == "raster" and not _have_numba():
        raise ValueError("ordering: 'raster' needs the numba package (pip install numba)")
    plan = plan_for(im1.shape, dtype=im1.dtype, device=im1.device, ratio=ratio, min_width=min_width,
                    col_type=col_type, ordering=ordering, max_bytes=max_bytes)
    if plan.in_flight < im1.shape[0] or plan.tiled:
        _log.debug("%s", plan.describe())
    if ordering == "raster":
        from .cpu import flow_numpy

        # Whole pipeline in compiled loops, float64 inside; torch ops are avoided on purpose: their
        # OpenMP workers spin between calls and steal the cores from the kernel threads.
        a = im1.detach().contiguous().numpy()
        b = im2.detach().contiguous().numpy()
        return torch.from_numpy(flow_numpy(a, b, alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type, plan))
    # The torch path holds the whole batch's working set: chunks of the batch bound it (exact).
    step = plan.in_flight
    if step < im1.shape[0]:
        return torch.cat([_flow_torch(im1[s:s + step], im2[s:s + step], alpha, ratio, min_width, n_outer,
                                      n_inner, n_sor, col_type) for s in range(0, im1.shape[0], step)])
    return _flow_torch(im1, im2, alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type)


def _flow_torch(im1: torch.Tensor, im2: torch.Tensor, alpha: float, ratio: float, min_width: int,
                n_outer: int, n_inner: int, n_sor: int, col_type: int) -> torch.Tensor:
    """The red-black torch path on one batch, through a CUDA graph where possible."""
    sor = sor_redblack

    def core(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _flow_core(a, b, alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type, sor)

    with torch.no_grad():
        if cuda_graphs.enabled(im1):
            key = (im1.device, im1.dtype, tuple(im1.shape), float(alpha), float(ratio), int(min_width),
                   int(n_outer), int(n_inner), int(n_sor), int(col_type), use_triton(im1))
            out = _FLOW_GRAPHS.run(key, core, im1, im2)
            if out is not None:
                return out[0]
        return core(im1, im2)
