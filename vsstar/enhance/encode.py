"""Encoding an ``enhance`` job: frames out of a VapourSynth clip (requested a few ahead), the raw Matroska
pipe into ffmpeg (the frame pump) and the ffmpeg commands that read it.

Used by the local job and by the Ray driver and workers (:mod:`vsstar.distributed`).
"""
from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .. import media
from .options import EnhanceError, EnhanceOptions

__all__ = ["frames_ahead", "clip_planes", "raw_format", "writable", "encoder_cmd", "lossless_cmd", "pump"]

# Encoders that take -crf.
_CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1")


def frames_ahead(clip: Any) -> Iterator[Any]:
    """Every frame of a VapourSynth clip in order, with as many requested ahead as the core has threads
    (so the filters behind it work in parallel while the caller uses a frame)."""
    import vapoursynth as vs

    window = max(1, vs.core.num_threads)
    pending: dict[int, Any] = {}
    n = clip.num_frames
    for i in range(n):
        for j in range(i, min(n, i + window)):
            if j not in pending:
                pending[j] = clip.get_frame_async(j)
        frame = pending.pop(i).result()
        yield frame
        del frame


def raw_format(clip: Any) -> media.RawFormat:
    """The raw layout ffmpeg reads for an integer clip's format."""
    import vapoursynth as vs

    fam = {vs.YUV: "yuv", vs.GRAY: "gray", vs.RGB: "rgb"}[clip.format.color_family]
    return media.raw_format(fam, clip.format.bits_per_sample, clip.format.subsampling_w, clip.format.subsampling_h)


def clip_planes(clip: Any) -> Iterator[list[Any]]:
    """The planes (numpy arrays, source order) of every frame of `clip`, in order (see :func:`frames_ahead`)."""
    import numpy as np

    fmt = raw_format(clip)
    dtype = np.dtype("<u2") if fmt.bytes_per_sample == 2 else np.dtype(np.uint8)
    for frame in frames_ahead(clip):
        yield [np.ascontiguousarray(np.asarray(frame[p]), dtype=dtype) for p in range(frame.format.num_planes)]


def writable(clip: Any) -> Any:
    """Float results (from float sources) are written as 16-bit integers."""
    import vapoursynth as vs

    if clip.format.sample_type == vs.FLOAT:
        clip = vs.core.resize.Point(clip, format=clip.format.replace(sample_type=vs.INTEGER, bits_per_sample=16).id)
    return clip


def encoder_cmd(ffmpeg: str, options: EnhanceOptions, tmp: Path, frames: int, audio: bool, codec: str,
                pix_fmt: str, colour: media.Colour, tb: Fraction, offset: Fraction,
                until: Fraction | None = None, *, last: Fraction, end: Fraction) -> list[str]:
    """The encoder: `frames` video frames from the pipe (input 0, see :func:`pump`), audio, metadata and
    chapters from the source (input 1).

    The piped video carries the source's frame times moved by `offset`; the source is moved by the same
    offset and -copyts keeps both as they are, so audio and video stay in step and start at zero.
    `until` (seconds) ends the output there, for --frames; otherwise the audio is kept whole. The last
    frame, at `last`, lasts until `end` (:func:`vsstar.media.last_duration_args`).
    """
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "matroska", "-i", "-",
           "-itsoffset", f"{float(offset):.9f}", "-i", options.input, "-map", "0:v:0",
           "-map_metadata", "1", "-map_chapters", "1"]
    if audio:
        # The audio as it is, never cut to the video's length.
        cmd += ["-map", "1:a?", "-c:a", "copy"]
    cmd += ["-copyts", "-enc_time_base:v", f"{tb.numerator}/{tb.denominator}"] + _first_frames(frames)
    cmd += media.passthrough_args(ffmpeg)
    cmd += ["-c:v", codec]
    if codec in _CRF_CODECS:
        cmd += ["-crf", str(options.crf)]
    if codec == "libx265":
        cmd += ["-x265-params", "log-level=error"]
    cmd += ["-pix_fmt", pix_fmt] + colour.ffmpeg_args()
    cmd += media.last_duration_args(ffmpeg, tmp.suffix, tb, last, end)
    if until is not None:
        cmd += ["-t", f"{float(until):.9f}"]
    cmd.append(str(tmp))
    return cmd


def _first_frames(n: int) -> list[str]:
    """Output options that keep the first `n` video frames (the closing frame of :func:`pump` out).

    A filter, not ``-frames:v``: ffmpeg 5.1 ends the whole file when a stream reaches its -frames limit,
    which would cut the audio copied beside the video.
    """
    return ["-vf", f"trim=end_frame={n}"]


def lossless_cmd(ffmpeg: str, codec: str, dst: Path, frames: int) -> list[str]:
    """ffmpeg reading `frames` frames of raw Matroska on its stdin (see :func:`pump`) and writing them
    losslessly with `codec` (FFV1) to `dst`."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "matroska", "-i", "-",
           "-map", "0:v:0"] + _first_frames(frames) + ["-c:v", codec, "-level", "3", "-slicecrc", "0"]
    return cmd + media.passthrough_args(ffmpeg) + ["-f", "matroska", str(dst)]


def pump(frames: Iterable[Sequence[Any]], n: int, width: int, height: int, times: list[Fraction],
         end: Fraction, cmd: list[str], fmt: media.RawFormat, colour: media.Colour, quiet: bool,
         on_frame: Callable[[], None] | None = None, desc: str | None = None) -> None:
    """Stream `n` frames (plane buffers in source order) with `times` as raw Matroska into ffmpeg (`cmd`,
    which must keep only the first `n`: :func:`encoder_cmd`, :func:`lossless_cmd`); frame i lasts until
    frame i+1 starts, the last one until `end`.

    ffmpeg 5.1 drops the durations written in the pipe: a last frame with no frame after it gets no
    duration at all (the file ends where it starts), one followed by another gets the frame step. So a
    closing copy of the last frame follows at `end`, which the command keeps out of the file.

    A progress bar unless `quiet`, headed by `desc` (what runs the network); `on_frame` is called after each frame written. Raises on failure
    (EnhanceError when ffmpeg fails or stops reading early), with ffmpeg stopped.
    """
    from tqdm import tqdm

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    bar = tqdm(total=n, unit="frame", disable=quiet, dynamic_ncols=True, smoothing=0.1, desc=desc)
    written = 0
    try:
        try:
            mux = media.RawVideoMuxer(proc.stdin, width, height, fmt, colour)
            buffers: list[memoryview] = []
            for i, planes in enumerate(frames):
                if i >= n:
                    raise RuntimeError(f"more than the {n} frames expected")
                nxt = times[i + 1] if i + 1 < n else end
                buffers = [memoryview(p).cast("B") for p in planes]
                mux.write(buffers, times[i], nxt - times[i])
                written += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame()
            if written == n and n > 0:
                mux.write(buffers, end, end - times[n - 1])  # the closing frame (not encoded)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped early: its exit status and message say why
        rc = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        if rc != 0:
            raise EnhanceError(f"ffmpeg failed (exit {rc}): {err.splitlines()[-1] if err else 'no message'}")
        if written != n:
            raise EnhanceError(f"ffmpeg stopped reading after {written} of {n} frames")
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
