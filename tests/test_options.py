"""vsstar.options.StarOptions: the one typed options object, checked in one place."""
from __future__ import annotations

from fractions import Fraction as Fr

import pytest

from vsstar.engine import StarEngine
from vsstar.options import StarOptions

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
