"""The ``vsstar`` command: ``vsstar enhance INPUT OUTPUT`` and ``vsstar info``.

``enhance`` reads any video with vapoursynth-bestsource, runs :func:`vsstar.STAR` and pipes the
result (y4m) into the system ffmpeg. It writes to a hidden temporary file next to OUTPUT and
renames it at the end, so a failure or Ctrl-C never leaves a half-written OUTPUT behind.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

# Fewer flow iterations: roughly 3x faster flow, slightly softer in-between frames.
FAST_FLOW = {"n_outer": 3, "n_sor": 10}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _positive(name: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {v}")
        return v
    return conv


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vsstar`` command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="vsstar", description="Space-time video super-resolution (STARnet).")
    p.add_argument("--version", action="version", version=f"vsstar {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enhance", help="super-resolve and/or double the frame rate of a video",
                       description="Read INPUT (any format ffmpeg/bestsource reads), run STAR, encode OUTPUT "
                                   "with ffmpeg. OUTPUT appears only when the whole job succeeded.")
    e.add_argument("input", help="input video file")
    e.add_argument("output", help="output video file (container from the extension, e.g. .mp4, .mkv)")
    e.add_argument("--scale", type=int, default=4, choices=(2, 4, 8), help="upscaling factor (default 4)")
    e.add_argument("--mode", default="st", choices=("st", "s", "t"),
                   help="st: upscale + double the frame rate (default); s: upscale only; t: double the frame rate only")
    e.add_argument("--model", default=None, help="bundled model name, .safetensors or official .pth (default: bundled for --scale)")
    e.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    fp = e.add_mutually_exclusive_group()
    fp.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="float16 autocast (CUDA only; default on CUDA)")
    fp.add_argument("--no-fp16", dest="fp16", action="store_false", help="full float32 on CUDA")
    e.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino"),
                   help="network backend: auto (OpenVINO on the CPU when installed, default), torch, openvino")
    e.add_argument("--precision", default="f32", choices=("f32", "bf16"),
                   help="OpenVINO precision: f32 (default) or bf16 (faster, small drift; CPUs with bfloat16)")
    e.add_argument("--batch-size", type=_positive("--batch-size"), default=None, help="pairs per network call")
    e.add_argument("--tile", type=_positive("--tile"), default=None,
                   help="LR tile size in pixels (0 = never tile; default: automatic when memory is short)")
    e.add_argument("--frames", type=_positive("--frames"), default=None, help="process only the first N input frames")
    e.add_argument("--fast-flow", action="store_true", help="fewer optical-flow iterations (faster, a little softer)")
    e.add_argument("--no-scene-detect", action="store_true", help="interpolate across scene cuts too")
    e.add_argument("--codec", default="libx264", help="ffmpeg video encoder (default libx264)")
    e.add_argument("--crf", type=_positive("--crf"), default=16, help="encoder quality (CRF, default 16)")
    e.add_argument("--pix-fmt", default="yuv420p", help="output pixel format (default yuv420p)")
    e.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    e.add_argument("--compare", metavar="PNG", default=None,
                   help="also write a side-by-side picture: bicubic (or blend) vs STAR, centre crop of the middle frame")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sub.add_parser("info", help="versions, devices and bundled models")
    add_export_onnx_parser(sub)
    return p


# ----------------------------------------------------------------------------------- enhance
def _check_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise CliError("ffmpeg not found on PATH; install it (e.g. apt-get install ffmpeg)")
    return exe


def _source(path: str, frames: int | None) -> Any:
    import vapoursynth as vs

    core = vs.core
    if not hasattr(core, "bs"):
        raise CliError("the BestSource plugin is missing: pip install vapoursynth-bestsource")
    try:
        clip = core.bs.VideoSource(source=path)
    except vs.Error as exc:
        raise CliError(f"input {path!r}: cannot be read ({str(exc).strip().splitlines()[-1]})") from None
    if frames:
        clip = clip[: min(frames, clip.num_frames)]
    return clip


def _to_y4m_format(clip: Any) -> Any:
    """y4m carries YUV/GRAY only: RGB results are converted to YUV 4:4:4 (BT.709)."""
    import vapoursynth as vs

    if clip.format.color_family == vs.RGB:
        bits = 8 if clip.format.sample_type == vs.INTEGER and clip.format.bits_per_sample == 8 else 16
        fmt = vs.YUV444P8 if bits == 8 else vs.YUV444P16
        clip = vs.core.resize.Bicubic(clip, format=fmt, matrix_s="709")
    elif clip.format.sample_type == vs.FLOAT:
        fmt = clip.format.replace(sample_type=vs.INTEGER, bits_per_sample=16)
        clip = vs.core.resize.Point(clip, format=fmt.id)
    return clip


def _temp_path(output: Path) -> Path:
    return output.with_name(f".{output.stem}.vsstar-partial-{os.getpid()}{output.suffix}")


def _ffmpeg_cmd(ffmpeg: str, args: argparse.Namespace, tmp: Path, audio: bool) -> list[str]:
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-"]
    if audio:
        cmd += ["-i", args.input, "-map", "0:v:0", "-map", "1:a?", "-c:a", "copy", "-shortest"]
    cmd += ["-c:v", args.codec]
    if args.codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"):
        cmd += ["-crf", str(args.crf)]
    if args.pix_fmt:
        cmd += ["-pix_fmt", args.pix_fmt]
    cmd.append(str(tmp))
    return cmd


def _has_audio(path: str) -> bool:
    probe = shutil.which("ffprobe")
    if probe is None:
        return False
    r = subprocess.run([probe, "-v", "error", "-select_streams", "a", "-show_entries", "stream=index",
                        "-of", "csv=p=0", path], capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def _encode(clip: Any, cmd: list[str], quiet: bool) -> None:
    """Pipe `clip` as y4m into ffmpeg (`cmd`), with a progress bar; raises on any failure."""
    from tqdm import tqdm

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    bar = tqdm(total=clip.num_frames, unit="frame", disable=quiet, dynamic_ncols=True, smoothing=0.1)
    try:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            clip.output(proc.stdin, y4m=True, progress_update=progress)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        if rc != 0:
            raise CliError(f"ffmpeg failed (exit {rc}): {err.splitlines()[-1] if err else 'no message'}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    finally:
        bar.close()
        for stream in (proc.stdin, proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def _rgb_image(frame: Any) -> Any:
    import numpy as np
    from PIL import Image

    planes = [np.asarray(frame[p]) for p in range(3)]
    return Image.fromarray(np.stack(planes, axis=-1).astype(np.uint8), "RGB")


def write_compare(src: Any, result: Any, mode: str, scale: int, path: str, label: str = "STAR") -> None:
    """Side-by-side PNG of the middle frame: bicubic (or linear blend in mode t) vs STAR, centre crop."""
    import vapoursynth as vs
    from PIL import Image, ImageDraw

    core = vs.core
    k = max(0, (src.num_frames - 1) // 2)
    to_rgb = lambda c: core.resize.Bicubic(c, format=vs.RGB24, matrix_in_s="709") \
        if c.format.color_family == vs.YUV else core.resize.Bicubic(c, format=vs.RGB24)
    if mode == "t":
        a, b = src[k], src[min(k + 1, src.num_frames - 1)]
        ref = core.std.Merge(a, b, 0.5)
        out_n, ref_label = 2 * k + 1, "linear blend"
    else:
        ref = core.resize.Bicubic(src[k], src.width * scale, src.height * scale)
        out_n, ref_label = (2 * k if mode == "st" else k), "bicubic"
    left = _rgb_image(to_rgb(ref).get_frame(0))
    right = _rgb_image(to_rgb(result[out_n]).get_frame(0))
    w, h = right.size
    cw, ch = min(w, 480), min(h, 480)
    box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    gap = 6
    canvas = Image.new("RGB", (2 * cw + gap, ch + 22), (255, 255, 255))
    canvas.paste(left.crop(box), (0, 22))
    canvas.paste(right.crop(box), (cw + gap, 22))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), ref_label, fill=(0, 0, 0))
    draw.text((cw + gap + 4, 4), label, fill=(0, 0, 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.partial-{os.getpid()}.png")
    try:
        canvas.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def enhance(args: argparse.Namespace) -> int:
    """Run the ``enhance`` sub-command."""
    import vapoursynth as vs

    from .vs import STAR

    ffmpeg = _check_ffmpeg()
    if not os.path.isfile(args.input):
        raise CliError(f"input {args.input!r}: no such file")
    output = Path(args.output)
    if output.suffix == "":
        raise CliError(f"output {args.output!r}: give a file extension (e.g. .mp4, .mkv) to pick the container")
    if output.resolve() == Path(args.input).resolve():
        raise CliError("output must differ from input")
    output.parent.mkdir(parents=True, exist_ok=True)

    src = _source(args.input, args.frames)
    try:
        result = STAR(src, scale=args.scale, mode=args.mode, model=args.model, device=args.device,
                      fp16=args.fp16, batch_size=args.batch_size, tile=args.tile,
                      scene_change=not args.no_scene_detect,
                      flow_options=FAST_FLOW if args.fast_flow else None,
                      backend=args.backend, precision=args.precision)
    except vs.Error as exc:
        # Speak in the command's terms: STAR's keyword arguments are options here.
        msg = str(exc).strip().replace("pass model=", "pass --model").replace("pass scale=", "pass --scale ")
        raise CliError(msg) from None
    clip = _to_y4m_format(result)
    if not args.quiet:
        print(f"{args.input}: {src.width}x{src.height} {src.num_frames} frames @ {float(src.fps):.3f} fps -> "
              f"{clip.width}x{clip.height} {clip.num_frames} frames @ {float(clip.fps):.3f} fps "
              f"(mode {args.mode}, x{args.scale})", file=sys.stderr)

    tmp = _temp_path(output)
    audio = not args.no_audio and _has_audio(args.input)
    cmd = _ffmpeg_cmd(ffmpeg, args, tmp, audio)
    try:
        _encode(clip, cmd, args.quiet)
        os.replace(tmp, output)
    except vs.Error as exc:
        raise CliError(str(exc).strip().splitlines()[-1]) from None
    finally:
        tmp.unlink(missing_ok=True)
    if args.compare:
        write_compare(src, result, args.mode, args.scale, args.compare)
    if not args.quiet:
        print(f"wrote {output}" + (f" and {args.compare}" if args.compare else ""), file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------- export-onnx
def add_export_onnx_parser(sub: Any) -> None:
    """Register ``vsstar export-onnx MODEL OUT.onnx``."""
    x = sub.add_parser("export-onnx", help="write the network as an ONNX file (for vs-mlrt, TensorRT, OpenVINO)",
                       description="Export MODEL (bundled name, .safetensors or the authors' .pth) to ONNX: inputs "
                                   "im1, im2 (normalised RGB), flow_f, flow_b (encoded flows); outputs ht, h1, h2, "
                                   "l. See docs/onnx.md for the encodings and the size multiple.")
    x.add_argument("model", help="bundled model name, .safetensors or official .pth checkpoint")
    x.add_argument("output", help="ONNX file to write (.onnx)")
    x.add_argument("--shape", default=None, metavar="NxHxW",
                   help="fixed LR input shape, e.g. 1x240x426 (default: dynamic batch, height and width)")
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
        path = export_onnx(net, args.output, shape=shape, check=not args.no_check)
    except (ValueError, ImportError, OSError) as exc:
        raise CliError(str(exc).replace("shape must", "--shape must")) from None
    cfg = net.config
    what = (f"fixed LR shape {args.shape}" if shape else
            f"dynamic batch/height/width, height and width multiples of {onnx_size_multiple(cfg)}, "
            f">= {onnx_min_size(cfg)}")
    print(f"wrote {path} (opset {ONNX_OPSET}, x{cfg.scale} {cfg.objective}, {what})", file=sys.stderr)
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
        lines.append(f"  {name}: x{meta.get('scale')} {meta.get('objective')} {meta.get('variant', '')} "
                     f"({size:.1f} MiB){' - ' + desc if desc else ''}")
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vsstar`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            return info()
        if args.command == "export-onnx":
            return export_onnx_command(args)
        return enhance(args)
    except CliError as exc:
        print(f"vsstar: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("vsstar: interrupted; no output written", file=sys.stderr)
        code = 128 + signal.SIGINT
    if argv is None:
        # Run as a program and stopped mid-stream: VapourSynth still has frame requests in flight,
        # and tearing its core down under them aborts the interpreter. Everything of ours is
        # cleaned up already (temporary file removed, ffmpeg reaped), so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
