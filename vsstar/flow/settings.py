"""The flow settings: one frozen dataclass owns the solver parameters, their defaults and their checks.

STARnet was trained on flows computed with pyflow's Coarse2Fine and these parameters
(alpha 0.012, ratio 0.75, minWidth 20, 7 outer, 1 inner, 30 SOR iterations, RGB). The engine, the
weights format and the training flow cache all take their settings from here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["FlowSettings", "check_params", "FAST_FLOW"]

#: The fast-flow preset (``vsstar enhance --fast-flow``): changes to the settings that cut the iterations,
#: for quicker flow and slightly softer in-between frames.
FAST_FLOW = {"n_outer": 3, "n_sor": 10}

_NAMES = ("alpha", "ratio", "min_width", "n_outer", "n_inner", "n_sor", "col_type")


def check_params(alpha: float, ratio: float, min_width: int, n_outer: int, n_inner: int, n_sor: int,
                 col_type: int, names: tuple[str, ...] = _NAMES) -> None:
    """One-line ValueErrors for out-of-range solver parameters (`names` as the caller spells them)."""
    na, nr, nm, no, ni, ns, nc = names
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{na}: expected a finite number > 0, got {alpha!r}")
    if isinstance(ratio, bool) or not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"{nr}: expected a number in (0, 1) (out of [0.4, 0.98] means 0.75), got {ratio!r}")
    for name, val, lo in ((nm, min_width, 1), (no, n_outer, 1), (ni, n_inner, 1), (ns, n_sor, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, got {val!r}")
    if isinstance(col_type, bool) or col_type not in (0, 1):
        raise ValueError(f"{nc}: expected 0 (RGB) or 1 (gray), got {col_type!r}")


@dataclass(frozen=True)
class FlowSettings:
    """Parameters of the coarse-to-fine flow; the defaults are STARnet's (what its weights expect).

    alpha: smoothness weight. ratio: pyramid downsampling ratio (outside [0.4, 0.98] means 0.75, as in
    the C++ code). min_width: width of the coarsest level. n_outer / n_inner / n_sor: outer fixed-point,
    inner fixed-point and SOR iterations at the finest level. col_type: 0 RGB, 1 gray.
    Bad values raise ValueError naming the field.
    """

    alpha: float = 0.012
    ratio: float = 0.75
    min_width: int = 20
    n_outer: int = 7
    n_inner: int = 1
    n_sor: int = 30
    col_type: int = 0

    def __post_init__(self) -> None:
        check_params(self.alpha, self.ratio, self.min_width, self.n_outer, self.n_inner, self.n_sor,
                     self.col_type)
        # Plain Python numbers: equal settings compare, hash and serialise identically (cache keys).
        for name in ("alpha", "ratio"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("min_width", "n_outer", "n_inner", "n_sor", "col_type"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, base: "FlowSettings | None" = None) -> "FlowSettings":
        """`base` (default: STARnet's) with the entries of `values` replaced; unknown keys are an error."""
        base = base if base is not None else cls()
        if values is None:
            return base
        if isinstance(values, FlowSettings):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"expected a dict of flow settings, got {type(values).__name__}")
        unknown = sorted(set(values) - set(_NAMES))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; allowed: {list(_NAMES)}")
        return dataclasses.replace(base, **dict(values))

    def replace(self, **changes: Any) -> "FlowSettings":
        """A copy with some fields changed (same checks as from_dict)."""
        return FlowSettings.from_dict(changes, base=self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-able; the keyword arguments of coarse2fine_flow_batch)."""
        return {name: getattr(self, name) for name in _NAMES}
