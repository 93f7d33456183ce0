"""vsstar: STARnet space-time video super-resolution for VapourSynth and GStreamer."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "vsstar" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

# VapourSynth R74+ wheels exist only for Python >= 3.12; the torch-only parts of the
# library (model, flow, engine) also run on 3.11 for the GStreamer element.
VS = "python_version >= '3.12'"

setup(
    name="vsstar",
    version=VERSION,
    description="Space-time video super-resolution (STARnet) for VapourSynth and GStreamer",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # training/ is run from a checkout (python -m training.train); an installed vsstar needs none of it.
    packages=find_packages(include=["vsstar", "vsstar.*"]),
    package_data={"vsstar": ["weights/*.safetensors", "weights/*.json", "data/*.safetensors"]},
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "safetensors>=0.4",
        "numba>=0.60",  # compiled raster-order flow on CPU (vsstar.flow falls back to torch without it)
        "tqdm>=4.60",
        "pillow>=9.0",
        "opencv-python-headless>=4.8",
        # The CPU backend of the network (backend="auto" picks it on the CPU) and the ONNX export it goes through.
        "openvino>=2026.4; platform_machine in 'x86_64 AMD64 aarch64 arm64'",
        "onnx>=1.23",
        "onnxscript>=0.7",
        f"vapoursynth>=74; {VS}",
        f"vapoursynth-bestsource; {VS}",
    ],
    extras_require={
        "cuda": ["cupy-cuda13x"],
        "train": ["tensorboard", "scikit-image", "psutil"],
        # vsstar enhance --ray / vsstar.distributed (docs/scaling.md)
        "ray": ["ray>=2.9"],
        # precision="int8": OpenVINO's post-training quantization (docs/openvino.md)
        "int8": ["nncf>=3.4"],
        # vspreview (with PyQt6) runs tests/test_vs_vspreview.py, a real VapourSynth host under Qt's offscreen
        # platform; its 0.20 series needs vsjetpack 1.x.
        "dev": ["pytest>=8", "pytest-timeout", "ray>=2.9", "nncf>=3.4",
                f"vspreview~=0.20.1; {VS}", f"vsjetpack>=1.1,<2; {VS}"],
    },
    entry_points={"console_scripts": ["vsstar = vsstar.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Video",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
