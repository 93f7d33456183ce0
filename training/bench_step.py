"""Training steps per second in float32 and with mixed precision, side by side in one process.

    python -m training.bench_step --preset large --scale 4 --batch 4 --crop 32 --threads 2 --rounds 3

One step is what training.train runs: forward of the training outputs, the STAR loss, backward and an Adam
step. The precisions alternate in rounds (off, amp, off, amp, ...) on the same batch, so a load that changes
during the measurement affects both; each round times ``--steps`` steps after one untimed warm-up step.
The losses are checked finite in both precisions.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

import torch

from .amp import AMP_MODES, AmpPolicy, choose_amp

__all__ = ["bench_steps", "main"]


def _batch(n: int, crop: int, scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch of smooth random images and small flows (the step's cost does not depend on them)."""
    g = torch.Generator().manual_seed(seed)

    def img(h: int, w: int) -> torch.Tensor:
        x = torch.rand(n, 3, max(1, h // 4), max(1, w // 4), generator=g)
        return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    hr = crop * scale
    out = {k: img(crop, crop) for k in ("lr1", "lr2", "lr_mid")}
    out.update({k: img(hr, hr) for k in ("hr1", "hr_mid", "hr2")})
    out["flow_f"] = torch.randn(n, 2, crop, crop, generator=g)
    out["flow_b"] = -out["flow_f"]
    out["t"] = torch.full((n,), 0.5)
    return out


def bench_steps(config, policies: Sequence[AmpPolicy], *, batch: int = 4, crop: int = 32, steps: int = 5,
                rounds: int = 3, lr: float = 1e-4) -> dict[str, dict[str, float]]:
    """Steps/s of each policy (name -> {"steps_per_s", "loss"}): rounds alternate the policies, each
    with its own copy of the same initial model and optimiser. A non-finite loss is a ValueError."""
    from vsstar.model.star import StarNet

    from .infer import encode_batch
    from .losses import star_loss
    torch.manual_seed(0)
    base = StarNet(config)
    enc = encode_batch(_batch(batch, crop, config.scale))
    t = enc["t"] if config.time_input else None
    runs = {}
    for p in policies:
        net = StarNet(config)
        net.load_state_dict(base.state_dict())
        net.train()
        runs[p.name] = (p, net, torch.optim.Adam(net.parameters(), lr=lr), [0.0, 0])

    def step(p: AmpPolicy, net, opt) -> float:
        with p.autocast():
            out = net(enc["lr1"], enc["lr2"], enc["flow_f"], enc["flow_b"], t)
            loss, _ = star_loss(out, enc, config.objective)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"{p.name}: the loss is {value}")
        return value

    for name, (p, net, opt, _acc) in runs.items():
        step(p, net, opt)  # warm-up: allocator, oneDNN primitive caches
    last = {}
    for _ in range(rounds):
        for name, (p, net, opt, acc) in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                last[name] = step(p, net, opt)
            acc[0] += time.perf_counter() - t0
            acc[1] += steps
    return {name: {"steps_per_s": acc[1] / acc[0], "loss": last[name]} for name, (_p, _n, _o, acc) in runs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from .presets import preset_config
    ap = argparse.ArgumentParser(prog="python -m training.bench_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="large")
    ap.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    ap.add_argument("--time-input", action="store_true", help="a model with time input")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=32, help="LR crop size")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and precision")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=[m for m in AMP_MODES if m != "off"], default="on",
                    help="the mixed-precision side of the comparison")
    a = ap.parse_args(argv)
    try:
        for k in ("batch", "crop", "steps", "rounds"):
            if getattr(a, k) < 1:
                raise ValueError(f"{k}: expected 1 or more, got {getattr(a, k)}")
        if a.threads:
            torch.set_num_threads(a.threads)
        if a.device != "cpu":
            raise ValueError(f"device: only cpu is measured here, got {a.device!r}")
        cfg = preset_config(a.preset, a.scale, time_input=a.time_input)
        amp = choose_amp(a.amp, a.device)
        if not amp.enabled:
            raise ValueError(f"amp: --amp {a.amp} gives float32 on this CPU: nothing to compare")
        res = bench_steps(cfg, [choose_amp("off", a.device), amp], batch=a.batch, crop=a.crop, steps=a.steps,
                          rounds=a.rounds)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.preset} x{a.scale}, batch {a.batch}, LR crop {a.crop}, {torch.get_num_threads()} threads, "
          f"{a.rounds} rounds x {a.steps} steps")
    for name, r in res.items():
        print(f"  {name:9s} {r['steps_per_s']:.3f} steps/s (last loss {r['loss']:.5f})")
    f32, mixed = res["float32"]["steps_per_s"], res[amp.name]["steps_per_s"]
    print(f"  {amp.name} / float32: {mixed / f32:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
