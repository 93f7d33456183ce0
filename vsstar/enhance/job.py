"""The ``enhance`` job on this machine: plan, encode, the ``--compare`` picture, the summary line."""
from __future__ import annotations

import sys
from pathlib import Path

from .compare import write_compare
from .encode import clip_planes, write_job
from .options import EnhanceOptions
from .plan import job_files, prepare, summary

__all__ = ["run"]


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
