"""Offline background removal: U²-Net-p on the CPU, run by the engine ``runtime.py`` chooses
(onnxruntime fp32, or OpenVINO in bf16 where the CPU has it natively)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from watcher import models
from watcher.errors import ModelError
from watcher.metrics import Metrics
from watcher.stages.removal import runtime
from watcher.stages.removal.engines import Engine, mask_image, preprocess


class LocalRemover:
    """The ``Remover`` that needs no network: ~0.1 s of one core per image.

    The model is loaded on first use (or by ``load()``, which start-up may call to fail fast);
    ``loaded`` tells the health check whether that has happened, ``choice`` which runtime and
    precision run it. One engine is shared by every thread, and it runs one image at a time on
    ``threads`` threads: a run holds ~300 MB of activations at 320×320, so two concurrent runs
    would double the daemon's peak memory, while one run on two cores takes about the same CPU.
    """

    name = "local"
    cpu_bound = True

    def __init__(self, model_path: Path, threads: int = 1, metrics: Metrics | None = None,
                 runtime_setting: str = "onnxruntime",
                 on_load: Callable[[runtime.Choice], None] | None = None) -> None:
        """``metrics``: count each call in ``thumbgen_removal_requests_total{backend="local"}``;
        left None where a wrapping remover (the remote one's fallback) counts the calls itself.
        ``runtime_setting``: ``LOCAL_RUNTIME``; ``on_load`` is told the choice once it is made
        (``Metrics.set_runtime`` for ``thumbgen_build_info``)."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.model_path = Path(model_path)
        self.threads = threads
        self.metrics = metrics
        self.runtime_setting = runtime_setting
        self.on_load = on_load
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._engine: Engine | None = None
        self._choice: runtime.Choice | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        """True once the model is in memory and ready to run."""
        return self._engine is not None

    @property
    def choice(self) -> runtime.Choice | None:
        """The runtime and precision that run the model, and why; None until it is loaded."""
        return self._choice

    def load(self) -> None:
        """Load the model now if it is not loaded yet. Raises ``ModelError``."""
        self.engine()

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
            engine = self.engine()
            batch = preprocess(image)
            with self._run_lock:
                pred = engine.run(batch)
        except Exception:
            self._count("error")
            raise
        self._count("ok")
        return mask_image(pred, image.size)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.removal_requests.labels(self.name, outcome).inc()

    def close(self) -> None:
        """Drop the engine; a later ``mask()`` is a bug and raises ``RuntimeError``."""
        with self._lock:
            self._closed = True
            self._engine = None

    def engine(self) -> Engine:
        """The loaded engine (loading it on first call). Raises ``ModelError``, and
        ``RuntimeError`` after ``close()``."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalRemover.mask() called after close()")
            if self._engine is None:
                self._engine, self._choice = runtime.open_engine(
                    self.runtime_setting, self.model_path, self.threads)
                if self.on_load is not None:
                    self.on_load(self._choice)
            return self._engine
