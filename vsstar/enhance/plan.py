"""Planning an ``enhance`` job: check the tools and paths, probe the input, open the source, decide the
output rate and frame times, and build STAR's clip and the encoder command. Nothing is written here.

Used by the local job (:mod:`vsstar.enhance.job`) and the Ray driver (:mod:`vsstar.distributed`), whose
workers open their part of the source with :func:`open_source` and build their clip with :func:`star_clip`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import media
from ..schedule import output_factor
from .encode import encoder_cmd, raw_format, writable
from .options import EnhanceError, EnhanceOptions, flag_words

__all__ = ["Job", "prepare", "summary", "job_files", "open_source", "source_clip", "star_clip", "rate_factor",
           "check_ffmpeg", "note", "rate_text"]


def note(text: str) -> None:
    """A one-line remark on what was done that the user did not ask for (shown even with -q)."""
    print(f"vsstar: note: {text}", file=sys.stderr)


def check_ffmpeg() -> str:
    """The path of ffmpeg (EnhanceError when it is not on PATH)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise EnhanceError("ffmpeg not found on PATH; install it (e.g. apt-get install ffmpeg)")
    return exe


def _check_io(options: EnhanceOptions) -> tuple[str, Path]:
    ffmpeg = check_ffmpeg()
    if shutil.which("ffprobe") is None:
        raise EnhanceError("ffprobe not found on PATH; install ffmpeg (e.g. apt-get install ffmpeg)")
    if not os.path.isfile(options.input):
        raise EnhanceError(f"input {options.input!r}: no such file")
    output = Path(options.output)
    if output.suffix == "":
        raise EnhanceError(f"output {options.output!r}: give a file extension (e.g. .mp4, .mkv) to pick the container")
    if output.resolve() == Path(options.input).resolve():
        raise EnhanceError("output must differ from input")
    return ffmpeg, output


def source_clip(path: str, track: int, cache: bool = True) -> Any:
    """The video track `track` of `path` as a VapourSynth clip (BestSource)."""
    import vapoursynth as vs

    core = vs.core
    if not hasattr(core, "bs"):
        raise EnhanceError("the BestSource plugin is missing: pip install vapoursynth-bestsource")
    try:
        # No index cache for our own temporary copies: it would outlive them.
        return core.bs.VideoSource(source=path, track=track, **({} if cache else {"cachemode": 0}))
    except vs.Error as exc:
        raise EnhanceError(f"input {path!r}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc


def _interlaced(path: str, order: str, detail: str = "") -> EnhanceError:
    return EnhanceError(f"input {path!r} is interlaced ({order}{detail}); STAR needs progressive frames: deinterlace "
                        "it first, e.g. ffmpeg -i IN -vf bwdif=mode=send_frame -c:v ffv1 progressive.mkv")


def open_source(path: str, video: media.VideoStream, ffmpeg: str, full_copy: Path,
                frames: int | None = None, src: Any = None) -> tuple[Any, Any]:
    """The source clip of `path` and, for odd sizes read through a 4:4:4 copy (written to `full_copy`,
    its first `frames` frames), the format to return to after STAR (else None).

    `src`: the file opened already with BestSource.
    """
    src = source_clip(path, video.index) if src is None else src
    field_based = src.get_frame(0).props.get("_FieldBased", 0)
    if field_based in (1, 2):  # the stream did not say, the frames do
        raise _interlaced(path, "bottom field first" if field_based == 1 else "top field first")
    back_to = None
    if (src.width, src.height) != (video.width, video.height):
        # Odd sizes with 4:2:0/4:2:2: a clip in that layout cannot hold the whole picture (BestSource
        # drops the last column/row). Read a 4:4:4 copy at the exact size instead, and go back to the
        # input's layout after STAR, whose output size is even at x2/x4/x8.
        back_to = src.format
        media.run_ffmpeg(media.full_chroma_copy_cmd(ffmpeg, path, video, full_copy,
                                                    src.format.bits_per_sample, frames))
        src = source_clip(str(full_copy), 0, cache=False)
    return src, back_to


def _open_input(options: EnhanceOptions, ffmpeg: str, v: media.VideoStream,
                full_copy: Path) -> tuple[Any, media.Timeline, Any]:
    """The source clip (its first --frames frames), the frame times of the whole input and, for odd sizes
    read through a 4:4:4 copy, the format to return to (else None)."""
    src = source_clip(options.input, v.index)
    nframes = min(options.frames, src.num_frames) if options.frames else src.num_frames
    timeline = media.read_timeline(options.input, v)
    if timeline is None or len(timeline) != src.num_frames:
        timeline = media.Timeline.constant(src.num_frames, Fraction(src.fps_num, src.fps_den))
        note(f"frame times could not be read from the input; writing a constant {float(src.fps):.3f} fps")
    src, back_to = open_source(options.input, v, ffmpeg, full_copy, nframes, src)
    return src[:nframes], timeline, back_to


def rate_factor(options: EnhanceOptions, timeline: media.Timeline) -> Fraction:
    """Frames out per frame in, from --factor / --fps (rules and bounds: :func:`vsstar.schedule.output_factor`;
    --fps needs a constant-rate input)."""
    if options.mode == "s":
        return Fraction(1)
    steps = {b - a for a, b in zip(timeline.starts, timeline.starts[1:])}
    source_fps = 1 / steps.pop() if len(steps) == 1 else None  # None: variable (or a single frame)
    try:
        if options.fps is not None:
            return output_factor(fps_num=options.fps.numerator, fps_den=options.fps.denominator,
                                 source_fps=source_fps)
        factor = Fraction(2) if options.factor is None else options.factor
        return output_factor(factor.numerator, factor.denominator)
    except ValueError as exc:
        raise EnhanceError(flag_words(str(exc))) from exc


def star_clip(options: EnhanceOptions, src: Any, video: media.VideoStream, back_to: Any,
              device: str | list[str] | None = None, on_note: Callable[[str], None] | None = None,
              factor: Fraction | None = None) -> tuple[Any, Any, Any]:
    """STAR on `src` as the options ask: (STAR's result, the clip to write, as integers, the engine that runs it).

    `device` overrides the options' (the Ray driver builds the clip on the CPU only to learn its format);
    `factor` is the output frame rate / input frame rate (None: --factor's, else 2; ignored in mode s).
    The flags reach STAR through :meth:`EnhanceOptions.star_options`, checked there.
    """
    import vapoursynth as vs

    from ..vs import STAR

    on_note = note if on_note is None else on_note
    opts = options.star_options(factor, device)
    rate_kw = {} if opts.mode == "s" else {"factor_num": opts.factor.numerator, "factor_den": opts.factor.denominator}
    try:
        # Built here rather than inside STAR, so the job can say which backend and precision run.
        engines = opts.engines()
    except ValueError as exc:
        raise EnhanceError(flag_words(str(exc).strip())) from exc
    try:
        result = STAR(src, scale=opts.scale, mode=opts.mode, **rate_kw, exact_time=opts.exact_time, engine=engines,
                      batch_size=opts.batch_size, scene_change=opts.scene_change)
    except vs.Error as exc:
        raise EnhanceError(flag_words(str(exc).strip())) from exc
    if back_to is not None:
        if result.width % (1 << back_to.subsampling_w) or result.height % (1 << back_to.subsampling_h):
            on_note(f"{result.width}x{result.height} cannot be stored in {video.pix_fmt}'s chroma layout; "
                    "writing 4:4:4 (the whole picture, full chroma); --pix-fmt picks another")
        else:
            result = vs.core.resize.Spline36(result, format=back_to.id)
    return result, writable(result), engines[0]


@dataclass
class Job:
    """An ``enhance`` job with everything decided before frames flow (see :func:`prepare`)."""

    options: EnhanceOptions
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
    runs: str = ""  # what runs the network ("openvino bf16"), heading the progress line

    @property
    def nframes(self) -> int:
        return self.src.num_frames


def prepare(options: EnhanceOptions, device: str | None = None) -> Job:
    """Check the job, open the source, build STAR's clip and the encoder command; nothing is written yet.

    Removes stale partial files of OUTPUT. Run it inside :func:`job_files`, which deletes ``job.tmp`` and
    the 4:4:4 source copy whatever happens.
    """
    started = time.monotonic()
    ffmpeg, output = _check_io(options)
    output.parent.mkdir(parents=True, exist_ok=True)
    for name in media.remove_stale_partials(output):
        note(f"removed {name}, left by an earlier run that was stopped")

    info = media.probe(options.input)
    v = info.video
    if v is None:
        raise EnhanceError(f"no video stream in {options.input!r}")
    if v.interlaced:
        raise _interlaced(options.input, media.FIELD_ORDERS[v.field_order], f", field_order {v.field_order}")

    tmp = media.partial_path(output)
    full_copy = media.partial_path(output, tag="source")
    src, timeline_all, back_to = _open_input(options, ffmpeg, v, full_copy)
    nframes = src.num_frames
    timeline = timeline_all.head(nframes)
    factor = rate_factor(options, timeline)
    result, clip, engine = star_clip(options, src, v, back_to, device=device, factor=factor)
    fmt = raw_format(clip)
    pix_fmt = options.pix_fmt or fmt.pix_fmt
    codec = media.pick_codec(ffmpeg, pix_fmt, output.suffix, options.codec)
    # Times from zero: the source is shifted with them (see encoder_cmd).
    offset = -min(info.start, timeline.starts[0])
    times = timeline.shifted(offset).output_times(options.mode, factor)
    if len(times) != clip.num_frames:
        raise RuntimeError(f"STAR returned {clip.num_frames} frames for {len(times)} frame times")
    end = timeline.end + offset
    tb = media.time_base(times + [end])
    if not options.quiet:
        print(f"{options.input}: {v.width}x{v.height} {v.pix_fmt} {nframes} frames @ {rate_text(timeline)} -> "
              f"{clip.width}x{clip.height} {pix_fmt} {clip.num_frames} frames ({codec}; mode {options.mode}, "
              f"x{options.scale})", file=sys.stderr)
    audio = not options.no_audio and info.audio_streams > 0
    # --frames: the output ends with the last frame taken (the audio too).
    until = end if options.frames and options.frames < len(timeline_all) else None
    cmd = encoder_cmd(ffmpeg, options, tmp, clip.num_frames, audio, codec, pix_fmt, v.colour, tb, offset, until,
                      last=times[-1], end=end)
    return Job(options, ffmpeg, output, tmp, v, src, back_to, timeline, result, clip, fmt, pix_fmt, codec,
               times, end, cmd, started, factor, engine.runs)


def rate_text(tl: media.Timeline, factor: Fraction | int = 1) -> str:
    """The frame rate of `tl` times `factor`, in words."""
    rate = float(tl.rate()) * factor
    return f"{rate:.3f} fps" if tl.is_constant() else f"{rate:.3f} fps on average (variable)"


def summary(job: Job, encode_s: float) -> str:
    """The last line of a finished job."""
    options, clip, v = job.options, job.clip, job.video
    total = time.monotonic() - job.started
    out_rate = rate_text(job.timeline, job.factor)
    return (f"wrote {job.output}" + (f" and {options.compare}" if options.compare else "")
            + f": {clip.num_frames} frames {clip.width}x{clip.height} {job.pix_fmt} @ {out_rate} "
            f"from {job.nframes} frames {v.width}x{v.height} @ {rate_text(job.timeline)}; "
            f"{total:.1f} s, {clip.num_frames / max(encode_s, 1e-9):.2f} frames/s")


@contextlib.contextmanager
def job_files(output: Path) -> Iterator[None]:
    """Around a job writing OUTPUT: ffprobe/ffmpeg and VapourSynth errors become one EnhanceError line, and the
    partial output, the 4:4:4 source copy and the partial folder are deleted whatever happens."""
    import vapoursynth as vs

    try:
        yield
    except media.MediaError as exc:
        raise EnhanceError(str(exc)) from exc
    except vs.Error as exc:
        raise EnhanceError(flag_words(str(exc).strip().splitlines()[-1])) from exc
    finally:
        media.partial_path(output).unlink(missing_ok=True)
        media.partial_path(output, tag="source").unlink(missing_ok=True)
        shutil.rmtree(media.partial_dir(output), ignore_errors=True)
