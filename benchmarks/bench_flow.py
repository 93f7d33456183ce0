"""Benchmark vsstar.flow: ms per flow direction and peak memory, with ratios to baselines.

Each configuration runs in a fresh subprocess (clean peak-memory figure, no cross-talk). Printed
side by side:
  * `cpp_x`: speed-up over the documented single-threaded C++ Coarse2Fine timings
    (../shared/design/FLOW.md: 0.10 / 0.40 / 1.0 / 2.3 s per direction at the four sizes);
  * `seq_x` (with --baseline): speed-up over our own faithful sequential implementation measured
    in the same run: float64, raster SOR order, one image, one thread (the C++ code's algorithm
    and arithmetic order, compiled; it reproduces the C++ float64 output to ~1e-14 px).

  * `--strip-error`: how far the flow solved in row strips (a memory cap below the frame's need,
    see vsstar/flow/memory.py) is from the whole-frame flow, on real pairs;
  * `--pair HxW --max-bytes B`: one pair's flow, both directions, as the engine runs it, with the
    peak RSS increase of the call (the 4K memory figure of docs/flow.md).

Examples:
  .venv/bin/python benchmarks/bench_flow.py                       # CPU, 2 threads, batch 1 and 8
  .venv/bin/python benchmarks/bench_flow.py --strip-error         # strips vs whole frame, EPE
  .venv/bin/python benchmarks/bench_flow.py --seam-overlap 32,64,96,128   # seam error vs overlap
  .venv/bin/python benchmarks/bench_flow.py --pair 2160x3840      # one 4K pair, default cap
  .venv/bin/python benchmarks/bench_flow.py --baseline            # + sequential baseline column
  .venv/bin/python benchmarks/bench_flow.py --device cuda --eager   # GPU, graphs vs eager launches
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPP_SECONDS = {(64, 112): 0.10, (144, 176): 0.40, (180, 320): 1.0, (270, 480): 2.3}


def _frames(n: int, h: int, w: int, seed: int = 0):
    """Deterministic smooth textured frames and a shifted/warped copy (timing is data-independent
    to first order: iteration counts are fixed)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h // 4 + 4, w // 4 + 4, generator=g, dtype=torch.float64)
    a = F.interpolate(base, size=(h + 8, w + 8), mode="bicubic", align_corners=False).clamp(0, 1)
    return a[..., 4:-4, 4:-4].contiguous(), a[..., 3:-5, 5:-3].contiguous()


def _child(cfg: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(cfg["threads"])
    from vsstar.flow import coarse2fine_flow_batch

    h, w, n = cfg["h"], cfg["w"], cfg["batch"]
    dtype = getattr(torch, cfg["dtype"])
    a, b = _frames(n, h, w)
    a, b = a.to(cfg["device"], dtype), b.to(cfg["device"], dtype)
    # Load/compile the kernels on a tiny frame first so the memory figure is the run's own.
    t1, t2 = _frames(min(n, 2), 32, 48)
    coarse2fine_flow_batch(t1.to(a), t2.to(a), ordering=cfg["ordering"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run():
        out = coarse2fine_flow_batch(a, b, ordering=cfg["ordering"])
        if a.is_cuda:
            torch.cuda.synchronize()
        return out

    if a.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    run()  # warm-up: JIT compilation / cache load, CUDA graph capture
    walls, cpus = [], []
    for _ in range(cfg["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    res = {"wall_ms": 1000 * min(walls) / n, "wall_med_ms": 1000 * sorted(walls)[len(walls) // 2] / n,
           "cpu_ms": 1000 * min(cpus) / n}
    if a.is_cuda:
        # Reserved, not allocated: a replayed graph allocates nothing, its pool was reserved at capture.
        res["peak_mb"] = torch.cuda.max_memory_reserved() / 2**20
    else:
        res["peak_mb"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return res


def _real_pairs() -> list[tuple[str, "np.ndarray", "np.ndarray"]]:
    """(name, im0, im1) HxWx3 float RGB: the flow fixtures, and Sintel frames where ../shared has them."""
    import numpy as np
    from PIL import Image

    pairs = []
    for f in sorted((ROOT / "tests" / "data" / "flow").glob("*.npz")):
        d = np.load(f)
        pairs.append((f.stem, d["im0"].astype(np.float64), d["im1"].astype(np.float64)))
    sintel = sorted((ROOT.parent / "shared" / "data" / "sintel").glob("frame_*.png"))
    for a, b in list(zip(sintel, sintel[1:]))[::3]:
        load = lambda p: np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0  # noqa: E731
        pairs.append((f"sintel_{a.stem[-4:]}", load(a), load(b)))
    return pairs


def strip_error(fractions: list[float], threads: int) -> None:
    """Flow with the cap at `fractions` of the whole-frame estimate vs the whole-frame flow (float32,
    both directions, as the engine runs it)."""
    import numpy as np
    import torch

    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.flow.batch import plan_for

    torch.set_num_threads(threads)
    print(f"# strips vs whole frame: float32, both directions, threads={threads}, load={os.getloadavg()[0]:.1f}")
    print(f"{'pair':>20} {'size':>9} {'cap/need':>8} {'strip rows':>12} {'strips':>6} {'max px':>9} "
          f"{'mean px':>9} {'p99 px':>9} {'time x':>6}")
    for name, a, b in _real_pairs():
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()  # noqa: E731
        x, y = torch.cat([t(a), t(b)]), torch.cat([t(b), t(a)])
        need = plan_for(x.shape, max_bytes=1 << 50).estimate
        t0 = time.perf_counter()
        whole = coarse2fine_flow_batch(x, y, max_bytes=1 << 50)
        t_whole = time.perf_counter() - t0
        for f in fractions:
            cap = int(need * f)
            plan = plan_for(x.shape, max_bytes=cap)
            t0 = time.perf_counter()
            out = coarse2fine_flow_batch(x, y, max_bytes=cap)
            dt = time.perf_counter() - t0
            epe = (out - whole).norm(dim=1).flatten().double()
            rows = ",".join(str(r) for r in plan.strip_rows if r) or "-"
            print(f"{name:>20} {a.shape[0]:>4}x{a.shape[1]:<4} {f:8.2f} {rows:>12} "
                  f"{len(plan.strips(0, a.shape[0])):>6} {float(epe.max()):9.2e} {float(epe.mean()):9.2e} "
                  f"{float(epe.quantile(0.99)):9.2e} {dt / t_whole:6.2f}", flush=True)


def seam_overlap(overlaps: list[int]) -> None:
    """Seam error against the overlap: Sintel frames 16 -> 17, float64, the full-size level in two
    strips, everything else whole (a hand-made plan, so only the overlap changes)."""
    import numpy as np
    from PIL import Image

    from vsstar.flow.cpu import flow_group_numpy
    from vsstar.flow.memory import FlowPlan

    d = ROOT.parent / "shared" / "data" / "sintel"
    load = lambda p: np.ascontiguousarray(  # noqa: E731
        (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0).transpose(2, 0, 1))[None]
    a, b = load(d / "frame_0016.png"), load(d / "frame_0017.png")
    h, w = a.shape[-2:]
    args = (0.012, 0.75, 20, 7, 1, 30, 0)
    whole = flow_group_numpy(a, b, *args)
    print(f"# seam error, Sintel 16->17 {h}x{w}, float64, full-size level in 2 strips, load={os.getloadavg()[0]:.1f}")
    for ov in overlaps:
        plan = FlowPlan(1, h, w, 1, 1, (h // 2,) + (0,) * 20, ov, 0, None)
        epe = np.sqrt(((flow_group_numpy(a, b, *args, plan) - whole) ** 2).sum(1))
        print(f"overlap {ov:4d} rows: max {epe.max():.2e} px, mean {epe.mean():.2e} px, "
              f"p99 {np.quantile(epe, 0.99):.2e} px", flush=True)


def one_pair(h: int, w: int, max_bytes: int | None, threads: int) -> None:
    """One pair's flow in both directions (the engine's call) with its wall time and peak RSS increase."""
    import resource

    import torch

    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.flow.batch import plan_for

    torch.set_num_threads(threads)
    t1, t2 = _frames(2, 32, 48)
    coarse2fine_flow_batch(t1.float(), t2.float())  # load the compiled kernels first
    a, b = _frames(1, h, w)
    x, y = torch.cat([a, b]).float(), torch.cat([b, a]).float()
    del a, b
    print(plan_for(x.shape, max_bytes=max_bytes).describe())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    coarse2fine_flow_batch(x, y, max_bytes=max_bytes)
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{h}x{w} pair, both directions: {dt:.1f} s wall, peak RSS {rss1 / 2**20:.2f} GiB, "
          f"{(rss1 - rss0) / 2**20:.2f} GiB above the inputs (threads={threads}, load {os.getloadavg()[0]:.1f})")


def _run_child(cfg: dict, **env_extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    out = subprocess.run([sys.executable, __file__, "--_child", json.dumps(cfg)], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64x112,144x176,180x320,270x480", help="HxW list")
    ap.add_argument("--batch", default="1,8", help="batch sizes (flow directions per call)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ordering", default="auto", choices=["auto", "raster", "redblack"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2, help="torch/kernel threads (CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", action="store_true",
                    help="also time the sequential float64 raster baseline (1 image, 1 thread)")
    ap.add_argument("--eager", action="store_true",
                    help="CUDA: also time each row with VSSTAR_FLOW_CUDA_GRAPHS=0 (graph_x = eager / graphed)")
    ap.add_argument("--strip-error", action="store_true",
                    help="flow in row strips (caps below the need) against the whole-frame flow, real pairs")
    ap.add_argument("--fractions", default="0.5,0.25", help="--strip-error: caps as fractions of the need")
    ap.add_argument("--seam-overlap", help="comma list of overlaps: seam error of two strips (Sintel)")
    ap.add_argument("--pair", help="HxW: one pair, both directions, wall time and peak RSS increase")
    ap.add_argument("--max-bytes", type=float, default=None, help="--pair: the flow's memory cap (bytes)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(_child(json.loads(args._child))))
        return
    if args.strip_error:
        strip_error([float(f) for f in args.fractions.split(",")], args.threads)
        return
    if args.seam_overlap:
        seam_overlap([int(x) for x in args.seam_overlap.split(",")])
        return
    if args.pair:
        h, w = (int(x) for x in args.pair.split("x"))
        one_pair(h, w, None if args.max_bytes is None else int(args.max_bytes), args.threads)
        return

    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    print(f"# vsstar.flow benchmark: device={args.device} ordering={args.ordering} dtype={args.dtype} "
          f"threads={args.threads} repeats={args.repeats} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}")
    print(f"{'size':>9} {'batch':>5} {'ms/dir':>9} {'med':>9} {'cpu ms/dir':>10} {'peak MB':>8} "
          f"{'cpp_x':>6} {'seq ms':>8} {'seq_x':>6}" + (f" {'eager ms':>9} {'graph_x':>7}" if args.eager else ""))
    for h, w in sizes:
        seq = None
        if args.baseline:
            seq = _run_child(dict(h=h, w=w, batch=1, device="cpu", ordering="raster", dtype="float64",
                                  threads=1, repeats=args.repeats))["wall_ms"]
        for n in batches:
            cfg = dict(h=h, w=w, batch=n, device=args.device, ordering=args.ordering, dtype=args.dtype,
                       threads=args.threads, repeats=args.repeats)
            r = _run_child(cfg)
            cpp = CPP_SECONDS.get((h, w))
            cpp_x = f"{1000 * cpp / r['wall_ms']:6.1f}" if cpp else f"{'-':>6}"
            seq_s = f"{seq:8.1f} {seq / r['wall_ms']:6.2f}" if seq else f"{'-':>8} {'-':>6}"
            eager = ""
            if args.eager:
                e = _run_child(cfg, VSSTAR_FLOW_CUDA_GRAPHS="0")
                eager = f" {e['wall_ms']:9.1f} {e['wall_ms'] / r['wall_ms']:7.2f}"
            print(f"{h:>4}x{w:<4} {n:>5} {r['wall_ms']:9.1f} {r['wall_med_ms']:9.1f} {r['cpu_ms']:10.1f} "
                  f"{r['peak_mb']:8.1f} {cpp_x} {seq_s}{eager}", flush=True)


if __name__ == "__main__":
    main()
