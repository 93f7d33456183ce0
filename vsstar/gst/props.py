"""The starnet element's properties: their table and how each maps onto vsstar's arguments.

No GStreamer here (the tests run on any Python). The properties map onto
:class:`vsstar.options.StarOptions`, which checks them when the element starts (:func:`star_options`;
the rate again when the input caps are known); every refusal is a ValueError naming the property.
"""
from __future__ import annotations

import re
import traceback
from fractions import Fraction
from typing import Any, Mapping, NamedTuple

from vsstar.backends import DEFAULT_PRECISION
from vsstar.options import SCALES, StarOptions
from vsstar.scene import DEFAULT_SC_THRESHOLD
from vsstar.schedule import output_factor

__all__ = ["Prop", "PROPERTIES", "DEFAULTS", "STRING_PROPS", "LOWER_PROPS", "MAX_BATCH",
           "parse_fraction", "rate_factor", "star_options", "property_words", "debug_detail"]

#: Largest 'batch-size' (pairs held before the first pair runs, so frames of latency).
MAX_BATCH = 64
# GLib would silently ignore an out-of-range value with a warning, so the ranges are wide and the
# element checks values itself, stopping with a bus error instead.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
#: A GStreamer framerate is a fraction of two 32-bit ints.
_GST_INT_MAX = 2**31 - 1


class Prop(NamedTuple):
    """One GObject property: Python type, nick, blurb, default (and the range of numbers)."""

    type: type
    nick: str
    blurb: str
    default: Any
    minimum: Any = None
    maximum: Any = None


PROPERTIES: dict[str, Prop] = {
    "scale": Prop(int, "Scale", f"Upscaling factor: {', '.join(map(str, SCALES[:-1]))} or {SCALES[-1]} "
                  "(must match the model)", 4, _INT_MIN, _INT_MAX),
    "mode": Prop(str, "Mode", "st: upscale + raise the frame rate; s: upscale only; "
                 "t: raise the frame rate at the input size", "st"),
    "model": Prop(str, "Model", "Bundled weights name, path to vsstar safetensors or an official "
                  "checkpoint; empty: the bundled weights for the scale", ""),
    "quality": Prop(str, "Quality", "Tier of the bundled weights when 'model' is empty: fast or high "
                    "(a larger, slower network; scale 4 only; see docs/model.md)", "fast"),
    "device": Prop(str, "Device", "torch device (cpu, cuda, cuda:1); empty: CUDA when available, else CPU", ""),
    "backend": Prop(str, "Backend", "Network backend: auto (OpenVINO on the CPU when installed, else torch), "
                    "torch or openvino", "auto"),
    "precision": Prop(str, "Precision", "OpenVINO precision: auto (bf16 where the CPU has native bfloat16 and a "
                      "once-per-model check agrees, else f32), f32, bf16 or int8 (needs nncf); speed and drift in "
                      "docs/openvino.md", DEFAULT_PRECISION),
    "batch-size": Prop(int, "Batch size", f"Frame pairs run through the network at once (adds as many "
                       f"frames of latency), 1..{MAX_BATCH}", 1, _INT_MIN, _INT_MAX),
    "scene-change": Prop(bool, "Scene change", "Do not synthesise frames across scene cuts", True),
    "sc-threshold": Prop(float, "Scene-change threshold", "Cut score threshold in [0, 1]; "
                         "-1: the vsstar.scene default", -1.0, -1e9, 1e9),
    "factor": Prop(str, "Factor", "Output frames per input frame (modes st, t), a fraction >= 1 "
                   "such as 2, 5/2 or 4", "2/1"),
    "fps": Prop(str, "Output rate", "Output frame rate instead of 'factor', e.g. 60000/1001 "
                "(constant-rate input); empty: use 'factor'", ""),
    "exact-time": Prop(bool, "Exact time", "Refuse in-between times the model cannot synthesise "
                       "exactly instead of rounding them to the nearest 1/8", False),
}
#: Every property's default value.
DEFAULTS: dict[str, Any] = {name: p.default for name, p in PROPERTIES.items()}
#: String properties whose surrounding blanks are dropped, and those read case-insensitively.
STRING_PROPS = frozenset(name for name, p in PROPERTIES.items() if p.type is str)
LOWER_PROPS = frozenset(("mode", "quality", "precision", "backend"))


def normalise(name: str, value: Any) -> Any:
    """A property value as the element keeps it (strings stripped, some lower-cased)."""
    if name in STRING_PROPS:
        value = (value or "").strip()
        if name in LOWER_PROPS:
            value = value.lower()
    return value


def parse_fraction(name: str, text: str) -> Fraction | None:
    """A property holding a fraction ("5/2", "2.5", "60000/1001"); None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"property '{name}' must be a fraction like 5/2 or 60000/1001, got {text!r}") from exc
    if v <= 0:
        raise ValueError(f"property '{name}' must be positive, got {text!r}")
    return v


# vsstar.schedule.output_factor names its arguments as vs-rife does; the element's are properties.
_ARG_NAMES = (("factor_num/factor_den", "'factor'"), ("fps_num/fps_den", "'fps'"),
              ("factor_num", "'factor'"), ("factor_den", "'factor'"), ("fps_num", "'fps'"), ("fps_den", "'fps'"))


def _property_words(exc: ValueError, name: str) -> str:
    """output_factor's message in the element's words: its argument names become the properties."""
    msg = str(exc)
    for arg, prop in _ARG_NAMES:
        msg = msg.replace(arg, prop)
    return f"property {msg}" if msg.startswith("'") else f"property '{name}': {msg}"


def rate_factor(mode: str, factor: str, fps: str, in_fps: Fraction | None) -> Fraction:
    """Output frames per input frame from the 'factor' and 'fps' properties ('fps' wins; it needs a
    constant input rate ``in_fps``, None or 0 = variable). The rules and the bound are
    :func:`vsstar.schedule.output_factor`'s; with ``in_fps`` known the output rate must also fit a
    GStreamer framerate. ValueError naming the property."""
    f = parse_fraction("factor", factor)
    r = parse_fraction("fps", fps)
    if mode == "s":
        if f not in (None, 1, 2) or r is not None:  # 2: the property's default, meaning "unset" here
            raise ValueError("properties 'factor'/'fps': mode s keeps the frame rate")
        return Fraction(1)
    name = "factor" if r is None else "fps"
    try:
        if r is None:
            f = Fraction(2) if f is None else f
            out = output_factor(f.numerator, f.denominator)
        else:
            out = output_factor(fps_num=r.numerator, fps_den=r.denominator, source_fps=in_fps or None)
    except ValueError as exc:
        raise ValueError(_property_words(exc, name)) from exc
    if in_fps:
        rate = Fraction(in_fps) * out
        if rate.numerator > _GST_INT_MAX or rate.denominator > _GST_INT_MAX:
            raise ValueError(f"property '{name}': the output rate {rate} does not fit a GStreamer framerate "
                             f"(numerator and denominator at most {_GST_INT_MAX})")
    return out


# StarOptions' fields (and the engine's arguments) that the element calls by another name.
_PROPERTY_OF = {"batch_size": "batch-size", "sc_threshold": "sc-threshold", "scene_change": "scene-change",
                "exact_time": "exact-time", "devices": "device"}
_FIELD = re.compile(r"(?<![\w-])(" + "|".join(_PROPERTY_OF) + r")(?![\w-])")
#: The StarOptions fields and engine arguments that are properties (a message opening with one is about it).
_FIELDS = frozenset(("scale", "mode", "factor", "model", "quality", "device", "backend", "precision",
                     *_PROPERTY_OF))


def property_words(message: str) -> str:
    """A message of StarOptions or the engine in the element's words: field names become property names
    (``batch_size=0`` -> ``batch-size=0``), and one about a single option opens with that property,
    e.g. "property 'scale': scale must be 2, 4 or 8, got 3"."""
    first = re.match(r"\w+", message)
    text = _FIELD.sub(lambda m: _PROPERTY_OF[m.group(1)], message)
    if first is not None and first.group(0) in _FIELDS:
        return f"property '{_PROPERTY_OF.get(first.group(0), first.group(0))}': {text}"
    return text


def star_options(props: Mapping[str, Any]) -> StarOptions:
    """The element's properties (as :func:`normalise` keeps them) as :class:`vsstar.options.StarOptions`,
    checked: ValueError naming the property. An emptied string property takes the table's default; the
    rate is the 'factor' property's ('fps' needs the input caps: see :func:`rate_factor`), 'sc-threshold'
    below 0 the detector's default."""
    p = props
    factor = rate_factor(p["mode"], p["factor"], "", None)
    parse_fraction("fps", p["fps"])
    batch = p["batch-size"]
    # The element's own bound, not StarOptions': a batch is frames of latency in a live pipeline.
    if not isinstance(batch, bool) and isinstance(batch, int) and batch > MAX_BATCH:
        raise ValueError(f"property 'batch-size' must be in 1..{MAX_BATCH}, got {batch}")
    thr = p["sc-threshold"]
    try:
        return StarOptions(
            scale=p["scale"], mode=p["mode"], factor=factor, model=p["model"] or None,
            quality=p["quality"] or DEFAULTS["quality"], devices=(p["device"] or None,),
            backend=p["backend"] or DEFAULTS["backend"], precision=p["precision"] or DEFAULTS["precision"],
            batch_size=batch, scene_change=p["scene-change"], exact_time=p["exact-time"],
            sc_threshold=DEFAULT_SC_THRESHOLD if isinstance(thr, (int, float)) and thr < 0 else thr)
    except ValueError as exc:
        raise ValueError(property_words(str(exc))) from exc


def debug_detail(exc: BaseException) -> str:
    """Debug text of a refused setting: the chain of causes for a ValueError (the user's input was
    wrong, the message says how), the whole traceback for anything else."""
    if isinstance(exc, ValueError):
        chain = []
        e: BaseException | None = exc
        while e is not None and len(chain) < 8:
            chain.append(f"{type(e).__name__}: {e}")
            e = e.__cause__ or e.__context__
        return "\n  caused by ".join(chain)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
