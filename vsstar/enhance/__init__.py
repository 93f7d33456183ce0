"""The ``enhance`` job: a video in, a video out, through :func:`vsstar.STAR` and the system ffmpeg.

- :mod:`.options`: :class:`EnhanceOptions`, the job's options (the command's flags), checked in one place;
- :mod:`.plan`: probing, the source clip, the output rate and frame times, STAR's clip (:func:`prepare`);
- :mod:`.encode`: frames out of a clip, the raw Matroska pipe into ffmpeg and its commands;
- :mod:`.job`: the job on this machine (:func:`run`) and writing its output (:func:`write_job`, also the
  Ray driver's); :mod:`vsstar.distributed` runs it on Ray.

The ``vsstar`` command (:mod:`vsstar.cli`) only maps its flags onto :class:`EnhanceOptions`.
"""
from .job import run
from .options import DEFAULTS, EnhanceError, EnhanceOptions

__all__ = ["run", "EnhanceOptions", "EnhanceError", "DEFAULTS"]
