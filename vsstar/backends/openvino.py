"""OpenVINO CPU runner for the STARnet network, a drop-in for the torch ``Star`` wrapper.

The network is exported to ONNX for each LR input shape (batch, padded height, padded width) it meets, compiled
by OpenVINO's CPU plugin and kept in memory. The compiled model is also written to a disk cache (by default
``~/.cache/vsstar/openvino``, or ``$VSSTAR_CACHE_DIR/openvino``) under a key made of the weights' digest, the
shape, the precision, the thread count, the CPU and the OpenVINO / torch versions, so a later process skips the
export and the compilation. Entries are written to a temporary file and renamed (concurrent writers never
expose a partial file) and carry a checksum; an unreadable entry is deleted and rebuilt.

Pre- and post-processing (normalisation, flow encoding, reflection padding, cropping, clamping) stay in torch
and match ``Star`` exactly; only the network runs in OpenVINO.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..model.export import (EXPORT_VERSION, INPUT_NAMES, ONNX_OPSET, OUTPUT_NAMES, export_onnx, model_digest,
                            new_partial)
from ..model.star import StarNet, feature_names
from ..model.wrapper import Star, StarOutput, network_inputs, network_outputs, padded_size
from . import DEFAULT_PRECISION, PRECISIONS

__all__ = ["OpenVINOStar", "default_cache_dir", "bf16_supported", "int8_available", "calibration_feeds",
           "keep_float32", "auto_precision_note", "prune_cache", "CACHE_MAGIC", "CACHE_LIMIT_BYTES", "CALIBRATION_FILE",
           "BF16_MIN_AGREEMENT_DB"]

#: First bytes of a cache entry (then the sha256 of the payload, then OpenVINO's exported model).
CACHE_MAGIC = b"vsstar-openvino-1\n"
_MEMORY_SLOTS = 4  # compiled shapes kept in memory per runner (tiles and a short last batch need two or three)
#: The disk cache is trimmed (least recently used first) to this many bytes after each write: an entry holds
#: the weights, about 4 MiB for the bundled models but 650 MiB for the paper's STAR x4 + FR, per shape.
CACHE_LIMIT_BYTES = 4 << 30
#: The frames precision="int8" calibrates on: 12 pairs of 80x144 LR frames from the training footage
#: (tools/make_calibration.py), uint8 tensors "first" and "second" of shape (12, 3, 80, 144) in safetensors.
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "data" / "calibration_pairs.safetensors"
#: Bumped when the quantization recipe changes, so no cache entry of an older recipe is reused.
INT8_RECIPE = 4
#: First bytes of a quantized-model entry (then the sha256 of the rest, the IR's XML length, XML, weights).
INT8_MAGIC = b"vsstar-openvino-int8-1\n"
#: Bumped when the set of operations precision="bf16" keeps in float32 changes (part of the cache keys).
BF16_RECIPE = 2
#: First bytes of a precision="auto" decision entry (then the sha256 of the rest, a JSON object).
DECISION_MAGIC = b"vsstar-openvino-precision-1\n"
#: precision="auto" takes bf16 only when its outputs agree with float32's on the calibration pairs to at least
#: this PSNR (the worst of the three pictures ht, h1, h2, pooled over the pairs). Why 50 dB: a deviation of
#: mean square 1e-5 that is uncorrelated with the model's own error adds 1e-5 to it, which at a quality of
#: 30 dB (mean square error 1e-3) is 0.043 dB, inside the 0.05 dB budget bf16 may cost; better pictures have
#: less room, but bf16 measured 62.9 dB (bundled x2) and 63.1 dB (x4) on an AMD EPYC with AVX512_BF16.
BF16_MIN_AGREEMENT_DB = 50.0
#: Name of the run-time attribute (in an IR's XML) that keeps an operation's precision in OpenVINO's CPU plugin
#: under a bf16 or f16 inference hint (see keep_float32).
_KEEP_PRECISION_ATTR = "DisablePrecisionConversion"


def prune_cache(folder: Path, limit: int = CACHE_LIMIT_BYTES, keep: Path | None = None) -> int:
    """Delete the least recently used entries of `folder` until it holds at most `limit` bytes.

    `keep` (the entry just written) is never deleted. Returns the number of files removed; races with other
    processes (a file already gone) are ignored.
    """
    entries = []
    for p in folder.glob("*.blob"):
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((max(st.st_atime, st.st_mtime), st.st_size, p))
    total = sum(e[1] for e in entries)
    removed = 0
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
        total -= size
    return removed


def default_cache_dir() -> Path:
    """Folder of the compiled-model cache: $VSSTAR_CACHE_DIR/openvino, else the user cache folder."""
    root = os.environ.get("VSSTAR_CACHE_DIR")
    if root:
        return Path(root) / "openvino"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vsstar" / "openvino"


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def _read_checked(path: Path, magic: bytes) -> bytes | None:
    """The payload of a cache entry written by OpenVINOStar._write_cache, None when it is unreadable, of
    another kind or fails its checksum."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    payload = data[len(magic) + 32:]
    if data.startswith(magic) and data[len(magic):len(magic) + 32] == hashlib.sha256(payload).digest():
        return payload
    return None


def _touch(path: Path) -> None:
    """Mark a cache entry as recently used (pruned last); a read-only cache keeps its times, which is fine."""
    try:
        os.utime(path)
    except OSError:
        pass


def _pack_ir(model: Any) -> bytes:
    """An ov.Model as one byte string: the XML's length (8 bytes), the XML, the weights (float32 kept)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="vsstar-ir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        text, weights = xml.read_bytes(), xml.with_suffix(".bin").read_bytes()
    return len(text).to_bytes(8, "little") + text + weights


def _float_convolutions(model: Any, hops: int = 3) -> list[Any]:
    """The convolutions of `model` within `hops` operations of a graph input or output: the first layers,
    which see the raw frames and flows, and the reconstructions, which write the pictures. int8 there
    would round away the fine detail that the rest of the network adds, so they stay float32."""
    convs = {"Convolution", "ConvolutionBackpropData", "GroupConvolution"}
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in convs:
            continue
        up, down = [op], [op]
        for _ in range(hops):
            up = [i.get_source_output().get_node() for o in up for i in o.inputs()]
            down = [t.get_node() for o in down for x in o.outputs() for t in x.get_target_inputs()]
            if any(o.get_type_name() == "Parameter" for o in up) or any(o.get_type_name() == "Result" for o in down):
                out.append(op)
                break
    return out


def _warp_path(model: Any) -> set[str]:
    """Names of every operation feeding a GridSample (the flow-compensated blend of the global skip): 8-bit
    sampling coordinates move the blend by up to 1/128 of the frame width (what that costs the in-between
    frames, with and without this path in float32: docs/openvino.md)."""
    names: set[str] = set()
    stack = [op for op in model.get_ordered_ops() if op.get_type_name() == "GridSample"]
    while stack:
        op = stack.pop()
        name = op.get_friendly_name()
        if name in names or op.get_type_name() in ("Parameter", "Constant"):
            continue
        names.add(name)
        stack += [i.get_source_output().get_node() for i in op.inputs()]
    return names


def keep_float32(model: Any, core: Any = None) -> Any:
    """`model` (an ov.Model) with the operations that must stay float32 under precision="bf16" marked so that
    OpenVINO's CPU plugin keeps them in float32; a new ov.Model.

    Marked: every operation feeding a GridSample (_warp_path: the flow-warp sampling coordinates of the
    global skip). Measured by rounding the outputs of the float32 graph's operations to bfloat16
    (benchmarks/bench_openvino.py precision --emulate; the figures are in docs/openvino.md): rounding every
    operation costs the in-between frames far more than rounding every operation but these; bfloat16 resolves a sampling coordinate only to 1/512 of the picture's width near its edges.
    The CPU plugin leaves that path in float32 on some CPUs (its graph-tail rule) but need not, so it is
    marked rather than left to the plugin.

    The mark is OpenVINO's DisablePrecisionConversion run-time attribute (what ov::disable_conversion sets;
    the CPU plugin keeps a node's precision when conversion to f16 is disabled, which it also applies to
    bf16). Python cannot create that attribute, but OpenVINO's IR reader does: the model goes through its
    IR (XML) with the attribute added to the marked layers.
    """
    import xml.etree.ElementTree as ET

    import openvino as ov

    core = core or _core()
    names = _warp_path(model)
    with tempfile.TemporaryDirectory(prefix="vsstar-ir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        tree = ET.parse(xml)
        for layer in tree.getroot().iter("layer"):
            if layer.get("name") not in names:
                continue
            rt = layer.find("rt_info")
            if rt is None:
                rt = ET.Element("rt_info")
                layer.insert(0, rt)
            ET.SubElement(rt, "attribute", name=_KEEP_PRECISION_ATTR, version="0", value="dynamic:f16")
        tree.write(xml, encoding="utf-8", xml_declaration=True)
        return core.read_model(str(xml))


def _calibration_pairs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The bundled calibration pairs (CALIBRATION_FILE) as RGB [0, 1] frames with their pixel flows (vsstar's
    solver): (first, second, flow_f, flow_b), each (12, C, 80, 144)."""
    from safetensors.torch import load_file

    from ..flow import coarse2fine_flow_batch

    if not CALIBRATION_FILE.is_file():
        raise FileNotFoundError(f"{CALIBRATION_FILE}: the calibration frames are missing from this install "
                                "(tools/make_calibration.py builds them)")
    frames = load_file(CALIBRATION_FILE)
    a, b = frames["first"].float() / 255.0, frames["second"].float() / 255.0
    n = len(a)
    flows = coarse2fine_flow_batch(torch.cat((a, b)), torch.cat((b, a)))
    return a, b, flows[:n], flows[n:]


def calibration_feeds(net: StarNet) -> list[dict[str, Any]]:
    """The int8 calibration inputs of `net`: the bundled calibration pairs (CALIBRATION_FILE) with their
    flows (vsstar's solver), in the network's encodings, one feed dict per pair; a model with time input
    sees t = 1/2, 1/4 and 3/4 in turn."""
    import numpy as np

    a, b, flow_f, flow_b = _calibration_pairs()
    n = len(a)
    x1, x2, ff, fb = network_inputs(net.config, a, b, flow_f, flow_b)
    feeds = []
    for i in range(n):
        feed = {name: t[i:i + 1].contiguous().numpy() for name, t in zip(INPUT_NAMES, (x1, x2, ff, fb))}
        if net.config.time_input:
            feed["t"] = np.array([(0.5, 0.25, 0.75)[i % 3]], dtype=np.float32)
        feeds.append(feed)
    return feeds


def int8_available() -> bool:
    """True when NNCF (OpenVINO's quantization tool, needed by precision="int8") can be imported."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_supported(core: Any = None) -> bool:
    """True when OpenVINO's CPU plugin can run bfloat16 on this CPU (AVX512_BF16 or AMX)."""
    core = core or _core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def auto_precision_note(core: Any = None) -> str:
    """One line for `vsstar info`: the OpenVINO version and what precision="auto" runs on this CPU, and why."""
    import openvino as ov

    core = core or _core()
    version = ov.get_version().split("-")[0]
    if not bf16_supported(core):
        return f"{version}; precision auto runs f32 (this CPU has no native bfloat16: AVX512_BF16 or AMX)"
    return (f"{version}; precision auto runs bf16 (the CPU has native bfloat16) for each model whose bf16 outputs "
            f"match f32 to {BF16_MIN_AGREEMENT_DB:g} dB on the calibration pairs (checked once per model and CPU, "
            "cached), f32 otherwise")


class OpenVINOStar:
    """Runs a ``Star``'s network with OpenVINO on the CPU; called like ``Star`` and returns ``StarOutput``.

    Args:
        star: the torch wrapper (its weights are exported; it is not modified).
        precision: "auto" (default: "bf16" when the CPU has native bfloat16 and a once-per-model-and-CPU check
            on the calibration pairs finds bf16 within BF16_MIN_AGREEMENT_DB of f32, cached; "f32" otherwise;
            `precision` and `precision_reason` then say which and why), "f32" (within 1e-4 of max|output| of
            torch), "bf16" (bfloat16 with the flow-warp path kept float32, see keep_float32; needs a CPU with
            bfloat16 support) or "int8" (post-training quantization with NNCF on the bundled calibration
            frames; the first and the reconstruction convolutions stay float32; needs the nncf package).
        num_threads: OpenVINO inference threads (default: torch.get_num_threads()).
        cache_dir: disk cache folder, None for default_cache_dir(), False for no disk cache.
        verbose: say on stderr when a shape is exported and compiled (it takes seconds to minutes).
    """

    def __init__(self, star: Star | StarNet, *, precision: str = DEFAULT_PRECISION, num_threads: int | None = None,
                 cache_dir: str | os.PathLike | None | bool = None, verbose: bool = True) -> None:
        if isinstance(star, StarNet):
            star = Star(star, channels_last=False)
        if not isinstance(star, Star):
            raise ValueError(f"star must be a Star or StarNet, got {type(star).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if num_threads is None:
            num_threads = torch.get_num_threads()
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        self.star = star
        self.net = star.net
        self.config = star.net.config
        #: What runs ("f32", "bf16" or "int8"; precision="auto" decides below) and why, in words.
        self.precision = precision
        self.precision_reason = "asked for"
        self.num_threads = num_threads
        self.verbose = verbose
        self.core = _core()
        if precision == "bf16" and not bf16_supported(self.core):
            caps = ", ".join(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            raise ValueError(f"precision='bf16' needs a CPU with bfloat16 support (AVX512_BF16 or AMX); "
                             f"this one offers {caps}; use precision='f32'")
        if precision == "int8" and not int8_available():
            raise ValueError("precision='int8' needs the nncf package (OpenVINO's quantization tool): "
                             "pip install nncf, or pip install vsstar[int8]; or use precision='f32'")
        self._int8_model: Any = None  # the quantized ov.Model (any shape), built or loaded once
        self._int8_id: dict[str, Any] | None = None
        if cache_dir is None or cache_dir is True:
            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir is not False else None
        self._digest: str | None = None
        self._compiled: OrderedDict[tuple[int, int, int], tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        #: Counters: shapes exported + compiled, loaded from the disk cache, and broken entries replaced.
        self.stats = {"exports": 0, "disk_hits": 0, "corrupt": 0, "runs": 0}
        if precision == "auto":
            self.precision, self.precision_reason = self._choose_precision()
            if verbose:  # every host's log says which precision runs and why
                print(f"vsstar: OpenVINO precision {self.precision} (auto: {self.precision_reason})", file=sys.stderr)

    # ------------------------------------------------------------------ compiled models
    @property
    def digest(self) -> str:
        """sha256 of the network's configuration and weights (computed once)."""
        if self._digest is None:
            self._digest = model_digest(self.net)
        return self._digest

    def _properties(self) -> dict[str, Any]:
        # int8: the quantized convolutions run in int8 whatever the hint; the rest stays float32.
        hint = "f32" if self.precision == "int8" else self.precision
        return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.num_threads,
                "PERFORMANCE_HINT": "LATENCY"}

    def cache_key(self, shape: tuple[int, int, int], part: str = "full") -> str:
        """Name of the disk-cache entry of one LR input shape (batch, padded height, padded width) and graph
        part (see vsstar.model.export.PARTS)."""
        import openvino as ov

        cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
        caps = sorted(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        ident = {"model": self.digest, "shape": list(shape), "precision": self.precision,
                 "threads": self.num_threads, "openvino": ov.get_version(), "torch": torch.__version__,
                 "export": EXPORT_VERSION, "opset": ONNX_OPSET, "cpu": cpu, "caps": caps, "part": part}
        if self.precision == "int8":
            ident["int8"] = self._int8_ident()
        if self.precision == "bf16":
            ident["bf16"] = BF16_RECIPE
        h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:40]
        n, ph, pw = shape
        tag = "" if part == "full" else f"-{part}"
        return f"{self.digest[:16]}-{n}x{ph}x{pw}{tag}-{self.precision}-{h}.blob"

    def compiled(self, n: int, height: int, width: int, part: str = "full") -> Any:
        """The OpenVINO compiled model (and its infer request) for an LR input shape (padded sizes) and graph
        part, built or loaded once."""
        key = (n, height, width, part)
        with self._lock:
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit
            entry = self._load_or_build((n, height, width), part)
            self._compiled[key] = entry
            while len(self._compiled) > _MEMORY_SLOTS:
                self._compiled.popitem(last=False)
            return entry

    def _load_or_build(self, shape: tuple[int, int, int], part: str = "full") -> tuple[Any, Any]:
        path = self.cache_dir / self.cache_key(shape, part) if self.cache_dir is not None else None
        if path is not None and path.is_file():
            compiled = self._read_entry(path, shape)
            if compiled is not None:
                self.stats["disk_hits"] += 1
                return compiled, compiled.create_infer_request()
        if self.verbose:
            n, h, w = shape
            where = f"; cached in {self.cache_dir}" if self.cache_dir is not None else ""
            what = "the network" if part == "full" else f"the network's {part} part"
            print(f"vsstar: compiling {what} for OpenVINO ({n}x{h}x{w} LR input, {self.precision}); "
                  f"once per model and size{where}", file=sys.stderr)
        compiled = self._build(shape, part)
        self.stats["exports"] += 1
        if path is not None:
            self._write_entry(path, compiled)
        return compiled, compiled.create_infer_request()

    def _build(self, shape: tuple[int, int, int], part: str = "full") -> Any:
        if self.precision == "int8":
            if part != "full":
                raise ValueError(f"part={part!r}: precision='int8' runs the whole graph per time")
            model = self.quantized_model().clone()
            n, h, w = shape
            model.reshape({p.get_any_name(): [n] if p.get_any_name() == "t" else [n, p.get_partial_shape()[1], h, w]
                           for p in model.inputs})
            return self.core.compile_model(model, "CPU", self._properties())
        with tempfile.TemporaryDirectory(prefix="vsstar-onnx-") as tmp:
            onnx_path = Path(tmp) / "star.onnx"
            export_onnx(self.net, onnx_path, shape=shape, check=False, part=part)
            model = self.core.read_model(str(onnx_path))
        if self.precision == "bf16":
            model = keep_float32(model, self.core)
        return self.core.compile_model(model, "CPU", self._properties())

    def _read_entry(self, path: Path, shape: tuple[int, int, int]) -> Any | None:
        """The compiled model stored at `path` for LR input `shape`, or None (and the file removed) when it is
        unusable: unreadable, failing its checksum or OpenVINO's import, or compiled for another shape."""
        payload = _read_checked(path, CACHE_MAGIC)
        compiled = None
        if payload is not None:
            try:
                compiled = self.core.import_model(payload, "CPU", self._properties())
                got = [int(d) for d in compiled.input("im1").get_partial_shape().to_shape()]
            except Exception:  # OpenVINO raises RuntimeError subclasses on blobs it cannot read
                compiled = None
            else:
                n, h, w = shape
                if got != [n, 3, h, w]:  # a valid entry of another shape would fail every inference
                    compiled = None
        if compiled is None:
            self._drop_damaged(path)
            return None
        _touch(path)
        return compiled

    def _drop_damaged(self, path: Path) -> None:
        """Count, report (verbose) and delete an unusable cache entry, so that it is rebuilt."""
        self.stats["corrupt"] += 1
        if self.verbose:
            print(f"vsstar: ignoring a damaged OpenVINO cache entry {path.name} (rebuilding it)", file=sys.stderr)
        try:
            path.unlink()
        except OSError:
            pass

    def _write_entry(self, path: Path, compiled: Any) -> None:
        """Store `compiled` at `path` atomically; a cache that cannot be written is skipped, not fatal."""
        stream = io.BytesIO()
        compiled.export_model(stream)
        self._write_cache(path, CACHE_MAGIC, stream.getvalue())

    def _write_cache(self, path: Path, magic: bytes, payload: bytes) -> None:
        """Write magic + sha256(payload) + payload to `path` through a temporary file and a rename, then trim
        the folder; an unwritable cache is reported (verbose) and skipped."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = new_partial(path)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(magic + hashlib.sha256(payload).digest())
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                prune_cache(path.parent, keep=path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            if self.verbose:
                print(f"vsstar: cannot write the OpenVINO cache in {path.parent} ({exc}); continuing without it",
                      file=sys.stderr)

    # ------------------------------------------------------------------ int8
    def _int8_ident(self) -> dict[str, Any]:
        """What the quantized model depends on besides the weights (part of both cache keys; computed once)."""
        if self._int8_id is None:
            import nncf

            data = CALIBRATION_FILE.read_bytes() if CALIBRATION_FILE.is_file() else b""
            self._int8_id = {"nncf": nncf.__version__, "recipe": INT8_RECIPE,
                             "calibration": hashlib.sha256(data).hexdigest()}
        return self._int8_id

    def _int8_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        import openvino as ov

        ident = {"model": self.digest, "openvino": ov.get_version(), "torch": torch.__version__,
                 "export": EXPORT_VERSION, "opset": ONNX_OPSET, **self._int8_ident()}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:40]
        return self.cache_dir / f"{self.digest[:16]}-int8-model-{h}.blob"

    def quantized_model(self) -> Any:
        """The network quantized to int8 (an ov.Model with dynamic batch and size), from the disk cache or
        built once: a dynamic-shape ONNX export, calibrated by NNCF on the bundled calibration pairs."""
        if self._int8_model is None:
            path = self._int8_path()
            model = self._read_int8(path) if path is not None and path.is_file() else None
            if model is None:
                if self.verbose:
                    print("vsstar: quantizing the network to int8 (NNCF, 12 calibration pairs; about a minute, "
                          "once per model" + (f"; cached in {self.cache_dir})" if path is not None else ")"),
                          file=sys.stderr)
                model = self._quantize()
                if path is not None:
                    self._write_cache(path, INT8_MAGIC, _pack_ir(model))
            self._int8_model = model
        return self._int8_model

    def _read_int8(self, path: Path) -> Any | None:
        data = _read_checked(path, INT8_MAGIC)
        if data is not None:
            try:
                xml_len = int.from_bytes(data[:8], "little")
                import openvino as ov
                import numpy as np

                weights = ov.Tensor(np.frombuffer(data[8 + xml_len:], dtype=np.uint8).copy())
                model = self.core.read_model(data[8:8 + xml_len].decode("utf-8"), weights)
            except Exception:  # a damaged IR: OpenVINO raises RuntimeError subclasses
                pass
            else:
                _touch(path)
                return model
        self._drop_damaged(path)
        return None

    def _quantize(self) -> Any:
        import contextlib
        import logging

        # NNCF probes torch's C++ extension support on import (a warning without CUDA) and logs each step.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import nncf

        logging.getLogger("nncf").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory(prefix="vsstar-onnx-") as tmp:
            onnx_path = Path(tmp) / "star.onnx"
            export_onnx(self.net, onnx_path, check=False)
            model = self.core.read_model(str(onnx_path))
        # Grouped convolutions are the bicubic baselines of the global skip (phase convolutions, see
        # vsstar.model.baseline.upscale; the network has none): quantized, they would shift every output.
        grouped = {op.get_friendly_name() for op in model.get_ordered_ops()
                   if op.get_type_name() == "GroupConvolution"}
        keep = sorted({op.get_friendly_name() for op in _float_convolutions(model)} | _warp_path(model) | grouped)
        feeds = calibration_feeds(self.net)
        self.stats["quantized"] = self.stats.get("quantized", 0) + 1
        # NNCF draws its progress bars on sys.stdout, which vspipe and the GStreamer element may be streaming
        # video through: they go to stderr (or nowhere when quiet).
        with contextlib.ExitStack() as stack:
            sink = sys.stderr if self.verbose else stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(sink))
            return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                 preset=nncf.QuantizationPreset.MIXED, target_device=nncf.TargetDevice.CPU,
                                 fast_bias_correction=True,
                                 ignored_scope=nncf.IgnoredScope(names=keep, validate=False))

    # ------------------------------------------------------------------ precision="auto"
    def _choose_precision(self) -> tuple[str, str]:
        """("bf16" or "f32", why in words) for precision="auto": bf16 needs a CPU with native bfloat16 and
        bf16 outputs within BF16_MIN_AGREEMENT_DB of f32 on the calibration pairs (measured once per model and
        CPU, kept in the disk cache)."""
        if not bf16_supported(self.core):
            return "f32", "this CPU has no native bfloat16 (AVX512_BF16 or AMX)"
        path = self._decision_path()
        agreement = self._read_decision(path) if path is not None and path.is_file() else None
        if agreement is None:
            if self.verbose:
                print("vsstar: checking bfloat16 against float32 on the 12 calibration pairs (once per model and CPU"
                      + (f"; cached in {self.cache_dir})" if path is not None else ")"), file=sys.stderr)
            try:
                agreement = self.bf16_agreement()
            except (OSError, RuntimeError, ValueError) as exc:  # missing calibration file, OpenVINO failures
                return "f32", f"the bf16 check could not run ({type(exc).__name__}: {exc})"
            self.stats["precision_checks"] = self.stats.get("precision_checks", 0) + 1
            if path is not None:
                self._write_cache(path, DECISION_MAGIC, json.dumps({"agreement_db": agreement}).encode())
        if agreement >= BF16_MIN_AGREEMENT_DB:
            return "bf16", (f"the CPU has native bfloat16 and bf16 matches f32 to {agreement:.1f} dB on the "
                            "calibration pairs")
        return "f32", (f"bf16 matches f32 to only {agreement:.1f} dB on the calibration pairs "
                       f"(below {BF16_MIN_AGREEMENT_DB:g} dB)")

    def _decision_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        import openvino as ov

        data = CALIBRATION_FILE.read_bytes() if CALIBRATION_FILE.is_file() else b""
        ident = {"model": self.digest, "openvino": ov.get_version(), "torch": torch.__version__,
                 "export": EXPORT_VERSION, "opset": ONNX_OPSET, "bf16": BF16_RECIPE,
                 "cpu": self.core.get_property("CPU", "FULL_DEVICE_NAME"),
                 "caps": sorted(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                 "calibration": hashlib.sha256(data).hexdigest()}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:40]
        return self.cache_dir / f"{self.digest[:16]}-precision-{h}.json"

    def _read_decision(self, path: Path) -> float | None:
        """The cached agreement (dB) of a precision="auto" check, None (and the entry dropped) when unusable."""
        payload = _read_checked(path, DECISION_MAGIC)
        try:
            agreement = float(json.loads(payload)["agreement_db"]) if payload is not None else None
        except (ValueError, KeyError, TypeError):
            agreement = None
        if agreement is None:
            self._drop_damaged(path)
            return None
        _touch(path)
        return agreement

    def bf16_agreement(self) -> float:
        """PSNR (dB, RGB in [0, 1]) of this network's bf16 outputs against its f32 outputs on the bundled
        calibration pairs: the worst of ht, h1 and h2, each pooled over the 12 pairs (t = 1/2 for a model
        with time input). Compiles the calibration shape twice; nothing is cached here."""
        import math

        a, b, ff, fb = _calibration_pairs()
        t = 0.5 if self.config.time_input else None
        outs = {p: OpenVINOStar(self.star, precision=p, num_threads=self.num_threads, cache_dir=False,
                                verbose=False)(a, b, ff, fb, t) for p in ("f32", "bf16")}
        worst = math.inf
        for name in ("ht", "h1", "h2"):
            mse = float(((getattr(outs["bf16"], name).double() - getattr(outs["f32"], name).double()) ** 2).mean())
            worst = min(worst, math.inf if mse == 0 else 10 * math.log10(1 / mse))
        return worst

    # ------------------------------------------------------------------ inference
    def padded_shape(self, n: int, height: int, width: int) -> tuple[int, int, int]:
        """LR input shape the network runs at for frames of this size (Star's padding)."""
        cfg = self.config
        return (n, padded_size(height, cfg.size_multiple, cfg.min_size),
                padded_size(width, cfg.size_multiple, cfg.min_size))

    def __call__(self, im1: Tensor, im2: Tensor, flow_f_px: Tensor, flow_b_px: Tensor,
                 t: Tensor | float | None = None) -> StarOutput:
        """Same contract as ``Star.forward``: RGB [0, 1] frames and pixel flows in, StarOutput (CPU float32) out."""
        return self.times(im1, im2, flow_f_px, flow_b_px, [t])[0]

    @torch.no_grad()
    def times(self, im1: Tensor, im2: Tensor, flow_f_px: Tensor, flow_b_px: Tensor,
              ts: Sequence[Tensor | float | None]) -> list[StarOutput]:
        """Same contract as ``Star.times``: one StarOutput per time. One time runs the whole graph; several
        (a model with time input) run the encode graph once and the synthesize graph per time."""
        ts = list(ts)
        if not ts:
            raise ValueError("ts: give at least one time")
        x1, x2, ff, fb = (x.float().cpu() for x in network_inputs(self.config, im1, im2, flow_f_px, flow_b_px))
        n, _, h, w = im1.shape
        shape = (n, *x1.shape[2:])
        tvals = [self.net.time_tensor(t, n, torch.empty(0)) for t in ts]  # checked; None without time input
        feeds = {name: t.contiguous().numpy() for name, t in zip(INPUT_NAMES, (x1, x2, ff, fb))}
        if len(ts) == 1 or tvals[0] is None:
            if tvals[0] is not None:
                feeds["t"] = tvals[0].float().numpy()
            res = self._infer(shape, "full", feeds, h, w)
            return [res] * len(ts)
        if self.precision == "int8":  # one quantized graph: the whole network per time
            return [self._infer(shape, "full", {**feeds, "t": tv.float().numpy()}, h, w) for tv in tvals]
        compiled, request = self.compiled(*shape, part="encode")
        with self._lock:
            request.infer(feeds)
            # Copies: the request's buffers are reused by the next call.
            feats = {k: request.get_tensor(compiled.output(k)).data.copy() for k in feature_names(self.config)}
        feeds.update(feats)
        out = []
        for tv in tvals:
            feeds["t"] = tv.float().numpy()
            out.append(self._infer(shape, "synthesize", feeds, h, w))
        return out

    def _infer(self, shape: tuple[int, int, int], part: str, feeds: dict[str, Any], h: int, w: int) -> StarOutput:
        compiled, request = self.compiled(*shape, part=part)
        with self._lock:  # one infer request per shape: calls from several threads take turns
            request.infer(feeds)
            outs = [torch.from_numpy(request.get_tensor(compiled.output(name)).data) for name in OUTPUT_NAMES]
            # New tensors: the results own their memory before the request is reused.
            res = network_outputs(outs, h, w, self.config.scale)
        self.stats["runs"] += 1
        return res
