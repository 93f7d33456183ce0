"""Mixed precision for training (``--amp auto|on|off``): which autocast, on which device, and why.

CUDA: float16 autocast with a GradScaler (float16's narrow range needs the loss scaled). CPU: bfloat16
autocast, where the CPU computes bfloat16 natively (AVX512_BF16 or AMX); bfloat16 has float32's range, so no
scaler. Autocast keeps the ops PyTorch lists as precision-sensitive (grid_sample, the flow warps' sampler,
among them) in float32, and the losses are computed in float32 (training.losses).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

__all__ = ["AMP_MODES", "AmpPolicy", "choose_amp", "cpu_bf16_native"]

#: Accepted values of --amp.
AMP_MODES = ("auto", "on", "off")


@functools.cache
def cpu_bf16_native() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512_BF16 or AMX tiles), as read by PyTorch's cpuinfo:
    the flags PyTorch's own kernels dispatch on. Read once per process."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(c()) for c in checks if c is not None)
    except RuntimeError:  # cpuinfo could not read the CPU: treat as not native (float32 then)
        return False


@dataclass(frozen=True)
class AmpPolicy:
    """The precision a training run uses: ``dtype`` None means plain float32."""

    device_type: str
    dtype: torch.dtype | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def uses_scaler(self) -> bool:
        """Whether gradients go through a GradScaler (float16 only)."""
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {None: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of a forward pass (and its loss)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def choose_amp(mode: str, device: torch.device | str, *, bf16_native: bool | None = None) -> AmpPolicy:
    """The policy for ``--amp mode`` on ``device``.

    auto: float16 + GradScaler on CUDA, bfloat16 on a CPU with native bfloat16, else float32.
    on: the same, but a CPU without native bfloat16 (emulated: slower than float32) or another device is
    refused. off: float32. ``bf16_native`` overrides the CPU check (tests)."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp: expected one of {', '.join(AMP_MODES)}, got {mode!r}")
    dev = torch.device(device)
    if mode == "off":
        return AmpPolicy(dev.type, None, "--amp off")
    if dev.type == "cuda":
        return AmpPolicy("cuda", torch.float16, f"--amp {mode}: float16 autocast with a GradScaler on CUDA")
    if dev.type == "cpu":
        native = cpu_bf16_native() if bf16_native is None else bf16_native
        if native:
            return AmpPolicy("cpu", torch.bfloat16, f"--amp {mode}: bfloat16 autocast (the CPU has native bfloat16)")
        if mode == "on":
            raise ValueError("amp: --amp on needs a CUDA device or a CPU with native bfloat16 (AVX512_BF16 or "
                             "AMX); this CPU has neither (use --amp auto or off)")
        return AmpPolicy("cpu", None, "--amp auto: float32 (the CPU has no native bfloat16)")
    if mode == "on":
        raise ValueError(f"amp: --amp on needs a CUDA device or a CPU, got device {dev.type!r}")
    return AmpPolicy(dev.type, None, f"--amp auto: float32 (no mixed precision on {dev.type})")
