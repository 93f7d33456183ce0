"""The options of an ``enhance`` job: one typed object, checked in one place, spoken in the command's terms.

The fields are the long options of ``vsstar enhance`` (``--batch-size`` is ``batch_size``), so the
command maps its flags onto them one to one, and :func:`vsstar.distributed.enhance` takes them as keyword
arguments. Messages name the flags, as a user of either wrote them. The processing options are checked by
:class:`vsstar.options.StarOptions` (:meth:`EnhanceOptions.star_options` maps the flags onto it); this
module checks only what belongs to the job (the rate flags, frames, encoder, Ray).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..options import StarOptions
from ..schedule import output_factor

__all__ = ["EnhanceError", "EnhanceOptions", "DEFAULTS", "flag_words"]


class EnhanceError(Exception):
    """A user-facing error of the job: printed as one line (the command exits with status 2)."""


@dataclass(frozen=True)
class EnhanceOptions:
    """One ``enhance`` job: INPUT, OUTPUT and every option (see docs/cli.md for their meaning).

    Raises :class:`EnhanceError` naming the option when a value is out of range here (the processing
    options through :meth:`star_options`); what needs the model or a device (model, device, fp16, tile)
    is reported when the job builds its clip. None: STAR's default.
    """

    input: str
    output: str
    scale: int = 4
    mode: str = "st"
    factor: Fraction | None = None  # output frames per input frame (None: 2 in modes st/t)
    fps: Fraction | None = None  # the output frame rate instead of factor
    exact_time: bool = False
    model: str | None = None
    quality: str = "fast"
    device: str | list[str] | None = None
    fp16: bool | None = None
    backend: str = "auto"
    precision: str | None = None
    batch_size: int | None = None
    tile: int | None = None
    frames: int | None = None  # only the first N input frames
    fast_flow: bool = False
    no_scene_detect: bool = False
    codec: str | None = None
    crf: int = 16
    pix_fmt: str | None = None
    no_audio: bool = False
    compare: str | None = None
    quiet: bool = False
    # Ray (vsstar.distributed); `ray` is the address, "" for Ray's default, None to run locally.
    ray: str | None = None
    chunk_frames: int | None = None
    ray_cpus: float | None = None
    ray_gpus: float | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.factor is not None and self.fps is not None:
            raise EnhanceError("--factor and --fps: give one of them")
        for name in ("factor", "fps"):
            value = getattr(self, name)
            if value is not None:
                try:
                    value = Fraction(value)
                except (TypeError, ValueError, ZeroDivisionError) as exc:
                    raise EnhanceError(f"--{name} must be a number or a fraction like 5/2, got {value!r}") from exc
                if value <= 0:
                    raise EnhanceError(f"--{name} must be positive, got {value}")
                object.__setattr__(self, name, value)
        if self.mode == "s" and (self.factor is not None or self.fps is not None):
            raise EnhanceError("--factor/--fps: mode s keeps the frame rate")
        _count("--frames", self.frames, 1)
        _count("--crf", self.crf, 0)
        _count("--chunk-frames", self.chunk_frames, 1)
        _count("--max-retries", self.max_retries, 0)
        for name in ("ray_cpus", "ray_gpus"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise EnhanceError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        self.star_options()  # the processing options, checked where every host's are

    def star_options(self, factor: Fraction | None = None, device: str | list[str] | None = None) -> StarOptions:
        """The processing options of the job as :class:`vsstar.options.StarOptions` (EnhanceError in the
        command's words when one is refused).

        `factor`: output frames per input frame (None: --factor's, else 2; always 1 in mode s; --fps
        becomes a factor once the input's rate is known). `device` overrides --device (and then fp16 is
        the device's default): the Ray driver builds its clip on the CPU only to learn its format.
        """
        if self.mode == "s":
            factor = Fraction(1)
        elif factor is None and self.factor is not None:
            try:  # the rate's rules and bound, with their reasons, are output_factor's
                factor = output_factor(self.factor.numerator, self.factor.denominator)
            except ValueError as exc:
                raise EnhanceError(flag_words(str(exc))) from exc
        elif factor is None:
            factor = Fraction(2)
        devices = self.device if device is None else device
        flow_options = None
        if self.fast_flow:
            from ..flow.settings import FAST_FLOW  # the flow package loads torch, which the parser does not need

            flow_options = FAST_FLOW
        try:
            return StarOptions(
                scale=self.scale, mode=self.mode, factor=factor, model=self.model, quality=self.quality,
                devices=tuple(devices) if isinstance(devices, (list, tuple)) else (devices,),
                backend=self.backend, precision=self.precision, fp16=self.fp16 if device is None else None,
                batch_size=self.batch_size, tile=self.tile, flow_options=flow_options,
                scene_change=not self.no_scene_detect, exact_time=self.exact_time)
        except ValueError as exc:
            raise EnhanceError(flag_words(str(exc))) from exc

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "EnhanceOptions":
        """Options from a mapping of field names (extra keys, such as a parser's own, are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{unknown[0]}: not an option of vsstar enhance")
        return cls(**values)


#: The default of every option that has one (the command's parser takes its defaults from here).
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(EnhanceOptions)
                            if f.default is not dataclasses.MISSING}


def _count(flag: str, value: Any, lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise EnhanceError(f"{flag} must be an integer >= {lo}, got {value!r}")


# STAR's keyword arguments that are options of the job, and the flag each one is.
_FLAGS = {"device": "--device", "devices": "--device", "device_index": "--device", "factor": "--factor",
          "batch_size": "--batch-size", "tile": "--tile",
          "model": "--model", "scale": "--scale", "mode": "--mode", "quality": "--quality",
          "backend": "--backend", "precision": "--precision", "factor_num/factor_den/fps_num/fps_den":
          "--factor/--fps", "factor_num/factor_den": "--factor", "fps_num/fps_den": "--fps"}
_SWITCHES = {("fp16", "True"): "--fp16", ("fp16", "False"): "--no-fp16",
             ("exact_time", "True"): "--exact-time", ("exact_time", "False"): "no --exact-time"}
_NAME = "|".join(sorted(map(re.escape, _FLAGS), key=len, reverse=True))


def flag_words(message: str) -> str:
    """A message of STAR or the engine in the command's words: ``device='cpu'`` becomes ``--device cpu``,
    ``fp16=True`` ``--fp16``, ``batch_size must`` (opening the message) ``--batch-size must``."""
    def switch(m: re.Match) -> str:
        return _SWITCHES.get((m.group(1), m.group(2)), m.group(0))

    def value(m: re.Match) -> str:
        return f"{_FLAGS[m.group(1)]} {m.group(3) if m.group(3) is not None else m.group(4)}"

    for name in ("factor_num/factor_den/fps_num/fps_den", "factor_num/factor_den", "fps_num/fps_den"):
        message = message.replace(name, _FLAGS[name])  # never an English word: anywhere
    message = re.sub(r"(?<![\w-])(fp16|exact_time)=(True|False)\b", switch, message)
    message = re.sub(r"(?<![\w-])(fp16|exact_time)(?==?[ :]|=?$)",
                     lambda m: "--" + m.group(1).replace("_", "-"), message)
    message = re.sub(r"(?<=--fp16)=|(?<=--exact-time)=", "", message)
    message = re.sub(rf"(?<![\w-])({_NAME})=('([^']*)'|([^\s,;:)']+))", value, message)
    message = re.sub(rf"(?<![\w-])({_NAME})=(?=\s|$)", lambda m: _FLAGS[m.group(1)], message)
    # A bare name only where it opens the message ("tile must ..."): elsewhere it is an English word.
    return re.sub(rf"^((?:STAR: )?)({_NAME})(?= must|:)", lambda m: m.group(1) + _FLAGS[m.group(2)], message)
