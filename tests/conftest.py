"""Suite-wide settings."""
import os

# The tests compare against torch's numbers; backend="auto" would pick OpenVINO on the CPU when it is
# installed (and export/compile every tiny test model). Tests of the OpenVINO backend ask for it by name.
os.environ.setdefault("VSSTAR_BACKEND", "torch")
