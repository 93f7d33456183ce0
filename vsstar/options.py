"""The processing options, typed and checked in one place (no host import here).

Every host maps its own argument names onto :class:`StarOptions` (the VapourSynth filter its
vs-rife / vs-mlrt style keywords, the GStreamer element its properties, the command its flags) and
builds its engines with :meth:`StarOptions.engines`; a bad value is refused here with one line that
names the option (hosts put their own parameter names in front where those differ).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Sequence

from .backends import BACKENDS, PRECISIONS
from .choices import SCALES
from .scene import DEFAULT_SC_THRESHOLD
from .schedule import MAX_FACTOR, MODES

if TYPE_CHECKING:
    from .engine import StarEngine

__all__ = ["StarOptions", "SCALES"]



@dataclass(frozen=True)
class StarOptions:
    """What to compute and where (see :class:`vsstar.engine.StarEngine` for the engine options).

    Checked when built: everything that needs no model or device (scale, mode, factor, quality,
    devices, backend, precision, batch_size, scene cuts, exact_time); the model, each device, fp16 and
    the tiling when :meth:`engines` builds them.

    factor: output / source frame rate (1 in mode "s"; at least 1 and at most
    :data:`vsstar.schedule.MAX_FACTOR` otherwise; hosts parse theirs with
    :func:`vsstar.schedule.output_factor`). devices: one engine per entry (None = CUDA when
    available, else the CPU). precision None: the backend's default. scene_change / sc_threshold:
    no synthesis across scene cuts, and the built-in detector's threshold in [0, 1].
    exact_time: refuse in-between times a model without time input cannot make exactly.
    """

    scale: int = 4
    mode: str = "st"
    factor: Fraction = Fraction(2)
    model: Any = None
    quality: str = "fast"
    devices: tuple[Any, ...] = (None,)
    backend: str = "auto"
    precision: str | None = None
    fp16: bool | None = None
    batch_size: int | None = None
    tile: Any = None
    tile_overlap: int = 16
    flow_options: dict[str, Any] | None = field(default=None, hash=False)
    scene_change: bool = True
    sc_threshold: float = DEFAULT_SC_THRESHOLD
    exact_time: bool = False

    def __post_init__(self) -> None:
        # The engine (torch) is imported here and in engines(), not with the module: hosts import this
        # module (its constants) at start-up, and the command's parser and the GStreamer plugin scan
        # need no torch.
        from .engine import check_quality

        if isinstance(self.scale, bool) or self.scale not in SCALES:
            raise ValueError(f"scale must be {', '.join(map(str, SCALES[:-1]))} or {SCALES[-1]}, got {self.scale!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        try:
            factor = Fraction(self.factor)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"factor must be a fraction, got {self.factor!r}") from exc
        if self.mode == "s" and factor != 1:
            raise ValueError(f"factor must be 1 in mode 's' (super-resolution keeps the rate), got {factor}")
        if not 1 <= factor <= MAX_FACTOR:
            raise ValueError(f"factor must be in [1, {MAX_FACTOR}], got {factor}")
        object.__setattr__(self, "factor", factor)
        check_quality(self.quality, self.model)
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.devices, tuple) or not self.devices:
            raise ValueError(f"devices must be a non-empty tuple, got {self.devices!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.scene_change, (bool, int)):
            raise ValueError(f"scene_change must be a bool, got {self.scene_change!r}")
        try:
            thr = float(self.sc_threshold)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sc_threshold must be a number in [0, 1], got {self.sc_threshold!r}") from exc
        if not 0.0 <= thr <= 1.0:
            raise ValueError(f"sc_threshold must be in [0, 1], got {self.sc_threshold!r}")
        object.__setattr__(self, "sc_threshold", thr)
        if not isinstance(self.exact_time, (bool, int)):
            raise ValueError(f"exact_time must be a bool, got {self.exact_time!r}")

    def engines(self) -> list[StarEngine]:
        """One engine per device (ValueError naming the option at fault: the model, the device and the
        tiling are checked here, by :class:`vsstar.engine.StarEngine`)."""
        from .engine import StarEngine

        extra = {} if self.precision is None else {"precision": self.precision}
        return [StarEngine(self.model, scale=self.scale, mode=self.mode, device=d, fp16=self.fp16,
                           batch_size=self.batch_size, tile=self.tile, tile_overlap=self.tile_overlap,
                           flow_options=self.flow_options, backend=self.backend, quality=self.quality, **extra)
                for d in self.devices]

    @staticmethod
    def check_engines(engines: Sequence[Any], mode: str) -> list[StarEngine]:
        """Prebuilt engines (one or a list) for ``mode``, checked: StarEngines sharing scale and mode."""
        from .engine import StarEngine

        out = [engines] if isinstance(engines, StarEngine) else \
            list(engines) if isinstance(engines, (list, tuple)) else [engines]
        if not out:
            raise ValueError("engine must be a vsstar.engine.StarEngine or a non-empty list of them, got []")
        for e in out:
            if not isinstance(e, StarEngine):
                raise ValueError(f"engine must be a vsstar.engine.StarEngine or a list of them, got {type(e).__name__}")
            if e.mode != mode:
                raise ValueError(f"mode={mode!r} but the engine was built for mode={e.mode!r}")
        if len({(e.scale, e.mode) for e in out}) > 1:
            raise ValueError("engine: the engines of a list must share scale and mode")
        return out
