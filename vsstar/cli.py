"""The ``vsstar`` command: ``vsstar enhance INPUT OUTPUT``, ``vsstar export-onnx`` and ``vsstar info``.

This module maps the command line onto the library and prints: ``enhance``'s flags become a
:class:`vsstar.enhance.EnhanceOptions`, run by :func:`vsstar.enhance.run` (or :mod:`vsstar.distributed` with
``--ray``); errors become one line and an exit status; SIGTERM/SIGHUP unwind like Ctrl-C. docs/cli.md has
the details.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import signal
import subprocess
import sys
import traceback
from fractions import Fraction
from typing import Any, Sequence

from .backends import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from .enhance.options import DEFAULTS, EnhanceError, EnhanceOptions
from .choices import QUALITIES, SCALES
from .schedule import MODES

__all__ = ["main", "build_parser", "enhance", "options_from_args", "CliError"]


class CliError(EnhanceError):
    """A user-facing error of the command itself (bad export-onnx arguments): one line, exit status 2."""


def _count(name: str, lo: int = 0):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from exc
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}, got {v}")
        return v
    return conv


def _device_arg(text: str) -> str | list[str]:
    """--device: one device, or a list for several separated by commas."""
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"--device must be a device or devices separated by commas, got {text!r}")
    return parts if len(parts) > 1 else parts[0]


def _fraction(name: str):
    def conv(text: str) -> Fraction:
        try:
            v = Fraction(text.strip())
        except (ValueError, ZeroDivisionError) as exc:
            raise argparse.ArgumentTypeError(f"{name} must be a number or a fraction like 5/2, got {text!r}") from exc
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text!r}")
        return v
    return conv


def _amount(name: str):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from exc
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text!r}")
        return v
    return conv


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vsstar`` command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="vsstar", description="Space-time video super-resolution (STARnet).")
    p.add_argument("--version", action="version", version=f"vsstar {__version__}")
    p.add_argument("--debug", action="store_true", help="on errors, show the traceback (default: one line)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enhance", help="super-resolve and/or double the frame rate of a video",
                       description="Read INPUT (any format ffmpeg/bestsource reads), run STAR, encode OUTPUT "
                                   "with ffmpeg. OUTPUT appears only when the whole job succeeded.")
    e.add_argument("input", help="input video file")
    e.add_argument("output", help="output video file (container from the extension, e.g. .mp4, .mkv)")
    e.add_argument("--scale", type=int, default=DEFAULTS["scale"], choices=SCALES,
                   help="upscaling factor (default 4)")
    e.add_argument("--mode", default=DEFAULTS["mode"], choices=MODES,
                   help="st: upscale + double the frame rate (default); s: upscale only; t: double the frame rate only")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--factor", type=_fraction("--factor"), default=None,
                      help="output frames per input frame, e.g. 5/2 or 4 (default 2; modes st and t)")
    rate.add_argument("--fps", type=_fraction("--fps"), default=None,
                      help="output frame rate instead of --factor, e.g. 60000/1001 (constant-rate input)")
    e.add_argument("--exact-time", action="store_true",
                   help="refuse in-between times the model cannot synthesise exactly (a model that knows only "
                        "t = 1/2 rounds them to 1/8 of a frame interval; models with time input are always exact)")
    e.add_argument("--model", default=None, help="bundled model name, .safetensors or official .pth (default: bundled for --scale)")
    e.add_argument("--quality", default=DEFAULTS["quality"], choices=QUALITIES,
                   help="tier of the bundled weights when no --model is given: fast (default) or high (larger "
                        "and slower, better pictures; --scale 4 only)")
    e.add_argument("--device", default=None, type=_device_arg,
                   help="cpu, cuda or cuda:N, or several separated by commas (cuda:0,cuda:1: one engine per "
                        "device, each pair computed once) (default: CUDA if available)")
    fp = e.add_mutually_exclusive_group()
    fp.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="float16 autocast (CUDA only; default on CUDA)")
    fp.add_argument("--no-fp16", dest="fp16", action="store_false", help="full float32 on CUDA")
    e.add_argument("--backend", default=DEFAULTS["backend"], choices=BACKENDS,
                   help="network backend: auto (OpenVINO on the CPU when installed, default), torch, openvino")
    e.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="OpenVINO precision: auto (default: bf16 where the CPU has native bfloat16 and a once-per-"
                        "model check agrees, else f32), f32, bf16 (CPUs with bfloat16) or int8 (quantized, faster, "
                        "a small drift: docs/openvino.md; needs the nncf package)")
    e.add_argument("--batch-size", type=_count("--batch-size", 1), default=None, help="pairs per network call")
    e.add_argument("--tile", type=_count("--tile"), default=None,
                   help="LR tile size in pixels (0 = never tile; default: automatic when memory is short)")
    e.add_argument("--frames", type=_count("--frames", 1), default=None,
                   help="process only the first N input frames (N >= 1)")
    e.add_argument("--fast-flow", action="store_true",
                   help="fewer optical-flow iterations: quicker, slightly softer in-between frames")
    e.add_argument("--no-scene-detect", action="store_true", help="interpolate across scene cuts too")
    e.add_argument("--codec", default=None,
                   help="ffmpeg video encoder (default: libx264, else libx265, else ffv1 in .mkv: the first that "
                        "keeps the pixel format)")
    e.add_argument("--crf", type=_count("--crf"), default=DEFAULTS["crf"], help="encoder quality (CRF, default 16)")
    e.add_argument("--pix-fmt", default=None,
                   help="output pixel format, e.g. yuv420p (default: the input's bit depth and chroma subsampling)")
    e.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    e.add_argument("--compare", metavar="PNG", default=None,
                   help="also write a side-by-side picture: bicubic (or blend) vs STAR, centre crop of the middle frame")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    r = e.add_argument_group("Ray cluster (see docs/scaling.md)")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="split the video into chunks and run them on a Ray cluster: ADDRESS as Ray takes it "
                        "(auto, HOST:PORT, ray://HOST:10001); without one, RAY_ADDRESS or a local Ray instance")
    r.add_argument("--chunk-frames", type=_count("--chunk-frames", 1), default=None,
                   help="most input frames per chunk (default 1000); chunks end at scene cuts where possible")
    r.add_argument("--ray-cpus", type=_amount("--ray-cpus"), default=None,
                   help="CPUs each chunk's worker requests (default 1; also its torch threads on the CPU)")
    r.add_argument("--ray-gpus", type=_amount("--ray-gpus"), default=None,
                   help="GPUs each chunk's worker requests (default 1 when --device is CUDA or the cluster "
                        "has GPUs and --device is not cpu, else 0)")
    r.add_argument("--max-retries", type=_count("--max-retries"), default=DEFAULTS["max_retries"],
                   help="times Ray reruns a chunk whose worker died (default 3)")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="on errors, show the traceback (default: one line)")

    i = sub.add_parser("info", help="versions, devices and bundled models")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on errors, show the traceback")
    add_export_onnx_parser(sub)
    return p


# ----------------------------------------------------------------------------------- enhance
class Terminated(BaseException):
    """SIGTERM/SIGHUP arrived: unwind like Ctrl-C, cleaning up on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


def options_from_args(args: argparse.Namespace) -> EnhanceOptions:
    """The job the parsed ``enhance`` arguments ask for."""
    names = {f.name for f in dataclasses.fields(EnhanceOptions)}
    return EnhanceOptions(**{k: v for k, v in vars(args).items() if k in names})


def enhance(args: argparse.Namespace) -> int:
    """Run the ``enhance`` sub-command (on a Ray cluster with ``--ray``)."""
    options = options_from_args(args)
    if options.ray is not None:
        from . import distributed

        distributed.run_job(options)
    else:
        from .enhance import run

        run(options)
    return 0


# ----------------------------------------------------------------------------------- export-onnx
def add_export_onnx_parser(sub: Any) -> None:
    """Register ``vsstar export-onnx MODEL OUT.onnx``."""
    x = sub.add_parser("export-onnx", help="write the network as an ONNX file (for vs-mlrt, TensorRT, OpenVINO)",
                       description="Export MODEL (bundled name, .safetensors or the authors' .pth) to ONNX: inputs "
                                   "im1, im2 (normalised RGB), flow_f, flow_b (encoded flows), and t (the in-between "
                                   "frame's time) for a model with time input; outputs ht, h1, h2, l. See "
                                   "docs/openvino.md for the encodings, the size multiple and the two-part export.")
    x.add_argument("model", help="bundled model name, .safetensors or official .pth checkpoint")
    x.add_argument("output", help="ONNX file to write (.onnx)")
    x.add_argument("--shape", default=None, metavar="NxHxW",
                   help="fixed LR input shape, e.g. 1x240x426 (default: dynamic batch, height and width)")
    x.add_argument("--part", default="full", choices=("full", "encode", "synthesize"),
                   help="a model with time input can be written in two parts: 'encode' (the t-independent work, "
                        "once per pair) and 'synthesize' (once per in-between frame)")
    x.add_argument("--no-check", action="store_true", help="skip running the file against torch after writing it")


def export_onnx_command(args: argparse.Namespace) -> int:
    """Run the ``export-onnx`` sub-command."""
    from .model.export import ONNX_OPSET, export_onnx, onnx_min_size, onnx_size_multiple

    shape = None
    if args.shape:
        try:
            shape = tuple(int(v) for v in args.shape.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise CliError(f"--shape must be NxHxW (e.g. 1x240x426), got {args.shape!r}")
    try:
        from .model import load_model

        net = load_model(args.model)
        path = export_onnx(net, args.output, shape=shape, check=not args.no_check, part=args.part)
    except (ValueError, ImportError, OSError) as exc:
        raise CliError(str(exc).replace("shape must", "--shape must")) from exc
    cfg = net.config
    what = (f"fixed LR shape {args.shape}" if shape else
            f"dynamic batch/height/width, height and width multiples of {onnx_size_multiple(cfg)}, "
            f">= {onnx_min_size(cfg)}")
    part = "" if args.part == "full" else f", {args.part} part"
    timed = ", time input t" if cfg.time_input else ""
    print(f"wrote {path} (opset {ONNX_OPSET}, x{cfg.scale} {cfg.objective}{timed}{part}, {what})", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------- info
def info() -> int:
    """Run the ``info`` sub-command: versions, devices, bundled models."""
    from . import __version__

    lines = [f"vsstar {__version__}", f"python {platform.python_version()} ({sys.executable})"]
    try:
        import torch

        lines.append(f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}, "
                     f"{torch.get_num_threads()} CPU threads)")
    except ImportError:
        torch = None
        lines.append("torch: not installed")
    import numpy

    lines.append(f"numpy {numpy.__version__}")
    try:
        import vapoursynth as vs

        bs = getattr(vs.core, "bs", None)
        lines.append(f"vapoursynth {vs.core.core_version}; bestsource "
                     + (f"{bs.version.major}.{bs.version.minor}" if bs is not None else "missing"))
    except ImportError:
        lines.append("vapoursynth: not installed")
    try:
        import cupy

        lines.append(f"cupy {cupy.__version__}")
    except ImportError:
        lines.append("cupy: not installed (optional, `cuda` extra)")
    ff = shutil.which("ffmpeg")
    if ff:
        r = subprocess.run([ff, "-version"], capture_output=True, text=True)
        lines.append(r.stdout.splitlines()[0] if r.stdout else f"ffmpeg at {ff}")
    else:
        lines.append("ffmpeg: not found on PATH (needed by `vsstar enhance`)")
    lines.append("devices:")
    lines.append(f"  cpu: {os.cpu_count()} cores")
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("  cuda: not available")
    if torch is not None:
        from .backends import openvino_available

        if openvino_available():
            from .backends.openvino import auto_precision_note

            lines.append(f"openvino: {auto_precision_note()}")
        else:
            lines.append("openvino: not installed (the network runs with torch on the CPU)")
    lines.append("bundled models:")
    try:
        from .model import bundled_models

        models = bundled_models()
    except Exception as exc:  # a broken install should still print the rest
        models = {}
        lines.append(f"  (cannot list: {type(exc).__name__}: {exc})")
    if not models:
        lines.append("  none")
    for name, meta in models.items():
        size = os.path.getsize(meta["path"]) / 2**20 if os.path.exists(meta.get("path", "")) else 0
        desc = meta.get("description", "")
        cfg = meta.get("config") or {}
        tags = ((" time input" if cfg.get("time_input") else "") + (" (opt-in)" if meta.get("opt_in") else "")
                + (f" (quality={meta['quality']})" if meta.get("quality") else ""))
        lines.append(f"  {name}: x{meta.get('scale')} {meta.get('objective')} {meta.get('variant', '')}{tags} "
                     f"({size:.1f} MiB){' - ' + desc if desc else ''}")
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vsstar`` console script; returns the exit status.

    Errors print one line (``vsstar: error: ...``); ``--debug`` adds the traceback with its causes.
    SIGINT, SIGTERM and SIGHUP stop the job the same way: nothing is left behind and an existing OUTPUT is
    untouched; the exit status is 128 + the signal number.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # no SIGHUP on Windows
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: the host keeps its own handlers
            pass
    try:
        if args.command == "info":
            return info()
        if args.command == "export-onnx":
            return export_onnx_command(args)
        return enhance(args)
    except EnhanceError as exc:
        _report(exc, debug, str(exc))
        code = 2
    except (KeyboardInterrupt, Terminated) as exc:
        code = _stopped(exc)
    except Exception as exc:  # a bug or an unforeseen failure: still one line unless --debug
        stop = _signal_behind(exc)
        if stop is not None:
            code = _stopped(stop)
        else:
            _report(exc, debug, f"{type(exc).__name__}: {exc}" + ("" if debug else " (--debug shows the traceback)"))
            code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if argv is None:
        # Run as a program and stopped mid-stream: VapourSynth still has frame requests in flight,
        # and tearing its core down under them aborts the interpreter. Everything of ours is
        # cleaned up already (temporary files removed, ffmpeg reaped), so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _stopped(exc: BaseException) -> int:
    """The message and exit status of a job stopped by a signal."""
    if isinstance(exc, Terminated):
        print(f"vsstar: stopped by {signal.Signals(exc.signum).name}; no output written", file=sys.stderr)
        return 128 + exc.signum
    print("vsstar: interrupted; no output written", file=sys.stderr)
    return 128 + signal.SIGINT


def _signal_behind(exc: BaseException) -> BaseException | None:
    """The Ctrl-C or Terminated that caused `exc`, if any: a signal handler that raises while an extension
    module (Ray's) is running reaches us wrapped, e.g. as a SystemError."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, (KeyboardInterrupt, Terminated)):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _report(exc: BaseException, debug: bool, line: str) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"vsstar: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
