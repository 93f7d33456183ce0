"""ONNX export of any StarNet (bundled weights, our safetensors files and the authors' checkpoints).

The exported graph is the bare network on its own encodings, exactly as :class:`StarNet` takes them:

* inputs ``im1``, ``im2``: (N, 3, H, W) float32 RGB, ImageNet-normalised: ``(rgb - mean) / std``;
* inputs ``flow_f``, ``flow_b``: (N, 2, H, W) float32 encoded flows, ``-clip(px, -150, 150) / 150``, channel 0
  horizontal; ``flow_f`` maps im1's grid into im2 (``im2(x + u) ~ im1(x)``), ``flow_b`` the reverse;
* outputs ``ht``, ``h1``, ``h2`` (N, 3, H*s, W*s): HR middle, HR im1, HR im2; ``l`` (N, 3, H, W): LR middle, all
  in the normalised space (``rgb = y * std + mean``).
* a model with time input (``config.time_input``, the bundled x2 and x4 models) has a fifth input ``t``: (N,)
  float32, the time in (0, 1) of the in-between frame (0.5 for the middle).

Such a model can also be exported in two parts (``part=``), so that a pair's t-independent work runs once however
many in-between frames it gives: ``"encode"`` (the four inputs -> the features ``H1 H2 L1 L2 M M_half``) and
``"synthesize"`` (the four inputs, the features and ``t`` -> the four outputs).

By default batch, height and width are dynamic; H and W must then be multiples of :func:`onnx_size_multiple` (1 at x4 and x8, 2
at x2, 32 with the flow-refinement U-Net) and at least :func:`onnx_min_size`; pad at the bottom/right by
reflection and crop the outputs (``vsstar.model.wrapper.pad_reflect`` does it in torch). A graph of one fixed
input shape (``shape=``) takes the network's own multiple and minimum instead. See docs/onnx.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import StarConfig
from .star import StarNet, feature_names

__all__ = ["ONNX_OPSET", "INPUT_NAMES", "OUTPUT_NAMES", "PARTS", "export_onnx", "new_partial", "onnx_size_multiple",
           "onnx_min_size", "model_digest", "as_starnet", "check_onnx", "graph_inputs", "graph_outputs"]

#: ONNX opset of the exported graphs (GridSample needs >= 16; 18 is the exporter's baseline).
ONNX_OPSET = 18
INPUT_NAMES = ("im1", "im2", "flow_f", "flow_b")
OUTPUT_NAMES = ("ht", "h1", "h2", "l")
#: Bumped when the exported graph changes for the same weights (part of the cache key of the OpenVINO backend).
EXPORT_VERSION = 4
#: Graphs export_onnx can write: the whole network, or (models with time input) its two halves.
PARTS = ("full", "encode", "synthesize")


def graph_inputs(config: StarConfig, part: str = "full") -> tuple[str, ...]:
    """Input names of an exported graph."""
    t = ("t",) if config.time_input else ()
    if part == "full":
        return INPUT_NAMES + t
    if part == "encode":
        return INPUT_NAMES
    if part == "synthesize":
        return INPUT_NAMES + feature_names(config) + t
    raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")


def graph_outputs(config: StarConfig, part: str = "full") -> tuple[str, ...]:
    """Output names of an exported graph."""
    return feature_names(config) if part == "encode" else OUTPUT_NAMES


def onnx_size_multiple(config: StarConfig) -> int:
    """LR height/width of an exported graph must be a multiple of this.

    The network itself needs ``config.size_multiple`` (the T_HR pyramid halves the HR size twice). With flow
    refinement the U-Net's skip joins pad odd sizes, a shape-dependent branch that a dynamic-size graph cannot
    hold, so there the size must halve cleanly at every level: a multiple of 2**(levels - 1).
    """
    m = config.size_multiple
    if config.flow_refine:
        m = max(m, 2 ** (len(config.fr_widths) - 1))
    return m


def onnx_min_size(config: StarConfig) -> int:
    """Smallest LR height/width of an exported graph (a multiple of onnx_size_multiple)."""
    m = onnx_size_multiple(config)
    return -(-max(config.min_size, 2, m) // m) * m


def as_starnet(model: Any) -> StarNet:
    """The StarNet inside `model`: a StarNet, a Star wrapper, a bundled name or a weights path."""
    from .weights import load_model
    from .wrapper import Star

    if isinstance(model, Star):
        return model.net
    if isinstance(model, StarNet):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise ValueError(f"model must be a StarNet, a Star, a bundled name or a weights path, got {type(model).__name__}")


def model_digest(net: StarNet) -> str:
    """sha256 (hex) of a network's configuration and weights: identifies the exported graph in caches."""
    h = hashlib.sha256()
    h.update(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for name, t in net.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _example_inputs(net: StarNet, batch: int, size: int | tuple[int, int], part: str = "full") -> tuple[Tensor, ...]:
    """Seeded random inputs of one graph part of `net` (the synthesize part's features come from net.encode)."""
    config = net.config
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(0)
    im = [torch.randn(batch, 3, h, w, generator=g) for _ in range(2)]
    fl = [torch.randn(batch, 2, h, w, generator=g) * 0.02 for _ in range(2)]
    t = (torch.rand(batch, generator=g) * 0.8 + 0.1,) if config.time_input else ()
    if part == "encode":
        return (*im, *fl)
    if part == "synthesize":
        with torch.no_grad():
            feat = net.encode(*im, *fl)
        return (*im, *fl, *(feat[k] for k in feature_names(config)), *t)
    return (*im, *fl, *t)


class _Plain(nn.Module):
    """The whole network with plain tensor inputs and outputs, as the exporter wants them."""

    def __init__(self, net: StarNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor,
                t: Tensor | None = None) -> tuple[Tensor, ...]:
        return tuple(self.net(im1, im2, flow_f, flow_b, t))


class _Encode(_Plain):
    """StarNet.encode: the four inputs -> its features (feature_names)."""

    def forward(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor) -> tuple[Tensor, ...]:
        feat = self.net.encode(im1, im2, flow_f, flow_b)
        return tuple(feat[k] for k in feature_names(self.net.config))


class _Synthesize(_Plain):
    """StarNet.synthesize: the four inputs, encode's features (feature_names, in that order) and t -> the four
    outputs. The features come positionally, since their names depend on the config (time_motion)."""

    def forward(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor, *features_and_t: Tensor
                ) -> tuple[Tensor, ...]:
        names = feature_names(self.net.config)
        feat = self.net.baseline_inputs(im1, im2, flow_f, flow_b)
        feat.update(zip(names, features_and_t))
        t = features_and_t[len(names)] if len(features_and_t) > len(names) else None
        return tuple(self.net.synthesize(feat, t, consume=True))


_WRAPPERS = {"full": _Plain, "encode": _Encode, "synthesize": _Synthesize}


def export_onnx(model: Any, path: str | os.PathLike, *, shape: tuple[int, int, int] | None = None,
                check: bool = True, opset: int = ONNX_OPSET, part: str = "full") -> Path:
    """Export `model` (StarNet, Star, bundled name or weights path) to an ONNX file at `path`.

    shape: None for dynamic batch, height and width (height/width multiples of onnx_size_multiple), or
    (batch, height, width) for a graph of that one LR input shape (exports several times faster: the
    exporter's symbolic-shape reasoning dominates a dynamic export). check: run the written file (OpenVINO,
    else onnxruntime) and compare with torch, for a dynamic graph on a size other than the traced one.
    The file is written atomically (a temporary next to it, then renamed). Needs `onnx` and `onnxscript`.
    part: "full" (the whole network), or "encode" / "synthesize" (the halves of a model with time input).
    """
    net = as_starnet(model)
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    if part != "full" and not net.config.time_input:
        raise ValueError(f"part={part!r} splits a model with time input; this one synthesises only t = 1/2 "
                         "(export part='full')")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise ValueError(f"opset must be an int >= 18, got {opset!r}")
    try:
        import onnxscript  # noqa: F401  - torch.onnx's exporter needs it; a clear message beats its traceback
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript") from exc
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(path)!r}")
    cfg = net.config
    m = onnx_size_multiple(cfg)
    dynamic = shape is None
    if dynamic:
        # Batch 2 and a size that is not 0/1 keep the exporter from specialising dimensions to the example.
        batch, size = 2, -(-max(onnx_min_size(cfg), 2 * m, 16) // m) * m
    else:
        batch, height, width = _check_shape(shape, cfg)
    plain = _cpu_float_copy(net)
    example = _example_inputs(plain, batch, size if dynamic else (height, width), part)
    wrapper = _WRAPPERS[part](plain).eval()
    in_names, out_names = graph_inputs(cfg, part), graph_outputs(cfg, part)

    dynamic_shapes = None
    if dynamic:
        from torch.export import Dim

        batch = Dim("batch", min=1, max=1024)
        lo = onnx_min_size(cfg) // m
        if m == 1:
            hdim, wdim = Dim("height", min=lo, max=16384), Dim("width", min=lo, max=16384)
        else:
            hdim = m * Dim("height_units", min=lo, max=16384 // m)
            wdim = m * Dim("width_units", min=lo, max=16384 // m)
        low, high = {0: batch, 2: hdim, 3: wdim}, {0: batch, 2: hdim * cfg.scale, 3: wdim * cfg.scale}
        # By position (the synthesize wrapper takes its features as *args): H1 and H2 are at the high
        # resolution, t has only the batch dimension.
        specs = tuple({0: batch} if k == "t" else high if k in ("H1", "H2") else low for k in in_names)
        dynamic_shapes = specs if part != "synthesize" else (*specs[:4], specs[4:])

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_partial(path, ".onnx.partial")
        os.close(fd)
        with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, example, input_names=list(in_names),
                                        output_names=list(out_names), dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, dynamo=True, external_data=False, verbose=False,
                                        report=False)
            program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except OSError as exc:
        # The user named `path`, not the hidden temporary file next to it: say which file could not be written.
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc  # the errno stays on the cause
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    if check:
        if dynamic:
            check_onnx(path, net, size=(size + m, size + 2 * m), batch=1, part=part)
        else:
            check_onnx(path, net, size=(height, width), batch=batch, part=part)
    return path


def new_partial(path: Path, suffix: str = ".partial") -> tuple[int, str]:
    """A new temporary file next to `path` (a hidden name ending in `suffix`), opened for writing: (fd, name).

    Unlike tempfile.mkstemp (always mode 0600), it is created with mode 0666 less the umask, as any other new
    file is, so the file it is renamed to gets the permissions the user expects (a shared cache, a model file
    for another account).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue
    raise FileExistsError(f"cannot find a free temporary name next to {path}")


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's own log lines (e.g. 'torchvision is not installed') for the duration."""
    logger = logging.getLogger("torch.onnx")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _check_shape(shape: Any, cfg: StarConfig) -> tuple[int, int, int]:
    try:
        batch, height, width = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shape must be None or (batch, height, width), got {shape!r}") from exc
    # A fixed-shape graph has the network's own needs: the U-Net's odd-size padding is then a constant.
    m, lo = cfg.size_multiple, cfg.min_size
    if batch < 1 or height % m or width % m or height < lo or width < lo:
        raise ValueError(f"shape must be (batch >= 1, height, width) with height/width multiples of {m} and >= {lo}, "
                         f"got {shape!r}")
    return batch, height, width


def _cpu_float_copy(net: StarNet) -> StarNet:
    """A CPU float32 contiguous-layout copy of `net` in eval mode (the caller's module is left as it is)."""
    import copy

    same = all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous() for p in net.parameters())
    out = net if same and not net.training else copy.deepcopy(net).to("cpu", torch.float32)
    if out is not net:
        for p in out.parameters():
            p.data = p.data.contiguous()
    return out.eval()


def check_onnx(path: str | os.PathLike, net: StarNet, *, size: int | tuple[int, int], batch: int = 1,
               tolerance: float = 1e-4, part: str = "full") -> float:
    """Run the ONNX file at `path` and torch on the same random inputs; returns the largest relative difference.

    Relative to max|output| of torch, per output; ValueError when above `tolerance`. Uses OpenVINO when
    installed, else onnxruntime; ImportError when neither is.
    """
    plain = _cpu_float_copy(net)
    inputs = _example_inputs(plain, batch, size, part)
    in_names, out_names = graph_inputs(net.config, part), graph_outputs(net.config, part)
    with torch.no_grad():
        ref = _WRAPPERS[part](plain).eval()(*(t.clone() for t in inputs))
    feeds = [t.numpy() for t in inputs]
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(os.fspath(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        present = {n for i in compiled.inputs for n in i.get_names()}
        res = compiled({n: f for n, f in zip(in_names, feeds) if n in present})
        outs = [res[compiled.output(name)] for name in out_names]
    except ImportError:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("checking an ONNX export needs openvino or onnxruntime installed") from exc
        sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        present = {i.name for i in sess.get_inputs()}
        outs = sess.run(list(out_names), {n: f for n, f in zip(in_names, feeds) if n in present})
    worst = 0.0
    for name, r, o in zip(out_names, ref, outs):
        o = torch.from_numpy(o)
        if o.shape != r.shape:
            raise ValueError(f"{path}: output {name} has shape {tuple(o.shape)}, torch gives {tuple(r.shape)}")
        diff = float((o - r).abs().max() / r.abs().max().clamp_min(1e-12))
        worst = max(worst, diff)
    if worst > tolerance:
        raise ValueError(f"{path}: outputs differ from torch by {worst:.2e} of max|output| (> {tolerance:g})")
    return worst
