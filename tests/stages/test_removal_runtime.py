"""LOCAL_RUNTIME: the choice between onnxruntime and OpenVINO, with the real model and real
engines. The CPU's flags come from a cpuinfo file: this machine's own, with its bf16 flags taken
out or one added, so that both kinds of CPU are tried here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from tests.e2e.conftest import wait_for
from watcher import cli, diagnose
from watcher.errors import ModelError
from watcher.metrics import Metrics
from watcher.stages.removal import runtime
from watcher.stages.removal.engines import OnnxEngine, OpenVinoEngine
from watcher.stages.removal.local import LocalRemover

PROC_CPUINFO = Path("/proc/cpuinfo")
# OpenVINO's precision under LOCAL_RUNTIME=openvino on this machine (fp32 on these Xeons)
HERE = "bf16" if runtime.native_bf16() else "fp32"
_BF16 = re.compile(r"\s(amx_bf16|avx512_bf16)(?=\s|$)")


def _cpuinfo(tmp_path: Path, extra_flag: str | None) -> Path:
    """This machine's cpuinfo without bf16 flags, plus ``extra_flag`` on every CPU."""
    lines = []
    for line in PROC_CPUINFO.read_text().splitlines():
        if line.split(":")[0].strip() == "flags":
            line = _BF16.sub("", line) + (f" {extra_flag}" if extra_flag else "")
        lines.append(line)
    path = tmp_path / f"cpuinfo-{extra_flag or 'plain'}"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def plain_cpu(tmp_path: Path) -> Path:
    return _cpuinfo(tmp_path, None)


@pytest.fixture
def bf16_cpu(tmp_path: Path) -> Path:
    return _cpuinfo(tmp_path, "amx_bf16")


def _photo(data_dir: Path, name: str = "dresses_dress_02.jpg") -> Image.Image:
    with Image.open(data_dir / "products" / name) as im:
        return im.convert("RGB")


def _disagreeing_model(folder: Path) -> Path:
    """A real OpenVINO model with U²-Net-p's input and output shapes whose "mask" is the
    photo's darkness (minus the mean of the channels): a different answer, honestly computed."""
    import openvino as ov
    from openvino import opset13 as ops

    photo = ops.parameter([1, 3, 320, 320], np.float32, name="input")
    darkness = ops.negative(ops.reduce_mean(photo, np.array([1]), keep_dims=True))
    path = folder / "darkness.xml"
    ov.save_model(ov.Model([darkness], [photo], "darkness"), str(path))
    return path


# -- the CPU's flags and the plan --------------------------------------------------------------

def test_native_bf16_is_read_from_the_cpu_flags(plain_cpu: Path, bf16_cpu: Path,
                                                 tmp_path: Path) -> None:
    assert runtime.native_bf16(plain_cpu) is None
    assert runtime.native_bf16(bf16_cpu) == "amx_bf16"
    assert runtime.native_bf16(_cpuinfo(tmp_path, "avx512_bf16")) == "avx512_bf16"
    assert runtime.native_bf16(tmp_path / "missing") is None


def test_auto_reads_this_machines_own_flags() -> None:
    """These Xeons have neither AMX nor AVX-512 BF16: auto plans onnxruntime fp32 here."""
    expected = "openvino" if runtime.native_bf16() else "onnxruntime"
    assert runtime.plan("auto").runtime == expected


def test_auto_plans_openvino_bf16_only_with_native_bf16_and_openvino(
        plain_cpu: Path, bf16_cpu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (runtime.plan("auto", plain_cpu).runtime, runtime.plan("auto", plain_cpu).precision) \
        == ("onnxruntime", "fp32")
    with_bf16 = runtime.plan("auto", bf16_cpu)
    assert (with_bf16.runtime, with_bf16.precision) == ("openvino", "bf16")
    assert "amx_bf16" in with_bf16.why
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    without = runtime.plan("auto", bf16_cpu)
    assert (without.runtime, without.precision) == ("onnxruntime", "fp32")
    assert "not installed" in without.why


def test_explicit_settings_plan_what_they_name(plain_cpu: Path, bf16_cpu: Path) -> None:
    assert runtime.plan("onnxruntime", bf16_cpu).runtime == "onnxruntime"
    assert (runtime.plan("openvino", plain_cpu).precision, runtime.plan("openvino", bf16_cpu)
            .precision) == ("fp32", "bf16")


# -- loading: auto without and with native bf16, the probe ------------------------------------

def test_auto_without_native_bf16_loads_onnxruntime_fp32(model_path: Path,
                                                         plain_cpu: Path) -> None:
    engine, choice = runtime.open_engine("auto", model_path, 1, cpuinfo=plain_cpu)

    assert isinstance(engine, OnnxEngine)
    assert (choice.runtime, choice.precision) == ("onnxruntime", "fp32")
    assert "no native bf16" in choice.why


def test_auto_with_native_bf16_probes_both_and_keeps_the_faster_that_agrees(
        model_path: Path, bf16_cpu: Path) -> None:
    """Here bf16 is emulated (slow): whichever wins, the choice matches the probe's numbers."""
    engine, choice = runtime.open_engine("auto", model_path, 2, cpuinfo=bf16_cpu)

    found = re.search(r"probe IoU ([\d.]+), (\d+) ms against (\d+) ms", choice.why)
    assert found, choice.why
    agreement, openvino_ms, onnx_ms = float(found[1]), int(found[2]), int(found[3])
    assert agreement >= runtime.AGREEMENT  # the probe photo's masks agree
    if openvino_ms < onnx_ms:
        assert isinstance(engine, OpenVinoEngine) and choice.runtime == "openvino"
        assert choice.precision == engine.precision
    else:
        assert isinstance(engine, OnnxEngine) and "not faster" in choice.why
        assert (choice.runtime, choice.precision) == ("onnxruntime", "fp32")


def test_auto_keeps_fp32_when_the_masks_disagree(model_path: Path, bf16_cpu: Path,
                                                 tmp_path: Path) -> None:
    other = _disagreeing_model(tmp_path)

    engine, choice = runtime.open_engine("auto", model_path, 1, cpuinfo=bf16_cpu,
                                         candidate_model=other)

    assert isinstance(engine, OnnxEngine)
    assert (choice.runtime, choice.precision) == ("onnxruntime", "fp32")
    found = re.search(r"disagrees \(probe IoU ([\d.]+)", choice.why)
    assert found and float(found[1]) < runtime.AGREEMENT, choice.why


def test_auto_keeps_fp32_when_openvino_cannot_load_the_model(model_path: Path, bf16_cpu: Path,
                                                             tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(model_path.read_bytes()[: 200_000])

    engine, choice = runtime.open_engine("auto", model_path, 1, cpuinfo=bf16_cpu,
                                         candidate_model=damaged)

    assert isinstance(engine, OnnxEngine)
    assert "OpenVINO could not load" in choice.why


def test_the_probe_photo_ships_with_the_package_and_its_licence() -> None:
    assert runtime.PROBE_PHOTO.is_file()
    assert "MIT" in (runtime.PROBE_PHOTO.parent / "LICENSE").read_text()
    with Image.open(runtime.PROBE_PHOTO) as im:
        assert im.format == "JPEG"


# -- the explicit settings ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dresses_dress_02.jpg", "mugs.jpg"])
def test_explicit_openvino_f32_agrees_with_onnxruntime(model_path: Path, plain_cpu: Path,
                                                       data_dir: Path, name: str) -> None:
    engine, choice = runtime.open_engine("openvino", model_path, 1, cpuinfo=plain_cpu)
    assert isinstance(engine, OpenVinoEngine)
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")

    probe = runtime.compare(OnnxEngine(model_path, 1), engine, _photo(data_dir, name))

    assert probe.iou >= runtime.AGREEMENT


def test_explicit_onnxruntime_never_tries_openvino(model_path: Path, bf16_cpu: Path) -> None:
    engine, choice = runtime.open_engine("onnxruntime", model_path, 1, cpuinfo=bf16_cpu)

    assert isinstance(engine, OnnxEngine)
    assert choice.why == "LOCAL_RUNTIME=onnxruntime"


def test_the_local_remover_runs_on_openvino(model_path: Path, data_dir: Path) -> None:
    photo = _photo(data_dir)
    masks = []
    for setting in ("onnxruntime", "openvino"):
        remover = LocalRemover(model_path, runtime_setting=setting)
        assert remover.choice is None
        masks.append(np.asarray(remover.mask(photo)) >= 128)
        assert remover.choice is not None and remover.choice.runtime == setting
        remover.close()

    assert runtime.iou(*masks) >= runtime.AGREEMENT


def test_openvino_reports_a_damaged_model_as_a_model_error(model_path: Path,
                                                           tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(model_path.read_bytes()[: 200_000])

    with pytest.raises(ModelError, match="cannot be loaded by OpenVINO"):
        OpenVinoEngine(damaged, 1)


# -- what says which runtime runs: config, diagnose, /health, thumbgen_build_info ---------------

def test_a_bad_value_stops_thumbgen_with_exit_2(run_thumbgen: Callable[..., Any]) -> None:
    done = run_thumbgen("run", LOCAL_RUNTIME="fastest")

    assert done.returncode == 2
    assert "LOCAL_RUNTIME" in done.stderr and "auto, onnxruntime, openvino" in done.stderr


def test_openvino_asked_for_but_not_installed_exits_2(thumbgen_env: dict[str, str]) -> None:
    """The real CLI in a process where ``import openvino`` fails, as without the extra."""
    code = ("import sys; sys.modules['openvino'] = None; from watcher.cli import main; "
            "sys.exit(main(['run']))")
    env = {"PATH": "/usr/bin:/bin", **thumbgen_env, "THUMBGEN_LOCAL_RUNTIME": "openvino"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False)

    assert done.returncode == 2, done.stderr
    assert "LOCAL_RUNTIME" in done.stderr and "OpenVINO is not installed" in done.stderr


def test_thumbgen_config_says_which_runtime_runs(run_thumbgen: Callable[..., Any]) -> None:
    auto = run_thumbgen("config")
    explicit = run_thumbgen("config", LOCAL_RUNTIME="openvino")

    assert auto.returncode == 0 and explicit.returncode == 0
    assert f"Local model: {runtime.plan('auto')}" in auto.stdout
    assert f"Local model: openvino {HERE} (LOCAL_RUNTIME=openvino" in explicit.stdout


def test_diagnose_loads_the_model_and_says_which_runtime_runs(
        make_settings: Callable[..., Any], model_path: Path) -> None:
    settings = make_settings(MODEL_PATH=model_path, LOCAL_RUNTIME="openvino")

    (finding,) = diagnose.check_runtime(settings)

    assert finding.level == diagnose.OK
    assert f"LOCAL_RUNTIME=openvino: openvino {HERE}" in finding.text


def test_build_info_and_health_name_the_runtime_once_the_model_loads(
        make_settings: Callable[..., Any], running_app: Callable[..., Any], model_path: Path,
        data_dir: Path) -> None:
    settings = make_settings(MODEL_PATH=model_path, LOCAL_RUNTIME="openvino")
    metrics = Metrics(CollectorRegistry())
    remover = cli.BACKENDS["local"](settings, metrics, threading.Semaphore(1))

    def info(**labels: str) -> float | None:
        return metrics.registry.get_sample_value("thumbgen_build_info", {
            "version": cli.__version__, **labels})

    assert info(runtime="none", precision="none") == 1
    app, health = running_app(remover, MODEL_PATH=model_path, LOCAL_RUNTIME="openvino")
    local = health.dependencies()["local_model"]
    assert (local["runtime_setting"], local["runtime"]) == ("openvino", None)

    shutil.copyfile(data_dir / "products" / "books.jpg", app.settings.upload_path / "books.jpg")
    wait_for(lambda: app.pool.done_count == 1, 60, message="the photo processed")

    local = health.dependencies()["local_model"]
    assert (local["runtime"], local["precision"]) == ("openvino", HERE)
    assert info(runtime="openvino", precision=HERE) == 1


def test_the_remote_backends_fallback_runs_on_local_runtime(
        make_settings: Callable[..., Any], model_path: Path) -> None:
    from watcher.stages.removal import gradio

    settings = make_settings(MODEL_PATH=model_path, LOCAL_RUNTIME="openvino",
                             GRADIO_API_URL="http://127.0.0.1:9/")
    metrics = Metrics(CollectorRegistry())
    remover = gradio.build(settings, metrics)
    try:
        assert remover.fallback is not None
        remover.fallback.load()  # type: ignore[attr-defined]
        assert remover.state()["local_runtime"]["runtime"] == "openvino"
        assert metrics.registry.get_sample_value("thumbgen_build_info", {
            "version": cli.__version__, "runtime": "openvino", "precision": HERE}) == 1
    finally:
        remover.close()
