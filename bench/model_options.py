"""Ways to make the local model faster that thumbgen does not ship, side by side: time on one
core, and how far each one's masks move from the reference (onnxruntime fp32 at 320², what the
daemon runs).

    make bench-options            # a separate venv with onnx, then this script
    .venv/bin/python bench/model_options.py   # only the rows whose packages are installed

OpenVINO f32 and bf16 at 320² are LOCAL_RUNTIME's options now: `make bench` (section 10,
bench/runtimes.py) measures them. What stays here: onnxruntime's int8 static quantization (needs
``onnx``; calibrated on the same sample photos it is judged on, which can only flatter it) and
OpenVINO on smaller inputs (288², 256²), which trade mask quality for speed. A row whose package
is missing says so. Nothing is asserted; the table is for choosing, not for CI.

Quality is judged where the product is judged: each mask min-max normalised to 0..255, scaled to
the photo (BILINEAR, as the daemon does) and compared with the reference's mask of that photo:
the mean absolute difference (0..255) and the IoU of the two masks cut at 128.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from report import table  # noqa: E402
from watcher import config  # noqa: E402
from watcher.stages.removal.engines import mask_image, preprocess  # noqa: E402

SAMPLES = HERE.parent / "tests" / "data" / "products"
Run = Callable[[np.ndarray], np.ndarray]  # NCHW batch → the first output's [H, W]


@dataclass
class Variant:
    name: str
    side: int
    run: Run | None  # None: not available here, ``why`` says why
    why: str = ""
    times: list[float] = field(default_factory=list)


def ort_fp32(model: Path) -> Run:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name, out = session.get_inputs()[0].name, [session.get_outputs()[0].name]
    return lambda x: session.run(out, {name: x})[0][0, 0]


def ort_int8(model: Path, calibration: list[np.ndarray], folder: Path) -> Run:
    """onnxruntime's static QDQ quantization: uint8 activations, int8 per-channel weights."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    opset13 = folder / "u2netp-13.onnx"  # per-channel QDQ needs opset 13; the file has 11
    onnx.save(version_converter.convert_version(onnx.load(str(model)), 13), str(opset13))
    prepared = folder / "u2netp-pre.onnx"
    quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
    input_name = ort.InferenceSession(str(model)).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    quantized = folder / "u2netp-int8.onnx"
    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return ort_fp32(quantized)


def openvino(model: Path, precision: str | None, side: int) -> tuple[Run, str]:
    import openvino as ov

    core = ov.Core()
    network = core.read_model(str(model))
    if side != 320:
        network.reshape([1, 3, side, side])
    cfg: dict[str, object] = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                              "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(network, "CPU", cfg)
    request = compiled.create_infer_request()
    output = compiled.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.array(request.get_tensor(output).data[0, 0], copy=True)

    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
    return run, f"OpenVINO {ov.__version__.split('-')[0]} {name}"


def variants(model: Path, photos: list[Image.Image], scratch: Path) -> list[Variant]:
    out = [Variant(f"onnxruntime {ort.__version__} fp32 (the daemon)", 320, ort_fp32(model))]
    try:
        calibration = [preprocess(p) for p in photos]
        out.append(Variant("onnxruntime int8 static (QDQ, per channel)", 320,
                           ort_int8(model, calibration, scratch)))
    except ImportError as exc:
        out.append(Variant("onnxruntime int8 static", 320, None, f"needs onnx ({exc.name})"))
    for precision, side in (("f32", 288), ("f32", 256)):
        try:
            run, info = openvino(model, precision, side)
            out.append(Variant(info if precision else f"{info} (its default)", side, run))
        except ImportError:
            out.append(Variant(f"OpenVINO {precision or 'default precision'}", side, None,
                               "needs openvino"))
    return out


def to_mask(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(mask_image(pred, size), dtype=np.int16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per photo and variant")
    args = parser.parse_args(argv)
    settings = config.load(config_file=Path(os.devnull), env={})
    files = sorted(SAMPLES.glob("*.jpg"))
    photos = []
    for path in files:
        with Image.open(path) as im:
            photos.append(im.convert("RGB"))
    every_core = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})  # one core: the per-image cost the daemon pays per core
    with tempfile.TemporaryDirectory(prefix="thumbgen-options-") as scratch:
        found = variants(settings.model_path, photos, Path(scratch))
        ready = [v for v in found if v.run is not None]
        batches = {side: [preprocess(p, side) for p in photos]
                   for side in {v.side for v in ready}}
        masks: dict[int, list[np.ndarray]] = {}
        for v in ready:
            assert v.run is not None
            v.run(batches[v.side][0])  # warm-up: first runs allocate
            masks[id(v)] = [to_mask(v.run(b), p.size) for b, p in zip(batches[v.side], photos)]
        for _ in range(args.rounds):  # interleaved, so a busy moment hits every row alike
            for i in range(len(photos)):
                for v in ready:
                    assert v.run is not None
                    start = time.perf_counter()
                    v.run(batches[v.side][i])
                    v.times.append((time.perf_counter() - start) * 1000)
    reference = ready[0]
    ref_ms = statistics.median(reference.times)
    rows = []
    for v in found:
        if v.run is None:
            rows.append((v.name, v.side, "-", "-", "-", "-", "-", v.why))
            continue
        ms = statistics.median(v.times)
        mads, ious = [], []
        for mine, ref in zip(masks[id(v)], masks[id(reference)]):
            mads.append(float(np.abs(mine - ref).mean()))
            a, b = mine >= 128, ref >= 128
            ious.append(float((a & b).sum()) / max(1, int((a | b).sum())))
        rows.append((v.name, v.side, ms, f"{ref_ms / ms:.2f}×", f"{np.mean(mads):.1f}",
                     f"{np.mean(ious):.3f}", f"{min(ious):.3f}",
                     files[int(np.argmin(ious))].name if min(ious) < 0.99 else ""))
    print(f"U²-Net-p, {len(photos)} photos of {SAMPLES.relative_to(HERE.parent)}, core 0 only, "
          f"{args.rounds} timed runs per photo, rows interleaved")
    print(table(["variant", "input", "ms/run", "speed", "MAD", "IoU mean", "IoU min",
                 "worst photo"], rows))
    os.sched_setaffinity(0, every_core)
    return 0


if __name__ == "__main__":
    sys.exit(main())
