"""starnet: the GStreamer element of vsstar (STARnet space-time video super-resolution).

gst-python's plugin loader (Debian: ``gstreamer1.0-python3-plugin-loader``) finds this file in
``$GST_PLUGIN_PATH/python/`` and runs it in the system Python it embeds (3.11). That Python does not
see a venv, so this bootstrap puts the element venv's site-packages on ``sys.path``
(``$VSSTAR_GST_VENV``, else ``.venv-gst`` of the checkout it sits in, made by
``filters/gstreamer/setup.sh``) and that checkout's ``vsstar`` first, then registers
:class:`vsstar.gst.element.StarNetElement`. ``GST_PLUGIN_PATH`` is the only thing a user sets.
Without vsstar it registers a stand-in that stops with an error saying how to install it.
"""
import glob
import os
import site
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, GObject, Gst  # noqa: E402

_SETUP_HINT = ("Run filters/gstreamer/setup.sh, or set VSSTAR_GST_VENV to a venv made with "
               "--system-site-packages that holds torch and vsstar.")


def _add_paths() -> None:
    """The venv's site-packages after the loader's own paths; the checkout's vsstar first, so the
    element and the vsstar it drives are the same version whatever the venv has installed."""
    here = Path(__file__).resolve()
    root = here.parents[3] if len(here.parents) > 3 else None
    if root is not None and not (root / "vsstar" / "__init__.py").is_file():
        root = None
    venvs = [Path(os.environ["VSSTAR_GST_VENV"])] if os.environ.get("VSSTAR_GST_VENV") else []
    if root is not None:
        venvs.append(root / ".venv-gst")
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for venv in venvs:
        for sp in sorted(glob.glob(str(venv / "lib" / pyver / "site-packages"))):
            if sp not in sys.path:
                site.addsitedir(sp)
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))


_add_paths()

try:
    from vsstar.gst.element import StarNetElement
except ImportError as _missing:
    _REASON = str(_missing)

    class StarNetElement(Gst.Element):  # type: ignore[no-redef]
        """Stand-in registered when vsstar cannot be imported: starting it posts how to install it."""

        __gtype_name__ = "GstStarnet"
        __gstmetadata__ = ("STARnet space-time video super-resolution (vsstar not installed)",
                           "Filter/Effect/Video", "Needs vsstar: see filters/gstreamer/setup.sh", "vsstar")
        __gsttemplates__ = (
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()),
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()),
        )

        def __init__(self) -> None:
            super().__init__()
            for tmpl in self.__gsttemplates__:
                self.add_pad(Gst.Pad.new_from_template(tmpl, tmpl.name_template))

        def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
            if transition == Gst.StateChange.NULL_TO_READY:
                text = (f"starnet: cannot import vsstar/torch in the plugin loader's Python "
                        f"({sys.executable or 'embedded'} {sys.version.split()[0]}): {_REASON}. {_SETUP_HINT}")
                err = GLib.Error.new_literal(Gst.CoreError.quark(), text, int(Gst.CoreError.MISSING_PLUGIN))
                self.post_message(Gst.Message.new_error(self, err, f"sys.path={sys.path}"))
                return Gst.StateChangeReturn.FAILURE
            return Gst.Element.do_change_state(self, transition)

    GObject.type_register(StarNetElement)

__gstelementfactory__ = ("starnet", Gst.Rank.NONE, StarNetElement)
