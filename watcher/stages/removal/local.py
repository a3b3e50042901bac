"""Offline background removal: U²-Net-p run with onnxruntime on the CPU."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from loguru import logger
from PIL import Image

from watcher import models
from watcher.errors import ModelError
from watcher.metrics import Metrics

_SIDE = 320  # the network's fixed input size
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_INV_STD = 1.0 / _STD
_MEAN_OVER_STD = _MEAN / _STD


class LocalRemover:
    """The ``Remover`` that needs no network: ~0.1 s of one core per image.

    The model is loaded on first use (or by ``load()``, which start-up may call to fail fast);
    ``loaded`` tells the health check whether that has happened. One ONNX session is shared by
    every thread, and it runs one image at a time on ``threads`` intra-op threads: a run holds
    ~300 MB of activations at 320×320, so two concurrent runs would double the daemon's peak
    memory, while one run on two cores takes about the same CPU.
    """

    name = "local"
    cpu_bound = True

    def __init__(self, model_path: Path, threads: int = 1, metrics: Metrics | None = None) -> None:
        """``metrics``: count each call in ``thumbgen_removal_requests_total{backend="local"}``;
        left None where a wrapping remover (the remote one's fallback) counts the calls itself."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.model_path = Path(model_path)
        self.threads = threads
        self.metrics = metrics
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._session: ort.InferenceSession | None = None
        self._input_name = ""
        self._output_name = ""
        self._closed = False

    @property
    def loaded(self) -> bool:
        """True once the model is in memory and ready to run."""
        return self._session is not None

    def load(self) -> None:
        """Load the model now if it is not loaded yet. Raises ``ModelError``."""
        self._get_session()

    def setup_problem(self) -> str | None:
        """A cheap start-up check, without loading the model (it is loaded on first use, to keep
        an idle daemon small): what is wrong in words, or None if the file is there to load."""
        if self.loaded:
            return None
        if not self.model_path.is_file():
            return (f"the background-removal model {self.model_path} is missing; run `thumbgen "
                    "models fetch` to download it")
        if models.verify(self.model_path):
            return None  # the checksum of the known model: it loads, no need to load it now
        try:  # another or a damaged file: only loading it tells
            self.load()
        except ModelError as exc:
            return str(exc)
        return None

    def mask(self, image: Image.Image) -> Image.Image:
        """An ``L`` mask of ``image.size``: 255 on the product, 0 on the background."""
        try:
            session = self._get_session()
            batch = _preprocess(image)
            with self._run_lock:
                (pred,) = session.run([self._output_name], {self._input_name: batch})
        except Exception:
            self._count("error")
            raise
        self._count("ok")
        small = Image.fromarray(_to_uint8(pred[0, 0]))
        return small.resize(image.size, Image.Resampling.BILINEAR)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.removal_requests.labels(self.name, outcome).inc()

    def close(self) -> None:
        """Drop the session; a later ``mask()`` is a bug and raises ``RuntimeError``."""
        with self._lock:
            self._closed = True
            self._session = None

    def _get_session(self) -> ort.InferenceSession:
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalRemover.mask() called after close()")
            if self._session is None:
                self._session = self._open_session()
            return self._session

    def _open_session(self) -> ort.InferenceSession:
        path = self.model_path
        hint = "run `thumbgen models fetch` to download it"
        if not path.is_file():
            raise ModelError(f"the background-removal model {path} is missing; {hint}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
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
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own, undocumented exception types
            raise ModelError(
                f"the background-removal model {path} cannot be loaded ({e}); it may be "
                f"corrupt: {hint}"
            ) from e
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if not outputs or len(inputs) != 1 or list(inputs[0].shape) != [1, 3, _SIDE, _SIDE]:
            raise ModelError(
                f"{path} is not the U²-Net-p model (input {[i.shape for i in inputs]}); {hint}"
            )
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        return session


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


def _preprocess(image: Image.Image, side: int = _SIDE) -> np.ndarray:
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


def _to_uint8(pred: np.ndarray) -> np.ndarray:
    """Min-max normalise the network's output to 0..255."""
    lo, hi = float(pred.min()), float(pred.max())
    if hi - lo < 1e-12:  # a flat prediction carries no product: an empty mask
        return np.zeros(pred.shape, dtype=np.uint8)
    scaled = (pred - lo) * (255.0 / (hi - lo))
    # round, not truncate: in float32 the peak can land on 254.99998, which truncates to 254
    return np.rint(scaled).astype(np.uint8)
