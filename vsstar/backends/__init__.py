"""Network backends of the engine: torch (any device) and OpenVINO (CPU).

``resolve_backend`` turns the user's choice ("torch", "openvino" or "auto") into the backend to run.
"""
from __future__ import annotations

import os
import sys

__all__ = ["BACKENDS", "PRECISIONS", "DEFAULT_PRECISION", "resolve_backend", "openvino_available"]

#: Accepted values of the ``backend`` argument of the engine and the hosts.
BACKENDS = ("auto", "torch", "openvino")
#: Accepted values of the ``precision`` argument (OpenVINO only; torch uses fp16 on CUDA). "auto": bf16 where the
#: CPU has native bfloat16 and a once-per-model check finds bf16 close to float32, f32 otherwise
#: (vsstar.backends.openvino.OpenVINOStar); with the torch backend "auto" means float32.
PRECISIONS = ("auto", "f32", "bf16", "int8")
#: The default ``precision`` of the engine and every host.
DEFAULT_PRECISION = "auto"
#: Environment variable that decides what ``backend="auto"`` means ("torch" or "openvino").
BACKEND_ENV = "VSSTAR_BACKEND"

_said_fallback = False


def openvino_available() -> bool:
    """True when the openvino package (and the ONNX exporter it is fed through) can be imported."""
    try:
        import openvino  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, device_type: str) -> str:
    """"torch" or "openvino" for the user's `backend` on a device of `device_type` ("cpu", "cuda").

    "auto": OpenVINO on the CPU when it is installed (one line on stderr when it is not), torch on CUDA;
    the environment variable VSSTAR_BACKEND=torch|openvino overrides what auto picks on the CPU.
    "openvino" needs the CPU and the package (ValueError otherwise).
    """
    if backend is None:
        backend = "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openvino":
        if device_type != "cpu":
            raise ValueError(f"backend='openvino' runs on the CPU only, but device is {device_type!r}; "
                             "pass device='cpu' or backend='torch'")
        if not openvino_available():
            raise ValueError("backend='openvino' needs the openvino, onnx and onnxscript packages: "
                             "pip install openvino onnx onnxscript (or use backend='torch')")
        return "openvino"
    if backend == "torch" or device_type != "cpu":
        return "torch"
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in ("torch", "openvino"):
            raise ValueError(f"{BACKEND_ENV} must be 'torch' or 'openvino', got {forced!r}")
        return resolve_backend(forced, device_type)
    if openvino_available():
        return "openvino"
    global _said_fallback
    if not _said_fallback:
        _said_fallback = True
        print("vsstar: OpenVINO is not installed, running the network with torch on the CPU "
              "(pip install openvino onnx onnxscript for faster CPU inference)", file=sys.stderr)
    return "torch"
