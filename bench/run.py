"""`make bench`: thumbgen's speed and memory beside reference tools, printed as tables.

Sections (all medians; nothing is asserted, targets are only reported):
  1. compose stage on 12 MP JPEGs, one core: thumbgen vs vipsthumbnail vs naive Pillow
  2. whole pipeline, local model, 2 workers, 12 MP: images/s and where the time goes
  3. peak RSS, 2 workers, 24 MP photos
  4. burst of 10 000 small files vs 100: memory per queued file
  5. bench/remote.py (the remote backend's bench, owned separately) when it exists
  6. outputs: the whole render of a 12 MP photo with 1 output vs 4, and each output's steps
  7. peak RSS with the shop's page open and 200 thumbnails in its gallery (bench/page.py)
  8. backlog: 100 000 waiting at start (READY, first thumbnail, RSS vs 100 waiting), the idle
     poll's CPU over 100 000 files in 1 000 folders, another shop's photo under a 5 000 backlog
  9. masks: IoU, haze and MAD of the local model's masks against reference cut-outs, before and
     after refine (bench/masks.py), and refine's cost
 10. runtimes: model runs/s with onnxruntime fp32, OpenVINO f32 and, where native, bf16, with
     their masks' agreement, and what LOCAL_RUNTIME=auto picks here (bench/runtimes.py)
 11. lighter remote calls: 12 MP photos sent whole vs at REMOTE_MAX_SIDE 2048 through a 20 Mbit/s
     link: bytes, call time, agreement of the final masks (bench/remote.py --lighter)
 12. latency of one 2 MP photo, idle daemon, drop to thumbnail, p50 and p95 (bench/latency.py)

 13. the whole pipeline against the model's own ceiling, alternated in one run (bench/ceiling.py)
 14. `thumbgen process` against `rembg p -m u2netp` on 18 photos of 12 MP (bench/peer.py)
 15. burst of 10 000 photos of 24 MP (bench/burst.py): peak RSS while they wait and the first
     are processed, bounded to 3 minutes here (1 with --quick)

Run: .venv/bin/python bench/run.py [--quick]
     [--only compose,pipeline,rss,burst,remote,outputs,page,backlog,masks,runtimes,lighter,
             latency,ceiling,peer,burst24]
Takes ~4–6 minutes on 2 cores, ~5 more for sections 11 and 12, ~4 more for 13 and 14, ~3 more for 15 (plus
~2 minutes once, to make the input photos).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import backlog  # noqa: E402
import burst  # noqa: E402
import ceiling  # noqa: E402
import inputs  # noqa: E402
import latency  # noqa: E402
import masks  # noqa: E402
import memory  # noqa: E402
import outputs  # noqa: E402
import page  # noqa: E402
import peer  # noqa: E402
import remote as remote_calls  # noqa: E402
import runtimes  # noqa: E402
import stage_compose  # noqa: E402
import whole_pipeline  # noqa: E402
from daemon import DaemonExited  # noqa: E402
from report import CpuMeter, CpuWindow, mib, table  # noqa: E402

from watcher.stages.removal.runtime import AGREEMENT  # noqa: E402

SECTIONS = ("compose", "pipeline", "rss", "burst", "remote", "outputs", "page", "backlog",
            "masks", "runtimes", "lighter", "latency", "ceiling", "peer", "burst24")
REMOTE_TIMEOUT = 240


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer files and rounds (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    os.chdir(REPO)
    # a SIGTERM unwinds like Ctrl-C, so every daemon started here is stopped and its tree removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    header()
    windows: list[tuple[str, CpuWindow]] = []
    failed = []
    with CpuMeter() as whole:
        for name, title, fn in plan(args.quick):
            if name not in only:
                continue
            print(f"\n== {title} ==", flush=True)
            with CpuMeter() as meter:
                try:
                    for line in fn():
                        print(line, flush=True)
                except DaemonExited as exc:
                    failed.append(name)
                    print(f"  section {name} stopped: {exc}", flush=True)
                except Exception:  # one broken section must not hide the others
                    failed.append(name)
                    print(f"  section {name} failed:\n{traceback.format_exc()}", flush=True)
            windows.append((name, meter.window))
            print(meter.window.line(), flush=True)
    summary(windows, whole.window)
    return 1 if failed else 0


def plan(quick: bool) -> list[tuple[str, str, Callable[[], list[str]]]]:
    n12, n24, rounds = (8, 6, 1) if quick else (40, 20, 3)
    compose_files = 4 if quick else 12
    burst_big = 2000 if quick else 10_000
    burst_minutes = 1 if quick else 3

    def compose() -> list[str]:
        photos = inputs.photos("12mp", n12)[:compose_files]
        return [f"  inputs: {inputs.describe(photos)}"] + stage_compose.run(
            photos, REPO / "backgrounds", rounds)

    def pipeline() -> list[str]:
        photos = inputs.photos("12mp", n12)
        lines = [f"  inputs: {inputs.describe(photos)}"]
        lines += whole_pipeline.model_alone(photos[:8], 2 if not quick else 1)
        lines.append("")
        lines += whole_pipeline.model_ceiling(photos[:8], 4.0 if quick else 8.0)
        lines.append("")
        return lines + whole_pipeline.daemon_run(photos, photos[:2])  # warm-up: copies, other names

    def rss() -> list[str]:
        photos = inputs.photos("24mp", n24)
        return [f"  inputs: {inputs.describe(photos)}"] + memory.peak_rss(photos)

    def masks_() -> list[str]:
        return masks.section(5 if quick else 15)

    def outputs_() -> list[str]:
        photos = inputs.photos("12mp", n12)[:4 if quick else 9]
        return [f"  inputs: {inputs.describe(photos)}"] + outputs.run(photos, 1 if quick else 3)

    return [
        ("compose", "1. compose stage, 12 MP JPEG → 1200×1200 JPEG q90, one core", compose),
        ("pipeline", "2. whole pipeline, local model, 2 workers, 12 MP photos", pipeline),
        ("rss", "3. peak memory, 2 workers, 24 MP photos", rss),
        ("burst", f"4. burst memory: {burst_big} small files vs 100",
         lambda: memory.burst(big=burst_big)),
        ("remote", "5. remote backend (bench/remote.py)", remote),
        ("outputs", "6. outputs: 1 vs 4 per 12 MP photo (default | + amazon, mercadolivre, "
         "cutout), one core", outputs_),
        ("page", "7. the shop's page open, 200 thumbnails, 2 workers, 12 MP photos",
         lambda: page.page_rss(inputs.photos("12mp", n12), 60 if quick else 200)),
        ("backlog", "8. backlog at start, idle polling, another shop under a backlog",
         lambda: backlog.start_backlog(big=20_000 if quick else 100_000)
         + [""] + backlog.fairness(1000 if quick else 5000)),
        ("masks", "9. masks before and after refine, against reference cut-outs", masks_),
        ("runtimes", "10. the local model's runtimes (LOCAL_RUNTIME), all cores, one run at a "
         "time", lambda: runtimes.section(1 if quick else 3)),
        ("lighter", "11. lighter remote calls: 12 MP sent whole vs at REMOTE_MAX_SIDE 2048, "
         "20 Mbit/s link", lambda: remote_calls.lighter_calls(
             inputs.photos("12mp", 3 if quick else 9))),
        ("latency", "12. latency of one 2 MP photo, idle daemon, local model",
         lambda: latency.run(8 if quick else 20)),
        ("ceiling", "13. the whole pipeline against the model's own ceiling, 2 workers, 12 MP",
         lambda: ceiling.run(inputs.photos("12mp", n12)[:12 if quick else 24], 2 if quick else 4)),
        ("peer", "14. `thumbgen process` against `rembg p -m u2netp`, 18 photos of 12 MP",
         lambda: peer.run(inputs.photos("12mp", 18), 1 if quick else 2)),
        ("burst24", f"15. burst of {burst_big} photos of 24 MP, bounded to {burst_minutes} min "
         "(bench/burst.py)", lambda: burst.run(burst_big, 18, burst_minutes)),
    ]


def remote() -> list[str]:
    script = HERE / "remote.py"
    python = Path(sys.executable)
    shown = python.relative_to(REPO) if python.is_relative_to(REPO) else python
    command = f"{shown} bench/remote.py"
    if not script.is_file():
        return [f"  bench/remote.py is not there yet; when it is, run it with: {command}"]
    print(f"  running: {command}  (timeout {REMOTE_TIMEOUT} s)", flush=True)
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=REPO, timeout=REMOTE_TIMEOUT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        return [out.rstrip(), f"  bench/remote.py timed out after {REMOTE_TIMEOUT} s"]
    lines = [done.stdout.rstrip()]
    if done.returncode:
        lines.append(f"  bench/remote.py exited {done.returncode}")
    return lines


def header() -> None:
    cores = os.cpu_count() or 1
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    load = Path("/proc/loadavg").read_text().split()[:3]
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text()
               .splitlines() if line.startswith("MemTotal"))
    print(f"thumbgen bench — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"  machine: {cores} cores ({cpu}), {mib(mem)} RAM, load average {' '.join(load)}")
    print(f"  versions: Python {platform.python_version()}, {versions()}")
    print(f"  thumbgen under test: {under_test()}")
    print("  Numbers are noisy when other work shares the machine (tests run by other engineers):")
    print("  each section reports how much CPU other processes used and the CPU steal meanwhile.")


def under_test() -> str:
    """Which ``watcher`` package is measured (PYTHONPATH can point at another copy) and its commit."""
    import watcher

    where = Path(watcher.__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return f"{where} ({rev or 'not a git checkout'})"


def versions() -> str:
    import numpy
    import onnxruntime
    import PIL

    parts = [f"Pillow {PIL.__version__}", f"onnxruntime {onnxruntime.__version__}",
             f"numpy {numpy.__version__}"]
    try:
        from importlib.metadata import version

        parts.append(f"OpenVINO {version('openvino')}")
    except ImportError:  # importlib.metadata.PackageNotFoundError is an ImportError
        parts.append("OpenVINO not installed")
    try:
        vips = subprocess.run(["vipsthumbnail", "--vips-version"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        parts.append(vips or "libvips ?")
    except (OSError, subprocess.TimeoutExpired):
        parts.append("vipsthumbnail missing")
    return ", ".join(parts)


def summary(windows: list[tuple[str, CpuWindow]], whole: CpuWindow) -> None:
    s = {**stage_compose.SUMMARY, **whole_pipeline.SUMMARY, **memory.SUMMARY, **outputs.SUMMARY,
         **backlog.SUMMARY, **ceiling.SUMMARY, **peer.SUMMARY}
    lighter, one = remote_calls.SUMMARY, latency.SUMMARY
    rt, big = runtimes.SUMMARY, burst.SUMMARY
    rows = []
    if "compose" in s:
        wall, cpu = s["compose"]
        rows.append(("compose ÷ vipsthumbnail, 1 core", "≤ 0.80", f"{wall:.2f} (CPU {cpu:.2f})",
                     _verdict(wall <= 0.8)))
    if "images_per_s" in s:
        rows.append(("whole pipeline, 2 cores, 12 MP", "≥ 8 images/s",
                     f"{s['images_per_s']:.2f} images/s", _verdict(s["images_per_s"] >= 8)))
    if "model_ms" in s:
        rows.append(("  (model alone, 1 core)", "", f"{s['model_ms']:.0f} ms", ""))
    if "model_ceiling" in s:
        rows.append(("  (model alone, all cores: the ceiling)", "",
                     f"{s['model_ceiling']:.2f} images/s", ""))
    if "ceiling_ratio" in s:
        rows.append(("whole pipeline ÷ the model's ceiling, 2 workers, 12 MP",
                     f"≥ {ceiling.TARGET}", f"{s['ceiling_ratio']:.2f} (by CPU time "
                     f"{s['ceiling_cpu_ratio']:.2f})",
                     _verdict(s["ceiling_ratio"] >= ceiling.TARGET)))
    if rt:
        rows.append(("local runtime: fastest here, agreement with onnxruntime (IoU min)",
                     f"≥ {AGREEMENT}", f"{rt['runtime_best']}, IoU {rt['runtime_iou']:.3f}",
                     "met" if float(rt["runtime_iou"]) >= AGREEMENT else "NOT met"))
        rows.append(("  LOCAL_RUNTIME=auto here", "", str(rt["runtime_choice"])[:60], ""))
    if big:
        rows.append((f"burst of {big['burst24_count']:.0f} × 24 MP: peak RSS "
                     f"({big['burst24_done']:.0f} processed)", "≤ 500 MB",
                     mib(int(big["burst24_peak"])),
                     "met" if big["burst24_peak"] <= burst.TARGET else "NOT met"))
    if "peer_ratio" in s:
        rows.append(("thumbgen process ÷ rembg p -m u2netp, 18 × 12 MP", f"≥ {peer.TARGET} ×",
                     f"{s['peer_ratio']:.2f} × (peak RSS {mib(s['peer_rss'])})",
                     _verdict(s["peer_ratio"] >= peer.TARGET
                              and s["peer_rss"] <= peer.RSS_TARGET)))
    if "peak_rss" in s:
        rows.append(("peak RSS, 2 workers, 24 MP", "≤ 500 MB", mib(s["peak_rss"]),
                     _verdict(s["peak_rss"] <= 500 * 1024**2)))
    if "outputs_ratio" in s:
        rows.append(("4 outputs ÷ 1, 12 MP render, 1 core", f"≤ {outputs.TARGET}",
                     f"{s['outputs_ratio']:.2f} (CPU {s['outputs_cpu_ratio']:.2f})",
                     _verdict(s["outputs_ratio"] <= outputs.TARGET)))
    if "bytes_per_file" in s:
        rows.append(("burst: RSS per queued file", "paths only",
                     f"{s['bytes_per_file']:.0f} B ({mib(s['burst_growth'])} for the backlog)",
                     ""))
    if "first_s" in s:
        rows.append(("backlog at start: READY / first thumbnail", "≤ 5 s / ≤ 5 s",
                     f"{s['ready_s']:.1f} s / {s['first_s']:.1f} s",
                     _verdict(s["ready_s"] <= 5 and s["first_s"] <= 5)))
        rows.append(("backlog at start: RSS vs 100 waiting", "≤ 1.3 ×",
                     f"{s['rss_ratio']:.2f} ×", _verdict(s["rss_ratio"] <= 1.3)))
    if "poll_share" in s:
        rows.append(("idle poll, 100 000 files / 1 000 folders, 2 s", "< 5 % of a core",
                     f"{s['poll_share']:.2%}", _verdict(s["poll_share"] < 0.05)))
    if "fair_latency" in s:
        rows.append(("another shop's photo under a backlog", f"≤ {s['fair_target']:.2f} s",
                     f"{s['fair_latency']:.2f} s",
                     _verdict(s["fair_latency"] <= s["fair_target"])))
    if lighter:
        side = f"{lighter['max_side']:.0f}"
        rows.append((f"remote call, 12 MP, whole → {side}: bytes sent (median)", "less",
                     f"{lighter['sent_before'] / 1e6:.2f} → {lighter['sent_after'] / 1e6:.2f} MB "
                     f"({lighter['sent_after'] / lighter['sent_before']:.2f} ×)", ""))
        rows.append((f"remote call, 12 MP, whole → {side}: one call at 20 Mbit/s", "less",
                     f"{lighter['call_before']:.1f} → {lighter['call_after']:.1f} s "
                     f"({lighter['call_after'] / lighter['call_before']:.2f} ×)", ""))
        rows.append((f"remote masks at {side} vs whole, final, worst IoU",
                     f"≥ {remote_calls.IOU_TARGET}", f"{lighter['iou_min']:.4f}",
                     _verdict(lighter["iou_min"] >= remote_calls.IOU_TARGET)))
    if one:
        rows.append(("drop → thumbnail, 2 MP, idle daemon: p50 / p95",
                     f"p50 ≤ {one['target']:.2f} s", f"{one['p50']:.2f} s / {one['p95']:.2f} s",
                     _verdict(one["p50"] <= one["target"])))
    print("\n== summary ==")
    if rows:
        print(table(["measure", "target", "measured", ""], rows))
    noisy = [(name, w) for name, w in windows if w.others_cores > 0.2 or w.steal_pct > 2]
    print(f"  whole run {whole.seconds:.0f} s; other processes used {whole.others_cores:.2f} "
          f"cores on average, CPU steal {whole.steal_pct:.1f}%")
    if noisy:
        print("  NOISY: other work shared the machine during " + ", ".join(
            f"{name} ({w.others_cores:.2f} cores)" for name, w in noisy)
            + "; rerun on a quiet machine before trusting these figures.")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
