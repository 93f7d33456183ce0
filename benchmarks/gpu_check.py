#!/usr/bin/env python3
"""Every CUDA check in one run: the CUDA tests, then the GPU measurements, into one folder.

GPU time is scarce, so this is prepared and tried on the CPU (``--quick``) and run on a GPU machine in one go:

    python benchmarks/gpu_check.py pack .gpu                      # here: copy what it reads from ../shared
    python benchmarks/gpu_check.py run OUT --shared .gpu/shared   # there: about 5 minutes on an H100
    python benchmarks/gpu_check.py run OUT --quick --device cpu   # a CPU try of the same script, tiny sizes

Sections (``--sections``; each in its own process with a time limit, a failure is recorded and the rest go on):

* ``env``: GPU, driver, torch / CUDA / Triton / CuPy / numba versions.
* ``tests``: the test files with CUDA paths (Triton flow, CUDA graphs, autocast, pinned buffers, DLPack, tiling
  after out-of-memory, device placement, mixed-precision training); skips are listed with their reasons.
* ``flow``: ``bench_flow.py`` at 135x240 and 270x480, batch 1 and 8, CUDA graphs vs eager launches, beside the
  documented C++ time and this project's sequential float64 port timed on this machine's CPU in the same run.
* ``flow_accuracy``: the CUDA flow against the C++ reference flows (../shared/reference/flow), per direction.
* ``network``: ``bench_model.py``, the paper's STAR x4 with flow refinement at LR 144x180 and 180x320 in fp32,
  fp16 and bf16, beside the original-style inference; ``network_compile``: fp32 and fp16 at 180x320 with and
  without ``torch.compile``.
* ``drift``: ``bench_cuda.py drift``, Y-PSNR on carphone per precision.
* ``pipeline``: ``bench_cuda.py pipeline``, the engine from 8-bit host frames to 8-bit host frames.
* ``train`` (only with ``--train-steps N`` or ``--train-plan FILE``): ``training.train`` on the device (autocast,
  larger batch), then the export of its last step into OUT. A plan (``training/plans/*.json``) trains several
  models at once on the one device; every run plans its schedule to end within the section's time
  (``--time-budget``), so what comes back is the end of a schedule, not a cut.

OUT receives at most a handful of files (the GPU machine returns few): ``summary.md`` (every table, with each
section's status and time), ``log.txt`` (every section's full output), ``results.json`` and, after ``train``,
the weights and the training report.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("env", "tests", "flow", "flow_accuracy", "network", "drift", "pipeline", "network_compile", "train")
#: Test files with CUDA paths; their CPU tests run too (cheap), so a CUDA fix that breaks the CPU shows.
CUDA_TESTS = ("tests/test_flow_api.py", "tests/test_flow_cuda_graphs.py", "tests/test_flow_triton.py",
              "tests/test_model_devices.py", "tests/test_engine.py", "tests/test_vs_devices.py",
              "tests/test_training_run.py::test_amp_training_on_cuda")
#: bench_model.py per section: its own options, and the sizes/precisions of a full (not --quick) run. The
#: compiled cases are a section of their own: compilation takes minutes and may fail without taking the plain
#: figures along.
NETWORK_CASES = {
    "network": (["--cudnn-benchmark", "--profile", "8"],
                ["--sizes", "144x180,180x320", "--dtypes", "fp32,tf32,fp16,bf16", "--repeat", "3"]),
    "network_compile": (["--compile", "--no-baseline"],
                        ["--sizes", "180x320", "--dtypes", "fp32,fp16", "--repeat", "3"]),
}
#: Each section's time limit in seconds (with --budget, also no more than the budget leaves).
SECTION_LIMITS = {"env": 60, "tests": 240, "flow": 150, "flow_accuracy": 90, "network": 150, "network_compile": 180,
                  "drift": 90, "pipeline": 180, "train": 0}
#: What the run reads from ../shared (pack copies it; --shared points the run at the copy).
PACK = ("reference/flow", "reference/starnet/star_v4_small_x4.pt", "data/clips", "data/sintel")


# ------------------------------------------------------------------------------------------------ pack
def pack(dest: Path, shared: Path, parts: tuple[str, ...] = PACK) -> None:
    """Copy the parts of ../shared the run reads to dest/shared (carry dest to the GPU machine)."""
    if not shared.is_dir():
        raise SystemExit(f"--from {shared}: not a folder")
    unknown = set(parts) - set(PACK)
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(sorted(unknown))} (choose from {', '.join(PACK)})")
    out = dest / "shared"
    total = 0
    for rel in parts:
        src, dst = shared / rel, out / rel
        if not src.exists():
            print(f"skipped {rel}: not in {shared}")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            # The float64 reference flows are for the CPU's exactness tests, not for the GPU's bar.
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*_f64.npy"))
            total += sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
        else:
            shutil.copy2(src, dst)
            total += dst.stat().st_size
    print(f"packed {total / 2**20:.1f} MiB into {out}; add '/{dest.name}/' to .git/info/exclude and carry it "
          "(the working tree and the carried folders travel within 64 MiB together)")


# ------------------------------------------------------------------------------------------------- run
class Runner:
    """Runs the sections, collects their output into summary.md, log.txt and results.json under out."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out, self.args = out, args
        self.summary: list[str] = []
        self.results: dict = {"device": args.device, "quick": args.quick, "sections": {}}
        self.log = open(out / "log.txt", "a", encoding="utf-8")
        self.t_start = time.monotonic()
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                              if p), PYTHONUNBUFFERED="1")

    def left(self) -> float:
        """Seconds left of --budget (infinite without one)."""
        if not self.args.budget:
            return float("inf")
        return self.args.budget - (time.monotonic() - self.t_start)

    def window(self, timeout: float, reserve: float = 0.0, grace: float = 0.0) -> float:
        """The seconds a command may run: at most `timeout`, and no more than --budget leaves after `reserve`
        (kept for the sections after it) and `grace` (its wrap-up after SIGTERM)."""
        return min(timeout, self.left() - reserve - grace)

    def command(self, name: str, cmd: list[str], timeout: float, tables: bool = True, code_block: bool = False,
                env: dict | None = None, reserve: float = 0.0, grace: float = 0.0) -> str:
        """Run one section's command; its output goes to the log and its tables to the summary.

        The command gets at most `timeout` seconds, and no more than what --budget leaves after `reserve`
        (kept for the sections after it). At its limit it gets SIGTERM and `grace` seconds to wrap up (the
        trainer saves its last step), then SIGKILL."""
        return self.commands({name: cmd}, timeout, tables, code_block, env, reserve, grace)[name]

    def commands(self, cmds: dict[str, list[str]], timeout: float, tables: bool = True, code_block: bool = False,
                 env: dict | None = None, reserve: float = 0.0, grace: float = 0.0) -> dict[str, str]:
        """:meth:`command` for several commands at once (one device shared by several training runs), each
        reported as its own section; all get the same limit."""
        timeout = self.window(timeout, reserve, grace)
        t0 = time.monotonic()
        outcome: dict[str, tuple[str, str, float]] = {}
        if timeout < 10:
            for name in cmds:
                outcome[name] = ("skipped (budget spent)", "", 0.0)
                self.log.write(f"\n===== {name}: skipped, {self.left():.0f} s of the budget left\n")
        else:
            running = {}
            for name, cmd in cmds.items():
                self.log.write(f"\n===== {name} (limit {timeout:.0f} s): {' '.join(cmd)}\n")
                buf = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
                running[name] = (buf, subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=buf,
                                                       stderr=subprocess.STDOUT, text=True))
            self.log.flush()
            for name, (buf, proc) in running.items():
                try:
                    rc = proc.wait(timeout=max(0.0, t0 + timeout - time.monotonic()))
                    status = "ok" if rc == 0 else f"exit {rc}"
                except subprocess.TimeoutExpired:
                    status = f"timed out after {timeout:.0f} s"
                    for other in running.values():  # all share the limit: stop every one still running
                        if other[1].poll() is None:
                            other[1].send_signal(signal.SIGTERM if grace else signal.SIGKILL)
                    try:
                        proc.wait(timeout=grace or 10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                buf.seek(0)
                outcome[name] = (status, buf.read(), time.monotonic() - t0)
                buf.close()
        texts = {}
        for name, (status, text, dt) in outcome.items():
            texts[name] = text
            self._record(name, status, text, dt, tables, code_block)
        return texts

    def _record(self, name: str, status: str, text: str, dt: float, tables: bool, code_block: bool) -> None:
        self.log.write(text + f"\n===== {name}: {status} in {dt:.1f} s\n")
        self.log.flush()
        self.results["sections"][name] = {"status": status, "seconds": round(dt, 1)}
        self.summary.append(f"\n## {name}: {status} ({dt:.0f} s)\n")
        if code_block:
            self.summary.append("```\n" + "\n".join(l for l in text.splitlines() if not l.startswith("Warning"))
                                + "\n```")
        elif tables:
            keep = [l for l in text.splitlines() if l.startswith("|") or l.startswith("Y-PSNR") or
                    l.startswith("Whole pipeline") or l.startswith("#") and not l.startswith("##")]
            self.summary.append("\n".join(keep) if keep else "(no table; see log.txt)")
        if status != "ok":
            tail = "\n".join(text.strip().splitlines()[-15:])
            self.summary.append(f"\nlast lines:\n```\n{tail}\n```")
        self.write()

    def write(self) -> None:
        (self.out / "summary.md").write_text(f"# vsstar GPU check ({self.results.get('gpu', self.args.device)})\n"
                                             + "\n".join(self.summary) + "\n")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def run(out: Path, args: argparse.Namespace) -> int:
    sections = (args.sections.split(",") if args.sections
                else [s for s in SECTIONS if s != "train" or args.train_steps or args.train_plan])
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    if "train" in sections:
        train_jobs(args)  # a bad plan is refused now, not after the other sections
    out.mkdir(parents=True, exist_ok=True)
    if args.shared:
        link = ROOT.parent / "shared"
        if not link.exists():
            # The tests and benchmarks read ../shared beside the checkout.
            link.symlink_to(Path(args.shared).resolve(), target_is_directory=True)
    r = Runner(out, args)
    q, dev = args.quick, args.device
    tmp = Path(args.work or (out.parent / f".{out.name}-work"))
    tmp.mkdir(parents=True, exist_ok=True)
    # Time kept back for training while the checks run (their limits shrink to fit the budget).
    reserve = args.train_min + 60 if "train" in sections else 5
    for name in sections:
        cap = SECTION_LIMITS[name]
        if name == "env":
            text = r.command("env", _py("-c", ENV_SCRIPT), cap, tables=False, code_block=True, reserve=reserve)
            gpu = [l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("gpu:")]
            r.results["gpu"] = gpu[0] if gpu else "no CUDA device"
            r.results["machine"] = platform.node()
        elif name == "tests":
            files = (args.tests.split() if args.tests else
                     [f for f in CUDA_TESTS if (ROOT / f.split("::")[0]).is_file()])
            cmd = _py("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files)
            r.command("tests", cmd, cap, tables=False, code_block=False, reserve=reserve)
            r.summary.append("\n".join(l for l in open(out / "log.txt", encoding="utf-8").read()
                                       .split("===== tests")[-2].splitlines()
                                       if l.startswith(("SKIPPED", "FAILED", "ERROR", "=", "PASSED"))))
            r.write()
        elif name == "flow":
            cmd = _py("benchmarks/bench_flow.py", "--device", dev, "--baseline", "--repeats", "1" if q else "3",
                      "--sizes", "64x112" if q else "135x240,270x480", "--batch", "1,2" if q else "1,8")
            if dev.startswith("cuda"):
                cmd.append("--eager")
            r.command("flow", cmd, cap, code_block=True, reserve=reserve)
        elif name == "flow_accuracy":
            r.command("flow_accuracy", _py("-c", ACCURACY_SCRIPT, dev, "1" if q else "0"), cap, reserve=reserve)
        elif name in NETWORK_CASES:
            extra, full = NETWORK_CASES[name]
            cmd = _py("benchmarks/bench_model.py", "--device", dev, *extra, "--json", str(tmp / f"{name}.json"))
            cmd += ["--sizes", "32x48", "--dtypes", "fp32", "--repeat", "1"] if q else full
            r.command(name, cmd, cap, code_block=True, reserve=reserve)
            _attach_json(r, name, tmp / f"{name}.json")
        elif name in ("drift", "pipeline"):
            cmd = _py("benchmarks/bench_cuda.py", name, "--device", dev, "--json", str(tmp / f"{name}.json"))
            if q:
                cmd.append("--quick")
            r.command(name, cmd, cap, reserve=reserve)
            _attach_json(r, name, tmp / f"{name}.json")
        elif name == "train":
            train(r, tmp, args)
    r.write()
    r.log.close()
    failed = [k for k, v in r.results["sections"].items() if v["status"] != "ok"]
    print(f"{out / 'summary.md'}: {len(r.results['sections'])} sections, "
          + (f"not ok: {', '.join(failed)}" if failed else "all ok"))
    return 1 if failed else 0


def _attach_json(r: Runner, name: str, path: Path) -> None:
    if path.is_file():
        try:
            r.results["sections"][name]["figures"] = json.loads(path.read_text())
        except ValueError:
            pass
        r.write()


def train_jobs(args: argparse.Namespace) -> list[dict]:
    """The training runs of the train section: --train-plan's jobs, or one from the --train-* options.

    A plan is JSON: ``{"jobs": [{"name": ..., "scale": 2|4|8, "preset": ..., "train": [training.train options],
    "export": [training.export options]}, ...]}``; a job's options come after the section's own, so they win.
    Each returned job also names its sections and the prefix of its report files in OUT: ``train`` /
    ``train_export`` / ``train_*`` for the single run, ``train_NAME`` / ``export_NAME`` / ``NAME_*`` for a plan's."""
    if not args.train_plan:
        return [{"name": f"star_st_x{args.train_scale}_{args.train_preset}", "scale": args.train_scale,
                 "preset": args.train_preset, "train": args.train_args.split(), "export": [],
                 "section": "train", "export_section": "train_export", "files": "train"}]
    try:
        plan = json.loads(Path(args.train_plan).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--train-plan: cannot read {args.train_plan}: {exc}") from None
    jobs = plan.get("jobs") if isinstance(plan, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise SystemExit(f"--train-plan: {args.train_plan} has no 'jobs' list")
    names = set()
    for i, job in enumerate(jobs):
        ok = (isinstance(job, dict) and isinstance(job.get("name"), str)
              and job["name"].replace("_", "").isalnum() and job["name"] not in names
              and job.get("scale") in (2, 4, 8) and isinstance(job.get("preset"), str)
              and all(isinstance(job.get(k, []), list) and all(isinstance(a, str) for a in job.get(k, []))
                      for k in ("train", "export")))
        if not ok:
            raise SystemExit(f"--train-plan: job {i} needs a unique name (letters, digits, _), scale 2/4/8, a "
                             f"preset and 'train'/'export' lists of strings, got {job!r}")
        names.add(job["name"])
    return [dict(job, train=list(job.get("train", [])), export=list(job.get("export", [])),
                 section=f"train_{job['name']}", export_section=f"export_{job['name']}", files=job["name"])
            for job in jobs]


def train(r: Runner, tmp: Path, args: argparse.Namespace) -> None:
    """training.train on the device (every job of --train-plan at once), then each last step exported into OUT.

    Each run plans its schedule to end within the section's window (--time-budget); SIGTERM at the window's
    end remains the fallback (the trainer saves its step)."""
    shared = Path(args.train_data)
    q = args.quick
    jobs = train_jobs(args)
    reserve, grace = 45 * len(jobs), 40
    window = r.window(args.train_timeout, reserve, grace)
    cmds, run_dirs = {}, {}
    for job in jobs:
        run_dir = run_dirs[job["name"]] = tmp / "train" / job["name"]
        cmd = _py("-m", "training.train", "--run-dir", str(run_dir), "--scale", str(job["scale"]),
                  "--preset", job["preset"], "--device", args.device, "--steps", str(args.train_steps or 100000),
                  "--data", str(shared / "clips"), "--exclude", "carphone_pristine",
                  "--val", str(shared / "clips" / "carphone_pristine.mp4"), "--no-progress",
                  "--flow-cache", str(tmp / "train" / "flowcache"),
                  "--optimizer", "adam", "--lr", "5e-4", "--out-lr-scale", "0.05", "--schedule", "cosine",
                  "--warmup", "30", "--ckpt-every", "200", "--log-every", "20",
                  "--val-every", str(max(1, args.train_steps // 4) if args.train_steps else 500), "--val-pairs", "12",
                  "--time-budget", str(max(10.0, window - 15)))
        if not q:
            threads = max(1, min(8, (os.cpu_count() or 1) // len(jobs)))
            cmd += ["--data", str(shared / "sintel"), "--stills", "2", "--batch", str(args.train_batch),
                    "--crop", str(args.train_crop), "--stride", "1", "--extra-sizes", "480",
                    "--loader-threads", str(threads), "--threads", str(threads)]
            if args.device.startswith("cuda"):
                # The flows of the training pairs are solved on the GPU too (a fresh machine has no cache).
                cmd += ["--amp", "on", "--flow-device", args.device]
        else:
            cmd += ["--batch", "2", "--crop", "16", "--stride", "8", "--max-side", "160", "--threads", "2",
                    "--loader-threads", "2", "--budget-probe", "4", "--warmup", "4"]
        cmds[job["section"]] = cmd + job["train"]
    # SIGTERM at the limit: the trainer stops after its step, saves it and writes its report (export below).
    texts = r.commands(cmds, window, tables=False, grace=grace)
    for job in jobs:
        name, run_dir = job["name"], run_dirs[job["name"]]
        lines = texts[job["section"]].splitlines()
        steps = [l for l in lines if "steps/s" in l and "time budget" not in l]
        r.summary.append(f"{name}:\n```\n" + "\n".join([l for l in lines if "time budget" in l] + steps[-2:]
                                                       + [l for l in lines if "val step" in l][-3:]) + "\n```")
        last = run_dir / "last.pt"
        if last.is_file():
            out = r.out / f"{name}.safetensors"
            cmd = _py("-m", "training.export", str(last), str(out), "--half", *job["export"])
            r.command(job["export_section"], cmd, 60, tables=False)
            for f in ("report.md", "train.log"):
                if (run_dir / f).is_file():
                    shutil.copy2(run_dir / f, r.out / f"{job['files']}_{f}")
    r.write()


ENV_SCRIPT = r"""
import importlib, platform, subprocess, torch
print("python:", platform.python_version(), "torch:", torch.__version__, "cuda:", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", torch.cuda.get_device_name(0), f"({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs)")
    print("bf16 supported:", torch.cuda.is_bf16_supported())
for m in ("triton", "cupy", "numba", "cv2", "onnxruntime", "vapoursynth", "openvino"):
    try:
        print(f"{m}:", getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as exc:
        print(f"{m}: not available ({type(exc).__name__})")
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv"], capture_output=True, text=True, timeout=30).stdout)
except Exception as exc:
    print("nvidia-smi:", type(exc).__name__)
"""

ACCURACY_SCRIPT = r"""
import sys
sys.path.insert(0, "tests")
import numpy as np, torch
from vsstar.flow import coarse2fine_flow_batch
from test_flow import _pair_names, check_accuracy
dev, quick = sys.argv[1], sys.argv[2] == "1"
names = _pair_names()[: 2 if quick else None]
rows = check_accuracy(lambda x, y: coarse2fine_flow_batch(x.to(dev), y.to(dev)).cpu(), names)
order = "red-black" if dev.startswith("cuda") else "raster"
print(f"Flow on {dev} (float32, {order} order, the default there) against the C++ reference flows, {len(rows)} directions")
print("| pair | direction | mean EPE px | p99 EPE px | warp PSNR vs reference dB |")
print("|---|---|---|---|---|")
for name, d, mean, p99, dpsnr in rows:
    print(f"| {name} | {d} | {mean:.4f} | {p99:.3f} | {dpsnr:+.3f} |")
means = [r[2] for r in rows]
print(f"| all | average | {np.mean(means):.4f} (bar <= 0.005) | {max(r[3] for r in rows):.3f} | "
      f"{min(r[4] for r in rows):+.3f} |")
# Small frames (a 44x36 LR carphone frame is what x4 validation feeds the flow): the same solver on the CPU in
# red-black order is the reference here, so only the device's arithmetic differs.
import torch.nn.functional as F
from test_flow import load_pair
d = load_pair(names[0])
big = torch.stack([torch.from_numpy(d[k]).permute(2, 0, 1).float() for k in ("im0", "im1")])
print("\n| frames | device vs CPU red-black, mean EPE px | max EPE px |")
print("|---|---|---|")
for h, w in ((36, 44), (24, 32), (72, 88)):
    x = F.interpolate(big, size=(h, w), mode="area")
    a, b = torch.cat([x[:1], x[1:]]), torch.cat([x[1:], x[:1]])
    ref = coarse2fine_flow_batch(a, b, ordering="redblack")
    got = coarse2fine_flow_batch(a.to(dev), b.to(dev)).cpu()
    e = (got - ref).pow(2).sum(1).sqrt()
    print(f"| {names[0]} at {w}x{h} | {float(e.mean()):.5f} | {float(e.max()):.4f} |")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="copy what the run reads from ../shared into DEST/shared")
    pk.add_argument("dest")
    pk.add_argument("--from", dest="src", default=str(ROOT.parent / "shared"))
    pk.add_argument("--parts", default=",".join(PACK),
                    help="what to copy (default: all of it; data/clips,data/sintel is what training reads, "
                         "8.6 MB)")
    rn = sub.add_parser("run", help="run the sections into OUT")
    rn.add_argument("out")
    rn.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    rn.add_argument("--quick", action="store_true", help="tiny sizes, to try the script on a CPU")
    rn.add_argument("--shared", default=None, help="a packed copy of ../shared (linked as ../shared if absent)")
    rn.add_argument("--sections", default=None, help=f"comma-separated subset of {', '.join(SECTIONS)}")
    rn.add_argument("--work", default=None, help="scratch folder (default: .OUT-work beside OUT)")
    rn.add_argument("--tests", default=None, help="tests section: pytest arguments instead of the CUDA test files")
    rn.add_argument("--train-steps", type=int, default=0,
                    help="train section: at most this many optimiser steps (0: no training without --train-plan; "
                         "with one, as many as the time allows)")
    rn.add_argument("--train-scale", type=int, default=4, choices=(2, 4, 8))
    rn.add_argument("--train-preset", default="large", help="training/presets.py name (large: the x4 quality tier)")
    rn.add_argument("--train-batch", type=int, default=32)
    rn.add_argument("--train-crop", type=int, default=40)
    rn.add_argument("--train-timeout", type=float, default=540,
                    help="train section's limit; at it the trainer gets SIGTERM and saves its last step")
    rn.add_argument("--train-min", type=float, default=120,
                    help="with --budget: seconds the checks leave for training")
    rn.add_argument("--budget", type=float, default=0,
                    help="seconds for the whole run (0: none); each section's limit shrinks to fit, so the "
                         "files are written before the GPU machine's own limit ends the command")
    rn.add_argument("--train-args", default="", help="more training.train options, as one string")
    rn.add_argument("--train-data", default=str(ROOT.parent / "shared" / "data"),
                    help="train section: the folder whose clips/ (carphone_pristine.mp4 validates, the rest trains) "
                         "and, without --quick, sintel/ it reads (default: ../shared/data)")
    rn.add_argument("--train-plan", default=None,
                    help="train section: a JSON plan of several training runs on the device at once "
                         "(training/plans/); each ends its schedule within the section's time")
    args = p.parse_args()
    if args.command == "pack":
        pack(Path(args.dest), Path(args.src), tuple(p for p in args.parts.split(",") if p))
        return 0
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return run(Path(args.out), args)


if __name__ == "__main__":
    sys.exit(main())
