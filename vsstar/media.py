"""Media helpers of the ``vsstar`` command: probing with ffprobe, source timing, raw-video muxing, encoder choice.

Nothing here imports VapourSynth or torch: the CLI adapts its clips to these plain functions.

- :func:`probe` reads what a transcode must keep (size, pixel format, field order, colour tags, audio).
- :class:`Timeline` holds the presentation time of every source frame and answers "time ``t`` (0..1) within
  the pair ``(k, k+1)``"; output frame times are built from it, so variable-frame-rate input keeps its timing.
- :class:`RawVideoMuxer` writes uncompressed frames with exact timestamps and colour tags as a streaming
  Matroska file (``V_UNCOMPRESSED``), which ffmpeg reads from a pipe (``-f matroska -i -``) for any
  planar bit depth; y4m carries neither timestamps nor most pixel formats.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from .schedule import MODES, FrameSchedule

__all__ = [
    "MediaError", "Colour", "VideoStream", "MediaInfo", "Timeline", "RawFormat", "RawVideoMuxer",
    "probe", "read_timeline", "raw_format", "encoder_pix_fmts", "pick_codec", "ffmpeg_version",
    "partial_path", "partial_dir", "stale_partials", "remove_stale_partials", "pid_alive", "FIELD_ORDERS",
    "time_base", "run_ffmpeg", "full_chroma_copy_cmd", "passthrough_args", "last_duration_args",
]


class MediaError(ValueError):
    """Input that cannot be handled as asked; the message is one line for the user."""


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise MediaError(f"{name} not found on PATH; install ffmpeg (e.g. apt-get install ffmpeg)")
    return exe


# ----------------------------------------------------------------------------------- probing
#: ffprobe's field_order values for interlaced video, in words.
FIELD_ORDERS = {
    "tt": "top field first",
    "bb": "bottom field first",
    "tb": "top field coded first, bottom field displayed first",
    "bt": "bottom field coded first, top field displayed first",
}

# ffmpeg's colour names -> ITU-T H.273 code points (what Matroska's Colour element stores).
_MATRIX = {"gbr": 0, "bt709": 1, "fcc": 4, "bt470bg": 5, "smpte170m": 6, "smpte240m": 7, "ycgco": 8,
           "bt2020nc": 9, "bt2020c": 10, "smpte2085": 11, "chroma-derived-nc": 12, "chroma-derived-c": 13,
           "ictcp": 14}
_PRIMARIES = {"bt709": 1, "bt470m": 4, "bt470bg": 5, "smpte170m": 6, "smpte240m": 7, "film": 8, "bt2020": 9,
              "smpte428": 10, "smpte431": 11, "smpte432": 12, "jedec-p22": 22, "ebu3213": 22}
_TRANSFER = {"bt709": 1, "gamma22": 4, "gamma28": 5, "smpte170m": 6, "smpte240m": 7, "linear": 8, "log100": 9,
             "log316": 10, "iec61966-2-4": 11, "bt1361e": 12, "iec61966-2-1": 13, "bt2020-10": 14,
             "bt2020-12": 15, "smpte2084": 16, "smpte428": 17, "arib-std-b67": 18}
_RANGE = {"tv": 1, "pc": 2}  # Matroska: 1 = broadcast (limited), 2 = full


@dataclass(frozen=True)
class Colour:
    """Colour tags of a stream, as ffmpeg names them (None = not tagged)."""

    matrix: str | None = None
    primaries: str | None = None
    transfer: str | None = None
    range: str | None = None

    def ffmpeg_args(self) -> list[str]:
        """Output options that tag an encoded stream with these values."""
        out = []
        for opt, value in (("-colorspace", self.matrix), ("-color_primaries", self.primaries),
                           ("-color_trc", self.transfer), ("-color_range", self.range)):
            if value is not None:
                out += [opt, value]
        return out

    def codes(self) -> dict[str, int]:
        """H.273 code points of the known values (keys: matrix, primaries, transfer, range)."""
        out = {}
        for key, table in (("matrix", _MATRIX), ("primaries", _PRIMARIES), ("transfer", _TRANSFER),
                           ("range", _RANGE)):
            value = getattr(self, key)
            if value in table:
                out[key] = table[value]
        return out


@dataclass(frozen=True)
class VideoStream:
    """The first video stream of a file (cover pictures are not video)."""

    index: int
    width: int
    height: int
    pix_fmt: str
    field_order: str | None
    colour: Colour
    time_base: Fraction

    @property
    def interlaced(self) -> bool:
        return self.field_order in FIELD_ORDERS


@dataclass(frozen=True)
class MediaInfo:
    path: str
    video: VideoStream | None
    audio_streams: int
    start: Fraction = Fraction(0)  # the file's start time (the earliest of its streams), seconds


def _tag(value: object) -> str | None:
    return None if value in (None, "", "unknown", "unspecified", "reserved") else str(value)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Streams of `path` as far as a transcode must keep them; MediaError when ffprobe cannot read it."""
    r = subprocess.run([_tool("ffprobe"), "-v", "error", "-show_streams", "-show_entries", "format=start_time",
                        "-of", "json", os.fspath(path)], capture_output=True, text=True)
    if r.returncode != 0:
        detail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"ffprobe exit {r.returncode}"
        raise MediaError(f"input {os.fspath(path)!r}: cannot be read ({detail})")
    doc = json.loads(r.stdout or "{}")
    streams = doc.get("streams", [])
    try:
        start = Fraction(doc.get("format", {}).get("start_time", "0"))
    except (ValueError, ZeroDivisionError):
        start = Fraction(0)
    video = None
    for s in streams:
        if s.get("codec_type") != "video" or s.get("disposition", {}).get("attached_pic"):
            continue
        video = VideoStream(
            index=int(s["index"]), width=int(s.get("width", 0)), height=int(s.get("height", 0)),
            pix_fmt=str(s.get("pix_fmt", "")), field_order=_tag(s.get("field_order")),
            colour=Colour(_tag(s.get("color_space")), _tag(s.get("color_primaries")),
                          _tag(s.get("color_transfer")), _tag(s.get("color_range"))),
            time_base=Fraction(s.get("time_base", "1/1000")))
        break
    audio = sum(1 for s in streams if s.get("codec_type") == "audio")
    return MediaInfo(os.fspath(path), video, audio, start)


# ----------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timeline:
    """Presentation times (seconds, exact) of a clip's frames, and the end of the last frame."""

    starts: tuple[Fraction, ...]
    end: Fraction

    def __post_init__(self) -> None:
        if not self.starts:
            raise ValueError("starts must hold at least one frame time")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:])) or self.end <= self.starts[-1]:
            raise ValueError("starts must increase and end must follow the last start")

    @classmethod
    def constant(cls, n: int, fps: Fraction, start: Fraction = Fraction(0)) -> "Timeline":
        """`n` frames at a constant rate `fps` from `start`."""
        if n < 1 or fps <= 0:
            raise ValueError(f"n must be >= 1 and fps > 0, got n={n}, fps={fps}")
        step = 1 / Fraction(fps)
        return cls(tuple(start + k * step for k in range(n)), start + n * step)

    def __len__(self) -> int:
        return len(self.starts)

    def head(self, n: int) -> "Timeline":
        """The first `n` frames; the last one ends where the next one started."""
        if n >= len(self.starts):
            return self
        return Timeline(self.starts[:n], self.starts[n])

    def shifted(self, offset: Fraction) -> "Timeline":
        """The same frames `offset` seconds later."""
        return Timeline(tuple(t + offset for t in self.starts), self.end + offset)

    def at(self, k: int, t: Fraction) -> Fraction:
        """Time `t` (0 <= t < 1) of the way from frame k to frame k+1 (to the end of the clip after the last)."""
        nxt = self.starts[k + 1] if k + 1 < len(self.starts) else self.end
        return self.starts[k] + Fraction(t) * (nxt - self.starts[k])

    def at_frame(self, x: Fraction) -> Fraction:
        """The time of position `x` in source-frame units (frame k at k, `len(self)` at the end)."""
        k = min(math.floor(x), len(self.starts) - 1)
        return self.at(k, Fraction(x) - k) if x < len(self.starts) else self.end

    def output_times(self, mode: str, factor: Fraction | None = None) -> list[Fraction]:
        """Times of the output frames of STAR at ``factor`` output frames per input frame (default 2 in
        modes "st"/"t", 1 in mode "s"): output j starts where the schedule's span of j starts
        (:meth:`vsstar.schedule.FrameSchedule.span`), ``t`` of the way from frame k to k+1 (VFR aware: each
        output frame takes its time within its own pair); the last one lasts until :attr:`end`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        schedule = FrameSchedule(len(self.starts), mode, factor)
        return [self.at_frame(schedule.span(j)[0]) for j in range(schedule.num_outputs)]

    def is_constant(self) -> bool:
        steps = {b - a for a, b in zip(self.starts, self.starts[1:])}
        return len(steps) <= 1

    def rate(self) -> Fraction:
        """Frames per second, averaged over the clip."""
        return len(self.starts) / (self.end - self.starts[0])


def time_base(times: Iterable[Fraction], limit: int = 1_000_000) -> Fraction:
    """The coarsest 1/N seconds that holds every time exactly; 1/limit when that needs N > limit."""
    den = 1
    for t in times:
        den = math.lcm(den, Fraction(t).denominator)
        if den > limit:
            return Fraction(1, limit)
    return Fraction(1, den)


def read_timeline(path: str | os.PathLike, stream: VideoStream) -> Timeline | None:
    """Frame times of `stream` from its packets (no decoding); None where they are missing.

    Packets marked for discard (outside an edit list) are left out, as decoders drop them.
    """
    r = subprocess.run([_tool("ffprobe"), "-v", "error", "-select_streams", str(stream.index), "-show_entries",
                        "packet=pts,duration,flags", "-of", "csv=p=0", os.fspath(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    pts: list[int] = []
    durations: dict[int, int] = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 3:
            continue
        if "D" in parts[2]:
            continue
        if not parts[0].lstrip("-").isdigit():
            return None  # a packet without a timestamp: the times are not known
        p = int(parts[0])
        pts.append(p)
        if parts[1].isdigit():
            durations[p] = int(parts[1])
    if not pts:
        return None
    pts.sort()
    if any(b == a for a, b in zip(pts, pts[1:])):
        return None
    tb = stream.time_base
    last = durations.get(pts[-1], 0)
    if last <= 0:  # no duration: repeat the step before it (or one time-base unit for one frame)
        last = pts[-1] - pts[-2] if len(pts) > 1 else 1
    return Timeline(tuple(p * tb for p in pts), (pts[-1] + last) * tb)


# ----------------------------------------------------------------------------------- raw video
@dataclass(frozen=True)
class RawFormat:
    """An uncompressed planar layout: ffmpeg's pix_fmt name and its raw-video fourcc."""

    pix_fmt: str
    fourcc: bytes
    plane_order: tuple[int, ...]  # source plane index of each stored plane (RGB is stored G, B, R)
    bytes_per_sample: int


_SUBSAMPLING = {(0, 0): ("444", b"444P", 0), (1, 0): ("422", b"Y42B", 10), (1, 1): ("420", b"I420", 11)}


def raw_format(family: str, bits: int, subsampling_w: int = 0, subsampling_h: int = 0) -> RawFormat:
    """The ffmpeg raw format of integer planar video: `family` "yuv", "gray" or "rgb", 8..16 bits.

    MediaError names what is not supported (float, 4:1:1 and other rare layouts above 8 bits).
    """
    if not 8 <= bits <= 16:
        raise MediaError(f"{bits}-bit samples cannot be written; 8 to 16 bits expected")
    size = 1 if bits == 8 else 2
    if family == "gray":
        return RawFormat("gray" if bits == 8 else f"gray{bits}le",
                         b"Y800" if bits == 8 else b"Y1\x00" + bytes([bits]), (0,), size)
    if family == "rgb":
        return RawFormat("gbrp" if bits == 8 else f"gbrp{bits}le", b"G3\x00" + bytes([bits]), (1, 2, 0), size)
    if family == "yuv":
        key = (subsampling_w, subsampling_h)
        if key not in _SUBSAMPLING:
            raise MediaError(f"chroma subsampling {1 << subsampling_w}x{1 << subsampling_h} cannot be written; "
                             "4:4:4, 4:2:2 or 4:2:0 expected")
        name, tag8, code = _SUBSAMPLING[key]
        if bits == 8:
            return RawFormat(f"yuv{name}p", tag8, (0, 1, 2), 1)
        return RawFormat(f"yuv{name}p{bits}le", b"Y3" + bytes([code, bits]), (0, 1, 2), 2)
    raise MediaError(f"colour family {family!r} cannot be written; yuv, gray or rgb expected")


def _vint(n: int) -> bytes:
    """EBML variable-length size."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(f"element too large: {n} bytes")


def _el(ident: int, payload: bytes) -> bytes:
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + _vint(len(payload)) + payload


def _uint(ident: int, value: int) -> bytes:
    return _el(ident, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _str(ident: int, text: str) -> bytes:
    return _el(ident, text.encode())


class RawVideoMuxer:
    """Streaming Matroska writer for uncompressed frames with exact (nanosecond) timestamps.

    One cluster per frame, so any gap between frames fits; the segment has an unknown size, as in live
    streaming, so nothing is ever rewritten and a pipe works.
    """

    def __init__(self, out: BinaryIO, width: int, height: int, fmt: RawFormat, colour: Colour = Colour()) -> None:
        self.out, self.fmt = out, fmt
        ebml = _el(0x1A45DFA3, _uint(0x4286, 1) + _uint(0x42F7, 1) + _uint(0x42F2, 4) + _uint(0x42F3, 8)
                   + _str(0x4282, "matroska") + _uint(0x4287, 4) + _uint(0x4285, 2))
        info = _el(0x1549A966, _uint(0x2AD7B1, 1) + _str(0x4D80, "vsstar") + _str(0x5741, "vsstar"))
        codes = colour.codes()
        colour_el = b""
        for key, ident in (("matrix", 0x55B1), ("range", 0x55B9), ("transfer", 0x55BA), ("primaries", 0x55BB)):
            if key in codes:
                colour_el += _uint(ident, codes[key])
        video = _uint(0xB0, width) + _uint(0xBA, height) + _el(0x2EB524, fmt.fourcc)
        if colour_el:
            video += _el(0x55B0, colour_el)
        track = _el(0xAE, _uint(0xD7, 1) + _uint(0x73C5, 1) + _uint(0x83, 1) + _uint(0x9C, 0)
                    + _str(0x86, "V_UNCOMPRESSED") + _el(0xE0, video))
        segment = bytes.fromhex("18538067") + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size
        out.write(ebml + segment + info + _el(0x1654AE6B, track))

    def write(self, planes: Sequence[memoryview | bytes], time: Fraction, duration: Fraction) -> None:
        """One frame: its planes in the source's order (reordered here as the format stores them)."""
        data = [planes[i] for i in self.fmt.plane_order]
        size = sum(memoryview(p).nbytes for p in data)
        block_head = b"\x81" + struct.pack(">h", 0) + b"\x00"  # track 1, relative time 0, no flags
        block_len = len(block_head) + size
        block = bytes([0xA1]) + _vint(block_len)
        group_payload_len = len(block) + block_len
        dur = _uint(0x9B, max(1, round(duration * 1_000_000_000)))
        group = bytes([0xA0]) + _vint(group_payload_len + len(dur))
        stamp = _uint(0xE7, round(time * 1_000_000_000))
        cluster_len = len(stamp) + len(group) + group_payload_len + len(dur)
        self.out.write(bytes.fromhex("1F43B675") + _vint(cluster_len) + stamp + group + block + block_head)
        for p in data:
            self.out.write(p)
        self.out.write(dur)


# ----------------------------------------------------------------------------------- encoders
_PIX_FMTS_CACHE: dict[tuple[str, str], frozenset[str] | None] = {}


def encoder_pix_fmts(ffmpeg: str, codec: str) -> frozenset[str] | None:
    """Pixel formats ffmpeg's encoder `codec` takes; None when ffmpeg does not know the encoder."""
    key = (ffmpeg, codec)
    if key not in _PIX_FMTS_CACHE:
        r = subprocess.run([ffmpeg, "-hide_banner", "-h", f"encoder={codec}"], capture_output=True, text=True)
        fmts = None
        if r.returncode == 0 and "is not recognized" not in r.stdout:
            m = re.search(r"Supported pixel formats:(.*)", r.stdout)
            fmts = frozenset(m.group(1).split()) if m else frozenset()
        _PIX_FMTS_CACHE[key] = fmts
    return _PIX_FMTS_CACHE[key]


# Containers that hold FFV1 (mp4 does not).
_FFV1_CONTAINERS = {".mkv", ".mka", ".nut", ".avi", ".mov"}


def pick_codec(ffmpeg: str, pix_fmt: str, suffix: str, requested: str | None = None) -> str:
    """The encoder for `pix_fmt` in a file ending in `suffix`: `requested`, or the first of libx264,
    libx265, ffv1 that takes the format (an empty support list means the encoder does not say)."""
    if requested is not None:
        fmts = encoder_pix_fmts(ffmpeg, requested)
        if fmts is None:
            raise MediaError(f"--codec {requested!r}: ffmpeg has no such encoder")
        if fmts and pix_fmt not in fmts:
            raise MediaError(f"--codec {requested} cannot encode {pix_fmt} (it takes {', '.join(sorted(fmts))}); "
                             "pick another --codec or --pix-fmt")
        return requested
    for codec in ("libx264", "libx265", "ffv1"):
        if codec == "ffv1" and suffix.lower() not in _FFV1_CONTAINERS:
            continue
        fmts = encoder_pix_fmts(ffmpeg, codec)
        if fmts and pix_fmt in fmts:
            return codec
    raise MediaError(f"no encoder here keeps {pix_fmt} in a {suffix} file; write .mkv (FFV1 keeps it) "
                     "or pass --pix-fmt (e.g. yuv420p10le) or --codec")


def passthrough_args(ffmpeg: str) -> list[str]:
    """The output option that keeps every frame at its own time (no frames dropped or duplicated):
    ``-fps_mode passthrough`` from ffmpeg 5.1, ``-vsync passthrough`` before."""
    return ["-fps_mode", "passthrough"] if ffmpeg_version(ffmpeg) >= (5, 1) else ["-vsync", "passthrough"]


# Output suffixes of muxers whose video time base is fixed at 1/1000 s (Matroska's default timestamp scale).
_MS_CONTAINERS = {".mkv", ".mka", ".mk3d", ".webm"}
# Output suffixes of the mov/mp4 muxers, whose video time base -video_track_timescale sets.
_MOV_CONTAINERS = {".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mj2", ".psp", ".ismv"}
# Output suffixes of muxers that keep the encoder's time base (checked: AVI; NUT picks its own).
_TB_CONTAINERS = {".avi"}


def last_duration_args(ffmpeg: str, suffix: str, tb: Fraction, last: Fraction, end: Fraction) -> list[str]:
    """Output options that make the video packet at time `last` (the last frame) last until `end`.

    ffmpeg 5.1 hands the muxer encoded packets without a duration, and libavformat then gives each the
    frame step it guesses from the stream's rate, so a last frame shorter than the step ran past `end`
    (10 frames at 25 fps with --factor 7/3 ended at 0.411 s in .mkv, 0.412 s in .mp4, not 0.400 s). The
    ``setts`` bitstream filter sets that packet's duration, found by its pts. It runs on packets already
    in the muxer's time base, and its TB constant is the encoder's time base (stale for Matroska), so the
    times are written here in the muxer's own units: 1/1000 s for Matroska, `tb` for mov/mp4 (whose track
    timescale is set to `tb`) and AVI. Other containers get nothing (their units are not known here). pts
    and dts are passed through explicitly: setts' default ``ts`` expression gave every packet its dts as pts.
    """
    if ffmpeg_version(ffmpeg) < (4, 4):  # setts appeared in 4.4
        return []
    suffix = suffix.lower()
    if suffix not in _MS_CONTAINERS | _MOV_CONTAINERS | _TB_CONTAINERS:
        return []
    unit = Fraction(1, 1000) if suffix in _MS_CONTAINERS else tb
    args = ["-video_track_timescale", str(tb.denominator)] if suffix in _MOV_CONTAINERS else []
    pts, stop = (math.floor(t / unit + Fraction(1, 2)) for t in (last, end))  # as av_rescale_q rounds
    if stop <= pts:
        return args
    return args + ["-bsf:v", f"setts=pts=PTS:dts=DTS:duration=if(eq(PTS\\,{pts})\\,{stop - pts}\\,DURATION)"]


def ffmpeg_version(ffmpeg: str) -> tuple[int, int]:
    """(major, minor) of ffmpeg; (99, 0) for builds that do not say (git snapshots are new)."""
    r = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True)
    m = re.match(r"ffmpeg version n?(\d+)\.(\d+)", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)


# ----------------------------------------------------------------------------------- partial files
def partial_path(output: Path, pid: int | None = None, tag: str = "") -> Path:
    """The hidden file next to `output` that process `pid` writes before renaming it to `output`."""
    pid = os.getpid() if pid is None else pid
    suffix = f".{tag}.mkv" if tag else output.suffix
    return output.with_name(f".{output.stem}.vsstar-partial-{pid}{suffix}")


def partial_dir(output: Path, pid: int | None = None) -> Path:
    """The hidden folder next to `output` where process `pid` keeps its intermediate files (the Ray
    driver's segments); removed at the end, or by a later run when `pid` is gone."""
    pid = os.getpid() if pid is None else pid
    return output.with_name(f".{output.stem}.vsstar-partial-{pid}.d")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (zombies and other users' processes count as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_partials(output: Path) -> list[Path]:
    """Partial files and folders of `output` left by processes that are gone (killed, machine stopped)."""
    pattern = re.compile(rf"^\.{re.escape(output.stem)}\.vsstar-partial-(\d+)"
                         rf"({re.escape(output.suffix)}|\.[a-z]+\.mkv|\.d)$")
    found = []
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            found.append(p)
    return sorted(found)


def remove_stale_partials(output: Path) -> list[str]:
    """Delete what :func:`stale_partials` finds (folders with their contents); returns the names removed."""
    removed = []
    for stale in stale_partials(output):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale.name)
    return removed


def run_ffmpeg(cmd: list[str]) -> None:
    """Run ffmpeg to completion; MediaError with its last line on failure; killed if we are interrupted."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()
        raise MediaError(f"ffmpeg failed (exit {proc.returncode}): {text.splitlines()[-1] if text else 'no message'}")


def full_chroma_copy_cmd(ffmpeg: str, src: str, stream: VideoStream, dst: Path, bits: int,
                         frames: int | None = None) -> list[str]:
    """ffmpeg command for a copy of `stream` with 4:4:4 chroma at its exact size, every frame kept.

    For odd sizes in 4:2:0/4:2:2, whose frames a VapourSynth clip cannot hold whole. The network works on
    full-resolution RGB anyway, so upsampling the chroma here (spline, accurate rounding) loses nothing it
    would have used. The copy is lossless (FFV1) and keeps the range (yuvj formats stay full range).
    """
    full = stream.pix_fmt.startswith("yuvj")
    pix_fmt = ("yuvj444p" if full else "yuv444p") if bits == 8 else f"yuv444p{bits}le"
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", src, "-map", f"0:{stream.index}",
           "-vf", f"format={pix_fmt}", "-sws_flags", "spline+accurate_rnd+full_chroma_int",
           "-c:v", "ffv1", "-an", "-sn", "-dn"]
    cmd += passthrough_args(ffmpeg)
    if frames:
        cmd += ["-frames:v", str(frames)]
    return cmd + [str(dst)]
