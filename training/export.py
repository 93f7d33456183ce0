"""Export a training checkpoint to our safetensors format (ready for ``vsstar.STAR(model=...)``).

    python -m training.export runs/x4/best.pt vsstar/weights/star_st_x4.safetensors
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint

__all__ = ["net_from_checkpoint", "export_checkpoint", "main"]


def net_from_checkpoint(path: str | os.PathLike):
    """The StarNet (eval mode, CPU) saved in a training checkpoint, and the checkpoint dict (read with
    weights_only=True; non-finite weights are refused)."""
    from vsstar.flow import FlowSettings
    from vsstar.model import StarConfig, StarNet
    from vsstar.model.official import check_finite
    st = load_checkpoint(path, what="checkpoint")
    try:
        check_finite(st["model"], source=str(path))
    except ValueError as exc:
        raise ValueError(f"checkpoint: {exc}") from exc
    net = StarNet(StarConfig.from_dict(st["config"]))
    net.load_state_dict(st["model"])
    # Checkpoints from before the flow settings were recorded were all trained with STARnet's.
    net.flow_settings = FlowSettings.from_dict(st.get("flow"))
    return net.eval(), st


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = False,
                      **metadata: Any) -> Path:
    """Write the checkpoint's weights to ``dst`` with training facts in the metadata; returns dst.

    ``half`` stores float16 tensors (half the file size; loaded back as float32). The file is written
    next to dst and renamed, so an existing file is never left half-written.
    """
    from vsstar.model import save_weights
    net, st = net_from_checkpoint(src)
    meta: dict[str, Any] = {"steps": int(st["step"]), "trained_by": "vsstar training/"}
    # The validation of these very weights (the history entry of the checkpoint's step), if there is one.
    here = [h for h in st.get("history") or [] if h.get("step") == st["step"]]
    if here:
        meta["validation"] = {k: round(v, 4) for k, v in here[-1].items() if k != "step" and "psnr_y" in k}
        meta["validation_step"] = st["step"]
    args = st.get("args") or {}
    if args:
        meta["training_args"] = {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, list))
                                 or v is None}
    meta.update(metadata)
    if half:
        net = net.half()
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_weights(net, tmp, **meta)
    os.chmod(tmp, 0o644)  # a shippable file, whatever the umask
    os.replace(tmp, dst)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="training checkpoint (runs/NAME/best.pt or last.pt)")
    p.add_argument("output", help="destination .safetensors")
    p.add_argument("--half", action="store_true", help="store float16 (smaller file)")
    p.add_argument("--description", default=None)
    p.add_argument("--opt-in", action="store_true",
                   help="bundled, but never picked by model=None while another bundled model fits the scale and mode")
    p.add_argument("--quality", default=None, choices=("fast", "high"),
                   help="the tier it belongs to (metadata 'quality'; absent means fast): STAR(quality='high') "
                        "picks a bundled 'high' file")
    a = p.parse_args(argv)
    if not str(a.output).endswith(".safetensors"):
        print("error: output: expected a .safetensors path", file=sys.stderr)
        return 2
    try:
        extra = {"description": a.description} if a.description else {}
        if a.opt_in:
            extra["opt_in"] = True
        if a.quality:
            extra["quality"] = a.quality
        out = export_checkpoint(a.checkpoint, a.output, half=a.half, **extra)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
