#!/usr/bin/env python3
"""torch eager vs OpenVINO (f32, bf16) on the CPU: the network alone, the engine, and the README job.

All cases of a section run in one process, interleaved round by round (torch, OpenVINO f32, OpenVINO bf16,
torch, ...), so load from other processes on a shared machine hits all of them alike; the table gives the
median time per call and the median of the per-round ratios. Export and compilation (once per model and
shape, then cached on disk) are timed separately and excluded from the per-call figures.

    .venv/bin/python benchmarks/bench_openvino.py net      # bundled x4 and x2 at 426x240, full STAR x4 at 64x112
    .venv/bin/python benchmarks/bench_openvino.py engine   # flow + network at 426x240, x4, frames/s
    .venv/bin/python benchmarks/bench_openvino.py job      # vsstar enhance of the README (48 frames, 320x136, x4)
    .venv/bin/python benchmarks/bench_openvino.py profile  # where the time goes in the engine with OpenVINO
    .venv/bin/python benchmarks/bench_openvino.py drift --pairs 20   # Y-PSNR on carphone: torch, f32, bf16
    .venv/bin/python benchmarks/bench_openvino.py precision --emulate  # bf16 - f32 on clips and footage, x2/x4

Options: --rounds N, --threads N (torch and OpenVINO threads; default torch's), --no-bf16, --no-int8.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def _frames(n: int, width: int, height: int) -> torch.Tensor:
    """n consecutive frames of a real clip, resized: (n, 3, H, W) float RGB in [0, 1]."""
    import cv2

    src = None
    for cand in (ROOT.parent / "shared" / "data" / "clips" / "bikes.mp4", ROOT / "samples" / "bikes_320x136.mp4"):
        if cand.is_file():
            src = cand
            break
    if src is None:
        raise SystemExit("no source clip found (samples/bikes_320x136.mp4)")
    cap = cv2.VideoCapture(str(src))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            raise SystemExit(f"{src}: fewer than {n} frames")
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
        out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out)


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _report(title: str, names: list[str], times: dict[str, list[float]], unit_per_call: str, extra: dict,
            flops: float | None = None) -> None:
    """One table; with `flops` (per call) also the achieved GFLOP/s at the median time, which says how close to
    the cores' peak each runtime already is."""
    base = names[0]
    print(f"\n{title}")
    rate = " GFLOP/s |" if flops else ""
    print(f"| backend | median s/{unit_per_call} | min s | speed-up vs {base} (median of rounds) | "
          f"max rel. diff vs {base} | first call (export+compile) s |{rate}")
    print("|---|---|---|---|---|---|" + ("---|" if flops else ""))
    for name in names:
        t = times[name]
        ratios = [b / x for b, x in zip(times[base], t)]
        diff = extra.get(name, {}).get("diff")
        build = extra.get(name, {}).get("build")
        gf = f" {flops / 1e9 / statistics.median(t):.0f} |" if flops else ""
        print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} | {statistics.median(ratios):.2f}x | "
              f"{'-' if diff is None else f'{diff:.1e}'} | {'-' if build is None else f'{build:.1f}'} |{gf}")
    sys.stdout.flush()


def _network_flops(star, *inputs) -> float:
    """Floating-point operations of one call (torch's FLOP counter: the convolutions, at the padded size)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        star(*inputs)
    return float(counter.get_total_flops())


def _sgemm_ceiling(n: int = 4096, repeat: int = 5) -> float:
    """GFLOP/s of a large float32 matrix product on torch's threads: the practical ceiling of these cores for
    float32 arithmetic, against which the networks' GFLOP/s are read."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(torch.matmul, a, b)[0] for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


# ------------------------------------------------------------------------------------ network alone
def _damped_official(scale: int = 4):
    """The paper's STAR (x4 by default) + FR with random weights scaled so activations stay O(1) as in a trained
    model.

    Plain kaiming-initialised weights blow the outputs up to ~5e4 before clamping, where even torch's two
    memory layouts differ by 1e-2 after the clamp: no useful yardstick for backend agreement.
    """
    from vsstar.model import StarConfig, StarNet

    net = StarNet(StarConfig.official(scale, True)).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(0.5)
    return net


def bench_net(args) -> None:
    from vsstar.backends.openvino import OpenVINOStar, bf16_supported, int8_available
    from vsstar.model import Star, load_model

    cases = {"x4": ("bundled star_st_x4", lambda: load_model("star_st_x4"), (240, 426)),
             "x2": ("bundled star_st_x2", lambda: load_model("star_st_x2"), (240, 426)),
             "full": ("full STAR x4 + FR (random weights, damped)", _damped_official, (64, 112))}
    print(f"float32 ceiling of these cores: {_sgemm_ceiling():.0f} GFLOP/s (4096x4096 matrix product, "
          f"{torch.get_num_threads()} threads)")
    for key in args.cases.split(","):
        title, make, (h, w) = cases[key]
        torch.manual_seed(0)
        net = make()
        frames = _frames(2, w, h)
        a, b = frames[:1], frames[1:]
        g = torch.Generator().manual_seed(1)
        ff = torch.randn(1, 2, h, w, generator=g) * 2
        fb = torch.randn(1, 2, h, w, generator=g) * 2
        star = Star(net)
        runners = {"torch eager": star}
        extra: dict = {}
        variants = [("openvino f32", "f32")]
        if not args.no_bf16 and bf16_supported():
            variants.append(("openvino bf16", "bf16"))
        if not args.no_int8 and int8_available():
            variants.append(("openvino int8", "int8"))
        for name, prec in variants:
            r = OpenVINOStar(star, precision=prec, num_threads=torch.get_num_threads(), cache_dir=args.cache_dir)
            extra[name] = {"build": _timed(r.compiled, *r.padded_shape(1, h, w))[0]}
            runners[name] = r
        times = {k: [] for k in runners}
        outs = {}
        for _ in range(args.rounds):
            for name, fn in runners.items():
                dt, out = _timed(fn, a, b, ff, fb)
                times[name].append(dt)
                outs[name] = out
        ref = outs["torch eager"]
        for name in runners:
            if name != "torch eager":
                extra[name]["diff"] = max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(outs[name], ref))
        flops = _network_flops(star, a, b, ff, fb)
        print(f"{title}: {flops / 1e9:.1f} GFLOP per pair (torch's FLOP counter)")
        _report(f"Network alone: {title}, LR {w}x{h}, one pair, {torch.get_num_threads()} threads, "
                f"{args.rounds} interleaved rounds", list(runners), times, "pair", extra, flops)


# ------------------------------------------------------------------------------------ engine
def bench_engine(args) -> None:
    from vsstar.engine import StarEngine

    w, h = 426, 240
    frames = _frames(args.pairs + 1, w, h)
    names = [("torch", dict(backend="torch")), ("openvino f32", dict(backend="openvino", precision="f32"))]
    if not args.no_bf16:
        names.append(("openvino bf16", dict(backend="openvino", precision="bf16")))
    if not args.no_int8:
        names.append(("openvino int8", dict(backend="openvino", precision="int8")))
    names.append(("default", dict()))  # backend and precision "auto": what every host runs
    engines = {n: StarEngine(None, scale=4, device="cpu", **kw) for n, kw in names}
    print(f"default: backend {engines['default'].backend}, precision {engines['default'].precision}")
    extra = {n: {"build": _timed(engines[n]._runner.compiled, 1, h, w)[0]} for n, _ in names[1:]}
    times = {n: [] for n in engines}
    outs = {}
    for _ in range(args.rounds):
        for n, eng in engines.items():
            t0 = time.perf_counter()
            res = [eng.process(frames[i:i + 1], frames[i + 1:i + 2]) for i in range(args.pairs)]
            # Output frames per second of the filter: two per pair in mode st (the frame and the in-between).
            times[n].append((time.perf_counter() - t0) / (2 * args.pairs))
            outs[n] = res
    for n, _ in names[1:]:
        extra[n]["diff"] = max(float((o - r).abs().max() / r.abs().max())
                               for ro, oo in zip(outs["torch"], outs[n]) for r, o in zip(ro, oo) if r is not None)
    _report(f"Engine (flow + network), bundled x4, LR {w}x{h}, {args.pairs} pairs per round, "
            f"{args.rounds} rounds; s per output frame (fps = 1 / value)", [n for n, _ in names], times,
            "output frame", extra)
    for n, eng in engines.items():
        st = eng.stats
        print(f"{n}: flow {st.flow_s:.1f} s, network {st.net_s:.1f} s over {st.pairs} pairs")


# ------------------------------------------------------------------------------------ README job
def bench_job(args) -> None:
    exe = ROOT / ".venv" / "bin" / "vsstar"
    src = ROOT / "samples" / "bikes_320x136.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VSSTAR_BACKEND", None)
    runs = {"torch": ["--backend", "torch"], "openvino f32": ["--backend", "openvino", "--precision", "f32"]}
    if not args.no_bf16:
        runs["openvino bf16"] = ["--backend", "openvino", "--precision", "bf16"]
    if not args.no_int8:
        runs["openvino int8"] = ["--backend", "openvino", "--precision", "int8"]
    times: dict[str, list[float]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        # A two-frame job per OpenVINO setting fills the disk cache (export + compile, timed apart).
        for name, opts in runs.items():
            if name != "torch":
                t0 = time.perf_counter()
                subprocess.run([str(exe), "enhance", str(src), f"{tmp}/w.mp4", "--scale", "4", "--frames", "2", "-q",
                                *opts], check=True, env=env)
                print(f"warm-up (2 frames, fills the cache if empty) {name}: {time.perf_counter() - t0:.1f} s")
        for r in range(args.rounds):
            for backend, opts in runs.items():
                cmd = [str(exe), "enhance", str(src), f"{tmp}/o.mp4", "--scale", "4", "-q", *opts]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env)
                times[backend].append(time.perf_counter() - t0)
                print(f"round {r}: {backend} {times[backend][-1]:.1f} s", flush=True)
    _report(f"README job: vsstar enhance samples/bikes_320x136.mp4 --scale 4 (48 frames -> 96), "
            f"{args.rounds} interleaved rounds, seconds per job (disk cache warm after the first openvino run)",
            list(times), times, "job", {})


# ------------------------------------------------------------------------------------ profile
def bench_profile(args) -> None:
    """Split one engine call with OpenVINO into flow, pre/post-processing and the OpenVINO inference."""
    from vsstar.engine import StarEngine

    w, h = 426, 240
    frames = _frames(args.pairs + 1, w, h)
    eng = StarEngine(None, scale=4, device="cpu", backend="openvino", precision="f32")
    runner = eng._runner
    req_time = []
    orig = runner.compiled

    def wrapped(*shape, **kw):
        compiled, request = orig(*shape, **kw)

        class Timed:
            def __getattr__(self, k):
                return getattr(request, k)

            def infer(self, feeds):
                t = time.perf_counter()
                request.infer(feeds)
                req_time.append(time.perf_counter() - t)
        return compiled, Timed()

    runner.compiled = wrapped
    eng.process(frames[:1], frames[1:2])  # build / load
    eng.stats.flow_s = eng.stats.net_s = 0.0
    req_time.clear()
    t0 = time.perf_counter()
    for i in range(args.pairs):
        eng.process(frames[i:i + 1], frames[i + 1:i + 2])
    total = time.perf_counter() - t0
    st = eng.stats
    infer = sum(req_time)
    print(f"\nProfile, engine with OpenVINO f32, bundled x4, 426x240, {args.pairs} pairs: total {total:.2f} s")
    for name, v in (("flow (both directions)", st.flow_s), ("OpenVINO inference", infer),
                    ("pre/post-processing + copies (network wrapper)", st.net_s - infer),
                    ("engine overhead (input checks, batching)", total - st.flow_s - st.net_s)):
        print(f"| {name} | {v:.2f} s | {100 * v / total:.0f}% |")


# ------------------------------------------------------------------------------------ bf16 drift
def _y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of 8-bit-rounded RGB in [0, 1]."""
    q = (rgb.clamp(0, 1) * 255).round() / 255
    return 0.299 * q[:, 0] + 0.587 * q[:, 1] + 0.114 * q[:, 2]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((_y(a) - _y(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * __import__("math").log10(1.0 / mse)


def bench_drift(args) -> None:
    """Y-PSNR on carphone (evaluation protocol of training/evaluate.py, simplified) per backend and precision."""
    import cv2
    import numpy as np
    from PIL import Image

    from vsstar.engine import StarEngine

    src = Path(args.clip) if args.clip else ROOT.parent / "shared" / "data" / "clips" / "carphone_pristine.mp4"
    if not src.is_file():
        raise SystemExit(f"{src} not found")
    cap = cv2.VideoCapture(str(src))
    truth = []
    while len(truth) < 2 * args.pairs + 1:
        ok, img = cap.read()
        if not ok:
            break
        truth.append(torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0)
    truth = torch.stack(truth)
    s = args.scale
    h, w = truth.shape[2] // s, truth.shape[3] // s
    # Even frames, antialiased bicubic downscaling (PIL), as the evaluation protocol does.
    lr = []
    for t in truth[::2]:
        img = Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        lr.append(torch.from_numpy(np.asarray(img.resize((w, h), Image.BICUBIC))).permute(2, 0, 1).float() / 255.0)
    lr = torch.stack(lr)
    rows = {}
    outs = {}
    cases = [("torch", dict(backend="torch")), ("openvino f32", dict(backend="openvino", precision="f32"))]
    if not args.no_bf16:
        cases.append(("openvino bf16", dict(backend="openvino", precision="bf16")))
    if not args.no_int8:
        cases.append(("openvino int8", dict(backend="openvino", precision="int8")))
    for name, kw in cases:
        eng = StarEngine(None, scale=s, device="cpu", **kw)
        res = eng.process(lr[:-1], lr[1:])
        outs[name] = res
        sr, mid = res.sr_first, res.mid
        rows[name] = (statistics.mean(_psnr(sr[i:i + 1], truth[2 * i:2 * i + 1]) for i in range(len(sr))),
                      statistics.mean(_psnr(mid[i:i + 1], truth[2 * i + 1:2 * i + 2]) for i in range(len(mid))))
    print(f"\nY-PSNR on {src.name} ({len(lr) - 1} pairs, x{s} from {w}x{h}, the bundled x{s} model, 8-bit outputs)")
    print("| backend | SR frames dB | in-between frames dB | PSNR vs openvino f32 outputs dB |")
    print("|---|---|---|---|")
    for name, (p_sr, p_mid) in rows.items():
        ref = outs["openvino f32"]
        agree = _psnr(torch.cat([outs[name].sr_first, outs[name].mid]), torch.cat([ref.sr_first, ref.mid]))
        print(f"| {name} | {p_sr:.3f} | {p_mid:.3f} | {'-' if name == 'openvino f32' else f'{agree:.1f}'} |")


# ------------------------------------------------------------------------------------ bf16 drift on footage
#: Where section "precision" measures: the held-out clips and the camera footage (each a few frames).
PRECISION_CLIPS = ("clips/carphone_pristine.mp4", "clips/bikes.mp4", "footage/dog.mp4", "footage/cups.mp4",
                   "footage/blocks.mp4", "footage/coffee.mp4", "footage/juggle.mp4", "footage/bedroom.mp4")
#: Footage is H.264 at 720p: shrunk to this width first (antialiased bicubic), so that the ground truth is
#: free of compression blocks, as the training data is; carphone and bikes are used at their own size.
FOOTAGE_WIDTH = 640


def _truth_frames(path: Path, n: int, start: int, width: int | None) -> torch.Tensor:
    import cv2
    import numpy as np
    from PIL import Image

    cap = cv2.VideoCapture(str(path))
    out, k = [], 0
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        if k >= start:
            rgb = np.ascontiguousarray(img[:, :, ::-1])
            if width and rgb.shape[1] > width:
                h = round(rgb.shape[0] * width / rgb.shape[1])
                rgb = np.asarray(Image.fromarray(rgb).resize((width, h), Image.BICUBIC))
            out.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0)
        k += 1
    if len(out) < 3:
        raise SystemExit(f"{path}: fewer than 3 frames from frame {start}")
    return torch.stack(out)


def _round_to_bf16(model, pick) -> int:
    """Emulate bfloat16 storage in a float32 graph: the float outputs of the operations `pick` selects go
    through Convert(bf16) and back. Independent of what the CPU's bf16 kernels would keep in float32."""
    import openvino as ov
    import openvino.opset13 as ops

    n = 0
    for op in list(model.get_ordered_ops()):
        if not pick(op):
            continue
        for out in op.outputs():
            if out.get_element_type() != ov.Type.f32:
                continue
            targets = list(out.get_target_inputs())
            rounded = ops.convert(ops.convert(out, "bf16"), "f32")
            for t in targets:
                t.replace_source_output(rounded.output(0))
            n += 1
    return n


def _emulated_runner(star, shape, mode: str):
    """An f32 OpenVINOStar whose graph rounds to bf16 every operation ("all") or all but the warp path."""
    import openvino as ov

    from vsstar.backends.openvino import OpenVINOStar, _warp_path
    from vsstar.model.export import export_onnx

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        model = core.read_model(str(export_onnx(star.net, Path(tmp) / "m.onnx", shape=shape, check=False)))
    warp = _warp_path(model)
    skip = {"Parameter", "Constant", "Result", "ShapeOf", "Reshape", "Broadcast", "Gather", "Unsqueeze",
            "VariadicSplit", "Concat"}
    kind = mode.split(":")[1]
    _round_to_bf16(model, lambda op: op.get_type_name() not in skip
                   and (kind == "all" or op.get_friendly_name() not in warp))
    runner = OpenVINOStar(star, precision="f32", cache_dir=False, verbose=False)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    runner._build = lambda shape, part="full": compiled
    return runner


def bench_precision(args) -> None:
    """Y-PSNR of OpenVINO bf16 (and optionally of emulated all-bf16 graphs) against f32, on held-out clips and
    camera footage, x2 and x4, SR frames and in-between frames apart (the evaluation protocol: odd frames
    dropped, even frames downscaled by antialiased bicubic, 8-bit outputs, BT.601 luma)."""
    from PIL import Image
    import numpy as np

    from vsstar.backends.openvino import OpenVINOStar
    from vsstar.engine import resolve_model
    from vsstar.flow import coarse2fine_flow_batch

    data = ROOT.parent / "shared" / "data"
    clips = [c.strip() for c in args.clips.split(",")] if args.clips else list(PRECISION_CLIPS)
    modes = ["bf16"] + (["emulated:all", "emulated:all-but-warp"] if args.emulate else [])
    scales = [int(v) for v in args.scales.split(",")]
    print(f"\nbf16 against f32, {args.frames} frames per clip from frame {args.start} (SR frames: the even ones; "
          f"in-between: the odd ones), Y-PSNR dB; CPU: {_cpu_name()}")
    head = "| clip | scale | LR size | f32 SR | f32 in-between | " + " | ".join(
        f"{m} SR | {m} in-between" for m in modes) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    worst = {m: 0.0 for m in modes}
    for rel in clips:
        path = data / rel
        if not path.is_file():
            print(f"| {rel} | skipped: not found |")
            continue
        full = _truth_frames(path, args.frames, args.start, FOOTAGE_WIDTH if rel.startswith("footage/") else None)
        for s in scales:
            h, w = full.shape[2] // s, full.shape[3] // s
            truth = full[:, :, :h * s, :w * s]
            lr = []
            for t in truth[::2]:
                img = Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
                lr.append(torch.from_numpy(np.array(img.resize((w, h), Image.BICUBIC))).permute(2, 0, 1).float()
                          / 255.0)
            lr = torch.stack(lr)
            a, b = lr[:-1], lr[1:]
            n = len(a)
            flows = coarse2fine_flow_batch(torch.cat((a, b)), torch.cat((b, a)))
            star = resolve_model(None, s, "st", "fast")
            f32 = OpenVINOStar(star, precision="f32", cache_dir=args.cache_dir or False, verbose=False)
            runners = {"f32": f32}
            for m in modes:
                runners[m] = (OpenVINOStar(star, precision=m, cache_dir=args.cache_dir or False, verbose=False)
                              if m == "bf16" else _emulated_runner(star, f32.padded_shape(1, h, w), m))
            row = {}
            for name, r in runners.items():
                outs = [r(a[i:i + 1], b[i:i + 1], flows[i:i + 1], flows[n + i:n + i + 1]) for i in range(n)]
                row[name] = (statistics.mean(_psnr(o.h1, truth[2 * i:2 * i + 1]) for i, o in enumerate(outs)),
                             statistics.mean(_psnr(o.ht, truth[2 * i + 1:2 * i + 2]) for i, o in enumerate(outs)))
            base = row["f32"]
            cells = []
            for m in modes:
                d_sr, d_mid = row[m][0] - base[0], row[m][1] - base[1]
                worst[m] = min(worst[m], d_sr, d_mid)
                cells.append(f"{d_sr:+.3f} | {d_mid:+.3f}")
            print(f"| {Path(rel).stem} | x{s} | {w}x{h} | {base[0]:.3f} | {base[1]:.3f} | " + " | ".join(cells) + " |",
                  flush=True)
    for m in modes:
        print(f"{m}: largest loss against f32 {max(0.0, -worst[m]):.3f} dB")


def _cpu_name() -> str:
    import platform

    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), name)
        flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
        bf = [f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")]
        name += f" ({', '.join(bf) or 'no bf16 flags'})"
    except OSError:
        pass
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", choices=("net", "engine", "job", "profile", "drift", "precision"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-int8", action="store_true", help="skip precision int8 (it needs nncf)")
    p.add_argument("--scale", type=int, default=4, choices=(2, 4), help="drift section: the bundled model's scale")
    p.add_argument("--clip", default=None, help="drift section: the clip (default: the held-out carphone)")
    p.add_argument("--cases", default="x4,x2,full", help="net section: any of x4,x2,full")
    p.add_argument("--cache-dir", default=None, help="OpenVINO disk cache (default: the user cache folder; "
                   "the precision section: none)")
    p.add_argument("--clips", default=None, help="precision section: clips under ../shared/data, comma-separated "
                   "(default: carphone, bikes and the six footage clips)")
    p.add_argument("--scales", default="2,4", help="precision section: the bundled models' scales")
    p.add_argument("--frames", type=int, default=9, help="precision section: frames per clip (odd)")
    p.add_argument("--start", type=int, default=0, help="precision section: first frame of each clip")
    p.add_argument("--emulate", action="store_true",
                   help="precision section: also f32 graphs with every operation (or all but the flow-warp path) "
                        "rounded to bf16, whatever the CPU keeps in f32")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()}")
    {"net": bench_net, "engine": bench_engine, "job": bench_job, "profile": bench_profile,
     "drift": bench_drift, "precision": bench_precision}[args.section](args)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
