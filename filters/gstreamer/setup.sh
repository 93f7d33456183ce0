#!/usr/bin/env bash
# Sets up the `starnet` GStreamer element (vsstar/gst/, loaded by filters/gstreamer/python/starnet.py):
#   1. GStreamer, the gst-python plugin loader and the plugins the tests use, from apt;
#   2. .venv-gst: a venv of the *system* Python 3.11 (the one the plugin loader embeds) made with
#      --system-site-packages (so gi/Gst stay visible) holding torch, numpy, safetensors, OpenVINO
#      (with onnx and onnxscript) and vsstar.
# Safe to run again: it only adds what is missing.
#
# torch: by default `torch==2.13.0`, which pip takes from the CPU wheel on disk where the pip
# config lists one (find-links; the case on this project's machines); elsewhere that pin is the
# PyPI build (CUDA, several GB). Override with VSSTAR_GST_TORCH (a pip requirement) and
# VSSTAR_GST_PIP_ARGS (e.g. "--index-url https://download.pytorch.org/whl/cpu" for a CPU build).
set -euo pipefail
cd "$(dirname "$0")/../.."

APT_PACKAGES=(
  gstreamer1.0-tools                 # gst-launch-1.0, gst-inspect-1.0
  gstreamer1.0-plugins-base          # videotestsrc, videoconvert, appsink, ...
  gstreamer1.0-plugins-good          # mp4mux/qtdemux, matroskamux
  gstreamer1.0-plugins-ugly          # x264enc
  gstreamer1.0-libav                 # avdec_h264 (decodebin on H.264 files)
  python3-gst-1.0                    # Gst overrides for PyGObject (pulls python3-gi + typelibs)
  gstreamer1.0-python3-plugin-loader # libgstpython.so: loads python/*.py elements
  python3-venv                       # venv for the system Python
  ffmpeg                             # ffprobe in the tests
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "filters/gstreamer/setup.sh: installing ${missing[*]} from apt"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The loader links libpython of the system Python: use exactly that one.
SYSPY=/usr/bin/python3
loader_py=$(grep -ao 'libpython3\.[0-9]*' /usr/lib/*/gstreamer-1.0/libgstpython.so 2>/dev/null | head -n 1 | sed 's/libpython//')
if [ -n "$loader_py" ] && [ -x "/usr/bin/python$loader_py" ]; then SYSPY="/usr/bin/python$loader_py"; fi

VENV="$PWD/.venv-gst"
if [ ! -x "$VENV/bin/python" ]; then
  echo "filters/gstreamer/setup.sh: creating $VENV with $SYSPY --system-site-packages"
  "$SYSPY" -m venv --system-site-packages "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# Import checks run from / so that the checkout itself is not on sys.path.
venv_has() { (cd / && "$VENV/bin/python" -c "import $1") >/dev/null 2>&1; }
if ! venv_has torch; then
  # shellcheck disable=SC2086
  "${pip[@]}" ${VSSTAR_GST_PIP_ARGS:-} "${VSSTAR_GST_TORCH:-torch==2.13.0}"
fi
venv_has "numpy, safetensors" || "${pip[@]}" "numpy>=1.24" "safetensors>=0.4"
# The CPU backend (backend=auto picks OpenVINO on the CPU) and the ONNX export it goes through, with
# the pins of setup.py's install_requires, so the element has the backends the other hosts have.
# precision=int8 also needs nncf (not installed here, as in a plain `pip install vsstar`).
case "$(uname -m)" in
  x86_64|amd64|aarch64|arm64)
    venv_has "openvino, onnx, onnxscript" || "${pip[@]}" "openvino>=2026.4" "onnx>=1.23" "onnxscript>=0.7" ;;
esac
# vsstar itself from this checkout, without its VapourSynth/OpenCV extras (the element needs none).
venv_has vsstar.engine || "${pip[@]}" --no-deps -e .

GST_PLUGIN_PATH="$PWD/filters/gstreamer" gst-inspect-1.0 starnet >/dev/null 2>&1 \
  || { echo "filters/gstreamer/setup.sh: gst-inspect-1.0 does not find the starnet element" >&2; exit 1; }
echo "filters/gstreamer/setup.sh: ready (GST_PLUGIN_PATH=$PWD/filters/gstreamer)"
