"""Benchmark of the VapourSynth filter: plumbing overhead and end-to-end vspipe speed.

1. Plumbing overhead: the same frame pairs through ``vsstar.STAR`` (VapourSynth clip, pair store,
   format handling, frame copies) versus the bare flow + network loop on pre-loaded tensors, same
   device, same model. Target: <= 10% on CPU at 240p input.
2. Mode "s" vs mode "st" on the same clip: super-resolution alone runs the disjoint pairs
   (0, 1), (2, 3), ... (about N/2 network passes for N frames) where "st" runs every pair (N-1);
   the network passes, the time and the ratio of both.
3. Output frame rate factors (``--factors 2,4``): output frames/s of mode st at each factor on the
   same input frames, beside the t = 1/2 model at the same factors (``--factor-baseline``). With a model with
   time input factor 4 runs the t-dependent part three times per pair; with a t = 1/2 model it adds the
   recursive midpoint passes (t = 1/4, 3/4).
4. End to end: ``vspipe -c y4m`` of a script (BestSource -> resize -> STAR) for the x2 and x4 models
   at 240p and 360p input; the fps vspipe reports. On CUDA also fp16 on/off and batching on/off.

Usage:
    .venv/bin/python benchmarks/bench_filter.py [--pairs 3] [--device cpu] [--src VIDEO]
        [--model-x2 NAME_OR_PATH] [--model-x4 NAME_OR_PATH] [--stand-in small] [--mode-frames 6]
        [--skip-overhead] [--skip-modes] [--skip-e2e] [--skip-factors] [--factors 2,4] [--factor-size 240p]

Models default to the bundled weights of each scale; where none is bundled, a random-weight model
of the same architecture as the training preset --stand-in is used (same cost, meaningless pixels)
and the table says so.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SIZES = {"240p": (426, 240), "360p": (640, 360)}


def pick_source(arg: str | None) -> str:
    for cand in (arg, str(ROOT.parent / "shared" / "data" / "clips" / "bigbuckbunny.mp4"),
                 str(ROOT / "samples" / "bikes_320x136.mp4")):
        if cand and os.path.isfile(cand):
            return cand
    raise SystemExit("no source video found; pass --src")


def model_for(scale: int, explicit: str | None, stand_in: str, tmp: Path) -> tuple[str, str]:
    """(path or name usable as STAR(model=...), description)."""
    if explicit:
        return explicit, explicit
    from vsstar.engine import default_model_name

    try:
        name = default_model_name(scale, "st")
        return name, f"bundled {name}"
    except ValueError:
        pass
    from training.presets import preset_config
    from vsstar.model import StarNet, save_weights

    torch.manual_seed(0)
    net = StarNet(preset_config(stand_in, scale))
    path = tmp / f"standin_{stand_in}_x{scale}.safetensors"
    save_weights(net, path)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    return str(path), f"stand-in '{stand_in}' preset, random weights ({params:.2f} M params)"


def load_frames(src: str, size: tuple[int, int], n: int):
    """n frames of the source resized to `size`: an RGBS clip and the same frames as tensors."""
    import numpy as np
    import vapoursynth as vs

    core = vs.core
    clip = core.bs.VideoSource(src)[:n]
    clip = core.resize.Bicubic(clip, size[0], size[1], format=vs.RGBS, matrix_in_s="709")
    frames = []
    for i in range(n):
        f = clip.get_frame(i)
        frames.append(torch.from_numpy(np.stack([np.asarray(f[p]) for p in range(3)]).copy()))
    # A clip that serves the cached arrays (decode/resize cost excluded on both sides).
    blank = core.std.BlankClip(clip, keep=True)

    def serve(n, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][p].numpy())
        return out

    return core.std.ModifyFrame(blank, blank, serve), frames


def bare_seconds(engine, frames) -> float:
    """The engine's flow (both directions, one call) + network, pair by pair, on tensors in memory.

    This is exactly the device work STAR does, without VapourSynth: frame fetching, the pair store,
    format handling and the copies into output frames are what the comparison measures.
    """
    def run() -> None:
        for k in range(len(frames) - 1):
            engine.process(frames[k][None], frames[k + 1][None])

    # In a fresh thread, as STAR's worker does: on this machine the same torch/numba calls ran up to
    # 2x slower from the main thread than from a worker thread, which would flatter STAR.
    t0 = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    th.join()
    return time.perf_counter() - t0


def star_seconds(clip, engine) -> float:
    """All output frames of STAR(clip) through VapourSynth's own output loop (as vspipe does)."""
    from vsstar.vs import STAR

    out = STAR(clip, engine=engine, mode="st")
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        out.output(sink)
    return time.perf_counter() - t0


def overhead(args, models, src, tmp) -> list[str]:
    from vsstar.engine import StarEngine

    rows = []
    size = SIZES["240p"]
    clip, frames = load_frames(src, size, args.pairs + 1)
    for scale in (2, 4):
        model, desc = models[scale]
        engine = StarEngine(model, scale=scale, device=args.device, batch_size=1)
        # warm-up (allocator, compiled flow kernels) on one pair, for both paths
        bare_seconds(engine, frames[:2])
        bare, through, plumbing = [], [], []
        def run_star() -> None:
            st = engine.stats
            before = st.flow_s + st.net_s
            wall = star_seconds(clip, engine)
            through.append(wall)
            # Time of the STAR run not spent inside the engine's flow + network: the plumbing that
            # did not overlap with device work (robust to the compute itself running slower or faster).
            plumbing.append(wall - (st.flow_s + st.net_s - before))

        for r in range(args.repeats):  # interleaved in alternating order, best of: the machine is shared
            if r % 2:
                run_star()
                bare.append(bare_seconds(engine, frames))
            else:
                bare.append(bare_seconds(engine, frames))
                run_star()
        b, s = min(bare), min(through)
        pairs = args.pairs
        rows.append(f"| x{scale} | {size[0]}x{size[1]} | {pairs} | {pairs / b:.4f} | {pairs / s:.4f} | "
                    f"{2 * pairs / s:.4f} | {100 * (s / b - 1):+.1f}% | {min(plumbing):.2f} s "
                    f"({100 * min(plumbing) / (s - min(plumbing)):.1f}%) | {desc} |")
        print(rows[-1], flush=True)
    return rows


def mode_s_vs_st(args, models, src) -> list[str]:
    """Mode s and mode st of STAR on the same frames: network passes and seconds, side by side."""
    from vsstar.engine import StarEngine
    from vsstar.vs import STAR

    size = SIZES["240p"]
    n = args.mode_frames
    clip, frames = load_frames(src, size, n)
    rows = []
    for scale in (2, 4):
        model, desc = models[scale]
        got = {}
        for mode in ("s", "st"):
            engine = StarEngine(model, scale=scale, mode=mode, device=args.device, batch_size=1)
            bare_seconds(engine, frames[:2])  # warm-up, not counted
            before = engine.stats.pairs
            out = STAR(clip, engine=engine, mode=mode, scene_change=False)
            t0 = time.perf_counter()
            with open(os.devnull, "wb") as sink:
                out.output(sink)
            got[mode] = (engine.stats.pairs - before, time.perf_counter() - t0, out.num_frames)
        (ps, ts, ns), (pst, tst, nst) = got["s"], got["st"]
        rows.append(f"| x{scale} | {size[0]}x{size[1]} | {n} | {ps} | {ts:.2f} s | {ns} | {pst} | {tst:.2f} s | "
                    f"{nst} | {ps / pst:.2f} | {ts / tst:.2f} | {desc} |")
        print(rows[-1], flush=True)
    return rows


def factors(args, models, src) -> list[str]:
    """Output frames/s of mode st at each --factors value on the same input frames, for the model and, side
    by side, for the model that knows only t = 1/2 (--factor-baseline; its factor 2 is the speed before
    models with time input).

    A model with time input runs each pair's t-independent parts once and the rest once per in-between
    frame; a t = 1/2 model reaches t = 1/4 and 3/4 by recursive midpoint passes (two more per pair).
    """
    from fractions import Fraction

    from vsstar.engine import StarEngine
    from vsstar.vs import STAR

    size = SIZES[args.factor_size]
    n = args.mode_frames
    clip, frames = load_frames(src, size, n)
    rows = []
    for scale in (2, 4):
        model, desc = models[scale]
        runs = [(model, desc, args.factors.split(","))]
        if args.factor_baseline:
            base = args.factor_baseline.format(s=scale)
            runs.insert(0, (base, None, args.factors.split(",")))
        for name, what, fs in runs:
            engine = StarEngine(name, scale=scale, mode="st", device=args.device, batch_size=1)
            if what is None:  # the baseline: say how it reaches other times (a time model may be compared too)
                how = "t input" if engine.takes_time else "t = 1/2 only, recursive midpoints"
                what = f"bundled {name} ({how})"
            bare_seconds(engine, frames[:2])  # warm-up, not counted
            if engine.takes_time:  # and the two-part graphs of several times per pair (OpenVINO compiles them)
                engine.process_times(frames[0][None], frames[1][None], [[Fraction(1, 4), Fraction(3, 4)]])
            for text in fs:
                f = Fraction(text)
                before = engine.stats.pairs
                out = STAR(clip, engine=engine, scene_change=False, factor_num=f.numerator, factor_den=f.denominator)
                t0 = time.perf_counter()
                with open(os.devnull, "wb") as sink:
                    out.output(sink)
                dt = time.perf_counter() - t0
                rows.append(f"| x{scale} | {size[0]}x{size[1]} | {n} | {f} | {out.num_frames} | "
                            f"{engine.stats.pairs - before} | {dt:.2f} s | {out.num_frames / dt:.3f} | {what} |")
                print(rows[-1], flush=True)
    return rows


def vspipe_fps(script: str, env_args: dict[str, str]) -> tuple[float, float]:
    """(fps reported by vspipe, wall seconds including startup) of one vspipe run."""
    vspipe = shutil.which("vspipe", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    cmd = [vspipe, "-c", "y4m", "-p"]
    for k, v in env_args.items():
        cmd += ["-a", f"{k}={v}"]
    cmd += [script, "-"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds", r.stderr)
    return int(m.group(1)) / float(m.group(2)) if m else float("nan"), wall


E2E_SCRIPT = """
import vapoursynth as vs, vsstar
core = vs.core
g = lambda k: (globals()[k].decode() if isinstance(globals()[k], bytes) else globals()[k])
src = core.bs.VideoSource(g("src"))[: int(g("frames"))]
src = core.resize.Bicubic(src, int(g("w")), int(g("h")))
kw = dict(scale=int(g("scale")), model=g("model"), device=g("device") or None)
if g("fp16") != "auto":
    kw["fp16"] = g("fp16") == "1"
if g("batch") != "auto":
    kw["batch_size"] = int(g("batch"))
vsstar.STAR(src, **kw).set_output()
"""


def end_to_end(args, models, src, tmp) -> list[str]:
    script = tmp / "bench.vpy"
    script.write_text(E2E_SCRIPT)
    variants = [("auto", "auto")]
    if args.device != "cpu" and torch.cuda.is_available():
        variants = [("1", "4"), ("0", "4"), ("1", "1"), ("0", "1")]
    rows = []
    for scale in (2, 4):
        for label, (w, h) in SIZES.items():
            for fp16, batch in variants:
                fps, wall = vspipe_fps(str(script), {
                    "src": src, "frames": str(args.pairs + 1), "w": str(w), "h": str(h), "scale": str(scale),
                    "model": models[scale][0], "device": args.device or "", "fp16": fp16, "batch": batch})
                rows.append(f"| x{scale} | {label} ({w}x{h}) | {fp16} | {batch} | {2 * (args.pairs + 1)} | "
                            f"{fps:.3f} | {wall:.1f} s |")
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3, help="frame pairs per measurement (input frames - 1)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions of the overhead test (best of)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: CUDA if available)")
    p.add_argument("--src", default=None, help="source video (default: ../shared bigbuckbunny, else the sample)")
    p.add_argument("--model-x2", default=None)
    p.add_argument("--model-x4", default=None)
    p.add_argument("--stand-in", default="small", help="training preset used where no model is bundled")
    p.add_argument("--mode-frames", type=int, default=6, help="input frames of the mode s vs st comparison")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-modes", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--skip-factors", action="store_true")
    p.add_argument("--factors", default="2,4", help="output/input frame-rate factors to compare (comma-separated)")
    p.add_argument("--factor-baseline", default="star_st_x{s}",
                   help="t = 1/2 model measured at the same factors beside the model ({s}: the scale; '' to skip)")
    p.add_argument("--factor-size", default="240p", choices=tuple(SIZES), help="input size of the factor comparison")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    if args.mode_frames < 2:
        p.error(f"--mode-frames must be at least 2, got {args.mode_frames}")
    torch.set_num_threads(args.threads)
    from vsstar.engine import resolve_device

    args.device = str(resolve_device(args.device))
    src = pick_source(args.src)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = {2: model_for(2, args.model_x2, args.stand_in, tmp), 4: model_for(4, args.model_x4, args.stand_in, tmp)}
        dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {args.threads} torch threads"
        print(f"# bench_filter: device {args.device} ({dev}); source {src}; {args.pairs} pairs per run")
        over: list[str] = []
        if not args.skip_overhead:
            print("\n## Plumbing overhead (STAR vs bare flow + network, same frames, same device)\n")
            print("| scale | input | pairs | bare pairs/s | STAR pairs/s | STAR out frames/s | A/B overhead "
                  "| plumbing outside flow+net | model |")
            print("|---|---|---|---|---|---|---|---|---|", flush=True)
            over = overhead(args, models, src, tmp)
        modes: list[str] = []
        if not args.skip_modes:
            print(f"\n## Mode s vs mode st, the same {args.mode_frames} input frames (VapourSynth output loop)\n")
            print("| scale | input | frames | s passes | s time | s out frames | st passes | st time | st out frames "
                  "| passes s/st | time s/st | model |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
            modes = mode_s_vs_st(args, models, src)
        if not args.skip_factors:
            print(f"\n## Output frame rate factors, the same {args.mode_frames} input frames (mode st, "
                  "VapourSynth output loop)\n")
            print("| scale | input | frames in | factor | frames out | pairs through the network | time | out frames/s "
                  "| model |")
            print("|---|---|---|---|---|---|---|---|---|", flush=True)
            factors(args, models, src)
        if not args.skip_e2e:
            print("\n## End to end: vspipe -c y4m (BestSource -> resize -> STAR mode st)\n")
            print("| scale | input | fp16 | batch | frames | vspipe fps | wall |")
            print("|---|---|---|---|---|---|---|", flush=True)
            end_to_end(args, models, src, tmp)
        if over:
            print("\nSide by side (plumbing overhead): " + "; ".join(
                f"x{s}: A/B {row.split('|')[7].strip()}, plumbing {row.split('|')[8].strip()}"
                for s, row in zip((2, 4), over)))
        if modes:
            print("Mode s / mode st: " + "; ".join(
                f"x{s}: passes {row.split('|')[10].strip()}, time {row.split('|')[11].strip()}"
                for s, row in zip((2, 4), modes)))


if __name__ == "__main__":
    main()
