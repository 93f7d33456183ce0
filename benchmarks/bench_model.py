#!/usr/bin/env python3
"""Time and measure memory of a StarNet forward pass (ms per frame pair, peak memory).

Every case runs in its own subprocess, so peak RSS (ru_maxrss) belongs to that case alone. By default the
full STAR x4 with flow refinement (random weights) runs at LR 64x112 on the CPU in float32, once with
vsstar's inference path and once with an "original-style" re-creation of the authors' inference (computes
res_feat3 and the unused stage-1 outputs, torch.no_grad, no in-place updates, default memory format, one
Net_S call per frame), and prints both side by side with the ratio and the max output difference.

    python benchmarks/bench_model.py                         # full STAR x4 + FR, 64x112, CPU, vs original
    python benchmarks/bench_model.py --preset compact --sizes 144x180,240x426 --no-baseline
    python benchmarks/bench_model.py --device cuda --dtypes fp32,fp16,bf16 --compile

Timings on a shared machine vary with its load: cases are interleaved and the minimum over --repeat runs
is reported, with the process CPU time beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = {
    "official": {},
    # A CPU-sized build (about 1.8 M parameters), the size class the bundled models' training starts from.
    "compact": dict(base_filter=32, feat=16, n_resblock=1, s_resblocks=2, motion_resblocks=1,
                    down_resblocks=1, t_lr_resblocks=1, fr_widths=(16, 32, 64, 64), keep_res_feat3=False,
                    global_skip=True),
}


# ------------------------------------------------------------------------- original-style inference
def original_forward(net, t_im1, t_im2, t_flow_f, t_flow_b):
    """The authors' eval-mode forward re-created over StarNet's modules (same math, same habits).

    It runs Net_S twice (one frame each) and computes res_feat3 and the stage-1 outputs that inference
    throws away, builds every intermediate out of place and keeps them referenced until the end, as the
    original's forward does. Call it under torch.no_grad() like the original's test script.
    """
    import torch
    import torch.nn.functional as F

    def act(m, y):
        if m is None:
            return y
        if isinstance(m, torch.nn.LeakyReLU):
            return F.leaky_relu(y, 0.1, inplace=True)  # the original's LeakyReLU(0.1, True)
        return m(y)

    def conv(block, x):
        return act(block.act, block.conv(x))

    def res(block, x):
        out = block.conv1(x)
        out = act(block.act, out)
        out = block.conv2(out)
        out = torch.add(out, x)
        return act(block.act, out)

    def stack(m, x):
        for b in m.blocks:
            x = res(b, x)
        return conv(m.tail, x)

    def up(u, x):
        h0 = conv(u.expand, x)
        l0 = conv(u.contract, h0)
        h1 = conv(u.correct, l0 - x)
        return h1 + h0

    def down(d, x):
        l0 = conv(d.contract, x)
        h0 = conv(d.expand, l0)
        l1 = conv(d.correct, h0 - x)
        return l1 + l0

    def dbpn(m, x):
        x = conv(m.reduce, x)
        highs = [up(m.ups[0], x)]  # the official build: h1, h2, h3, fused as cat(h3, h2, h1)
        for u, d in zip(m.ups[1:], m.downs):
            highs.append(up(u, down(d, highs[-1])))
        return conv(m.fuse, torch.cat(highs[::-1], 1))

    def rbpn(m, x, neighbour, flow):
        feat_input = conv(m.feat_target, x)
        feat_frame = [conv(m.feat_pair, torch.cat((x, neighbour[0], flow[0]), 1))]
        Ht = []
        for j in range(1):
            h0 = dbpn(m.dbpn, feat_input)
            h1 = stack(m.pair_branch, feat_frame[j])
            e = h0 - h1
            e = stack(m.error_branch, e)
            h = h0 + e
            Ht.append(h)
            if m.res_feat3 is not None:  # computed and never used, as in the original
                feat_input = stack(m.res_feat3, h)
        out = torch.cat(Ht, 1)
        output = conv(m.to_rgb, out)
        return output, out

    def pyramid(p, x):
        a1, a2, a3 = p.level1, p.level2, p.level3
        out1_1 = res(a1[0], x)
        out2_1 = res(a2[0], conv(p.down1, out1_1))
        out3_1 = res(a3[0], conv(p.down2, out2_1))
        out1_2 = res(a1[1], out1_1 + conv(p.up1, out2_1))
        out2_2 = res(a2[1], out2_1 + conv(p.down1, out1_2) + conv(p.up2, out3_1))
        out3_2 = res(a3[1], out3_1 + conv(p.down2, out2_2))
        out1_3 = res(a1[2], out1_2 + conv(p.up1, out2_2))
        out2_3 = res(a2[2], out2_2 + conv(p.down1, out1_3) + conv(p.up2, out3_2))
        out3_3 = res(a3[2], out3_2 + conv(p.down2, out2_3))
        out1_4 = res(a1[3], out1_3 + conv(p.up1, out2_3))
        out2_4 = res(a2[3], out2_3 + conv(p.down1, out1_4) + conv(p.up2, out3_3))
        out1_5 = res(a1[4], out1_4 + conv(p.up1, out2_4))
        return conv(p.out, out1_5)

    def unet(u, x):
        xs = [u.enc[0](x)]
        for enc in u.enc[1:]:
            xs.append(enc(F.max_pool2d(xs[-1], 2)))
        y = xs[-1]
        for dec, skip in zip(u.dec, reversed(xs[:-1])):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=True)
            dy, dx = skip.shape[2] - y.shape[2], skip.shape[3] - y.shape[3]
            y = F.pad(y, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
            y = dec(torch.cat([skip, y], dim=1))
        return torch.sigmoid(u.head(y))

    relu_bp = lambda x: F.leaky_relu(x, 0.1, inplace=True)  # noqa: E731
    base = None
    if net.config.global_skip:  # our compact builds: outputs = classical baseline + residual
        from vsstar.model.baseline import blend_middle, upscale

        mid = blend_middle(t_im1, t_im2, t_flow_f, t_flow_b)
        base = (upscale(mid, net.config.scale), upscale(t_im1, net.config.scale), upscale(t_im2, net.config.scale), mid)
    if net.flow_refiner is not None:
        t_flow_f = t_flow_f + unet(net.flow_refiner, torch.cat((t_flow_f, t_im1, t_im2), 1))
        t_flow_b = t_flow_b + unet(net.flow_refiner, torch.cat((t_flow_b, t_im2, t_im1), 1))
    scale = net.config.scale
    result_l, result_h1, result_ht, result_h2 = [], [], [], []
    aux_H1, H1 = rbpn(net.sr, t_im1, [t_im2], [t_flow_f])
    aux_H2, H2 = rbpn(net.sr, t_im2, [t_im1], [t_flow_b])
    L1 = stack(net.down, H1)
    L2 = stack(net.down, H2)
    motion_feat0 = conv(net.motion_head, torch.cat((t_flow_f, t_flow_b), 1))
    M = stack(net.motion, motion_feat0)
    motion_feat1 = conv(net.motion_head, torch.cat((t_flow_f / 2.0, t_flow_b / 2.0), 1))
    M_half = stack(net.motion, motion_feat1)
    Ht = stack(net.interp, torch.cat((L1, L2, M), 1))
    M_up = F.interpolate(M, scale_factor=scale, mode="bilinear", align_corners=True)
    t_hr = net.t_hr
    Ht = Ht + relu_bp(Ht - conv(t_hr.tail, pyramid(t_hr.pyramid, conv(t_hr.reduce, torch.cat((H1, H2, M_up), 1)))))
    L = stack(net.down, Ht)
    L = L + relu_bp(L - stack(net.t_lr, torch.cat((L1, L2, M), 1)))
    aux_Ht = conv(net.rec_h, Ht)
    aux_L = conv(net.rec_l, L)
    result_l.append(aux_L)
    result_h1.append(aux_H1)
    result_ht.append(aux_Ht)
    result_h2.append(aux_H2)
    backward1 = torch.cat((L1, L, M_half), 1)
    H_b = stack(net.up_b, backward1)
    H1 = H1 + relu_bp(H1 - H_b)
    L1 = L1 + relu_bp(L1 - stack(net.down, H_b))
    forwardd2 = torch.cat((L, L2, M_half), 1)
    H_f = stack(net.up_f, forwardd2)
    H2 = H2 + relu_bp(H2 - H_f)
    L2 = L2 + relu_bp(L2 - stack(net.down, H_f))
    forwardd = torch.cat((L1, L, M_half), 1)
    H_t_f = stack(net.up_f, forwardd)
    Ht = Ht + relu_bp(Ht - H_t_f)
    L = L + relu_bp(L - stack(net.down, H_t_f))
    backward = torch.cat((L, L2, M_half), 1)
    H_t_b = stack(net.up_b, backward)
    Ht = Ht + relu_bp(Ht - H_t_b)
    L = L + relu_bp(L - stack(net.down, H_t_b))
    output_ht = conv(net.rec_h, Ht)
    output_h1 = conv(net.rec_h, H1)
    output_h2 = conv(net.rec_h, H2)
    output_l = conv(net.rec_l, L)
    result_l.append(output_l)
    result_h1.append(output_h1)
    result_ht.append(output_ht)
    result_h2.append(output_h2)
    if base is not None:
        return tuple(o + b for o, b in zip((output_ht, output_h1, output_h2, output_l), base))
    return output_ht, output_h1, output_h2, output_l


# ----------------------------------------------------------------------------------------- child
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Reset the peak-RSS mark (Linux clear_refs 5) so it covers the forward passes only; returns RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    now = _status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mb() -> float:
    """Peak RSS since _reset_peak_rss (VmHWM), or the process-lifetime ru_maxrss where that is unavailable."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(spec: dict) -> dict:
    """Run one case and return its measurements (the outputs go to spec['out'] for comparison)."""
    import torch

    from vsstar.model import StarConfig, StarNet, exact_float32

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    cfg = StarConfig(**{**spec["config"], "fr_widths": tuple(spec["config"]["fr_widths"])})
    net = StarNet(cfg).eval()
    h, w = spec["size"]
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g),
              0.1 * torch.randn(1, 2, h, w, generator=g), 0.1 * torch.randn(1, 2, h, w, generator=g)]
    original = spec["mode"] == "original"
    channels_last = spec["channels_last"] and not original
    net = net.to(device)
    inputs = [t.to(device) for t in inputs]
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        inputs = [t.contiguous(memory_format=torch.channels_last) for t in inputs]
    net.batch_frames = spec["batch_frames"]
    run = (lambda *x: original_forward(net, *x)) if original else net
    if spec["compile"] and not original:
        run = torch.compile(net)
    dtype = {"fp32": None, "tf32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = spec.get("cudnn_benchmark", False)
    # fp32 is exact float32 (vsstar's float32 path; the authors' GPUs had no TF32); "tf32" is torch's CUDA
    # default, which lets cuDNN round float32 convolutions to TF32.
    exact = exact_float32() if cuda and spec["dtype"] == "fp32" else contextlib.nullcontext()

    def once():
        ctx = torch.no_grad() if original else torch.inference_mode()
        with ctx, exact, torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = run(*inputs)
        if cuda:
            torch.cuda.synchronize()
        return out

    rss_before = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    walls, cpus = [], []
    for i in range(spec["warmup"] + spec["repeat"]):
        c0, t0 = time.process_time(), time.perf_counter()
        out = once()
        t1, c1 = time.perf_counter(), time.process_time()
        if i >= spec["warmup"]:
            walls.append(t1 - t0)
            cpus.append(c1 - c0)
        if i < spec["warmup"] + spec["repeat"] - 1:
            del out
    result = {"wall_ms": [1e3 * x for x in walls], "cpu_s": cpus,
              "rss_model_mb": rss_before, "rss_peak_mb": _peak_rss_mb(),
              "params": sum(p.numel() for p in net.parameters())}
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_forward_mb"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    if spec.get("profile"):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            del out
            out = once()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        result["profile"] = prof.key_averages().table(sort_by=key, row_limit=spec["profile"], max_name_column_width=60)
    torch.save([o.float().cpu().contiguous() for o in out], spec["out"])
    return result


def _run_case(spec: dict, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"case {spec['mode']} {spec['size']} {spec['dtype']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _max_rel_diff(a_path: str, b_path: str) -> float:
    import torch

    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item() for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="StarNet forward benchmark (ms per pair, peak memory)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="official")
    ap.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    ap.add_argument("--flow-refine", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--sizes", default="64x112", help="LR sizes HxW, comma separated")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    ap.add_argument("--dtypes", default="fp32", help="fp32,fp16,bf16 (autocast; the latter two need CUDA)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(net)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per case (the minimum is reported)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 0 on CPU, 2 on CUDA)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all cases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--batch-frames", action=argparse.BooleanOptionalAction, default=True,
                    help="both frames through Net_S as one batch")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the original-style inference (fp32) for the ratio")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--profile", type=int, default=0, help="print the N most expensive ops of one pass per case")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(_child(json.loads(args._child))))
        return 0

    from vsstar.model import StarConfig

    cfg = StarConfig(scale=args.scale, flow_refine=args.flow_refine, **PRESETS[args.preset]).to_dict()
    cuda = args.device.startswith("cuda")
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 0)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("fp32", "tf32", "fp16", "bf16"):
            ap.error(f"--dtypes: unknown {d!r}")
        if d != "fp32" and not cuda:
            ap.error("--dtypes tf32/fp16/bf16 need --device cuda")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_model_")
    base = dict(config=cfg, device=args.device, threads=args.threads, repeat=args.repeat, warmup=warmup,
                channels_last=args.channels_last, batch_frames=args.batch_frames,
                cudnn_benchmark=args.cudnn_benchmark, profile=args.profile)
    print(f"StarNet {args.preset} x{args.scale} FR={args.flow_refine} on {args.device}, {args.threads} threads, "
          f"torch {__import__('torch').__version__}; repeat={args.repeat} warmup={warmup} rounds={args.rounds}")
    results = []
    for size in sizes:
        cases = []
        if args.baseline:
            cases.append(dict(mode="original", dtype="fp32", compile=False))
        cases += [dict(mode="vsstar", dtype=d, compile=False) for d in dtypes]
        if args.compile:
            cases += [dict(mode="vsstar", dtype=d, compile=True) for d in dtypes]
        merged: dict[int, dict] = {}
        for r in range(args.rounds):
            order = list(range(len(cases)))
            if r % 2:
                order.reverse()  # alternate who goes first: the machine's load drifts
            for i in order:
                spec = dict(base, size=size, out=os.path.join(tmp, f"{size[0]}x{size[1]}_{i}.pt"), **cases[i])
                res = _run_case(spec, args.timeout)
                if i in merged:
                    for k in ("wall_ms", "cpu_s"):
                        merged[i][k] += res[k]
                    for k in ("rss_peak_mb", "cuda_peak_mb", "cuda_forward_mb"):
                        if k in res:
                            merged[i][k] = max(merged[i][k], res[k])
                else:
                    merged[i] = dict(res, **cases[i], size=size, out=spec["out"])
        rows = [merged[i] for i in range(len(cases))]
        ref32 = next((r for r in rows if r["mode"] == "vsstar" and r["dtype"] == "fp32" and not r["compile"]), None)
        orig = rows[0] if args.baseline else None
        print(f"\nLR {size[0]}x{size[1]} (HR {size[0] * args.scale}x{size[1] * args.scale}), "
              f"{rows[0]['params']:,} parameters")
        mem_key = "cuda_peak_mb" if cuda else "rss_peak_mb"
        print(f"{'case':28s} {'ms/pair min':>12s} {'median':>9s} {'cpu s':>7s} {'peak MB':>9s} {'speed-up':>9s} "
              f"{'mem ratio':>9s} {'max rel diff':>13s}")
        for row in rows:
            name = f"{row['mode']} {row['dtype']}" + (" compile" if row["compile"] else "")
            wall = sorted(row["wall_ms"])
            speed = mem = diff = ""
            if orig is not None and row is not orig:
                speed = f"{min(orig['wall_ms']) / wall[0]:.2f}x"
                mem = f"{row[mem_key] / orig[mem_key]:.2f}"
                diff = f"{_max_rel_diff(row['out'], orig['out']):.1e}"
            elif orig is None and ref32 is not None and row is not ref32:
                diff = f"{_max_rel_diff(row['out'], ref32['out']):.1e}"
            print(f"{name:28s} {wall[0]:12.0f} {wall[len(wall) // 2]:9.0f} {min(row['cpu_s']):7.1f} "
                  f"{row[mem_key]:9.0f} {speed:>9s} {mem:>9s} {diff:>13s}")
            row["peak_mb"] = row[mem_key]
        for row in rows:
            if row.get("profile"):
                name = f"{row['mode']} {row['dtype']}" + (" compile" if row["compile"] else "")
                print(f"\nprofile of one pass, {name}:\n{row.pop('profile')}")
        if orig is not None:
            print("(speed-up and memory vs the original-style run; max rel diff = max|a-b| / max|original|)")
        elif ref32 is not None:
            print("(max rel diff vs vsstar fp32)")
        results += rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
