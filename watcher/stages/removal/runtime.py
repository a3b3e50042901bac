"""``LOCAL_RUNTIME``: which engine runs the local model, and in which precision.

- ``onnxruntime``: onnxruntime, fp32. Always installed.
- ``openvino``: OpenVINO, in bf16 where the CPU computes it natively, else fp32. Needs the
  ``openvino`` extra (``config`` stops start-up, exit 2, when it is missing).
- ``auto`` (the default): onnxruntime fp32, unless the CPU has native bf16 (``amx_bf16`` or
  ``avx512_bf16`` among its flags) and OpenVINO is installed. Then, when the model loads, a
  built-in probe photo goes through both engines and OpenVINO bf16 is kept only if its mask
  agrees with onnxruntime's (IoU ≥ 0.97) and it is the faster; otherwise the log says why and
  onnxruntime fp32 runs. bf16 is about twice as fast where it is native (NOTES: 112 against
  231 ms on two EPYC cores) and emulated, slower, where it is not, hence the CPU check.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from PIL import Image

from watcher.errors import ModelError
from watcher.stages.removal.engines import (BF16, FP32, Engine, OnnxEngine, OpenVinoEngine,
                                            mask_image, preprocess)

SETTINGS = ("auto", "onnxruntime", "openvino")
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either one: the CPU computes bf16 natively
AGREEMENT = 0.97  # the least IoU of the two masks of the probe photo
# A real product photo (rembg's example car-1.jpg, MIT: probe/LICENSE), shipped in the package.
PROBE_PHOTO = Path(__file__).with_name("probe") / "car-1.jpg"


@dataclass(frozen=True)
class Choice:
    """What runs the local model (``runtime``, ``precision``) and why, in words."""

    runtime: str
    precision: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"runtime": self.runtime, "precision": self.precision, "why": self.why}

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision} ({self.why})"


@dataclass(frozen=True)
class Probe:
    """The probe photo through both engines: the IoU of their masks (cut at 128) and the time
    of one run of each (its second: the first allocates)."""

    iou: float
    reference_ms: float
    candidate_ms: float


def native_bf16(cpuinfo: Path = CPUINFO) -> str | None:
    """The first of ``BF16_FLAGS`` among the CPU's flags in ``cpuinfo``, or None."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


def openvino_installed() -> bool:
    """True when the ``openvino`` package can be imported (without importing it: it is big)."""
    return importlib.util.find_spec("openvino") is not None


def plan(setting: str, cpuinfo: Path = CPUINFO) -> Choice:
    """What ``setting`` means on this machine before anything loads. For ``auto`` with an
    OpenVINO candidate, the probe at load time may still keep onnxruntime fp32."""
    if setting not in SETTINGS:
        raise ValueError(f"LOCAL_RUNTIME must be one of {', '.join(SETTINGS)}, not {setting!r}")
    flag = native_bf16(cpuinfo)
    native = (f"the CPU has {flag}" if flag
              else f"no native bf16 ({' or '.join(BF16_FLAGS)}) in {cpuinfo}")
    if setting == "onnxruntime":
        return Choice("onnxruntime", FP32, "LOCAL_RUNTIME=onnxruntime")
    if setting == "openvino":
        return Choice("openvino", BF16 if flag else FP32, f"LOCAL_RUNTIME=openvino; {native}")
    if not flag:
        return Choice("onnxruntime", FP32, f"auto: {native}")
    if not openvino_installed():
        return Choice("onnxruntime", FP32, f"auto: {native} but OpenVINO is not installed "
                      "(the openvino extra)")
    return Choice("openvino", BF16, f"auto: {native} and OpenVINO is installed; kept if the "
                  f"probe photo's masks agree with onnxruntime fp32 (IoU ≥ {AGREEMENT}) and "
                  "it is faster")


def open_engine(setting: str, model: Path, threads: int, cpuinfo: Path = CPUINFO,
                candidate_model: Path | None = None,
                probe_photo: Path = PROBE_PHOTO) -> tuple[Engine, Choice]:
    """The engine ``setting`` asks for, loaded, and what it is. Raises ``ModelError``.

    ``candidate_model``: the file OpenVINO reads under ``auto`` (default: ``model``), so that a
    test can give it a model that really disagrees.
    """
    chosen = plan(setting, cpuinfo)
    if setting == "openvino":
        try:
            engine: Engine = OpenVinoEngine(model, threads, chosen.precision)
        except ImportError as exc:
            raise ModelError(f"LOCAL_RUNTIME is openvino but OpenVINO cannot be imported "
                             f"({exc}); install the openvino extra") from exc
        return engine, Choice("openvino", engine.precision, chosen.why)
    reference = OnnxEngine(model, threads)
    if chosen.runtime == "onnxruntime":
        logger.info("local model: onnxruntime fp32 ({})", chosen.why)
        return reference, chosen
    return _probe_and_pick(reference, candidate_model or model, threads, probe_photo)


def _probe_and_pick(reference: Engine, model: Path, threads: int,
                    probe_photo: Path) -> tuple[Engine, Choice]:
    fallback = "auto: kept onnxruntime fp32"
    try:
        candidate: Engine = OpenVinoEngine(model, threads, BF16)
    except (ImportError, ModelError) as exc:
        logger.warning("local model: OpenVINO could not load {} ({}); {}", model, exc, fallback)
        return reference, Choice("onnxruntime", FP32, f"{fallback}: OpenVINO could not load "
                                 f"the model ({exc})")
    with Image.open(probe_photo) as im:
        photo = im.convert("RGB")
    result = compare(reference, candidate, photo)
    name = f"openvino {candidate.precision}"
    numbers = (f"probe IoU {result.iou:.3f}, {result.candidate_ms:.0f} ms against "
               f"{result.reference_ms:.0f} ms")
    if result.iou < AGREEMENT:
        why = f"{fallback}: {name}'s mask disagrees ({numbers}; IoU < {AGREEMENT})"
        logger.warning("local model: {}", why)
        return reference, Choice("onnxruntime", FP32, why)
    if result.candidate_ms >= result.reference_ms:
        why = f"{fallback}: {name} is not faster ({numbers})"
        logger.info("local model: {}", why)
        return reference, Choice("onnxruntime", FP32, why)
    why = f"auto: {name} agrees and is faster ({numbers})"
    logger.info("local model: {}", why)
    return candidate, Choice("openvino", candidate.precision, why)


def compare(reference: Engine, candidate: Engine, photo: Image.Image) -> Probe:
    """``photo`` through both engines: their masks' agreement and their speed."""
    batch = preprocess(photo)
    masks = [product_pixels(engine.run(batch), photo.size) for engine in (reference, candidate)]
    times = []
    for engine in (reference, candidate):  # the second run of each: the first allocates
        start = time.perf_counter()
        engine.run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return Probe(iou(*masks), times[0], times[1])


def product_pixels(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The prediction as the daemon uses it (0..255, scaled to the photo), cut at 128."""
    return np.asarray(mask_image(pred, size)) >= 128


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree (1.0)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
