"""The two ways to run U²-Net-p on the CPU, behind one ``Engine`` contract: onnxruntime in fp32
(always installed) and OpenVINO in f32 or bf16 (the ``openvino`` extra). ``runtime.py`` chooses
between them; ``local.py`` feeds them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from loguru import logger
from PIL import Image

from watcher.errors import ModelError

SIDE = 320  # the network's fixed input size
FP32, BF16 = "fp32", "bf16"
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_INV_STD = 1.0 / _STD
_MEAN_OVER_STD = _MEAN / _STD
_HINT = "run `thumbgen models fetch` to download it"


class Engine(Protocol):
    """One loaded model. ``run`` takes the 1×3×320×320 float32 batch and returns the first
    output's 320×320 prediction; one call at a time (the caller holds a lock)."""

    runtime: str  # "onnxruntime" | "openvino"
    precision: str  # FP32 | BF16: what the runtime reports it computes in

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def _missing(path: Path) -> ModelError | None:
    if path.is_file():
        return None
    return ModelError(f"the background-removal model {path} is missing; {_HINT}")


class OnnxEngine:
    """onnxruntime's CPU provider, fp32: the reference every other engine is judged against."""

    runtime = "onnxruntime"
    precision = FP32

    def __init__(self, path: Path, threads: int) -> None:
        if (error := _missing(path)) is not None:
            raise error
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The planned memory pattern reserves ~490 MB per run; without it a run peaks at ~295 MB
        # (same speed), and the arena keeps that block for the next run (no page faults).
        opts.enable_mem_pattern = False
        # idle intra-op threads must sleep, not spin on the cores decode and compose need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if _register_exact_arena():
            opts.add_session_config_entry("session.use_env_allocators", "1")
        try:
            session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own, undocumented exception types
            raise ModelError(f"the background-removal model {path} cannot be loaded ({e}); it "
                             f"may be corrupt: {_HINT}") from e
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if not outputs or len(inputs) != 1 or list(inputs[0].shape) != [1, 3, SIDE, SIDE]:
            raise ModelError(
                f"{path} is not the U²-Net-p model (input {[i.shape for i in inputs]}); {_HINT}")
        self._session = session
        self._input, self._output = inputs[0].name, outputs[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        (pred,) = self._session.run([self._output], {self._input: batch})
        return pred[0, 0]


class OpenVinoEngine:
    """OpenVINO's CPU plugin, reading the same ``.onnx`` file (or an OpenVINO IR ``.xml``).

    ``precision`` is asked (``bf16`` only makes sense where the CPU has it natively: elsewhere
    OpenVINO computes in f32 anyway); ``self.precision`` is what the compiled model reports.
    Raises ``ImportError`` without the ``openvino`` package, ``ModelError`` for a bad file.
    """

    runtime = "openvino"

    def __init__(self, path: Path, threads: int, precision: str = FP32) -> None:
        import openvino as ov  # the optional extra: imported only when asked for

        if (error := _missing(path)) is not None:
            raise error
        # One stream of ``threads`` threads, like onnxruntime's session; not pinned to cores (its
        # default), as onnxruntime's are not: the cores are shared with the other workers'
        # decoding and composing, and a pinned thread cannot leave a busy core.
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == BF16 else "f32"}
        try:
            core = ov.Core()
            network = core.read_model(str(path))
            shapes = [str(i.get_partial_shape()) for i in network.inputs]
            if shapes != [f"[1,3,{SIDE},{SIDE}]"]:
                raise ModelError(f"{path} is not the U²-Net-p model (inputs {shapes}); {_HINT}")
            compiled = core.compile_model(network, "CPU", config)
        except ModelError:
            raise
        except Exception as e:  # OpenVINO raises RuntimeError with its own text
            raise ModelError(f"the background-removal model {path} cannot be loaded by "
                             f"OpenVINO ({e}); it may be corrupt: {_HINT}") from e
        used = compiled.get_property("INFERENCE_PRECISION_HINT")
        name = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
        self.precision = BF16 if name == "bf16" else FP32
        self.version = ov.__version__.split("-")[0]
        self._request = compiled.create_infer_request()
        self._output = compiled.outputs[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        return np.array(self._request.get_tensor(self._output).data[0, 0], copy=True)


def preprocess(image: Image.Image, side: int = SIDE) -> np.ndarray:
    """RGB side×side (320: what the model is made for; LANCZOS), divided by its max, ImageNet
    mean/std, NCHW float32."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    # reducing_gap: a box reduce to within 2× of 320 first, then LANCZOS; same masks, a third
    # of the time of LANCZOS over the whole working image
    small = rgb.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    arr = np.asarray(small, dtype=np.float32)
    peak = float(arr.max()) or 1.0  # an all-black photo must not divide by zero
    # (x / peak - mean) / std, folded into one multiply and one subtract, in place.
    arr *= _INV_STD / peak
    arr -= _MEAN_OVER_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))[np.newaxis]


def to_uint8(pred: np.ndarray) -> np.ndarray:
    """Min-max normalise the network's output to 0..255."""
    lo, hi = float(pred.min()), float(pred.max())
    if hi - lo < 1e-12:  # a flat prediction carries no product: an empty mask
        return np.zeros(pred.shape, dtype=np.uint8)
    scaled = (pred - lo) * (255.0 / (hi - lo))
    # round, not truncate: in float32 the peak can land on 254.99998, which truncates to 254
    return np.rint(scaled).astype(np.uint8)


def mask_image(pred: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The prediction as the daemon's ``L`` mask: 0..255, stretched (bilinear) to ``size``."""
    return Image.fromarray(to_uint8(pred)).resize(size, Image.Resampling.BILINEAR)


_ARENA_LOCK = threading.Lock()
_ARENA_REGISTERED = False


def _register_exact_arena() -> bool:
    """Give onnxruntime's CPU arena, once per process, the strategy that grows it by what a run
    asks for (kSameAsRequested) instead of doubling its last region: with the default, the
    daemon's resident memory after the same 24 MP run varied by ~50 MB from one start to the
    next (peaks 449–511 MB); with this, 475–481 MB, at the same speed."""
    global _ARENA_REGISTERED
    with _ARENA_LOCK:
        if _ARENA_REGISTERED:
            return True
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            # max_mem 0: no limit; 1: kSameAsRequested; -1: defaults for the chunk settings
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        except Exception as exc:  # an onnxruntime without it: its own arena, more memory
            logger.warning("onnxruntime's arena stays as it is ({}): peak memory is higher", exc)
            return False
        _ARENA_REGISTERED = True
        return True
