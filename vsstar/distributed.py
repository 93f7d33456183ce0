"""Whole videos across a Ray cluster: ``vsstar enhance INPUT OUTPUT --ray`` and :func:`enhance`.

The driver (the process that calls :func:`enhance`) opens the input, finds its scene cuts and splits the
frames into chunks (:func:`plan_chunks`). Each chunk runs ``STAR`` as a Ray task on a worker that requested
CPUs or a GPU: the worker reads its frames plus one frame of context on each side from the input file,
so the pairs across a chunk boundary are formed exactly as in a run over the whole video, and returns its
output frames as a lossless segment (FFV1, or uncompressed Matroska for formats FFV1 lacks). The driver
decodes the segments in order and streams them into one ffmpeg, with the frame times and the audio of
the input exactly as ``vsstar enhance`` does locally, so the result is the same, frame for frame.

Workers report every frame to a small progress actor; the driver shows one bar over the whole job.
A worker that dies is replaced and its chunk rerun by Ray (``max_retries``); a chunk that fails for good
fails the job with its frames named, and OUTPUT is not written. docs/scaling.md has the details.

Which output frames a chunk makes is the frame schedule's answer (:meth:`FrameSchedule.outputs_at` over the
chunk's input frames), so every output rate the local run takes works here, with the same frames and times.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import media
from .enhance import encode, plan
from .enhance.job import write_job
from .enhance.options import EnhanceError, EnhanceOptions
from .schedule import FrameSchedule

__all__ = ["Chunk", "ChunkError", "plan_chunks", "find_cuts", "enhance", "run_job", "DEFAULT_CHUNK_FRAMES"]

#: Most input frames per chunk by default: long enough that a worker's start (model load, source index)
#: is small beside it, short enough to spread a film over many workers.
DEFAULT_CHUNK_FRAMES = 1000

#: Seconds to wait for a TCP answer from the Ray address before giving up.
CONNECT_TIMEOUT_S = 5.0


class ChunkError(EnhanceError):
    """A chunk failed for good (after Ray's retries); the message names its frames."""


@dataclass(frozen=True)
class Chunk:
    """Input frames ``start`` .. ``stop - 1`` of the job; the worker reads one more frame on each side."""

    index: int
    start: int
    stop: int

    def read_range(self, n: int) -> tuple[int, int]:
        """The frames the worker reads: the chunk and its neighbours (within the `n` frames).

        The right neighbour completes the pair (stop-1, stop) whose in-between frames belong to this
        chunk; the left one lets STAR see a cut (or no cut) before ``start`` exactly as a whole run does,
        since the super-resolved first frame comes from the pair before it when the pair after it is a cut.
        The read starts at an even frame, so that mode "s" forms the same disjoint pairs (2i, 2i+1).
        """
        return max(0, self.start - 1) // 2 * 2, min(n, self.stop + 1)

    def outputs(self, schedule: FrameSchedule) -> range:
        """The job's output frames this chunk makes: those whose time lies within its input frames."""
        return schedule.outputs_at(self.start, self.stop)

    def describe(self) -> str:
        return f"chunk {self.index} (input frames {self.start}-{self.stop - 1})"


def plan_chunks(n: int, cuts: Sequence[int], max_frames: int = DEFAULT_CHUNK_FRAMES) -> list[Chunk]:
    """Split frames 0..n-1 into chunks of at most `max_frames`, ending at scene cuts where possible.

    `cuts` holds k for every cut between frames k and k+1. Whole scenes are packed into a chunk while they
    fit; a scene longer than `max_frames` is split into equal pieces of at most `max_frames` (the fixed
    lengths used when there are no cuts).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    bounds = sorted({k + 1 for k in cuts if 0 <= k < n - 1})
    scenes = list(zip([0] + bounds, bounds + [n]))
    spans: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for a, b in scenes:
        if b - a > max_frames:
            if cur is not None:
                spans.append(cur)
                cur = None
            pieces = -(-(b - a) // max_frames)
            edges = [a + (b - a) * i // pieces for i in range(pieces + 1)]
            spans.extend(zip(edges, edges[1:]))
        elif cur is not None and b - cur[0] <= max_frames:
            cur = (cur[0], b)
        else:
            if cur is not None:
                spans.append(cur)
            cur = (a, b)
    if cur is not None:
        spans.append(cur)
    return [Chunk(i, a, b) for i, (a, b) in enumerate(spans)]


def find_cuts(clip: Any, threshold: float | None = None) -> list[int]:
    """Scene cuts of a VapourSynth clip (k for a cut between frames k and k+1), by vsstar's detector.

    The frames are scored on a small RGB copy (about 256 pixels wide), which is all the detector looks at;
    where the decision differs from the workers' own (on full frames), only the chunk boundaries move, never
    the output, because each worker reads one frame of context beyond its chunk.
    """
    import numpy as np
    import vapoursynth as vs

    from .scene import DEFAULT_SC_THRESHOLD, scene_score

    threshold = DEFAULT_SC_THRESHOLD if threshold is None else threshold
    core = vs.core
    w = min(clip.width, 256)
    h = max(2, round(clip.height * w / clip.width / 2) * 2)
    kw = {"matrix_in_s": "709"} if clip.format.color_family == vs.YUV else {}
    small = core.resize.Bilinear(clip, width=w, height=h, format=vs.RGBS, **kw)
    cuts = []
    prev = None
    for i, f in enumerate(encode.frames_ahead(small)):
        cur = np.stack([np.asarray(f[p]) for p in range(3)])
        if prev is not None and scene_score(prev, cur) > threshold:
            cuts.append(i - 1)
        prev = cur
    return cuts


# ----------------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class _Spec:
    """What every worker needs: the job's options, the input's video stream and the job's schedule."""

    options: EnhanceOptions
    video: media.VideoStream
    nframes: int  # frames of the job (--frames applied)
    factor: Fraction  # output frames per input frame, as the driver decided it for the whole job
    device: str | list[str] | None
    threads: int

    @property
    def schedule(self) -> FrameSchedule:
        return FrameSchedule(self.nframes, self.options.mode, self.factor)


def _segment_codec(ffmpeg: str, pix_fmt: str) -> str | None:
    """FFV1 where it takes the format (lossless, small), else None (uncompressed Matroska)."""
    fmts = media.encoder_pix_fmts(ffmpeg, "ffv1")
    return "ffv1" if fmts and pix_fmt in fmts else None


def _chunk_clip(spec: _Spec, chunk: Chunk, src: Any, a: int, b: int) -> tuple[Any, range]:
    """The source frames a chunk's STAR runs on, and the indices of the chunk's outputs in STAR's result.

    STAR's output j shows its clip's time j / factor; the chunk's outputs show the job's times. The clip
    must therefore start at a frame g with g * factor whole, so that both grids meet: frames before the
    read start `a` are padded with copies of frame `a` back to g. No output of the chunk uses them (its
    frames all lie after `a`, see :meth:`Chunk.read_range`), and STAR computes only the frames asked for.
    """
    g = a // spec.factor.denominator * spec.factor.denominator
    clip = src[a:b] if g == a else src[a] * (a - g) + src[a:b]
    outputs = chunk.outputs(spec.schedule)
    shift = int(g * spec.factor)
    return clip, range(outputs.start - shift, outputs.stop - shift)


def _run_chunk(spec: _Spec, chunk: Chunk, progress: Any) -> bytes:
    """Ray task: STAR on one chunk; returns its output frames as a lossless Matroska segment."""
    import torch
    import vapoursynth as vs

    from ray import get as ray_get

    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    ffmpeg = plan.check_ffmpeg()
    pid = os.getpid()
    a, b = chunk.read_range(spec.nframes)
    with tempfile.TemporaryDirectory(prefix="vsstar-chunk-") as d:
        try:
            src, back_to = plan.open_source(spec.options.input, spec.video, ffmpeg, Path(d) / "source.mkv", b)
            clip, wanted = _chunk_clip(spec, chunk, src, a, b)
            factor = None if spec.options.mode == "s" else spec.factor
            # The devices as this worker sees them (Ray numbers a task's GPUs from 0).
            options = dataclasses.replace(spec.options, device=spec.device)
            _, out, _ = plan.star_clip(options, clip, spec.video, back_to, on_note=lambda _t: None, factor=factor)
            part = out[wanted.start:wanted.stop]
            fmt = encode.raw_format(part)
            seg = Path(d) / "segment.mkv"
            codec = _segment_codec(ffmpeg, fmt.pix_fmt)
            n = part.num_frames
            # Any times will do here: the driver gives the frames their real ones.
            times = [Fraction(i, 25) for i in range(n)]
            # Waited for: this attempt is registered before any frame, so the driver's last snapshot
            # names every attempt even when the chunk's result arrives before its fire-and-forget ticks.
            ray_get(progress.report.remote(chunk.index, pid, 0))
            done = [0]

            def tick() -> None:
                done[0] += 1
                progress.report.remote(chunk.index, pid, done[0])

            if codec is None:
                with open(seg, "wb") as fh:
                    mux = media.RawVideoMuxer(fh, part.width, part.height, fmt)
                    for i, planes in enumerate(encode.clip_planes(part)):
                        mux.write([memoryview(p).cast("B") for p in planes], times[i], Fraction(1, 25))
                        tick()
            else:
                encode.pump(encode.clip_planes(part), n, part.width, part.height, times, Fraction(n, 25),
                            encode.lossless_cmd(ffmpeg, codec, seg, n), fmt, media.Colour(), quiet=True,
                            on_frame=tick)
            ray_get(progress.report.remote(chunk.index, pid, n))  # the last count, before the result
            return seg.read_bytes()
        except vs.Error as exc:
            raise EnhanceError(str(exc).strip().splitlines()[-1]) from exc


class _Progress:
    """Ray actor: frames done per chunk, counted for the attempt (worker process) that reports last."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, int]] = {}  # chunk -> (pid, frames)
        self.attempts: dict[int, list[int]] = {}  # chunk -> pids in the order they started

    def report(self, chunk: int, pid: int, frames: int) -> None:
        pids = self.attempts.setdefault(chunk, [])
        if not pids or pids[-1] != pid:
            pids.append(pid)
        self.done[chunk] = (pid, frames)

    def snapshot(self) -> tuple[dict[int, tuple[int, int]], dict[int, list[int]]]:
        return dict(self.done), {k: list(v) for k, v in self.attempts.items()}


# ----------------------------------------------------------------------------------- driver side
@dataclass(frozen=True)
class ProgressEvent:
    """What the driver knows after each poll: frames done (output frames) and the running attempts."""

    done: int
    total: int
    running: dict[int, int]  # chunk index -> pid of the worker process reporting for it
    attempts: dict[int, list[int]]  # chunk index -> pids of every attempt so far


def _segment_frames(path: Path, ffmpeg: str, fmt: media.RawFormat, width: int, height: int, ssw: int, ssh: int,
                    expected: int) -> Iterator[list[bytes]]:
    """Decode a segment into planes (source order) of `expected` frames."""
    chroma = (-(-width // (1 << ssw)), -(-height // (1 << ssh)))
    sizes = [(width, height)] + [chroma] * (len(fmt.plane_order) - 1)
    plane_bytes = [w * h * fmt.bytes_per_sample for w, h in sizes]
    inverse = [0] * len(fmt.plane_order)
    for stored, source in enumerate(fmt.plane_order):
        inverse[source] = stored
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-f", "rawvideo", "-pix_fmt", fmt.pix_fmt]
    cmd += media.passthrough_args(ffmpeg)
    proc = subprocess.Popen(cmd + ["-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    try:
        while True:
            stored = []
            for size in plane_bytes:
                data = proc.stdout.read(size)
                if len(data) != size:
                    break
                stored.append(data)
            if len(stored) != len(plane_bytes):
                break
            count += 1
            yield [stored[inverse[i]] for i in range(len(stored))]
        rc = proc.wait()
        if rc != 0 or count != expected:
            err = proc.stderr.read().decode(errors="replace").strip()
            raise EnhanceError(f"segment {path.name}: {count} of {expected} frames decoded"
                           + (f" (ffmpeg exit {rc}: {err.splitlines()[-1] if err else 'no message'})" if rc else ""))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _num_gpus(options: EnhanceOptions, ray: Any) -> float:
    if options.ray_gpus is not None:
        return float(options.ray_gpus)
    if options.device is not None:
        devices = options.device if isinstance(options.device, list) else [options.device]
        return float(sum(1 for d in devices if str(d).startswith("cuda")))
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _check_address(address: str) -> None:
    """Refuse at once a Ray address where nothing answers (Ray itself retries for minutes).

    ``HOST:PORT`` and ``ray://HOST[:PORT]`` (from ``--ray`` or, without one, ``RAY_ADDRESS``) get one TCP
    connection attempt; ``auto``, ``local`` and no address are Ray's to resolve.
    """
    given = address or os.environ.get("RAY_ADDRESS", "")
    flag = f"--ray {address}" if address else f"--ray (RAY_ADDRESS={given})"
    if not given or given in ("auto", "local"):
        return
    hostport = given[len("ray://"):] if given.startswith("ray://") else given
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, ("10001" if given.startswith("ray://") else "")
    if not port.isdigit() or not host:
        raise EnhanceError(f"{flag}: expected HOST:PORT, ray://HOST:PORT, auto or nothing")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise EnhanceError(f"{flag}: nothing answers at {host}:{port} ({why}); is the Ray head running?") from exc


def _connect(ray: Any, address: str) -> None:
    """ray.init, keeping this process's SIGTERM handler (Ray's own exits without cleaning up)."""
    _check_address(address)
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EnhanceError(f"--ray {address or '(local)'}: cannot connect ({exc})") from exc
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGTERM, handler)


def run_job(options: EnhanceOptions, on_progress: Callable[[ProgressEvent], None] | None = None) -> str:
    """Run an ``enhance`` job on Ray (``options.ray`` the address, "" for Ray's default); returns the
    summary line.

    Connects to Ray unless this process is connected already (then the connection is left open).
    """
    try:
        import ray
    except ImportError as exc:
        raise EnhanceError("--ray needs Ray: pip install 'ray[default]' (or pip install vsstar[ray])") from exc

    if options.compare:
        raise EnhanceError("--compare cannot be combined with --ray; run it locally with --frames")
    chunk_frames = options.chunk_frames or DEFAULT_CHUNK_FRAMES
    cpus = 1.0 if options.ray_cpus is None else float(options.ray_cpus)
    connected = ray.is_initialized()
    output = Path(options.output)
    try:
        with plan.job_files(output):
            if not connected:
                _connect(ray, options.ray or "")
            # The driver builds STAR's clip on the CPU only to learn the output's size and format; the
            # workers build their own on their devices.
            job = plan.prepare(options, device="cpu")
            gpus = _num_gpus(options, ray)
            device = options.device
            if gpus > 0 and device is not None:
                # Ray shows each worker only the GPUs it was given, numbered from 0.
                if isinstance(device, list):
                    device = [f"cuda:{i}" for i in range(len(device))]
                elif str(device).startswith("cuda"):
                    device = "cuda"
            cuts = find_cuts(job.src) if not options.no_scene_detect else []
            chunks = plan_chunks(job.nframes, cuts, chunk_frames)
            threads = max(1, int(cpus)) if gpus == 0 else 0
            spec = _Spec(options, job.video, job.nframes, job.factor, device, threads)
            total = job.clip.num_frames
            if not options.quiet:
                print(f"{len(chunks)} chunks of up to {chunk_frames} frames ({len(cuts)} scene cuts) on Ray: "
                      f"{cpus:g} CPUs, {gpus:g} GPUs each; cluster {_resources(ray)}", file=sys.stderr)
            frames = _drive(ray, spec, chunks, job, on_progress)
            encode_s = write_job(job, frames, total, quiet=True)
    finally:
        if not connected and ray.is_initialized():
            ray.shutdown()
    line = plan.summary(job, encode_s)
    if not options.quiet:
        print(line, file=sys.stderr)
    return line


def _resources(ray: Any) -> str:
    r = ray.cluster_resources()
    return f"{r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs, {len(ray.nodes())} node(s)"


def _drive(ray: Any, spec: _Spec, chunks: list[Chunk], job: plan.Job,
           on_progress: Callable[[ProgressEvent], None] | None) -> Iterator[list[bytes]]:
    """Submit every chunk, then yield the output frames in order as segments arrive, with the bar."""
    from tqdm import tqdm

    options = spec.options
    gpus = _num_gpus(options, ray)
    cpus = 1.0 if options.ray_cpus is None else float(options.ray_cpus)
    progress = ray.remote(num_cpus=0)(_Progress).remote()
    task = ray.remote(_run_chunk).options(num_cpus=cpus, num_gpus=gpus, max_retries=options.max_retries,
                                          retry_exceptions=False)
    refs = [task.remote(spec, c, progress) for c in chunks]
    index = {ref: c for ref, c in zip(refs, chunks)}
    schedule = spec.schedule
    made = {c.index: len(c.outputs(schedule)) for c in chunks}  # output frames of each chunk
    total = job.clip.num_frames
    if sum(made.values()) != total:
        raise RuntimeError(f"the chunks make {sum(made.values())} output frames, the job {total}")
    ssw, ssh = job.clip.format.subsampling_w, job.clip.format.subsampling_h
    bar = tqdm(total=total, unit="frame", disable=options.quiet, dynamic_ncols=True, smoothing=0.1)
    results: dict[int, bytes] = {}
    waiting = list(refs)
    last_poll = 0.0

    def poll(timeout: float) -> None:
        nonlocal waiting, last_poll
        if waiting:
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=timeout)
            for ref in ready:
                c = index[ref]
                try:
                    results[c.index] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ChunkError(f"{c.describe()} failed: {_reason(exc)}") from exc
        if time.monotonic() - last_poll >= 0.2 or not waiting:
            last_poll = time.monotonic()
            done_map, attempts = ray.get(progress.snapshot.remote())
            done = sum(made[k] for k in results)
            done += sum(f for k, (_, f) in done_map.items() if k not in results)
            if done != bar.n:  # update() keeps tqdm's rate and ETA; a rerun chunk can move it back
                bar.update(min(done, total) - bar.n)
            if on_progress is not None:
                on_progress(ProgressEvent(done, total, {k: p for k, (p, _) in done_map.items()
                                                        if k not in results}, attempts))

    # Segments wait in the job's partial folder (next to OUTPUT; removed at the end, or by a later run
    # if this process is killed).
    folder = media.partial_dir(job.output)
    try:
        folder.mkdir(exist_ok=True)
        for c in chunks:
            while c.index not in results:
                poll(0.1)
            seg = folder / f"segment-{c.index}.mkv"
            seg.write_bytes(results.pop(c.index))
            results[c.index] = b""  # counted as done, data released
            yield from _segment_frames(seg, job.ffmpeg, job.fmt, job.clip.width, job.clip.height, ssw, ssh,
                                       made[c.index])
            seg.unlink()
            poll(0)
    except BaseException:
        for ref in waiting:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        ray.kill(progress)


def _reason(exc: BaseException) -> str:
    """One line on why a chunk failed: the worker's own error, or what happened to its process."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name


def enhance(input: str | os.PathLike, output: str | os.PathLike, *, address: str | None = None,
            on_progress: Callable[[ProgressEvent], None] | None = None, **options: Any) -> str:
    """Enhance one video on a Ray cluster; returns the summary line. Raises
    :class:`vsstar.enhance.EnhanceError` (one-line message; :class:`ChunkError` for a chunk that failed for
    good) and leaves OUTPUT untouched on failure.

    `options` are the fields of :class:`vsstar.enhance.EnhanceOptions`, the long options of ``vsstar
    enhance`` (``scale=2``, ``mode="s"``, ``factor=Fraction(5, 2)``, ``model=...``, ``device=...``,
    ``fast_flow=True``, ``codec="ffv1"``, ``frames=100``, ``chunk_frames=500``, ``ray_cpus=2``,
    ``ray_gpus=1``, ``max_retries=3``, ``quiet=True``, ...). `address` is Ray's (None: RAY_ADDRESS or a
    local instance). Call ``ray.init(...)`` first to submit many videos to one connection; it is then kept
    open. `on_progress` is called on the driver about five times a second.
    """
    for key in ("input", "output", "ray"):
        if key in options:
            raise ValueError(f"{key}: not an option here (pass {'address' if key == 'ray' else key} instead)")
    job = EnhanceOptions.from_mapping({**options, "input": os.fspath(input), "output": os.fspath(output),
                                       "ray": address or ""})
    return run_job(job, on_progress)
