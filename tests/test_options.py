"""vsstar.options.StarOptions: the one typed options object, checked in one place."""
from __future__ import annotations

from fractions import Fraction as Fr

import pytest

import subprocess
import sys

from vsstar.engine import StarEngine
from vsstar.enhance.options import EnhanceError, EnhanceOptions, flag_words
from vsstar.gst import props
from vsstar.options import SCALES, StarOptions
from vsstar.scene import DEFAULT_SC_THRESHOLD

from support import tiny_net


def test_defaults_and_normalised_values() -> None:
    o = StarOptions()
    assert (o.scale, o.mode, o.factor, o.devices, o.precision) == (4, "st", 2, (None,), None)
    o = StarOptions(mode="t", factor=Fr(5, 2), sc_threshold=1)
    assert o.factor == Fr(5, 2) and isinstance(o.sc_threshold, float)
    with pytest.raises(AttributeError):
        o.mode = "s"  # frozen


@pytest.mark.parametrize("kw, name", [
    ({"mode": "x"}, "mode"), ({"mode": "s", "factor": 2}, "factor"), ({"factor": Fr(1, 2)}, "factor"),
    ({"factor": 1025}, "factor"), ({"factor": "fast"}, "factor"), ({"quality": "best"}, "quality"),
    ({"quality": "high", "model": "x.safetensors"}, "quality"), ({"devices": ()}, "devices"),
    ({"backend": "tensorrt"}, "backend"), ({"precision": "f64"}, "precision"), ({"scene_change": "yes"}, "scene_change"),
    ({"sc_threshold": 2}, "sc_threshold"), ({"sc_threshold": "x"}, "sc_threshold"), ({"exact_time": None}, "exact_time"),
    ({"scale": 3}, "scale"), ({"scale": True}, "scale"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1.5}, "batch_size"),
])
def test_bad_values_name_the_option(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        StarOptions(**kw)
    assert "\n" not in str(info.value)


def test_engines_one_per_device_and_prebuilt_ones_checked() -> None:
    net = tiny_net()
    engines = StarOptions(scale=2, mode="st", model=net, devices=("cpu", "cpu"), backend="torch").engines()
    assert len(engines) == 2 and all(isinstance(e, StarEngine) and e.mode == "st" for e in engines)
    with pytest.raises(ValueError, match="batch_size"):
        StarOptions(scale=2, model=net, devices=("cpu",), batch_size=0).engines()
    assert StarOptions.check_engines(engines[0], "st") == [engines[0]]
    with pytest.raises(ValueError, match="mode='t'"):
        StarOptions.check_engines(engines, "t")
    with pytest.raises(ValueError, match="non-empty"):
        StarOptions.check_engines([], "st")
    with pytest.raises(ValueError, match="StarEngine"):
        StarOptions.check_engines(["cpu"], "st")


# ------------------------------------------------------------------------------------- hosts map onto it
def _refusal(kw: dict) -> str:
    with pytest.raises(ValueError) as info:
        StarOptions(**kw)
    return str(info.value)


@pytest.mark.parametrize("flags, kw, flag", [
    ({"scale": 3}, {"scale": 3}, "--scale"), ({"mode": "x"}, {"mode": "x"}, "--mode"),
    ({"quality": "best"}, {"quality": "best"}, "--quality"),
    ({"quality": "high", "model": "m.safetensors"}, {"quality": "high", "model": "m.safetensors"}, "--quality"),
    ({"backend": "tensorrt"}, {"backend": "tensorrt"}, "--backend"),
    ({"precision": "f64"}, {"precision": "f64"}, "--precision"), ({"batch_size": 0}, {"batch_size": 0}, "--batch-size"),
])
def test_enhance_options_are_checked_by_star_options(flags: dict, kw: dict, flag: str) -> None:
    """The command's options refuse what StarOptions refuses, with StarOptions' message in flag words."""
    with pytest.raises(EnhanceError) as info:
        EnhanceOptions("in.mp4", "out.mkv", **flags)
    assert str(info.value) == flag_words(_refusal(kw)) and str(info.value).startswith(flag)
    assert "_" not in str(info.value).split(" must")[0]  # no Python name where the flag belongs


def test_enhance_options_produce_star_options() -> None:
    o = EnhanceOptions("in.mp4", "out.mkv", scale=2, mode="t", factor=Fr(5, 2), device="cuda:0,cuda:1".split(","),
                       batch_size=3, tile=64, no_scene_detect=True, exact_time=True, backend="torch",
                       precision="f32", quality="fast", fast_flow=True)
    s = o.star_options()
    assert (s.scale, s.mode, s.factor, s.devices, s.batch_size, s.tile) == (
        2, "t", Fr(5, 2), ("cuda:0", "cuda:1"), 3, 64)
    assert (s.scene_change, s.exact_time, s.backend, s.precision) == (False, True, "torch", "f32")
    from vsstar.flow.settings import FAST_FLOW

    assert s.flow_options == FAST_FLOW
    assert o.star_options(Fr(3)).factor == 3  # the factor --fps makes once the input's rate is known
    # The Ray driver's CPU clip: another device, and fp16 back to that device's default.
    cpu = EnhanceOptions("in.mp4", "out.mkv", device="cuda", fp16=True).star_options(device="cpu")
    assert (cpu.devices, cpu.fp16) == (("cpu",), None)
    assert EnhanceOptions("in.mp4", "out.mkv", mode="s").star_options(Fr(2)).factor == 1
    with pytest.raises(EnhanceError, match=r"^--factor must be at least 1, got 1/2$"):
        EnhanceOptions("in.mp4", "out.mkv", factor=Fr(1, 2))
    with pytest.raises(EnhanceError, match=r"^--factor \(2048/1\) must be at most 1024 times"):
        EnhanceOptions("in.mp4", "out.mkv", factor=Fr(2048))


def _props(**kw: object) -> dict:
    return {**props.DEFAULTS, **{k.replace("_", "-"): v for k, v in kw.items()}}


@pytest.mark.parametrize("kw, field, prop", [
    ({"scale": 3}, {"scale": 3}, "scale"), ({"mode": "slowmo"}, {"mode": "slowmo"}, "mode"),
    ({"quality": "best"}, {"quality": "best"}, "quality"), ({"backend": "x"}, {"backend": "x"}, "backend"),
    ({"precision": "f64"}, {"precision": "f64"}, "precision"), ({"batch_size": 0}, {"batch_size": 0}, "batch-size"),
    ({"sc_threshold": 1.5}, {"sc_threshold": 1.5}, "sc-threshold"),
    ({"quality": "high", "model": "m.safetensors"}, {"quality": "high", "model": "m.safetensors"}, "quality"),
])
def test_element_properties_are_checked_by_star_options(kw: dict, field: dict, prop: str) -> None:
    """The element refuses what StarOptions refuses, in its words: the message opens with the property
    and shows no Python field name where a property is named otherwise."""
    with pytest.raises(ValueError) as info:
        props.star_options(_props(**kw))
    msg = str(info.value)
    assert msg == props.property_words(_refusal(field)) and msg.startswith(f"property '{prop}': ")
    assert not any(name in msg for name in ("batch_size", "sc_threshold", "scene_change", "exact_time"))


def test_element_properties_map_onto_star_options() -> None:
    o = props.star_options(_props(scale=2, mode="t", factor="5/2", device="cpu", batch_size=3, sc_threshold=0.4,
                                  scene_change=False, exact_time=True, backend="torch", precision="f32"))
    assert (o.scale, o.mode, o.factor, o.devices, o.batch_size) == (2, "t", Fr(5, 2), ("cpu",), 3)
    assert (o.sc_threshold, o.scene_change, o.exact_time, o.backend, o.precision) == (0.4, False, True, "torch", "f32")
    # Emptied strings take the table's defaults; a negative threshold is the detector's default.
    o = props.star_options(_props(model="", device="", backend="", precision="", quality="", sc_threshold=-1.0))
    assert (o.model, o.devices, o.backend, o.precision, o.quality) == (
        None, (None,), props.DEFAULTS["backend"], props.DEFAULTS["precision"], "fast")
    assert o.sc_threshold == DEFAULT_SC_THRESHOLD and o.batch_size == 1
    assert props.star_options(_props(mode="s")).factor == 1
    # The element's own bound (frames of latency), and the rate properties, still name the property.
    with pytest.raises(ValueError, match=r"^property 'batch-size' must be in 1\.\.64, got 65$"):
        props.star_options(_props(batch_size=65))
    with pytest.raises(ValueError, match=r"^property 'fps' must be a fraction"):
        props.star_options(_props(fps="abc"))
    assert props.PROPERTIES["scale"].blurb.startswith(f"Upscaling factor: {SCALES[0]}, ")


def test_engine_messages_in_the_elements_words() -> None:
    assert props.property_words("batch_size must be a positive int, got 0") == \
        "property 'batch-size': batch-size must be a positive int, got 0"
    assert props.property_words("scale=4 but the model is a x2 model; pass scale=2") == \
        "property 'scale': scale=4 but the model is a x2 model; pass scale=2"
    assert props.property_words("frames must be at least 16x16 pixels") == "frames must be at least 16x16 pixels"


def test_options_import_no_torch() -> None:
    """The command's parser and the GStreamer plugin scan import the options' module, not torch."""
    code = ("import sys, vsstar.options, vsstar.gst.props, vsstar.cli; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
