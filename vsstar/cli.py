"""The ``vsstar`` command: ``vsstar enhance INPUT OUTPUT`` and ``vsstar info``.

``enhance`` reads any video with vapoursynth-bestsource, runs :func:`vsstar.STAR` and streams the result,
with the source's frame times and colour tags, into the system ffmpeg (see :mod:`vsstar.media`), which
copies the source's audio beside it. It writes to a hidden partial file next to OUTPUT and renames it at the
end, so a failure, Ctrl-C or SIGTERM never leaves a half-written OUTPUT behind. docs/cli.md has the details.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from fractions import Fraction
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import media
from .backends import DEFAULT_PRECISION, PRECISIONS

__all__ = ["main", "build_parser", "enhance", "prepare", "star_clip", "open_source", "summary", "Job",
           "CliError"]

# Fewer flow iterations: roughly 3x faster flow, slightly softer in-between frames.
FAST_FLOW = {"n_outer": 3, "n_sor": 10}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _positive(name: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from exc
        if v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {v}")
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


def _output_factor(args: argparse.Namespace, tl: media.Timeline) -> Fraction:
    """Frames out per frame in from --factor / --fps (--fps needs a constant-rate input)."""
    if args.mode == "s":
        if args.factor is not None or args.fps is not None:
            raise CliError("--factor/--fps: mode s keeps the frame rate")
        return Fraction(1)
    if args.fps is not None:
        if not tl.is_constant() or len(tl.starts) < 2:
            raise CliError("--fps needs an input with a constant frame rate; this one is variable: use --factor")
        f = args.fps * (tl.starts[1] - tl.starts[0])
        if f < 1:
            raise CliError(f"--fps {args.fps} is below the input's rate ({float(1 / (tl.starts[1] - tl.starts[0])):.3f})")
        return f
    f = Fraction(2) if args.factor is None else args.factor
    if f < 1:
        raise CliError(f"--factor must be at least 1, got {f}")
    return f


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
    e.add_argument("--scale", type=int, default=4, choices=(2, 4, 8), help="upscaling factor (default 4)")
    e.add_argument("--mode", default="st", choices=("st", "s", "t"),
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
    e.add_argument("--quality", default="fast", choices=("fast", "high"),
                   help="tier of the bundled weights when no --model is given: fast (default) or high (larger, "
                        "about 4x slower, better pictures; --scale 4 only)")
    e.add_argument("--device", default=None, type=_device_arg,
                   help="cpu, cuda or cuda:N, or several separated by commas (cuda:0,cuda:1: one engine per "
                        "device, each pair computed once) (default: CUDA if available)")
    fp = e.add_mutually_exclusive_group()
    fp.add_argument("--fp16", dest="fp16", action="store_true", default=None, help="float16 autocast (CUDA only; default on CUDA)")
    fp.add_argument("--no-fp16", dest="fp16", action="store_false", help="full float32 on CUDA")
    e.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino"),
                   help="network backend: auto (OpenVINO on the CPU when installed, default), torch, openvino")
    e.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="OpenVINO precision: auto (default: bf16 where the CPU has native bfloat16 and a once-per-"
                        "model check agrees, else f32), f32, bf16 (CPUs with bfloat16) or int8 (about 1.6x faster "
                        "than f32, under 0.1 dB drift; needs the nncf package)")
    e.add_argument("--batch-size", type=_positive("--batch-size"), default=None, help="pairs per network call")
    e.add_argument("--tile", type=_positive("--tile"), default=None,
                   help="LR tile size in pixels (0 = never tile; default: automatic when memory is short)")
    e.add_argument("--frames", type=_positive("--frames"), default=None, help="process only the first N input frames")
    e.add_argument("--fast-flow", action="store_true", help="fewer optical-flow iterations (faster, a little softer)")
    e.add_argument("--no-scene-detect", action="store_true", help="interpolate across scene cuts too")
    e.add_argument("--codec", default=None,
                   help="ffmpeg video encoder (default: libx264, else libx265, else ffv1 in .mkv: the first that "
                        "keeps the pixel format)")
    e.add_argument("--crf", type=_positive("--crf"), default=16, help="encoder quality (CRF, default 16)")
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
    r.add_argument("--chunk-frames", type=_positive("--chunk-frames"), default=None,
                   help="most input frames per chunk (default 1000); chunks end at scene cuts where possible")
    r.add_argument("--ray-cpus", type=float, default=None,
                   help="CPUs each chunk's worker requests (default 1; also its torch threads on the CPU)")
    r.add_argument("--ray-gpus", type=float, default=None,
                   help="GPUs each chunk's worker requests (default 1 when --device is CUDA or the cluster "
                        "has GPUs and --device is not cpu, else 0)")
    r.add_argument("--max-retries", type=_positive("--max-retries"), default=3,
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


def _check_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise CliError("ffmpeg not found on PATH; install it (e.g. apt-get install ffmpeg)")
    return exe


def _source(path: str, track: int, cache: bool = True) -> Any:
    import vapoursynth as vs

    core = vs.core
    if not hasattr(core, "bs"):
        raise CliError("the BestSource plugin is missing: pip install vapoursynth-bestsource")
    try:
        # No index cache for our own temporary copies: it would outlive them.
        return core.bs.VideoSource(source=path, track=track, **({} if cache else {"cachemode": 0}))
    except vs.Error as exc:
        raise CliError(f"input {path!r}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc


def _writable(clip: Any) -> Any:
    """Float results (from float sources) are written as 16-bit integers."""
    import vapoursynth as vs

    if clip.format.sample_type == vs.FLOAT:
        clip = vs.core.resize.Point(clip, format=clip.format.replace(sample_type=vs.INTEGER, bits_per_sample=16).id)
    return clip


def _raw_format(clip: Any) -> media.RawFormat:
    import vapoursynth as vs

    fam = {vs.YUV: "yuv", vs.GRAY: "gray", vs.RGB: "rgb"}[clip.format.color_family]
    return media.raw_format(fam, clip.format.bits_per_sample, clip.format.subsampling_w, clip.format.subsampling_h)


def _ffmpeg_cmd(ffmpeg: str, args: argparse.Namespace, tmp: Path, audio: bool, codec: str, pix_fmt: str,
                colour: media.Colour, tb: Fraction, offset: Fraction, until: Fraction | None = None) -> list[str]:
    """The encoder: video from the pipe (input 0), audio, metadata and chapters from the source (input 1).

    The piped video carries the source's frame times moved by `offset`; the source is moved by the same
    offset and -copyts keeps both as they are, so audio and video stay in step and start at zero.
    `until` (seconds) ends the output there, for --frames; otherwise the audio is kept whole.
    """
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "matroska", "-i", "-",
           "-itsoffset", f"{float(offset):.9f}", "-i", args.input, "-map", "0:v:0",
           "-map_metadata", "1", "-map_chapters", "1"]
    if audio:
        # The audio as it is, never cut to the video's length.
        cmd += ["-map", "1:a?", "-c:a", "copy"]
    cmd += ["-copyts", "-enc_time_base:v", f"{tb.numerator}/{tb.denominator}"]
    cmd += ["-fps_mode", "passthrough"] if media.ffmpeg_version(ffmpeg) >= (5, 1) else ["-vsync", "passthrough"]
    cmd += ["-c:v", codec]
    if codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"):
        cmd += ["-crf", str(args.crf)]
    if codec == "libx265":
        cmd += ["-x265-params", "log-level=error"]
    cmd += ["-pix_fmt", pix_fmt] + colour.ffmpeg_args()
    if until is not None:
        cmd += ["-t", f"{float(until):.9f}"]
    cmd.append(str(tmp))
    return cmd


def _clip_planes(clip: Any) -> Iterator[list[Any]]:
    """The planes (numpy arrays, source order) of every frame of `clip`, in order, a few requested ahead."""
    import numpy as np
    import vapoursynth as vs

    fmt = _raw_format(clip)
    dtype = np.dtype("<u2") if fmt.bytes_per_sample == 2 else np.dtype(np.uint8)
    window = max(1, vs.core.num_threads)
    pending: dict[int, Any] = {}
    n = clip.num_frames
    for i in range(n):
        for j in range(i, min(n, i + window)):
            if j not in pending:
                pending[j] = clip.get_frame_async(j)
        frame = pending.pop(i).result()
        yield [np.ascontiguousarray(np.asarray(frame[p]), dtype=dtype) for p in range(frame.format.num_planes)]
        del frame


def _encode(frames: Iterable[Sequence[Any]], n: int, width: int, height: int, times: list[Fraction],
            end: Fraction, cmd: list[str], fmt: media.RawFormat, colour: media.Colour, quiet: bool,
            on_frame: Callable[[], None] | None = None) -> None:
    """Stream `n` frames (plane buffers in source order) with `times` as raw Matroska into ffmpeg (`cmd`).

    A progress bar unless `quiet`; `on_frame` is called after each frame written. Raises on failure
    (CliError when ffmpeg fails or stops reading early), with ffmpeg stopped.
    """
    from tqdm import tqdm

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    bar = tqdm(total=n, unit="frame", disable=quiet, dynamic_ncols=True, smoothing=0.1)
    written = 0
    try:
        try:
            mux = media.RawVideoMuxer(proc.stdin, width, height, fmt, colour)
            for i, planes in enumerate(frames):
                if i >= n:
                    raise RuntimeError(f"more than the {n} frames expected")
                nxt = times[i + 1] if i + 1 < n else end
                mux.write([memoryview(p).cast("B") for p in planes], times[i], nxt - times[i])
                written += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame()
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped early: its exit status and message say why
        rc = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        if rc != 0:
            raise CliError(f"ffmpeg failed (exit {rc}): {err.splitlines()[-1] if err else 'no message'}")
        if written != n:
            raise CliError(f"ffmpeg stopped reading after {written} of {n} frames")
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


def _rate_text(tl: media.Timeline, factor: Fraction | int = 1) -> str:
    rate = float(tl.rate()) * factor
    return f"{rate:.3f} fps" if tl.is_constant() else f"{rate:.3f} fps on average (variable)"


def _rgb_image(frame: Any) -> Any:
    import numpy as np
    from PIL import Image

    planes = [np.asarray(frame[p]) for p in range(3)]
    return Image.fromarray(np.stack(planes, axis=-1).astype(np.uint8), "RGB")


def write_compare(src: Any, result: Any, mode: str, scale: int, path: str, label: str = "STAR",
                  factor: Fraction | int | None = None) -> None:
    """Side-by-side PNG of the middle frame: bicubic (or linear blend in mode t) vs STAR, centre crop.

    factor: output frames per input frame of ``result`` (default 2 in modes st/t, 1 in mode s)."""
    import vapoursynth as vs
    from PIL import Image, ImageDraw

    core = vs.core
    f = Fraction(1 if mode == "s" else 2) if factor is None else Fraction(factor)
    k = max(0, (src.num_frames - 1) // 2) // f.denominator * f.denominator  # k * f: an output frame
    to_rgb = lambda c: core.resize.Bicubic(c, format=vs.RGB24, matrix_in_s="709") \
        if c.format.color_family == vs.YUV else core.resize.Bicubic(c, format=vs.RGB24)
    if mode == "t":
        a, b = src[k], src[min(k + 1, src.num_frames - 1)]
        out_n = int(k * f) + 1  # the first in-between frame after k, at t of the way to k+1
        ref = core.std.Merge(a, b, float(out_n / f - k))
        ref_label = "linear blend"
    else:
        ref = core.resize.Bicubic(src[k], src.width * scale, src.height * scale)
        out_n, ref_label = int(k * f), "bicubic"
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


def _check_io(args: argparse.Namespace) -> tuple[str, Path]:
    ffmpeg = _check_ffmpeg()
    if shutil.which("ffprobe") is None:
        raise CliError("ffprobe not found on PATH; install ffmpeg (e.g. apt-get install ffmpeg)")
    if not os.path.isfile(args.input):
        raise CliError(f"input {args.input!r}: no such file")
    output = Path(args.output)
    if output.suffix == "":
        raise CliError(f"output {args.output!r}: give a file extension (e.g. .mp4, .mkv) to pick the container")
    if output.resolve() == Path(args.input).resolve():
        raise CliError("output must differ from input")
    return ffmpeg, output


@dataclass
class Job:
    """An ``enhance`` job with everything decided before frames flow (see :func:`prepare`)."""

    args: argparse.Namespace
    ffmpeg: str
    output: Path
    tmp: Path  # the partial file ffmpeg writes, renamed to output at the end
    video: media.VideoStream
    src: Any  # the source clip (its first --frames frames)
    back_to: Any  # the format to return to after STAR (odd sizes read through a 4:4:4 copy), else None
    timeline: media.Timeline  # frame times of src
    result: Any  # STAR's output clip
    clip: Any  # what is written: `result` as integers
    fmt: media.RawFormat
    pix_fmt: str
    codec: str
    times: list[Fraction]  # output frame times (from zero)
    end: Fraction
    cmd: list[str]  # the final encoder, reading raw Matroska on its stdin
    started: float
    factor: Fraction = Fraction(2)  # output frames per input frame (1 in mode s)

    @property
    def nframes(self) -> int:
        return self.src.num_frames


def star_clip(args: argparse.Namespace, src: Any, video: media.VideoStream, back_to: Any,
              device: str | None = None, note: Callable[[str], None] | None = None,
              factor: Fraction | None = None) -> tuple[Any, Any]:
    """STAR on `src` as the ``enhance`` options ask: (STAR's result, the clip to write, as integers).

    `device` overrides ``args.device`` (the Ray driver builds the clip on the CPU only to learn its format);
    `factor` is the output frame rate / input frame rate (None: STAR's default, 2; ignored in mode s).
    """
    import vapoursynth as vs

    from .vs import STAR

    note = _note if note is None else note
    try:
        rate_kw = {} if args.mode == "s" or factor is None else \
            {"factor_num": factor.numerator, "factor_den": factor.denominator}
        result = STAR(src, scale=args.scale, mode=args.mode, model=args.model, **rate_kw,
                      quality=getattr(args, "quality", "fast"),
                      exact_time=bool(getattr(args, "exact_time", False)),
                      device=args.device if device is None else device,
                      fp16=args.fp16 if device is None else None, batch_size=args.batch_size, tile=args.tile,
                      scene_change=not args.no_scene_detect,
                      flow_options=FAST_FLOW if args.fast_flow else None,
                      backend=args.backend, precision=args.precision)
    except vs.Error as exc:
        # Speak in the command's terms: STAR's keyword arguments are options here.
        msg = str(exc).strip().replace("pass model=", "pass --model").replace("pass scale=", "pass --scale ")
        msg = msg.replace("exact_time=False", "no --exact-time").replace("exact_time:", "--exact-time:")
        msg = msg.replace("quality=", "--quality ").replace("use --quality 'fast'", "use --quality fast")
        raise CliError(msg) from exc
    if back_to is not None:
        if result.width % (1 << back_to.subsampling_w) or result.height % (1 << back_to.subsampling_h):
            note(f"{result.width}x{result.height} cannot be stored in {video.pix_fmt}'s chroma layout; "
                 "writing 4:4:4 (the whole picture, full chroma); --pix-fmt picks another")
        else:
            result = vs.core.resize.Spline36(result, format=back_to.id)
    return result, _writable(result)


def prepare(args: argparse.Namespace, device: str | None = None) -> Job:
    """Check the job, open the source, build STAR's clip and the encoder command; nothing is written yet.

    Removes stale partial files of OUTPUT. The caller must delete ``job.tmp`` and the 4:4:4 source copy
    (``media.partial_path(job.output, tag="source")``) when done, whatever happens.
    """
    started = time.monotonic()
    ffmpeg, output = _check_io(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in media.stale_partials(output):
        stale.unlink(missing_ok=True)
        _note(f"removed {stale.name}, left by an earlier run that was stopped")

    try:
        info = media.probe(args.input)
    except media.MediaError as exc:
        raise CliError(str(exc)) from exc
    v = info.video
    if v is None:
        raise CliError(f"no video stream in {args.input!r}")
    if v.interlaced:
        raise CliError(f"input {args.input!r} is interlaced ({media.FIELD_ORDERS[v.field_order]}, field_order "
                       f"{v.field_order}); STAR needs progressive frames: deinterlace it first, e.g. "
                       f"ffmpeg -i IN -vf bwdif=mode=send_frame -c:v ffv1 progressive.mkv")

    tmp = media.partial_path(output)
    full_copy = media.partial_path(output, tag="source")
    src, timeline_all, back_to = _open_input(args, ffmpeg, v, full_copy)
    nframes = src.num_frames
    timeline = timeline_all.head(nframes)
    factor = _output_factor(args, timeline)
    result, clip = star_clip(args, src, v, back_to, device=device, factor=factor)
    fmt = _raw_format(clip)
    pix_fmt = args.pix_fmt or fmt.pix_fmt
    codec = media.pick_codec(ffmpeg, pix_fmt, output.suffix, args.codec)
    # Times from zero: the source is shifted with them (see _ffmpeg_cmd).
    offset = -min(info.start, timeline.starts[0])
    times = timeline.shifted(offset).output_times(args.mode, factor)
    if len(times) != clip.num_frames:
        raise RuntimeError(f"STAR returned {clip.num_frames} frames for {len(times)} frame times")
    end = timeline.end + offset
    tb = media.time_base(times + [end])
    if not args.quiet:
        print(f"{args.input}: {v.width}x{v.height} {v.pix_fmt} {nframes} frames @ {_rate_text(timeline)} -> "
              f"{clip.width}x{clip.height} {pix_fmt} {clip.num_frames} frames ({codec}; mode {args.mode}, "
              f"x{args.scale})", file=sys.stderr)
    audio = not args.no_audio and info.audio_streams > 0
    # --frames: the output ends with the last frame taken (the audio too).
    until = end if args.frames and args.frames < len(timeline_all) else None
    cmd = _ffmpeg_cmd(ffmpeg, args, tmp, audio, codec, pix_fmt, v.colour, tb, offset, until)
    return Job(args, ffmpeg, output, tmp, v, src, back_to, timeline, result, clip, fmt, pix_fmt, codec,
               times, end, cmd, started, factor)


def summary(job: Job, encode_s: float) -> str:
    """The last line of a finished job."""
    args, clip, v = job.args, job.clip, job.video
    total = time.monotonic() - job.started
    out_rate = _rate_text(job.timeline, job.factor)
    return (f"wrote {job.output}" + (f" and {args.compare}" if args.compare else "")
            + f": {clip.num_frames} frames {clip.width}x{clip.height} {job.pix_fmt} @ {out_rate} "
            f"from {job.nframes} frames {v.width}x{v.height} @ {_rate_text(job.timeline)}; "
            f"{total:.1f} s, {clip.num_frames / max(encode_s, 1e-9):.2f} frames/s")


def enhance(args: argparse.Namespace) -> int:
    """Run the ``enhance`` sub-command (on a Ray cluster with ``--ray``)."""
    if getattr(args, "ray", None) is not None:
        from . import distributed

        distributed.run_job(args)
        return 0
    with job_files(Path(args.output)):
        job = prepare(args)
        encode_s = write_job(job, _clip_planes(job.clip), job.clip.num_frames, args.quiet)
        if args.compare:
            write_compare(job.src, job.result, args.mode, args.scale, args.compare, factor=job.factor)
    if not args.quiet:
        print(summary(job, encode_s), file=sys.stderr)
    return 0


@contextlib.contextmanager
def job_files(output: Path) -> Iterator[None]:
    """Around a job writing OUTPUT: ffprobe/ffmpeg and VapourSynth errors become one CliError line, and the
    partial output and the 4:4:4 source copy (:func:`prepare`) are deleted whatever happens."""
    import vapoursynth as vs

    try:
        yield
    except media.MediaError as exc:
        raise CliError(str(exc)) from exc
    except vs.Error as exc:
        raise CliError(str(exc).strip().splitlines()[-1]) from exc
    finally:
        media.partial_path(output).unlink(missing_ok=True)
        media.partial_path(output, tag="source").unlink(missing_ok=True)


def write_job(job: Job, frames: Iterable[Any], count: int, quiet: bool) -> float:
    """Encode `count` output frames (plane tuples) with the job's encoder, then move the finished file to
    OUTPUT; returns the seconds it took (frames are produced while encoding)."""
    t0 = time.monotonic()
    _encode(frames, count, job.clip.width, job.clip.height, job.times, job.end, job.cmd, job.fmt,
            job.video.colour, quiet)
    encode_s = time.monotonic() - t0
    os.replace(job.tmp, job.output)
    return encode_s


def open_source(path: str, video: media.VideoStream, ffmpeg: str, full_copy: Path,
                frames: int | None = None, src: Any = None) -> tuple[Any, Any]:
    """The source clip of `path` and, for odd sizes read through a 4:4:4 copy (written to `full_copy`,
    its first `frames` frames), the format to return to after STAR (else None).

    `src`: the file opened already with BestSource.
    """
    src = _source(path, video.index) if src is None else src
    field_based = src.get_frame(0).props.get("_FieldBased", 0)
    if field_based in (1, 2):  # the stream did not say, the frames do
        order = "bottom field first" if field_based == 1 else "top field first"
        raise CliError(f"input {path!r} is interlaced ({order}); STAR needs progressive frames: "
                       "deinterlace it first, e.g. ffmpeg -i IN -vf bwdif=mode=send_frame -c:v ffv1 progressive.mkv")
    back_to = None
    if (src.width, src.height) != (video.width, video.height):
        # Odd sizes with 4:2:0/4:2:2: a clip in that layout cannot hold the whole picture (BestSource
        # drops the last column/row). Read a 4:4:4 copy at the exact size instead, and go back to the
        # input's layout after STAR, whose output size is even at x2/x4/x8.
        back_to = src.format
        media.run_ffmpeg(media.full_chroma_copy_cmd(ffmpeg, path, video, full_copy,
                                                    src.format.bits_per_sample, frames))
        src = _source(str(full_copy), 0, cache=False)
    return src, back_to


def _open_input(args: argparse.Namespace, ffmpeg: str, v: media.VideoStream,
                full_copy: Path) -> tuple[Any, media.Timeline, Any]:
    """The source clip (its first --frames frames), the frame times of the whole input and, for odd sizes
    read through a 4:4:4 copy, the format to return to (else None)."""
    src = _source(args.input, v.index)
    nframes = min(args.frames, src.num_frames) if args.frames else src.num_frames
    timeline = media.read_timeline(args.input, v)
    if timeline is None or len(timeline) != src.num_frames:
        timeline = media.Timeline.constant(src.num_frames, Fraction(src.fps_num, src.fps_den))
        _note(f"frame times could not be read from the input; writing a constant {float(src.fps):.3f} fps")
    src, back_to = open_source(args.input, v, ffmpeg, full_copy, nframes, src)
    return src[:nframes], timeline, back_to


def _note(text: str) -> None:
    """A one-line remark on what was done that the user did not ask for (shown even with -q)."""
    print(f"vsstar: note: {text}", file=sys.stderr)
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
    except CliError as exc:
        _report(exc, debug, str(exc))
        code = 2
    except KeyboardInterrupt:
        print("vsstar: interrupted; no output written", file=sys.stderr)
        code = 128 + signal.SIGINT
    except Terminated as exc:
        print(f"vsstar: stopped by {signal.Signals(exc.signum).name}; no output written", file=sys.stderr)
        code = 128 + exc.signum
    except Exception as exc:  # a bug or an unforeseen failure: still one line unless --debug
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


def _report(exc: BaseException, debug: bool, line: str) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"vsstar: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
