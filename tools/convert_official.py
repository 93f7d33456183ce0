#!/usr/bin/env python3
"""Convert an authors' STARnet checkpoint (.pth) into vsstar's safetensors format.

    python tools/convert_official.py FBPNSR_RBPN_V4_REF_Lf_STAR.pth star_fr_x4.safetensors --objective STAR

The configuration (V4 / V4_REF, scale, widths, depths) is inferred from the checkpoint; the objective
(which paper model it was trained as) cannot be, so pass it (STAR, STAR-ST, STAR-S, STAR-T_LR, STAR-T_HR;
the authors' file names end with it). The checkpoint is read with torch.load(weights_only=True).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsstar.model import (OBJECTIVES, CheckpointError, load_official, objective_from_filename,  # noqa: E402
                          save_weights)


def guess_objective(path: str) -> str:
    """The objective named at the end of an authors' file name (…_STAR_ST.pth -> STAR-ST), else STAR."""
    return objective_from_filename(path) or "STAR"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="authors' .pth file (keys with or without 'module.')")
    ap.add_argument("output", help="destination .safetensors file")
    ap.add_argument("--objective", choices=OBJECTIVES, default=None,
                    help="paper model the weights were trained as (default: from the file name, else STAR)")
    ap.add_argument("--description", default=None, help="free text stored in the metadata")
    args = ap.parse_args(argv)
    objective = args.objective or guess_objective(args.checkpoint)
    try:
        net = load_official(args.checkpoint, objective=objective)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {"source": os.path.basename(args.checkpoint)}
    if args.description:
        meta["description"] = args.description
    save_weights(net, args.output, **meta)
    cfg = net.config
    n = sum(p.numel() for p in net.parameters())
    print(f"{args.output}: {cfg.variant} x{cfg.scale} objective={cfg.objective} parameters={n:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
