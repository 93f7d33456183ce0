#!/usr/bin/env python3
"""Build vsstar/data/calibration_pairs.safetensors, the frames the int8 quantization calibrates on.

12 pairs of consecutive frames from the training footage in ../shared/data (never from the held-out carphone
clip, nor from bikes.mp4 frames 187-241, the shot held out of the x8 model's training), each whole frame
shrunk (area filter) to a small low-resolution input of 80x144, uint8 RGB: 6 from bikes.mp4, 4 from
bigbuckbunny.mp4 and 2 from the Sintel frames, at spread-out times. Whole shrunk frames, not crops of larger
ones: they carry the motion and detail statistics of real low-resolution inputs (crops of 2x-shrunk frames
agreed less with float32 on carphone, 38.5 dB against 47 dB, measured before the flow-warp path was kept in
float32).
The file is safetensors (uint8 tensors "first" and "second", no code runs when it is read), read by
vsstar.backends.openvino.

    python tools/make_calibration.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "vsstar" / "data" / "calibration_pairs.safetensors"
SIZE = (80, 144)  # LR height, width


def _small(img: np.ndarray) -> np.ndarray:
    """BGR image -> RGB at the calibration size (area filter)."""
    return cv2.resize(img, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)[:, :, ::-1]


def _video_pairs(path: Path, starts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    wanted = set(starts) | {s + 1 for s in starts}
    k = 0
    while len(frames) < len(wanted):
        ok, img = cap.read()
        if not ok:
            raise SystemExit(f"{path}: ended at frame {k}, before {max(wanted)}")
        if k in wanted:
            frames[k] = _small(img)
        k += 1
    return [(frames[s], frames[s + 1]) for s in starts]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    pairs = _video_pairs(args.data / "clips" / "bikes.mp4", [10, 50, 90, 130, 170, 245])
    pairs += _video_pairs(args.data / "clips" / "bigbuckbunny.mp4", [5, 40, 75, 110])
    sintel = sorted((args.data / "sintel").glob("*.png"))
    for s in (0, 5):
        pairs.append(tuple(_small(cv2.imread(str(f))) for f in sintel[s:s + 2]))
    first = np.stack([a.transpose(2, 0, 1) for a, _ in pairs]).astype(np.uint8)
    second = np.stack([b.transpose(2, 0, 1) for _, b in pairs]).astype(np.uint8)
    from safetensors.numpy import save_file

    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({"first": np.ascontiguousarray(first), "second": np.ascontiguousarray(second)}, str(OUT),
              metadata={"what": "int8 calibration pairs, uint8 RGB, N x 3 x H x W",
                        "built_by": "tools/make_calibration.py"})
    print(f"wrote {OUT}: {len(first)} pairs of {SIZE[0]}x{SIZE[1]}, {OUT.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
