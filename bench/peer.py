"""Section 11: ``thumbgen process`` against ``rembg p -m u2netp``, the same photos, one run.

18 photos of 12 MP (``inputs.py``) are copied into a temp folder (copies: thumbgen refuses hard
links and symlinks). Each tool is a fresh process, as a user runs it, into a fresh output folder,
the two alternated (thumbgen, rembg, rembg, thumbgen, …): thumbgen with its default outputs and
settings (``thumbgen process IN --out OUT``), rembg with its own defaults (``rembg p -m u2netp IN
OUT``). Wall time is from the start to the exit of the process, start-up and model loading
included; CPU time comes from ``wait4`` for that process alone, peak RSS from its own
``VmHWM`` (see ``_run``).

rembg lives in its own venv (``.venv-rembg``, made by ``make bench``), never in thumbgen's
dependencies; its model is thumbgen's own ``u2netp.onnx``, put in a temp ``U2NET_HOME``. rembg
checks its md5 and downloads the file when it differs: the bench checks the md5 first and does
not run rembg at all if it does not match, so nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from report import median, mib, table
from watcher import config

TARGET = 10.0
RSS_TARGET = 500 * 1024**2
REMBG = Path(__file__).resolve().parent.parent / ".venv-rembg" / "bin" / "rembg"
THUMBGEN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "thumbgen"
# the md5 rembg checks its u2netp.onnx against (rembg/sessions/u2netp.py)
REMBG_MD5 = "8e83ca70e441ab06c318d82300c84806"
SUMMARY: dict[str, float] = {}


def _run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, int]:
    """(wall s, CPU s, peak RSS bytes, exit code) of one process.

    Peak RSS is the process's own high-water mark (``VmHWM``), read every 20 ms until it exits:
    ``wait4``'s ``ru_maxrss`` keeps the mark of the memory the child was started from, this
    bench's own (a run of the whole bench made thumbgen look 705 MB where it peaked at 487)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak = 0
    while True:
        peak = max(peak, _hwm(proc.pid, Path(command[0]).name))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, peak, proc.returncode


def _hwm(pid: int, name: str) -> int:
    """The ``VmHWM`` of ``pid`` in bytes once it runs ``name`` (before its exec it still shares
    this process's memory); 0 before that and once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        if fields.get("Name", "").strip() != name[:15]:
            return 0
        return int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, ValueError, KeyError):
        return 0


def run(photos: list[Path], rounds: int) -> list[str]:
    if not REMBG.is_file():
        return [f"  {REMBG} is missing: `make bench` makes it (rembg[cpu,cli] in .venv-rembg)"]
    model = config.load(config_file=Path(os.devnull), env={}).model_path
    md5 = hashlib.md5(model.read_bytes()).hexdigest()
    if md5 != REMBG_MD5:
        return [f"  {model} has md5 {md5}, not the {REMBG_MD5} rembg checks: rembg would "
                "download its own; not run"]
    work = Path(tempfile.mkdtemp(prefix="thumbgen-peer-"))
    try:
        inbox, home = work / "in", work / "u2net"
        inbox.mkdir()
        home.mkdir()
        for p in photos:
            shutil.copyfile(p, inbox / p.name)
        shutil.copyfile(model, home / "u2netp.onnx")
        base = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
        envs = {"thumbgen": {**base, "THUMBGEN_MODEL_PATH": str(model)},
                "rembg": {**base, "U2NET_HOME": str(home), "HOME": str(work)}}
        commands = {"thumbgen": lambda out: [str(THUMBGEN), "process", str(inbox), "--out", out],
                    "rembg": lambda out: [str(REMBG), "p", "-m", "u2netp", str(inbox), out]}
        results: dict[str, list[tuple[float, float, int]]] = {"thumbgen": [], "rembg": []}
        rows = []
        for r in range(rounds):
            for tool in (("thumbgen", "rembg") if r % 2 == 0 else ("rembg", "thumbgen")):
                out = work / f"out-{tool}-{r}"
                out.mkdir()
                load = os.getloadavg()[0]
                wall, cpu, rss, code = _run(commands[tool](str(out)), envs[tool], work)
                made = sum(1 for f in out.rglob("*") if f.is_file())
                results[tool].append((wall, cpu, rss))
                rows.append((r + 1, tool, round(wall, 2), round(cpu, 2), mib(rss), made, code,
                             f"{load:.1f}"))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_wall = median(w for w, _, _ in results["thumbgen"])
    r_wall = median(w for w, _, _ in results["rembg"])
    t_cpu = median(c for _, c, _ in results["thumbgen"])
    r_cpu = median(c for _, c, _ in results["rembg"])
    rss = max(m for _, _, m in results["thumbgen"])
    ratio = r_wall / t_wall
    SUMMARY.update(peer_ratio=ratio, peer_rss=rss, peer_cpu_ratio=r_cpu / t_cpu)
    ok = ratio >= TARGET and rss <= RSS_TARGET
    return [
        f"  {len(photos)} photos of 12 MP; {rounds} round(s), alternated; rembg with thumbgen's "
        f"u2netp.onnx (md5 {md5[:8]}…, nothing downloaded)",
        table(["round", "tool", "wall s", "CPU s", "peak RSS", "files out", "exit", "load"],
              rows),
        f"  throughput thumbgen ÷ rembg (median wall): {ratio:.2f} × (CPU time: "
        f"{r_cpu / t_cpu:.2f} ×); thumbgen's peak RSS {mib(rss)}",
        f"  target: ≥ {TARGET:.0f} × and peak RSS ≤ {mib(RSS_TARGET)} → "
        f"{'met' if ok else 'NOT met'}",
    ]
