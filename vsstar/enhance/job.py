"""The ``enhance`` job on this machine: plan, encode, the ``--compare`` picture, the summary line."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from .compare import write_compare
from .encode import clip_planes, pump
from .options import EnhanceOptions
from .plan import Job, job_files, prepare, summary

__all__ = ["run", "write_job"]


def write_job(job: Job, frames: Iterable[Any], count: int, quiet: bool) -> float:
    """Encode `count` output frames (plane lists) with the job's encoder, then move the finished file to
    OUTPUT; returns the seconds it took (frames are produced while encoding)."""
    t0 = time.monotonic()
    pump(frames, count, job.clip.width, job.clip.height, job.times, job.end, job.cmd, job.fmt,
         job.video.colour, quiet, desc=job.runs or None)
    encode_s = time.monotonic() - t0
    os.replace(job.tmp, job.output)
    return encode_s


def run(options: EnhanceOptions) -> str:
    """Enhance one video here; returns the summary line (also printed unless ``options.quiet``).

    Raises :class:`vsstar.enhance.EnhanceError` with a one-line message; OUTPUT appears only when the whole job
    succeeded, and nothing else is left behind.
    """
    with job_files(Path(options.output)):
        job = prepare(options)
        encode_s = write_job(job, clip_planes(job.clip), job.clip.num_frames, options.quiet)
        if options.compare:
            write_compare(job.src, job.result, options.mode, options.scale, options.compare, factor=job.factor)
    line = summary(job, encode_s)
    if not options.quiet:
        print(line, file=sys.stderr)
    return line
