"""Train a STARnet (paper objectives, compact presets) on any footage; resumable, DDP-capable.

    python -m training.train --run-dir runs/x4 --scale 4 --preset small --data ../shared/data/clips \
        --data ../shared/data/sintel --stills 2 --val ../shared/data/clips/carphone_pristine.mp4 --steps 4000

Multi-GPU / multi-machine: ``torchrun --nproc_per_node=N -m training.train ...`` (the batch is the global
batch, split over the processes). ``--resume`` continues a run exactly from its last checkpoint.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .amp import AMP_MODES, choose_amp
from .checkpoint import find_resume_checkpoint, load_checkpoint, load_net, rng_state, save_checkpoint, set_rng_state
from .losses import VGG19Features, perceptual_loss, star_loss

__all__ = ["build_parser", "main", "Trainer", "make_optimizer", "make_scheduler", "data_indices"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", required=True, help="folder for checkpoints, logs, TensorBoard and the report")
    g.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from a checkpoint (a path, or no value for RUN_DIR/last.pt)")
    g.add_argument("--steps", type=int, default=1000, help="total optimiser steps (sets the schedule)")
    g.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) at this step; resume later to go on to --steps")
    g.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="plan the schedule to end within this many seconds of the process's start (setup, flows "
                        "and validations included): after --budget-probe steps the measured rate fixes the step "
                        "count (never above --steps), so the last step is the end of a schedule, not a cut; "
                        "checkpoints keep the plan for --resume")
    g.add_argument("--budget-probe", type=int, default=20,
                   help="steps run before the plan is fixed, all but the first few timed (keep --warmup at least "
                        "this long so the fixed schedule has not started decaying yet)")
    g.add_argument("--batch", type=int, default=8, help="global batch (split over DDP processes)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="mixed precision: auto = float16 autocast + GradScaler on CUDA, bfloat16 autocast on a CPU "
                        "with native bfloat16 (AVX512_BF16 or AMX), else float32; on = the same but refused where "
                        "neither applies; off = float32")
    g.add_argument("--flow-device", default="cpu",
                   help="where missing training flows are computed: cpu (the exact raster order, default) or a "
                        "CUDA device (red-black order, cached under keys of its own)")
    g.add_argument("--loader-threads", type=int, default=0,
                   help="threads that prepare samples, the next batch while the device runs this one "
                        "(0: in the training thread)")
    g.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps (and at exit)")
    g.add_argument("--keep", type=int, default=3, help="periodic step_N.pt checkpoints to keep besides last/best")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar (log lines instead)")
    g = p.add_argument_group("model")
    g.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    g.add_argument("--preset", default="small", help="compact preset (training/presets.py) or 'official'")
    g.add_argument("--objective", default="STAR", choices=("STAR", "STAR-ST", "STAR-S", "STAR-T_LR", "STAR-T_HR"))
    g.add_argument("--config", default=None,
                   help="JSON object of StarConfig field overrides, e.g. '{\"feat\": 16}'")
    g.add_argument("--init", default=None, help="start from these weights (our safetensors or a checkpoint)")
    g.add_argument("--init-partial", action="store_true",
                   help="with --init: load only the tensors whose name and shape match (e.g. x4 weights into an "
                        "x8 build: the scale-dependent projection kernels keep their fresh initialisation)")
    g.add_argument("--freeze", default="",
                   help="comma-separated sub-networks of StarNet left as they are (e.g. 'sr' keeps Net_S of the "
                        "--init weights while the rest is fine-tuned)")
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", default=[],
                   help="video file, folder of videos / frame folders, or Vimeo-90K root (repeatable)")
    g.add_argument("--stills", type=int, default=0,
                   help="moving-still clips per scikit-image sample photo (0: none)")
    g.add_argument("--exclude", action="append", default=[], help="clip names to leave out of training")
    g.add_argument("--exclude-frames", action="append", default=[], metavar="NAME:FIRST-LAST",
                   help="leave frames FIRST..LAST (0-based, inclusive) of clip NAME out of training (repeatable)")
    g.add_argument("--max-side", type=int, default=640, help="downscale larger source frames to this side first")
    g.add_argument("--extra-sizes", default="",
                   help="comma-separated extra max sides: every video is also used reduced to these")
    g.add_argument("--stride", type=int, default=1, help="frames between triplet starts")
    g.add_argument("--gaps", default="2",
                   help="comma-separated frame gaps between the two inputs (a model with time input: e.g. 2,2,3,4 "
                        "trains t = 1/2, 1/3, 2/3, 1/4, 3/4; a gap listed twice gives twice the samples)")
    g.add_argument("--min-motion", type=float, default=0.5, help="skip triplets with less motion (8-bit MAD)")
    g.add_argument("--crop", type=int, default=32, help="LR crop size")
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--flow-cache", default=None, help="flow cache folder (default RUN_DIR/../flowcache)")
    g.add_argument("--precompute-only", action="store_true", help="fill the flow cache and exit")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="adamax", choices=("adamax", "adam", "adamw"))
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--betas", default="0.9,0.999")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--schedule", default="step", choices=("step", "cosine", "constant"))
    g.add_argument("--lr-steps", default="", help="comma-separated steps where the step schedule divides the lr")
    g.add_argument("--lr-gamma", type=float, default=0.1)
    g.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    g.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine floor as a fraction of --lr")
    g.add_argument("--cycle-start", type=int, default=0,
                   help="cosine: start a new cycle at this step (warm restart, e.g. when extending a run)")
    g.add_argument("--cycle-peak", type=float, default=1.0, help="cosine: peak of the new cycle, fraction of --lr")
    g.add_argument("--out-lr-scale", type=float, default=1.0,
                   help="learning-rate factor for the output convolutions (rec_h, rec_l, Net_S to_rgb)")
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm (0: off)")
    g.add_argument("--stage1-weight", type=float, default=0.4)
    g.add_argument("--vgg-weights", default=None, help="local VGG19 weights for the perceptual term")
    g.add_argument("--vgg-weight", type=float, default=0.1)
    g = p.add_argument_group("validation")
    g.add_argument("--val", default=None, help="held-out video or frame folder")
    g.add_argument("--val-every", type=int, default=200)
    g.add_argument("--val-pairs", type=int, default=12, help="pairs per validation (evenly spread)")
    g.add_argument("--val-frames", type=int, default=None, help="use only the first N frames of --val")
    g.add_argument("--val-range", default=None, metavar="FIRST-LAST",
                   help="validate on frames FIRST..LAST of --val only; training then leaves out just that "
                        "segment of the clip (instead of the whole clip)")
    return p


# ----------------------------------------------------------------------------- helpers
def param_groups(net, args) -> list[dict]:
    """The output convolutions (zero at init with global_skip) get --lr x --out-lr-scale: their inputs are
    large (std 5-30 at init), so a full-size step there moves the outputs far past the target."""
    out_ids = set()
    for name in ("rec_h", "rec_l"):
        m = getattr(net, name, None)
        if m is not None:
            out_ids |= {id(p) for p in m.parameters()}
    sr = getattr(net, "sr", None)
    if sr is not None and getattr(sr, "to_rgb", None) is not None:
        out_ids |= {id(p) for p in sr.to_rgb.parameters()}
    scale = getattr(args, "out_lr_scale", 1.0)
    params = [p for p in net.parameters() if p.requires_grad]  # --freeze leaves some out
    if scale == 1.0 or not out_ids:
        return [{"params": params}]
    rest = [p for p in params if id(p) not in out_ids]
    outs = [p for p in params if id(p) in out_ids]
    return [g for g in ({"params": rest}, {"params": outs, "lr": args.lr * scale}) if g["params"]]


def freeze(net, names: str) -> list[str]:
    """Stop the gradients of the named top-level sub-networks (--freeze); returns the names."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    children = dict(net.named_children())
    unknown = [n for n in wanted if n not in children]
    if unknown:
        raise ValueError(f"--freeze: {', '.join(unknown)} is not a sub-network of this model "
                         f"(choose from {', '.join(children)})")
    for n in wanted:
        children[n].requires_grad_(False)
    if wanted and not any(p.requires_grad for p in net.parameters()):
        raise ValueError("--freeze: nothing would be left to train")
    return wanted


def make_optimizer(params, args) -> torch.optim.Optimizer:
    betas = tuple(float(b) for b in str(args.betas).split(","))
    if len(betas) != 2:
        raise ValueError(f"betas: expected two comma-separated numbers, got {args.betas!r}")
    cls = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[args.optimizer]
    return cls(params, lr=args.lr, betas=betas, weight_decay=args.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, args) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then step (/gamma at --lr-steps), cosine (to --min-lr-ratio) or constant; stepped per step.

    The cosine's length is read from ``args.steps`` at every step, so a plan fixed later (--time-budget)
    applies from then on."""
    steps = sorted(int(s) for s in str(args.lr_steps).split(",") if s.strip())
    warm, kind, gamma, floor = args.warmup, args.schedule, args.lr_gamma, args.min_lr_ratio
    c0, peak = getattr(args, "cycle_start", 0), getattr(args, "cycle_peak", 1.0)

    def factor(step: int) -> float:
        total = args.steps
        f = 1.0
        if warm and step < warm:
            f = (step + 1) / warm
        if kind == "step":
            f *= gamma ** sum(step >= s for s in steps)
        elif kind == "cosine" and c0 and step >= c0:
            t = min(1.0, (step - c0) / max(1, total - c0))
            f = floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))
        elif kind == "cosine":
            end = c0 if c0 else total  # the first cycle ends where the next one starts
            t = min(1.0, max(0, step - warm) / max(1, end - warm))
            f *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def plan_steps(step: int, rate: float, seconds_left: float, limit: int, *, val_every: int = 0,
               val_seconds: float = 0.0, margin: float = 0.95) -> int:
    """The last step of a schedule that ends within ``seconds_left`` from ``step`` (--time-budget).

    rate: measured optimiser steps per second; every ``val_every`` steps a validation of ``val_seconds`` is
    added, and one more at the end; ``margin`` keeps a few percent for checkpoints and the report. Never above
    ``limit`` (--steps), never below ``step``."""
    if rate <= 0 or seconds_left <= 0:
        return step
    per_step = 1.0 / rate + (val_seconds / val_every if val_every else 0.0)
    room = seconds_left * margin - val_seconds
    return max(step, min(limit, step + int(room / per_step)))


def data_indices(step: int, batch: int, n: int, seed: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """(epoch, index) of the samples of ``step`` that process ``rank`` of ``world`` trains on.

    The data order is a fixed function of (seed, epoch): a seeded permutation per epoch, consumed
    ``batch`` samples per step. It does not depend on the history, so resuming and sharding are exact.
    """
    if batch % world:
        raise ValueError(f"batch: the global batch {batch} must be divisible by the {world} processes")
    local = batch // world
    out = []
    for j in range(step * batch + rank * local, step * batch + (rank + 1) * local):
        epoch, pos = divmod(j, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.append((epoch, int(perm[pos])))
    return out


def parse_gaps(text: str) -> tuple[int, ...]:
    """--gaps "2,2,3,4" -> (2, 2, 3, 4), checked."""
    from .data import check_gaps
    try:
        gaps = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"gaps must be comma-separated integers >= 2, got {text!r}") from None
    return check_gaps(gaps)


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def load_clips(args, log) -> list:
    """Every training clip named by --data / --stills (the validation clip or segment, --exclude and
    --exclude-frames left out)."""
    from .data import default_stills, drop_frames, parse_frame_range, scan_folder
    from .data import _limit_size  # noqa: PLC2701 - internal, same package
    exclude = list(args.exclude)
    cuts: dict[str, list[tuple[int, int]]] = {}  # clip name -> frame ranges to leave out
    for spec in getattr(args, "exclude_frames", None) or []:
        name, sep, rng = str(spec).rpartition(":")
        if not sep or not name:
            raise ValueError(f"exclude-frames: expected NAME:FIRST-LAST, got {spec!r}")
        cuts.setdefault(name, []).append(parse_frame_range(rng, "exclude-frames"))
    required = set(cuts)  # an explicit exclusion that matches no clip is a typo that would leak frames
    if args.val and getattr(args, "val_range", None):
        cuts.setdefault(Path(args.val).stem, []).append(parse_frame_range(args.val_range, "val-range"))
    elif args.val:
        exclude.append(Path(args.val).stem)
        exclude.append(Path(args.val).name)
    clips = []
    for d in args.data:
        got = scan_folder(d, args.max_side, exclude)
        clips += got
        log(f"data {d}: {len(got)} clip(s), {sum(len(c.frames) for c in got)} frames")
    for name, ranges in cuts.items():
        hits = [c for c in clips if c.name == name]
        if not hits and name in required:
            raise ValueError(f"exclude-frames: no training clip is named {name!r} "
                             f"(clips: {', '.join(c.name for c in clips) or 'none'})")
        for c in hits:
            parts = drop_frames(c, ranges)
            i = next(k for k, x in enumerate(clips) if x is c)  # identity: Clip equality compares arrays
            clips[i:i + 1] = parts
            log(f"clip {name}: left out frames {', '.join(f'{a}-{b}' for a, b in sorted(ranges))}; "
                f"{sum(len(p.frames) for p in parts)} of {len(c.frames)} frames kept")
    extra = [int(s) for s in str(args.extra_sizes).split(",") if s.strip()]
    if extra:
        from .data import Clip
        base = list(clips)
        for side in extra:
            for c in base:
                if max(c.frames[0].shape[:2]) > side:
                    clips.append(Clip(f"{c.name}@{side}", [_limit_size(f, side) for f in c.frames]))
    if args.stills:
        st = default_stills(clips_per_image=args.stills, seed=args.seed)
        clips += st
        log(f"stills: {len(st)} moving-still clips")
    if not clips:
        raise ValueError("data: nothing to train on (give --data and/or --stills)")
    return clips


def build_config(args):
    from vsstar.model.config import StarConfig
    from .presets import preset_config
    overrides = json.loads(args.config) if args.config else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"config: expected a JSON object, got {args.config!r}")
    overrides.setdefault("objective", args.objective)
    if args.preset == "official":
        return StarConfig.official(args.scale).replace(**overrides)
    return preset_config(args.preset, args.scale, **overrides)


def fit_init(net: torch.nn.Module, weights: dict[str, torch.Tensor], partial: bool, path: str) -> list[str]:
    """Load --init ``weights`` (a state dict read from ``path``) into ``net``; returns the names of the tensors
    left at their fresh initialisation. The weights must hold net's architecture, unless ``partial``
    (--init-partial) asks for the tensors that match in name and shape only (e.g. x4 weights into an x8 model)."""
    if not partial:
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"init: {path!r} does not fit this run's model ({first[:200]}); pass weights of "
                             "the same preset / config, or --init-partial") from exc
        return []
    own = net.state_dict()
    match = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not match:
        raise ValueError(f"init: no tensor of {path!r} matches this model in name and shape")
    net.load_state_dict(match, strict=False)
    return [k for k in own if k not in match]


def process_start() -> float:
    """This process's start on the time.monotonic() clock: --time-budget counts from it, so the interpreter's
    start-up and the imports (seconds on a loaded machine) are inside the budget, as its help says."""
    import psutil

    return time.monotonic() - max(0.0, time.time() - psutil.Process().create_time())


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """One training run (one process of a DDP group)."""

    def __init__(self, args: argparse.Namespace, started: float | None = None) -> None:
        self.args = args
        self.t_created = time.monotonic() if started is None else started  # --time-budget counts from here
        self.rank, self.world, local_rank = _dist_info()
        self.main = self.rank == 0
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.device:
            self.device = torch.device(args.device)
        else:
            self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.amp = choose_amp(args.amp, self.device)
        if args.time_budget is not None and not args.time_budget > 0:
            raise ValueError(f"time_budget: expected a positive number of seconds, got {args.time_budget}")
        if args.budget_probe < 1:
            raise ValueError(f"budget_probe: expected 1 or more steps, got {args.budget_probe}")
        #: --time-budget: whether the step count is fixed yet (a resumed planned run keeps its plan).
        self.planned = False
        self.val_seconds = 0.0  # the last validation's duration (for the plan)
        self.val_total = 0.0  # all validations' time (taken out of the probe's)
        if args.loader_threads < 0:
            raise ValueError(f"loader_threads: expected 0 or more, got {args.loader_threads}")
        # Sample preparation is numpy/PIL work that mostly releases the GIL: threads overlap it with the
        # device's step (one thread prefetches the next batch, the others build its samples).
        self.sample_pool = ThreadPoolExecutor(args.loader_threads, "sample") if args.loader_threads else None
        self.prefetcher = ThreadPoolExecutor(1, "prefetch") if args.loader_threads else None
        self._ahead: tuple[int, Future] | None = None  # (step, its batch being prepared)
        if args.flow_device != "cpu":
            from vsstar.engine import resolve_device  # checked now, not when the first flow is missing
            try:
                resolve_device(args.flow_device)
            except ValueError as exc:
                raise ValueError(f"flow_device: {exc}") from exc
        self.run_dir = Path(args.run_dir)
        self.resume_state = None
        self.log_file = None
        self._pending_log: list[str] = []
        if args.resume:
            # Validated before anything is written. The default last.pt falls back to the newest intact
            # checkpoint of the run when it is damaged; an explicit path must itself be intact.
            if args.resume == "last":
                self.resume_state = find_resume_checkpoint(self.run_dir, log=self._early_log)
            else:
                self.resume_state = load_checkpoint(args.resume)
            self._check_resume_args(self.resume_state)
            old = self.resume_state.get("args", {})
            if args.time_budget and old.get("planned_steps"):
                # The schedule was fixed by the first part of the run: the same plan continues.
                args.steps = args.planned_steps = int(old["planned_steps"])
                self.planned = True
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # left by a writer killed mid-checkpoint
                stale.unlink(missing_ok=True)
        if self.main:
            self.log_file = (self.run_dir / "train.log").open("a")
            for msg in self._pending_log:
                self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        # Full-precision per-step losses (a resumed run appends; readers keep the last value per step).
        self.loss_file = (self.run_dir / "losses.jsonl").open("a", buffering=1) if self.main else None
        self.stop_signal = None  # set by this process's signal handler
        self.stop_agreed = False  # some rank saw a signal by the end of the last step (DDP only)

    # -- logging
    def _early_log(self, msg: str) -> None:
        """Before train.log is open: to stderr now, to train.log once it is."""
        self.log(msg)
        self._pending_log.append(msg)

    def log(self, msg: str) -> None:
        if not self.main:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, file=sys.stderr, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def _check_resume_args(self, st: dict) -> None:
        """Options that change the model or the data stream must not differ from the checkpoint's."""
        old = st.get("args", {})
        for k in ("scale", "preset", "objective", "config", "batch", "seed", "crop", "stride", "min_motion", "gaps",
                  "out_lr_scale", "freeze",
                  "data", "stills", "max_side", "extra_sizes", "exclude", "exclude_frames", "val", "val_range"):
            if k in old and old[k] != getattr(self.args, k):
                raise ValueError(f"resume: --{k.replace('_', '-')} is {getattr(self.args, k)!r} but the checkpoint "
                                 f"was trained with {old[k]!r}; pass the same value")

    # -- setup
    def setup(self) -> None:
        from vsstar.model.config import StarConfig
        from vsstar.flow import FlowSettings
        from vsstar.model.star import StarNet
        from .data import TripletDataset
        from .flowcache import FlowCache
        args = self.args
        torch.manual_seed(args.seed)
        np.random.seed(args.seed % (2 ** 32))
        self.config = (StarConfig.from_dict(self.resume_state["config"]) if self.resume_state
                       else build_config(args))
        scale_data = 1 if self.config.hr_input else self.config.scale
        # The flow settings the network is trained with; recorded in checkpoints and exported weights.
        self.flow_settings = FlowSettings.from_dict(self.resume_state.get("flow") if self.resume_state else None)
        cache_dir = Path(args.flow_cache) if args.flow_cache else self.run_dir.parent / "flowcache"
        self.flow_cache = FlowCache(cache_dir, self.flow_settings, device=args.flow_device)
        # Checked before the (slow) clip loading.
        gaps = parse_gaps(args.gaps)
        if gaps != (2,) and not self.config.time_input:
            raise ValueError(f"gaps: {args.gaps!r} trains times other than 1/2, which needs a model with time "
                             "input (--config '{\"time_input\": true}')")
        clips = load_clips(args, self.log)
        self.data = TripletDataset(clips, scale_data, stride=args.stride, min_motion=args.min_motion,
                                   crop=args.crop, augment=not args.no_augment, flow_cache=self.flow_cache,
                                   seed=args.seed, gaps=gaps)
        self.log(f"{len(self.data)} triplets from {len(clips)} clips, x{self.config.scale}, LR crop {args.crop}")
        if self.main:
            n = self.data.precompute_flows(progress=not args.no_progress)
            if n:
                self.log(f"computed {n} flow pairs into {cache_dir}")
        if self.world > 1:
            dist.barrier()  # the others read the cache rank 0 filled
        self.net = StarNet(self.config).to(self.device)
        self.net.flow_settings = self.flow_settings
        if args.init and not self.resume_state:
            self._load_init(args.init)
        frozen = freeze(self.net, getattr(args, "freeze", ""))
        if frozen:
            self.log(f"frozen: {', '.join(frozen)} "
                            f"({sum(p.numel() for p in self.net.parameters() if not p.requires_grad):,} parameters)")
        self.model = self.net
        if self.world > 1:
            # Objectives other than STAR leave some outputs (and so some weights) out of the loss.
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.config.objective != "STAR")
        self.opt = make_optimizer(param_groups(self.net, args), args)
        self.sched = make_scheduler(self.opt, args)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp.uses_scaler)
        self.log(f"precision: {self.amp.name} ({self.amp.reason})")
        self.vgg = VGG19Features.from_file(args.vgg_weights).to(self.device) if args.vgg_weights else None
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if self.resume_state:
            st = self.resume_state
            self.net.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            self.sched.load_state_dict(st["scheduler"])
            if st.get("scaler") and self.amp.uses_scaler:
                self.scaler.load_state_dict(st["scaler"])
            was = st.get("precision")
            if was and was != self.amp.name:
                self.log(f"resume: the checkpoint trained in {was}, this part runs in {self.amp.name}")
            self.step = int(st["step"])
            self.history = list(st.get("history", []))
            self.best = st.get("best")
            if "rng" in st:
                set_rng_state(st["rng"])
            self.log(f"resumed at step {self.step} from {st.get('_path', 'checkpoint')}")
            self.resume_state = None
        self.validator = None
        if args.val and self.main:
            from .data import read_frame_folder, read_video
            from .validate import Validator
            clip = read_video(args.val) if Path(args.val).is_file() else read_frame_folder(args.val)
            frames = clip.frames
            if args.val_range:
                from .data import parse_frame_range
                first, last = parse_frame_range(args.val_range, "val-range")
                frames = frames[first:last + 1]
            frames = frames[:args.val_frames] if args.val_frames else frames
            self.validator = Validator(frames, self.config.scale, self.flow_cache, max_pairs=args.val_pairs)
        self.tb = None
        if self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception as e:  # TensorBoard is optional
                self.log(f"TensorBoard disabled ({e})")
            (self.run_dir / "config.json").write_text(json.dumps(
                {"config": self.config.to_dict(), "args": vars(args)}, indent=1, default=str))

    def _load_init(self, path: str) -> None:
        """Start from the weights of a training checkpoint, our safetensors or an authors' .pth (read without
        running pickled code); see :func:`fit_init`."""
        net, _ = load_net(path, what="init")
        fresh = fit_init(self.net, net.state_dict(), self.args.init_partial, path)
        if not self.args.init_partial:
            self.log(f"initialised from {path}")
            return
        own = self.net.state_dict()
        self.log(f"initialised {len(own) - len(fresh)} of {len(own)} tensors from {path} "
                 f"({sum(own[k].numel() for k in fresh)} parameters fresh: {', '.join(fresh) or 'none'})")

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.amp.uses_scaler else None, "precision": self.amp.name,
                "rng": rng_state(), "config": self.config.to_dict(), "flow": self.flow_settings.to_dict(),
                "args": vars(self.args),
                "history": self.history, "best": self.best}

    def save(self, periodic: bool = False) -> None:
        if not self.main:
            return
        st = self.state()
        save_checkpoint(self.run_dir / "last.pt", st)
        if periodic:
            save_checkpoint(self.run_dir / f"step_{self.step:07d}.pt", st)
            olds = sorted(self.run_dir.glob("step_*.pt"))
            for p in olds[:-self.args.keep] if self.args.keep > 0 else olds:
                p.unlink(missing_ok=True)

    # -- one step
    def load_batch(self, step: int) -> dict[str, torch.Tensor]:
        """The CPU batch of one step (a function of the step alone, so prefetching keeps runs exact)."""
        idx = data_indices(step, self.args.batch, len(self.data), self.args.seed, self.rank, self.world)
        by_epoch: dict[int, list[int]] = {}
        for e, i in idx:
            by_epoch.setdefault(e, []).append(i)
        parts = [self.data.batch(e, ii, pool=self.sample_pool) for e, ii in by_epoch.items()]
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if self.prefetcher is not None and self.device.type == "cuda":
            out = {k: v.pin_memory() for k, v in out.items()}  # so the copy to the device can be asynchronous
        return out

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This step's batch; with --loader-threads the next step's is prepared while this one trains."""
        if self.prefetcher is None:
            return self.load_batch(self.step)
        ahead, self._ahead = self._ahead, None
        fut = ahead[1] if ahead and ahead[0] == self.step else self.prefetcher.submit(self.load_batch, self.step)
        self._ahead = (self.step + 1, self.prefetcher.submit(self.load_batch, self.step + 1))
        return fut.result()

    def train_step(self) -> dict[str, float]:
        from .infer import encode_batch
        args = self.args
        batch = {k: v.to(self.device, non_blocking=True) for k, v in self.next_batch().items()}
        enc = encode_batch(batch)
        self.model.train()
        with self.amp.autocast():
            t = enc["t"] if self.config.time_input else None
            out = self.model(enc["lr1"], enc["lr2"], enc["flow_f"], enc["flow_b"], t)
            loss, parts_l = star_loss(out, enc, self.config.objective, stage1_weight=args.stage1_weight)
            if self.vgg is not None:
                pl = perceptual_loss(self.vgg, out, enc, self.config.objective)
                parts_l["vgg"] = float(pl.detach())
                loss = loss + args.vgg_weight * pl
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if args.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), args.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        lv = loss.detach().float()
        if self.world > 1:
            # The stop flag rides on the loss reduction: a rank that left the loop alone would leave the
            # others blocked in their next collective, so all ranks stop after the same step.
            buf = torch.stack([lv, torch.tensor(float(self.stop_signal is not None), device=lv.device)])
            dist.all_reduce(buf)
            lv = buf[0] / self.world
            self.stop_agreed = bool(buf[1] > 0)
        return {"loss": float(lv), **parts_l}

    # -- validation
    def validate(self) -> dict[str, float] | None:
        if self.validator is None or not self.main:
            return None
        t = time.time()
        res = self.validator.run(self.net, device=self.device)
        self.val_seconds = time.time() - t
        self.val_total += self.val_seconds
        s = res.summary()
        rec = {"step": self.step, **s}
        self.history.append(rec)
        key = "model/all/psnr_y"
        if self.best is None or s[key] > self.best.get(key, -1):
            self.best = dict(rec)
            save_checkpoint(self.run_dir / "best.pt", self.state())
        if self.tb:
            for k, v in s.items():
                self.tb.add_scalar(f"val/{k}", v, self.step)
        self.log(f"val step {self.step}: Y-PSNR all {s['model/all/psnr_y']:.3f} (bicubic+blend "
                 f"{s['bicubic/all/psnr_y']:.3f}), SR {s['model/sr/psnr_y']:.3f} ({s['bicubic/sr/psnr_y']:.3f}), "
                 f"mid {s['model/mid/psnr_y']:.3f} ({s['bicubic/mid/psnr_y']:.3f}) [{time.time() - t:.0f}s]")
        return s

    # -- the loop
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.stop_signal = signum

    def _should_stop(self) -> bool:
        return self.stop_agreed if self.world > 1 else self.stop_signal is not None

    def _plan(self, probe_steps: int, probe_seconds: float) -> None:
        """Fix --steps from the probe's rate so the run ends within --time-budget (rank 0 decides)."""
        args = self.args
        rate = probe_steps / max(probe_seconds, 1e-9)
        left = args.time_budget - (time.monotonic() - self.t_created)
        val_every = args.val_every if self.validator is not None else 0  # only rank 0 validates
        steps = plan_steps(self.step, rate, left, args.steps, val_every=val_every, val_seconds=self.val_seconds)
        if self.world > 1:
            t = torch.tensor([steps], dtype=torch.int64, device=self.device)
            dist.broadcast(t, 0)
            steps = int(t.item())
        val = f", validation {self.val_seconds:.1f} s every {val_every} steps" if val_every else ""
        self.log(f"time budget {args.time_budget:.0f} s, {left:.0f} s left at step {self.step}: "
                 f"{rate:.3f} steps/s over {probe_steps} steps{val} -> the schedule ends at step {steps} "
                 f"(--steps {args.steps})")
        args.steps = args.planned_steps = steps
        self.planned = True
        if self.main:
            (self.run_dir / "config.json").write_text(json.dumps(
                {"config": self.config.to_dict(), "args": vars(args)}, indent=1, default=str))

    def run(self) -> int:
        args = self.args
        self.setup()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = None
        if self.main and not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=args.steps, initial=self.step, unit="step", dynamic_ncols=True)
        t0, s0 = time.time(), self.step
        failed = False
        try:
            if self.step == 0 and self.validator is not None:
                self.validate()
            end = min(args.steps, args.stop_at) if args.stop_at else args.steps
            # --time-budget: the first steps are slower (allocator, cuDNN autotuning), so the probe
            # starts timing after a few.
            skip = min(3, args.budget_probe // 4)
            probe_from, probe_t0 = self.step + skip, None
            while self.step < end and not self._should_stop():
                if args.time_budget and not self.planned:
                    if self.step == probe_from:
                        probe_t0, val0 = time.monotonic(), self.val_total
                    elif probe_t0 is not None and self.step >= probe_from + args.budget_probe - skip:
                        self._plan(self.step - probe_from, time.monotonic() - probe_t0 - (self.val_total - val0))
                        end = min(args.steps, args.stop_at) if args.stop_at else args.steps
                        if bar is not None:
                            bar.total = args.steps
                        if self.step >= end:
                            break
                m = self.train_step()
                if self.main:
                    self.loss_file.write(json.dumps({"step": self.step, **m}) + "\n")
                    rate = (self.step - s0) / max(1e-9, time.time() - t0)
                    if bar is not None:
                        bar.set_postfix(loss=f"{m['loss']:.4f}", rate=f"{rate:.2f}/s", refresh=False)
                        bar.update(1)
                    if self.step % args.log_every == 0 or self.step == args.steps:
                        lr = self.sched.get_last_lr()[0]
                        eta = (args.steps - self.step) / max(rate, 1e-9)
                        self.log(f"step {self.step}/{args.steps} loss {m['loss']:.5f} lr {lr:.3g} "
                                 f"{rate:.3f} steps/s eta {eta / 60:.1f} min")
                        if self.tb:
                            for k, v in m.items():
                                self.tb.add_scalar(f"train/{k}", v, self.step)
                            self.tb.add_scalar("train/lr", lr, self.step)
                if args.val_every and self.step % args.val_every == 0 and self.step < args.steps:
                    self.validate()
                if args.ckpt_every and self.step % args.ckpt_every == 0:
                    self.save(periodic=True)
            if self.step >= args.steps and self.validator is not None and (
                    not self.history or self.history[-1]["step"] != self.step):
                self.validate()
        except BaseException:
            # An error inside a step may leave the weights updated but the step not counted: keep the last
            # periodic checkpoint rather than saving a state that would not resume exactly.
            failed = True
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for pool in (self.prefetcher, self.sample_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
            if not failed:
                self.save()  # at the end, on SIGTERM / SIGINT
            if self.main:
                why = (f" (signal {self.stop_signal})" if self.stop_signal
                       else " (a signal on another rank)" if self.stop_agreed else "")
                self.log(f"stopped at step {self.step}{why}")
                if self.tb:
                    self.tb.close()
                try:
                    from .report import write_report
                    write_report(self.run_dir)
                except Exception as e:  # the report must never lose a run
                    self.log(f"report failed: {e}")
            if self.world > 1 and dist.is_initialized():
                if not failed:
                    # Rank 0 still saves and writes the report; a peer tearing gloo down meanwhile can
                    # abort in its C++ threads ("terminate called without an active exception").
                    dist.barrier()
                # DDP's reducer holds the process group; were it freed only at interpreter exit, gloo's
                # threads would be torn down after the runtime that joins them is gone (SIGABRT).
                self.model = self.net
                gc.collect()
                dist.destroy_process_group()
        return 0


def main(argv: Sequence[str] | None = None, started: float | None = None) -> int:
    """Train as the command line says; `started` (time.monotonic() clock) is when --time-budget starts
    counting: the process's start when run as a command, else this call."""
    args = build_parser().parse_args(argv)
    try:
        tr = Trainer(args, started)
        if args.precompute_only:
            tr.setup()
            return 0
        return tr.run()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(started=process_start()))
