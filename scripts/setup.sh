#!/usr/bin/env bash
# Sets vsstar up from a fresh clone: a Python >= 3.12 venv in .venv with the package
# (editable) and, with --test, everything the test suite needs (ffmpeg, GStreamer and the
# libraries Qt loads, from apt; the dev extra; the GStreamer element's venv). Safe to run
# again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --test)" >&2; exit 2 ;;
  esac
done

find_python() {
  for cand in "${VSSTAR_PYTHON:-}" python3.13 python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python"; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  ls -d "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python 2>/dev/null | head -n 1
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup.sh: installing ${missing[*]} from apt"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v ffmpeg >/dev/null 2>&1 || apt_install ffmpeg
# The vspreview test runs PyQt6 (from the dev extra) under Qt's offscreen platform, which still loads these.
[ $want_test -eq 0 ] || apt_install libegl1 libgl1 libfontconfig1 libxkbcommon0 libdbus-1-3

if [ ! -x .venv/bin/python ]; then
  py=$(find_python)
  [ -n "$py" ] || { echo "setup.sh: no Python >= 3.12 found (VapourSynth R74+ needs it); set VSSTAR_PYTHON" >&2; exit 1; }
  echo "setup.sh: creating .venv with $py"
  "$py" -m venv .venv
fi
extras="train"
[ $want_test -eq 1 ] && extras="train,dev"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
# vspipe finds the venv's VapourSynth core through this config file.
.venv/bin/vapoursynth config >/dev/null

if [ $want_test -eq 1 ] && [ -x filters/gstreamer/setup.sh ]; then
  bash filters/gstreamer/setup.sh
fi
echo "setup.sh: ready (.venv/bin/vsstar, .venv/bin/vspipe)"
