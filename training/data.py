"""Training data: clips (videos, frame folders, Vimeo-90K triplets, moving stills) cut into triplets.

A triplet is three consecutive HR frames (t, t+1, t+2). The network sees the LR versions of t and t+2
and is trained against all three HR frames plus the LR middle frame. With longer input gaps (``gaps``,
for models with a time input) the inputs are frames t and t+K and the target is a frame t+j between them,
at time j/K. Frames are kept in memory as
8-bit RGB; everything random (crops, flips, rotations, temporal reversal) is derived from
(seed, epoch, sample index) so that a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from .imaging import crop_to_multiple, downscale_bicubic

__all__ = [
    "Clip", "Triplet", "VIDEO_EXTS", "IMAGE_EXTS", "read_video", "read_frame_folder", "read_vimeo_triplets",
    "scan_folder", "moving_still", "skimage_stills", "default_stills", "cut_triplets", "motion_score",
    "TripletDataset", "Sample", "augment", "parse_frame_range", "drop_frames",
]

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m", ".wmv", ".flv", ".ts")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@dataclass
class Clip:
    """A named sequence of equally sized 8-bit RGB frames (each (H, W, 3) uint8)."""

    name: str
    frames: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.frames) < 3:
            raise ValueError(f"clip {self.name!r}: needs at least 3 frames for a triplet, got {len(self.frames)}")
        shape = self.frames[0].shape
        for i, f in enumerate(self.frames):
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"clip {self.name!r}: frame {i} must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
            if f.shape != shape:
                raise ValueError(f"clip {self.name!r}: frame {i} is {f.shape[1]}x{f.shape[0]} but frame 0 is "
                                 f"{shape[1]}x{shape[0]}; all frames of a clip must have the same size")


def _limit_size(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (antialiased) so the longer side is at most max_side: large sources are reduced like Vimeo-90K."""
    if not max_side:
        return frame
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    f = max_side / max(h, w)
    return np.asarray(Image.fromarray(frame).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC))


def read_video(path: str | os.PathLike, max_side: int | None = None, max_frames: int | None = None) -> Clip:
    """Decode every frame of a video file with OpenCV (RGB)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video {str(path)!r}: no such file")
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        if not cap.isOpened():
            raise ValueError(f"video {str(path)!r}: cannot be opened (not a video, or an unsupported codec)")
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(_limit_size(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"video {str(path)!r}: no frame could be decoded (unreadable or empty file)")
    return Clip(path.stem, frames)


def parse_frame_range(text: str, what: str = "frame range") -> tuple[int, int]:
    """``"A-B"`` -> (A, B): an inclusive, 0-based range of frame indices."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) > int(m.group(2)):
        raise ValueError(f"{what}: expected FIRST-LAST frame indices (0-based, inclusive, FIRST <= LAST), "
                         f"got {text!r}")
    return int(m.group(1)), int(m.group(2))


def drop_frames(clip: Clip, ranges: Sequence[tuple[int, int]]) -> list[Clip]:
    """``clip`` without the frames of ``ranges`` ((first, last) inclusive, 0-based): the runs of frames
    left, as separate clips named ``NAME[first-last]`` so that no triplet bridges a gap; a run shorter
    than a triplet (3 frames) is dropped."""
    n = len(clip.frames)
    keep = np.ones(n, bool)
    for first, last in ranges:
        if first >= n:
            raise ValueError(f"frame range {first}-{last}: clip {clip.name!r} has only {n} frames")
        keep[first:last + 1] = False
    parts, i = [], 0
    while i < n:
        if not keep[i]:
            i += 1
            continue
        j = i
        while j < n and keep[j]:
            j += 1
        if j - i >= 3:
            parts.append(Clip(f"{clip.name}[{i}-{j - 1}]", clip.frames[i:j]))
        i = j
    return parts


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"image {str(path)!r}: cannot be read (not an image, or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_frame_folder(folder: str | os.PathLike, max_side: int | None = None) -> Clip:
    """A folder of images, in name order, as one clip."""
    folder = Path(folder)
    files = _image_files(folder)
    if not files:
        raise ValueError(f"frame folder {str(folder)!r}: no image files ({', '.join(IMAGE_EXTS)})")
    return Clip(folder.name, [_limit_size(_read_image(p), max_side) for p in files])


def read_vimeo_triplets(root: str | os.PathLike, split: str = "train", limit: int | None = None) -> list[Clip]:
    """Vimeo-90K triplet layout: root/tri_{split}list.txt naming root/sequences/<sequence>/<clip>/im{1,2,3}.png."""
    root = Path(root)
    listing = root / f"tri_{split}list.txt"
    if not listing.is_file():
        raise ValueError(f"vimeo root {str(root)!r}: missing {listing.name}")
    names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    if limit:
        names = names[:limit]
    clips = []
    for n in names:
        d = root / "sequences" / n
        clips.append(Clip(f"vimeo/{n}", [_read_image(d / f"im{i}.png") for i in (1, 2, 3)]))
    if not clips:
        raise ValueError(f"vimeo root {str(root)!r}: {listing.name} lists no sequences")
    return clips


def scan_folder(folder: str | os.PathLike, max_side: int | None = None, exclude: Sequence[str] = ()) -> list[Clip]:
    """Every clip under ``folder``: video files, folders of frames (recursively) and Vimeo-90K roots.

    ``exclude`` lists file or folder names (stems allowed) to leave out, e.g. the validation clip.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"data folder {str(folder)!r}: does not exist")
    if not folder.is_dir():
        if folder.suffix.lower() in VIDEO_EXTS:
            return [read_video(folder, max_side)]
        raise ValueError(f"data folder {str(folder)!r}: not a folder or a video file")
    if (folder / "tri_trainlist.txt").is_file():
        return read_vimeo_triplets(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise ValueError(f"data folder {str(folder)!r}: cannot be listed ({e.strerror})") from e
    excluded = set(exclude)
    clips: list[Clip] = []
    if _image_files(folder):
        clips.append(read_frame_folder(folder, max_side))
    for p in entries:
        if p.name in excluded or p.stem in excluded:
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            clips.append(read_video(p, max_side))
        elif p.is_dir():
            sub = _scan_optional(p, max_side, excluded)
            clips.extend(sub)
    if not clips:
        raise ValueError(f"data folder {str(folder)!r}: no videos ({', '.join(VIDEO_EXTS)}) or frame folders found")
    return clips


def _scan_optional(p: Path, max_side: int | None, excluded: set[str]) -> list[Clip]:
    try:
        return scan_folder(p, max_side, tuple(excluded))
    except ValueError as e:
        if "no videos" in str(e):  # an unrelated empty sub-folder is not an error of the whole data set
            return []
        raise


def moving_still(image: np.ndarray, name: str, n_frames: int = 12, size: tuple[int, int] | None = None,
                 seed: int = 0, max_shift: float = 3.0, oversample: int = 2) -> Clip:
    """A clip made from a still photo moved by a smooth synthetic camera path (pan, zoom, small rotation).

    The warp is done at ``oversample`` times the output size and then reduced (antialiased), so that the
    frames look like camera footage rather than interpolated images; shifts are sub-pixel and vary per frame.
    """
    rng = np.random.default_rng(seed)
    h0, w0 = image.shape[:2]
    if size is None:
        size = (h0 // oversample - 16, w0 // oversample - 16)
    oh, ow = size
    # Constant velocity plus a little acceleration, in output pixels per frame.
    v = rng.uniform(-max_shift, max_shift, 2)
    a = rng.uniform(-0.15, 0.15, 2)
    zoom_rate = rng.uniform(-0.004, 0.004)
    rot_rate = rng.uniform(-0.004, 0.004)  # radians per frame
    frames = []
    cx, cy = w0 / 2, h0 / 2
    for t in range(n_frames):
        tt = t - (n_frames - 1) / 2
        dx, dy = (v * tt + a * tt * tt / 2) * oversample
        z = 1.0 + zoom_rate * tt
        th = rot_rate * tt
        c, s = np.cos(th) * z, np.sin(th) * z
        # Map output (oversampled) grid centred on the image centre, then move the centre.
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        ocx, ocy = ow * oversample / 2, oh * oversample / 2
        m[:, 2] = np.array([cx + dx, cy + dy]) - m[:, :2] @ np.array([ocx, ocy])
        big = cv2.warpAffine(image, m, (ow * oversample, oh * oversample),
                             flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.asarray(Image.fromarray(big).resize((ow, oh), Image.BICUBIC)))
    return Clip(name, frames)


def skimage_stills() -> dict[str, np.ndarray]:
    """The colour (and a few grey) sample photos that scikit-image ships inside its package (no download)."""
    from skimage import data as skd  # local import: scikit-image is only needed for this source

    out: dict[str, np.ndarray] = {}
    for n in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "retina",
              "immunohistochemistry", "camera", "brick", "grass", "gravel", "text", "page", "moon"):
        try:
            img = getattr(skd, n)()
        except Exception:  # an image not bundled in this scikit-image version (would need a download)
            continue
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        out[n] = np.ascontiguousarray(img[..., :3])
    return out


def default_stills(n_frames: int = 12, clips_per_image: int = 2, seed: int = 0, min_side: int = 384) -> list[Clip]:
    """Moving-still clips from scikit-image's bundled photos (those with both sides >= min_side)."""
    clips = []
    for i, (name, img) in enumerate(sorted(skimage_stills().items())):
        if min(img.shape[:2]) < min_side:
            continue
        for k in range(clips_per_image):
            clips.append(moving_still(img, f"still/{name}/{k}", n_frames=n_frames, seed=seed * 1000 + i * 10 + k))
    return clips


def motion_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (8-bit units) of two frames' luma at reduced size: ~0 for static content."""
    def small(x: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)
        h, w = g.shape
        f = 128 / max(h, w)
        return cv2.resize(g, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else g
    return float(np.mean(np.abs(small(a) - small(b))))


@dataclass(frozen=True)
class Triplet:
    """Input frames start and start+gap of clip ``clip`` (index into the data set's clip list); the target
    in-between frame is one of those between them (gap 2: the classic triplet start, start+1, start+2)."""

    clip: int
    start: int
    gap: int = 2


def check_gaps(gaps: Sequence[int]) -> tuple[int, ...]:
    """The --gaps list checked: integers >= 2 (a repeated gap weighs more)."""
    gaps = tuple(gaps)
    if not gaps or any(isinstance(g, bool) or not isinstance(g, int) or g < 2 for g in gaps):
        raise ValueError(f"gaps must be integers >= 2 (frames between the two inputs), got {list(gaps)!r}")
    return gaps


def cut_triplets(clips: Sequence[Clip], stride: int = 1, min_motion: float = 0.0,
                 gaps: Sequence[int] = (2,)) -> list[Triplet]:
    """Start positions every ``stride`` frames, for each input gap of ``gaps`` (listed twice: twice the
    samples); spans whose outer frames differ less than ``min_motion`` (see motion_score) are skipped as
    static."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    gaps = check_gaps(gaps)
    out = []
    for gap in gaps:
        for ci, c in enumerate(clips):
            for s in range(0, len(c.frames) - gap, stride):
                if min_motion > 0 and motion_score(c.frames[s], c.frames[s + gap]) < min_motion:
                    continue
                out.append(Triplet(ci, s, gap))
    return out


@dataclass
class Sample:
    """One training example as float tensors in [0, 1] and pixel flows (LR grid)."""

    lr1: torch.Tensor   # (3, h, w)
    lr2: torch.Tensor
    lr_mid: torch.Tensor
    hr1: torch.Tensor   # (3, h*s, w*s)
    hr_mid: torch.Tensor
    hr2: torch.Tensor
    flow_f: torch.Tensor  # (2, h, w): lr2(x + f) ~ lr1(x)
    flow_b: torch.Tensor  # (2, h, w): lr1(x + b) ~ lr2(x)
    t: torch.Tensor = field(default_factory=lambda: torch.tensor(0.5))  # time of the middle frame, 0-dim


def augment(s: Sample, hflip: bool, vflip: bool, transpose: bool, reverse: bool) -> Sample:
    """Apply the dihedral transform (hflip, vflip, transpose generate all 8 flips/90-degree rotations) and
    temporal reversal to images and flows consistently (flow vectors are transformed, not just moved)."""
    def img(t: torch.Tensor) -> torch.Tensor:
        if hflip:
            t = t.flip(-1)
        if vflip:
            t = t.flip(-2)
        if transpose:
            t = t.transpose(-1, -2)
        return t.contiguous()

    def flow(f: torch.Tensor) -> torch.Tensor:
        u, v = f[0], f[1]
        if hflip:
            u, v = -u.flip(-1), v.flip(-1)
        if vflip:
            u, v = u.flip(-2), -v.flip(-2)
        if transpose:
            u, v = v.transpose(-1, -2), u.transpose(-1, -2)
        return torch.stack([u, v]).contiguous()

    lr1, lr2, hr1, hr2 = img(s.lr1), img(s.lr2), img(s.hr1), img(s.hr2)
    ff, fb = flow(s.flow_f), flow(s.flow_b)
    if reverse:
        lr1, lr2, hr1, hr2, ff, fb = lr2, lr1, hr2, hr1, fb, ff
    return Sample(lr1, lr2, img(s.lr_mid), hr1, img(s.hr_mid), hr2, ff, fb, 1.0 - s.t if reverse else s.t)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    h = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class TripletDataset:
    """Triplets of a list of clips at one scale, with LR frames, cached flows and deterministic augmentation.

    ``crop`` is the LR crop size (None: whole frames). Flows are computed on the whole LR frames (and
    cached on disk by ``flow_cache``), then cropped with the images. ``get(epoch, index)`` returns the
    same sample for the same arguments, whatever happened before (exact resume, DDP sharding).
    """

    def __init__(self, clips: Sequence[Clip], scale: int, *, stride: int = 1, min_motion: float = 0.0,
                 crop: int | None = 64, augment: bool = True, flow_cache=None, seed: int = 0,
                 gaps: Sequence[int] = (2,)) -> None:
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {scale!r}")
        if not clips:
            raise ValueError("clips: the data set is empty")
        self.clips = list(clips)
        self.scale = scale
        self.crop = crop
        self.do_augment = augment
        self.flow_cache = flow_cache
        self.seed = seed
        self.triplets = cut_triplets(self.clips, stride, min_motion, gaps)
        if not self.triplets:
            raise ValueError(f"no triplet left after the motion filter (min_motion={min_motion}); lower it")
        self._lr: dict[tuple[int, int], np.ndarray] = {}
        for c in self.clips:
            h, w = c.frames[0].shape[:2]
            if h // scale < (crop or 1) or w // scale < (crop or 1):
                raise ValueError(f"clip {c.name!r}: {w}x{h} is too small for LR crops of {crop} at x{scale}")

    def __len__(self) -> int:
        return len(self.triplets)

    def hr(self, clip: int, frame: int) -> np.ndarray:
        return crop_to_multiple(self.clips[clip].frames[frame], self.scale)

    def lr(self, clip: int, frame: int) -> np.ndarray:
        key = (clip, frame)
        v = self._lr.get(key)
        if v is None:
            v = downscale_bicubic(self.hr(clip, frame), self.scale)
            self._lr[key] = v
        return v

    def flows(self, t: Triplet) -> tuple[np.ndarray, np.ndarray]:
        """(flow_f, flow_b) on the whole LR frames of triplet t, (2, h, w) float32 each."""
        a, b = self.lr(t.clip, t.start), self.lr(t.clip, t.start + t.gap)
        if self.flow_cache is None:
            from .flowcache import compute_flows
            return compute_flows(a, b)
        return self.flow_cache.get(a, b)

    def precompute_flows(self, progress: bool = True, batch: int = 8) -> int:
        """Fill the flow cache for every triplet; returns how many pairs were computed."""
        if self.flow_cache is None:
            return 0
        pairs = list({(t.clip, t.start, t.gap): (self.lr(t.clip, t.start), self.lr(t.clip, t.start + t.gap))
                      for t in self.triplets}.values())
        return self.flow_cache.fill(pairs, progress=progress, batch=batch)

    def get(self, epoch: int, index: int) -> Sample:
        from .imaging import to_tensor
        t = self.triplets[index]
        rng = np.random.default_rng(_sample_seed(self.seed, epoch, index))
        s = self.scale
        # The target: the middle frame of a gap of 2 (no random draw, so those samples are what they
        # were before gaps existed), else a frame drawn between the inputs, at time j / gap.
        j = 1 if t.gap == 2 else int(rng.integers(1, t.gap))
        lr1, lr2 = self.lr(t.clip, t.start), self.lr(t.clip, t.start + t.gap)
        lrm = self.lr(t.clip, t.start + j)
        hr = [self.hr(t.clip, t.start + k) for k in (0, j, t.gap)]
        ff, fb = self.flows(t)
        h, w = lr1.shape[:2]
        if self.crop:
            y = int(rng.integers(0, h - self.crop + 1))
            x = int(rng.integers(0, w - self.crop + 1))
            ys, xs = slice(y, y + self.crop), slice(x, x + self.crop)
            Ys, Xs = slice(y * s, (y + self.crop) * s), slice(x * s, (x + self.crop) * s)
            lr1, lr2, lrm = lr1[ys, xs], lr2[ys, xs], lrm[ys, xs]
            hr = [f[Ys, Xs] for f in hr]
            ff, fb = ff[:, ys, xs], fb[:, ys, xs]
        smp = Sample(to_tensor(lr1), to_tensor(lr2), to_tensor(lrm), to_tensor(hr[0]), to_tensor(hr[1]),
                     to_tensor(hr[2]), torch.from_numpy(np.array(ff, np.float32)),
                     torch.from_numpy(np.array(fb, np.float32)), torch.tensor(j / t.gap))
        if self.do_augment:
            flips = rng.integers(0, 2, 4)
            smp = augment(smp, bool(flips[0]), bool(flips[1]), bool(flips[2]), bool(flips[3]))
        return smp

    def batch(self, epoch: int, indices: Iterable[int], pool=None) -> dict[str, torch.Tensor]:
        """Stack samples into a batch dict of (N, C, H, W) tensors (built on `pool`, an executor, if given;
        each sample depends on (epoch, index) alone, so the result is the same)."""
        items = list(pool.map(lambda i: self.get(epoch, i), indices)) if pool else [self.get(epoch, i) for i in indices]
        return {k: torch.stack([getattr(it, k) for it in items]) for k in Sample.__dataclass_fields__}
