"""Latency of one photo: from the drop to its thumbnail, with an idle daemon.

``thumbgen run`` (local model, WORKERS=2, SETTLE_SECONDS as shipped: 2 s, real inotify) on a
fresh tree. One warm-up photo loads the model; then a 2 MP JPEG is dropped N times, one at a
time, each under a new name, the way an uploader finishes a file (written beside the inbox,
renamed in), and the next only once the daemon is idle again. The clock runs from the rename to
the moment the thumbnail appears in ``thumbnails-prontas/`` (watched by polling its folder every
2 ms). The daemon's own log gives each photo's stage times, so the table shows how much of the
latency is the settle wait and how much is work.

Target (issue 13): p50 ≤ SETTLE_SECONDS + 0.5 s.
"""

from __future__ import annotations

import io
import os
import sys
import time

from PIL import Image, ImageOps

from daemon import Daemon
from inputs import samples
from report import median, quantile, table

SETTLE = 2.0  # the shipped default
SLACK = 0.5
SIZE = (1632, 1224)  # 2.0 MP, 4:3
SUMMARY: dict[str, float] = {}


def photo_2mp() -> bytes:
    """A 2 MP camera-like JPEG of the first sample photo."""
    with Image.open(samples()[0]) as im:
        rgb = ImageOps.fit(im.convert("RGB"), SIZE, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _drop(d: Daemon, data: bytes, name: str) -> float:
    """Drop ``data`` as ``name``: the seconds from the rename to its thumbnail."""
    staged = d.staging / name
    staged.write_bytes(data)
    target = d.output / name  # OUTPUT_FORMAT jpeg: the same name
    start = d.move_in([staged])
    deadline = start + 60
    while not target.exists():
        if time.monotonic() > deadline:
            d.check_alive()
            raise RuntimeError(f"{name}: no thumbnail within 60 s")
        time.sleep(0.002)
    return time.monotonic() - start


def run(drops: int = 20, settle: float = SETTLE) -> list[str]:
    data = photo_2mp()
    latencies: list[float] = []
    with Daemon("latency", SETTLE_SECONDS=settle, RESCAN_INTERVAL=3600) as d:
        d.start()
        _drop(d, data, "warm-up.jpg")  # the model loads on first use
        for i in range(drops):
            time.sleep(0.3)  # idle: the previous photo's original has moved, its log line written
            latencies.append(_drop(d, data, f"p{i:02d}.jpg"))
        time.sleep(0.5)
        records = {str(r.get("file")): r for r in d.records()}
    work: list[float] = []
    rest: list[float] = []
    stages: dict[str, list[float]] = {}
    for i in range(drops):
        record = records.get(f"p{i:02d}.jpg")
        if record and isinstance(record.get("duration_ms"), (int, float)):
            work.append(float(record["duration_ms"]) / 1000)  # claimed → original moved
            rest.append(latencies[i] - work[-1])
            for stage, ms in dict(record.get("stages") or {}).items():
                stages.setdefault(str(stage), []).append(float(ms) / 1000)
    p50, p95 = quantile(latencies, 0.5), quantile(latencies, 0.95)
    target = settle + SLACK
    SUMMARY.update(p50=p50, p95=p95, target=target, settle=settle)
    rows = [("drop → thumbnail p50", f"{p50:.2f} s", f"≤ {target:.2f} s",
             "met" if p50 <= target else "NOT met"),
            ("drop → thumbnail p95", f"{p95:.2f} s", "", ""),
            ("  of which the daemon's work (claim → done), median", f"{median(work):.2f} s",
             "", ""),
            *((f"    {stage}", f"{median(times):.3f} s", "", "")
              for stage, times in stages.items()),
            ("  the rest (settle wait, queueing), median",
             f"{median(rest):.3f} s", f"SETTLE_SECONDS {settle:g}", "")]
    return [f"  {drops} drops of one {SIZE[0]}×{SIZE[1]} JPEG ({len(data) / 1e6:.1f} MB), one at "
            f"a time, idle daemon, local model, WORKERS=2, SETTLE_SECONDS={settle:g}, inotify; "
            f"load {os.getloadavg()[0]:.1f}",
            table(["measure", "measured", "target", ""], rows)]


def main(argv: list[str]) -> int:
    print("\n".join(run(int(argv[0]) if argv else 20)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
