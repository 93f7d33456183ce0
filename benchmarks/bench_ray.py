"""Speed-up of ``vsstar.distributed`` with 1 and 2 local Ray workers on the same clip.

Each configuration starts its own local Ray instance with as many CPUs as workers, every chunk task
requests one CPU (one torch thread), and the whole job is timed: the driver's probing and scene
detection, the workers' start and model load, STAR, and the final encode. The runs alternate
(1, 2, 1, 2, ...) so that a change of load on a shared machine hits both alike.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/bench_ray.py [--src VIDEO] [--frames 24] [--chunk-frames 6]
        [--repeats 1] [--model NAME_OR_PATH] [--scale 2] [--factor 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vsstar.schedule import FrameSchedule  # noqa: E402


def run_once(workers: int, args: argparse.Namespace, out: Path) -> float:
    """Wall time (s) of one job on a fresh local Ray instance with `workers` CPUs, in a child process
    (so each configuration starts clean)."""
    code = f"""
import os, sys, time
from fractions import Fraction
sys.path.insert(0, {str(ROOT)!r})
import ray
ray.init(num_cpus={workers}, include_dashboard=False, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {str(ROOT)!r}, "OMP_NUM_THREADS": "1"}}}})
from vsstar import distributed
t = time.monotonic()
distributed.enhance({args.src!r}, {str(out)!r}, scale={args.scale}, model={args.model!r}, frames={args.frames},
                    chunk_frames={args.chunk_frames}, ray_cpus=1, fast_flow=True, codec="ffv1", quiet=True,
                    factor=Fraction({args.factor!r}))
print("WALL", time.monotonic() - t)
ray.shutdown()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return float(next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("WALL")))


def frame_hashes(path: Path) -> str:
    """framemd5 of the video: times and an MD5 of every decoded frame."""
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                          capture_output=True, text=True, check=True).stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(ROOT / "samples" / "bikes_320x136.mp4"))
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--chunk-frames", type=int, default=6)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--model", default=None)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--factor", default="2", help="output frames per input frame, e.g. 5/2 (default 2)")
    args = p.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeats):
            for workers in (1, 2):
                t = run_once(workers, args, Path(d) / f"out{workers}.mkv")
                times[workers].append(t)
                print(f"run {rep + 1}: {workers} worker(s): {t:.1f} s", flush=True)
        same = frame_hashes(Path(d) / "out1.mkv") == frame_hashes(Path(d) / "out2.mkv")
    out_frames = FrameSchedule(args.frames, "st", Fraction(args.factor)).num_outputs
    print(f"\n{args.src}, first {args.frames} frames, x{args.scale} mode st --factor {args.factor} --fast-flow, "
          f"chunks of up to "
          f"{args.chunk_frames} frames, {os.cpu_count()} CPU cores, load average before: {os.getloadavg()[0]:.1f}")
    print("| workers (1 CPU, 1 torch thread each) | wall time (best of runs) | output frames/s | speed-up |")
    print("|---|---|---|---|")
    best1 = min(times[1])
    for w in (1, 2):
        best = min(times[w])
        print(f"| {w} | {best:.1f} s ({', '.join(f'{t:.1f}' for t in times[w])}) | {out_frames / best:.2f} | "
              f"{best1 / best:.2f}x |")
    print(f"decoded frames of 1 and 2 workers identical: {same}")


if __name__ == "__main__":
    main()
