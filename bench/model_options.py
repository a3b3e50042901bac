"""Ways to make the local model faster, side by side: time on one core, and how far each one's
masks move from the reference (onnxruntime fp32 at 320², what the daemon runs).

    make bench-options            # a separate venv with the optional packages, then this script
    .venv/bin/python bench/model_options.py   # only the rows whose packages are installed

Then, when OpenVINO is there, the real ``Pipeline.render`` (validate → remove → compose, as in
the daemon, without the inbox and the disk) on 12 MP photos with two worker threads, once with
the daemon's remover and once with OpenVINO at its default precision behind the same ``Remover``
contract: what the whole pipeline would gain.

The rows beyond the reference need packages thumbgen does not depend on, so they are optional:
``openvino`` (its default precision on CPUs with AMX or AVX-512 BF16 is bfloat16; it also lets
the network take other input sizes) and ``onnx`` (for onnxruntime's int8 static quantization,
calibrated on the same sample photos it is judged on, which can only flatter it). A row whose
package is missing says so. Nothing is asserted; the table is for choosing, not for CI.

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import inputs  # noqa: E402
from report import table  # noqa: E402
from watcher import config  # noqa: E402
from watcher.metrics import Metrics  # noqa: E402
from watcher.model import Job  # noqa: E402
from watcher.pipeline import Pipeline  # noqa: E402
from watcher.stages.removal import local  # noqa: E402
from watcher.stages.removal.base import Remover  # noqa: E402

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
        calibration = [local._preprocess(p) for p in photos]  # noqa: SLF001
        out.append(Variant("onnxruntime int8 static (QDQ, per channel)", 320,
                           ort_int8(model, calibration, scratch)))
    except ImportError as exc:
        out.append(Variant("onnxruntime int8 static", 320, None, f"needs onnx ({exc.name})"))
    for precision, side in (("f32", 320), (None, 320), ("f32", 288), ("f32", 256)):
        try:
            run, info = openvino(model, precision, side)
            out.append(Variant(info if precision else f"{info} (its default)", side, run))
        except ImportError:
            out.append(Variant(f"OpenVINO {precision or 'default precision'}", side, None,
                               "needs openvino"))
    return out


def to_mask(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = Image.fromarray(local._to_uint8(pred))  # noqa: SLF001
    return np.asarray(small.resize(size, Image.Resampling.BILINEAR), dtype=np.int16)


class OpenVinoRemover:
    """The ``Remover`` contract around OpenVINO at its default precision, run like the daemon's
    ``LocalRemover``: one run at a time, on every core."""

    name = "openvino"
    cpu_bound = True

    def __init__(self, model: Path, threads: int) -> None:
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(model), "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                "PERFORMANCE_HINT": "LATENCY"})
        self._request = compiled.create_infer_request()
        self._output = compiled.outputs[0]
        self._lock = threading.Lock()

    def mask(self, image: Image.Image) -> Image.Image:
        batch = local._preprocess(image)  # noqa: SLF001
        with self._lock:
            self._request.infer({0: batch})
            pred = np.array(self._request.get_tensor(self._output).data[0, 0], copy=True)
        small = Image.fromarray(local._to_uint8(pred))  # noqa: SLF001
        return small.resize(image.size, Image.Resampling.BILINEAR)

    def close(self) -> None:
        pass


def pipeline_rate(settings: config.Settings, remover: Remover, photos: list[Path],
                  workers: int) -> float:
    """Images per second through ``Pipeline.render`` with ``workers`` threads."""
    pipeline = Pipeline(settings, remover, Metrics())
    pipeline.render(Job(PurePosixPath("warm.jpg")), photos[0])  # model load, background cache
    todo = list(photos)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            pipeline.render(Job(PurePosixPath(path.name)), path)

    start = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(photos) / (time.perf_counter() - start)


def whole_pipeline(count: int) -> list[str]:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return ["  whole pipeline with OpenVINO: needs openvino (make bench-options)"]
    cores = len(os.sched_getaffinity(0))
    settings = config.load(config_file=Path(os.devnull),
                           env={"THUMBGEN_BACKGROUND_PATH": str(HERE.parent / "backgrounds")})
    photos = inputs.photos("12mp", count)
    rows = []
    for name, remover in (
            ("onnxruntime fp32 (the daemon)",
             local.LocalRemover(settings.model_path, threads=settings.cpu_workers)),
            ("OpenVINO, its default precision",
             OpenVinoRemover(settings.model_path, settings.cpu_workers))):
        rate = pipeline_rate(settings, remover, photos, settings.cpu_workers)
        remover.close()
        rows.append((name, rate, "met" if rate >= 8 else "NOT met"))
    return [f"  Pipeline.render, {inputs.describe(photos)} (12 MP), {settings.cpu_workers} "
            f"worker threads on {cores} cores, no disk or inbox:",
            table(["remover", "images/s", "≥ 8 images/s"], rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per photo and variant")
    parser.add_argument("--photos", type=int, default=24,
                        help="12 MP photos for the whole-pipeline comparison (0: skip it)")
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
        batches = {side: [local._preprocess(p, side) for p in photos]  # noqa: SLF001
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
    if args.photos:
        print("\n".join(["", *whole_pipeline(args.photos)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
