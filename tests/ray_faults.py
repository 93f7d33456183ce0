"""Worker-side faults for tests/test_distributed.py, imported by the Ray workers (the cluster fixture puts
tests/ on their PYTHONPATH).

The worker itself decides to die, after its first frame, so a fault happens mid-chunk on every run; a
driver that kills a worker it sees in a progress poll races the chunk (a short chunk can start and finish
while the driver is decoding another one's segment).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vsstar import distributed


class _DieAfterFirstFrame:
    """Stands in for the progress actor's handle: forwards every report and ends the process (as a lost
    node would) once the first frame is reported and known to the actor."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    @property
    def report(self) -> "_DieAfterFirstFrame":
        return self

    def remote(self, chunk: int, pid: int, frames: int) -> Any:
        import ray

        ref = self._progress.report.remote(chunk, pid, frames)
        if frames >= 1:
            ray.get(ref)  # the attempt and its frame are recorded before the process goes
            os._exit(1)
        return ref


def crashing_run_chunk(marks: str, chunk_index: int, crashes: int | None):
    """A ``_run_chunk`` whose worker dies mid-chunk on the first `crashes` attempts at `chunk_index`
    (None: on every attempt). Each crash leaves a file ``<pid>`` in the folder `marks`."""

    def run(spec: Any, chunk: Any, progress: Any) -> bytes:
        folder = Path(marks)
        if chunk.index == chunk_index and (crashes is None or len(list(folder.iterdir())) < crashes):
            (folder / str(os.getpid())).touch()
            progress = _DieAfterFirstFrame(progress)
        return distributed._run_chunk(spec, chunk, progress)

    return run
