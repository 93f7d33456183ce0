"""The authors' checkpoints: layout detection, configuration inference and key mapping onto StarNet."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any, Mapping

import torch
from torch import Tensor

from .config import StarConfig

__all__ = ["load_official", "official_to_ours", "ours_to_official", "infer_official_config",
           "read_official_checkpoint", "objective_from_filename", "torch_load_safe", "refused_call", "check_finite",
           "CheckpointError"]

_SCALE_OF_KERNEL = {6: 2, 8: 4, 12: 8}


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be loaded (one-line message naming the problem)."""


# The authors' file names end with the paper model: FBPNSR_RBPN_V4_REF_Lr_STAR_ST.pth, ..._STAR_T_HR.pth,
# FBPNSR_RBPN_V4_Lf_STAR.pth (STAR itself).
_OBJECTIVE_IN_NAME = re.compile(r"(?:^|[_-])STAR(?:[_-](ST|S|T[_-]LR|T[_-]HR))?$", re.IGNORECASE)


def objective_from_filename(path: str | os.PathLike) -> str | None:
    """The paper model an authors' checkpoint name ends with (``..._STAR_T_HR.pth`` -> "STAR-T_HR"), or None."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    m = _OBJECTIVE_IN_NAME.search(stem)
    if m is None:
        return None
    suffix = m.group(1)
    return "STAR" if suffix is None else "STAR-" + suffix.upper().replace("-", "_")


# ----------------------------------------------------------------------------------------- reading
def read_official_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read an authors' .pth safely (weights_only=True, mapped to CPU) and return its state dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # torch.save writes a zip archive; very old PyTorch wrote a raw pickle (protocol byte 0x80).
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        kind = "a safetensors file: use load_model" if head[8:9] == b"{" else "unrecognised file type"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({kind})")
    return extract_state_dict(torch_load_safe(path), source=path)


def refused_call(exc: BaseException) -> str | None:
    """What a weights_only unpickler refused to call ("it calls posix.system"), from its long message;
    None when the error is not such a refusal (a damaged file)."""
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it calls {m.group(1)}" if m else None


def _refused_call(exc: BaseException) -> str:
    called = refused_call(exc)
    if called:
        return called
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def torch_load_safe(path: str | os.PathLike) -> Any:
    """torch.load(path, weights_only=True, map_location='cpu'): tensors, containers and plain types only,
    never code. Any failure is a CheckpointError naming the file (and, for a refused pickle, the call)."""
    path = os.fspath(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused unsafe or invalid pickle ({_refused_call(exc)}); "
                              "only tensors and plain data are loaded") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a PyTorch checkpoint or truncated ({msg[:160]})") from exc
    except Exception as exc:  # the unpickler raises assorted errors on garbage
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from exc


def check_finite(sd: Mapping[str, Tensor], source: str = "state dict") -> None:
    """CheckpointError naming the first floating-point tensor holding NaN or inf (such weights make every
    output NaN)."""
    for key, value in sd.items():
        if value.is_floating_point() and not value.is_meta and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{source}: weight {key!r} has {bad} non-finite value(s) (NaN or inf) of "
                                  f"{value.numel()}; the file is damaged or the training diverged")


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The tensor dict inside a loaded checkpoint (plain state dict, or under 'state_dict'/'model')."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entry {bad[0]!r} is not a tensor")
    return dict(obj)


# ------------------------------------------------------------------------------- configuration
def _strip_prefixes(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Remove DataParallel's 'module.' prefix and return (state dict, has flow refinement)."""
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    has_fr = any(k.startswith("flow_net.") for k in sd)
    has_model = any(k.startswith("model.") for k in sd)
    if has_fr or has_model:
        if not (has_fr and has_model):
            raise CheckpointError("unknown checkpoint layout: V4_REF needs both 'model.*' and 'flow_net.*' keys")
        out = {}
        for k, v in sd.items():
            if k.startswith("model."):
                out[k[len("model."):]] = v
            elif k.startswith("flow_net."):
                out[k] = v
            else:
                raise CheckpointError(f"unexpected key {k!r} in a V4_REF checkpoint")
        return out, True
    return dict(sd), False


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"unknown checkpoint layout: missing key {key!r}")
    return tuple(sd[key].shape)


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd for m in [rx.match(k)] if m}
    return max(idx) + 1 if idx else 0


def infer_official_config(state_dict: Mapping[str, Tensor], objective: str = "STAR") -> StarConfig:
    """StarConfig of an authors' state dict, from its key names and shapes."""
    sd, has_fr = _strip_prefixes(state_dict)
    if "RBPN.feat0.conv.weight" not in sd or "motion_feat.conv.weight" not in sd:
        sample = next(iter(sd))
        raise CheckpointError(f"unknown checkpoint layout: not a STARnet (FBPNSR_RBPN_V4[_REF]) state dict "
                              f"(first key {sample!r})")
    base_filter = _shape(sd, "RBPN.feat0.conv.weight")[0]
    feat = _shape(sd, "RBPN.output.conv.weight")[1]
    kernel = _shape(sd, "motion_down.{}.conv.weight".format(_count(sd, r"motion_down\.(\d+)\.") - 1))[-1]
    if kernel not in _SCALE_OF_KERNEL:
        raise CheckpointError(f"unknown checkpoint layout: projection kernel {kernel} (expected 6, 8 or 12)")
    stages = len({m.group(1) for k in sd for m in [re.match(r"RBPN\.DBPN\.up(\d+)\.", k)] if m})
    fr_widths = None
    if has_fr:
        n_down = len({m.group(1) for k in sd for m in [re.match(r"flow_net\.down(\d+)\.", k)] if m})
        widths = [_shape(sd, "flow_net.inc.conv.conv.0.weight")[0]]
        for i in range(1, n_down + 1):
            widths.append(_shape(sd, f"flow_net.down{i}.mpconv.1.conv.0.weight")[0])
        fr_widths = tuple(widths)
    try:
        cfg = StarConfig(
            scale=_SCALE_OF_KERNEL[kernel], base_filter=base_filter, feat=feat, num_stages=stages,
            n_resblock=_count(sd, r"interp_block\.(\d+)\.") - 1,
            s_resblocks=_count(sd, r"RBPN\.res_feat1\.(\d+)\.") - 1,
            down_resblocks=_count(sd, r"motion_down\.(\d+)\.") - 1,
            motion_resblocks=_count(sd, r"motion\.(\d+)\.") - 1,
            t_lr_resblocks=_count(sd, r"t_net_lr\.(\d+)\.") - 1,
            flow_refine=has_fr, fr_widths=fr_widths or StarConfig().fr_widths,
            keep_res_feat3=any(k.startswith("RBPN.res_feat3.") for k in sd), objective=objective)
    except ValueError as exc:
        raise CheckpointError(f"unknown checkpoint layout: {exc}") from exc
    return cfg


# ------------------------------------------------------------------------------------- mapping
def _blk(old: str, new: str, deconv: bool = False) -> list[tuple[str, str]]:
    """ConvBlock/DeconvBlock (conv|deconv, act) -> our Conv (conv, act)."""
    return [(old + ("deconv." if deconv else "conv."), new + "conv."), (old + "act.", new + "act.")]


def _stack(old: str, new: str, depth: int, deconv_tail: bool = False) -> list[tuple[str, str]]:
    """nn.Sequential(res blocks..., tail block) -> ResStack(blocks, tail); res blocks keep conv1/conv2/act."""
    rules = [(f"{old}.{i}.", f"{new}.blocks.{i}.") for i in range(depth)]
    return rules + _blk(f"{old}.{depth}.", f"{new}.tail.", deconv_tail)


def _rules(cfg: StarConfig) -> list[tuple[str, str]]:
    """Bijective (official prefix, our prefix) table for a configuration, down to the leaf layers."""
    r: list[tuple[str, str]] = []
    r += _blk("RBPN.feat0.", "sr.feat_target.") + _blk("RBPN.feat1.", "sr.feat_pair.")
    r += _blk("RBPN.DBPN.feat1.", "sr.dbpn.reduce.") + _blk("RBPN.DBPN.output.", "sr.dbpn.fuse.")
    for i in range(cfg.num_stages):
        o, n = f"RBPN.DBPN.up{i + 1}.", f"sr.dbpn.ups.{i}."
        r += _blk(o + "up_conv1.", n + "expand.", True) + _blk(o + "up_conv2.", n + "contract.")
        r += _blk(o + "up_conv3.", n + "correct.", True)
    for i in range(cfg.num_stages - 1):
        o, n = f"RBPN.DBPN.down{i + 1}.", f"sr.dbpn.downs.{i}."
        r += _blk(o + "down_conv1.", n + "contract.") + _blk(o + "down_conv2.", n + "expand.", True)
        r += _blk(o + "down_conv3.", n + "correct.")
    r += _stack("RBPN.res_feat1", "sr.pair_branch", cfg.s_resblocks, deconv_tail=True)
    r += _stack("RBPN.res_feat2", "sr.error_branch", cfg.s_resblocks)
    r += _stack("RBPN.res_feat3", "sr.res_feat3", cfg.s_resblocks)
    r += _blk("RBPN.output.", "sr.to_rgb.")
    r += _stack("motion_down", "down", cfg.down_resblocks)
    r += _blk("motion_feat.", "motion_head.")
    r += _stack("motion", "motion", cfg.motion_resblocks)
    r += _stack("interp_block", "interp", cfg.n_resblock, deconv_tail=True)
    r += _blk("t_net_hr.0.", "t_hr.reduce.") + _blk("t_net_hr.2.", "t_hr.tail.")
    p = "t_net_hr.1."
    for lvl, n in ((1, 5), (2, 4), (3, 3)):
        r += [(f"{p}l{lvl}_{j + 1}.", f"t_hr.pyramid.level{lvl}.{j}.") for j in range(n)]
    r += _blk(p + "down1.", "t_hr.pyramid.down1.") + _blk(p + "down2.", "t_hr.pyramid.down2.")
    r += _blk(p + "up1.", "t_hr.pyramid.up1.", True) + _blk(p + "up2.", "t_hr.pyramid.up2.", True)
    r += _blk(p + "final.", "t_hr.pyramid.out.")
    r += _stack("t_net_lr", "t_lr", cfg.t_lr_resblocks)
    r += _stack("motion_up_f", "up_f", cfg.n_resblock, deconv_tail=True)
    r += _stack("motion_up_b", "up_b", cfg.n_resblock, deconv_tail=True)
    r += _blk("reconstruction_h.", "rec_h.") + _blk("reconstruction_l.", "rec_l.")
    if cfg.flow_refine:
        n = len(cfg.fr_widths) - 1
        olds = ["flow_net.inc.conv.conv."] + [f"flow_net.down{i}.mpconv.1.conv." for i in range(1, n + 1)]
        olds += [f"flow_net.up{i}.conv.conv." for i in range(1, n + 1)]
        news = [f"flow_refiner.enc.{i}." for i in range(n + 1)] + [f"flow_refiner.dec.{i}." for i in range(n)]
        for o, nw in zip(olds, news):
            r += [(o + "0.", nw + "conv1."), (o + "1.", nw + "bn1."), (o + "3.", nw + "conv2."), (o + "4.", nw + "bn2.")]
        r.append(("flow_net.outc.conv.", "flow_refiner.head."))
    return r


def _rename(key: str, table: list[tuple[str, str]]) -> str | None:
    """Longest matching prefix wins (the table must be sorted longest first)."""
    for a, b in table:
        if key.startswith(a):
            return b + key[len(a):]
    return None


def official_to_ours(state_dict: Mapping[str, Tensor], config: StarConfig | None = None
                     ) -> tuple[dict[str, Tensor], StarConfig]:
    """Rename an authors' state dict to StarNet keys. Returns (our state dict, inferred config)."""
    cfg = infer_official_config(state_dict) if config is None else config
    sd, _ = _strip_prefixes(state_dict)
    table = sorted(_rules(cfg), key=lambda r: -len(r[0]))
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        new = _rename(key, table)
        if new is None:
            raise CheckpointError(f"unexpected key {key!r} for a {cfg.variant} x{cfg.scale} checkpoint")
        out[new] = value
    return out, cfg


def ours_to_official(state_dict: Mapping[str, Tensor], config: StarConfig, prefix: str = "module."
                     ) -> dict[str, Tensor]:
    """Inverse of official_to_ours: StarNet keys -> the authors' keys ('model.'/'flow_net.' for V4_REF)."""
    table = sorted(((b, a) for a, b in _rules(config)), key=lambda r: -len(r[0]))
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _rename(key, table)
        if name is None:
            raise CheckpointError(f"key {key!r} has no official counterpart")
        if config.flow_refine and not name.startswith("flow_net."):
            name = "model." + name
        out[prefix + name] = value
    return out


# ----------------------------------------------------------------------------------------- loading
def load_official(path_or_state_dict: str | os.PathLike | Mapping[str, Tensor], *, objective: str | None = None,
                  device: str | torch.device = "cpu"):
    """Build a StarNet from an authors' checkpoint (path or state dict); returns it in eval mode on `device`.

    Keys with or without 'module.'; V4 and V4_REF; x2/x4/x8; the configuration comes from the key names
    and shapes. Every key must match (missing, unexpected or mis-shaped keys raise CheckpointError).
    `objective` is the paper model the weights were trained as; None takes it from the file name where the
    name ends with it (``..._STAR_ST.pth``; see objective_from_filename), else "STAR".
    Files are read with torch.load(weights_only=True, map_location='cpu'). device='meta' only validates.
    """
    from .config import OBJECTIVE_OUTPUTS
    from .star import StarNet

    if objective is None:
        named = None
        if isinstance(path_or_state_dict, (str, os.PathLike)):
            named = objective_from_filename(path_or_state_dict)
        objective = named or "STAR"
    if objective not in OBJECTIVE_OUTPUTS:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVE_OUTPUTS)}, got {objective!r}")
    if isinstance(path_or_state_dict, Mapping):
        sd = extract_state_dict(path_or_state_dict, source="state dict")
        source = "state dict"
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        sd = read_official_checkpoint(source)
    else:
        raise ValueError(f"path_or_state_dict must be a path or a state dict, got {type(path_or_state_dict).__name__}")
    try:
        cfg = infer_official_config(sd, objective=objective)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    with torch.device("meta"):
        net = StarNet(cfg)
    # Compare in the authors' key space so errors name the keys as they appear in the file.
    given = {k[len("module."):]: v for k, v in sd.items()} if all(k.startswith("module.") for k in sd) else sd
    expected = ours_to_official(net.state_dict(), cfg, prefix="")
    compare_keys(expected, given, source=source, layout=f"{cfg.variant} x{cfg.scale}")
    ours, _ = official_to_ours(given, cfg)
    net = net.to_empty(device=device)
    net.load_state_dict(ours)
    return net.eval()


def compare_keys(expected: Mapping[str, Tensor], given: Mapping[str, Tensor], source: str = "state dict",
                 layout: str = "model") -> None:
    """Raise CheckpointError naming the first missing / unexpected / mis-shaped / mistyped key, or the first
    tensor with non-finite values."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} key(s) of a {layout} checkpoint missing, "
                              f"e.g. {missing[0]!r}")
    if extra:
        raise CheckpointError(f"{source}: {len(extra)} unexpected key(s) for a {layout} checkpoint, "
                              f"e.g. {extra[0]!r}")
    for k, ref in expected.items():
        v = given[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(ref.shape)}")
        if v.is_floating_point() != ref.is_floating_point():
            kind = "floating-point" if ref.is_floating_point() else "integer"
            raise CheckpointError(f"{source}: key {k!r} has dtype {v.dtype}, expected a {kind} tensor")
    check_finite(given, source=source)


def check_state_dict(net: torch.nn.Module, sd: Mapping[str, Tensor], source: str = "state dict") -> None:
    """Raise CheckpointError unless `sd` has exactly net's keys with the same shapes and kinds."""
    compare_keys(net.state_dict(), sd, source=source, layout=getattr(getattr(net, "config", None), "variant", "model"))
