"""Small helpers shared by the bench sections: statistics, tables, and CPU accounting.

Nothing here asserts anything: the bench measures and prints, and always exits 0 on a finished
run. CPU accounting exists because a 2-core machine shared with test runs gives noisy numbers;
every section says how much CPU other processes took (and how much the hypervisor stole) while
it ran, so a reader can tell a slow result from a busy machine.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HZ = os.sysconf("SC_CLK_TCK")


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def mib(n: float) -> str:
    return f"{n / 1024**2:.0f} MB"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "  ") -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# -- CPU accounting ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuSample:
    """/proc/stat's aggregate line plus our own CPU time (this process and reaped children)."""

    wall: float
    busy: float     # seconds of CPU busy on all cores, steal excluded
    steal: float    # seconds the hypervisor ran someone else while we wanted a core
    total: float    # all jiffies, in seconds
    ours: float     # user+sys of this process and its waited-for children

    @classmethod
    def now(cls) -> CpuSample:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq
        total = busy + idle + iowait + steal
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return cls(time.monotonic(), busy / HZ, steal / HZ, total / HZ, ours)


@dataclass(frozen=True)
class CpuWindow:
    start: CpuSample
    end: CpuSample

    @property
    def seconds(self) -> float:
        return self.end.wall - self.start.wall

    @property
    def steal_pct(self) -> float:
        total = self.end.total - self.start.total
        return 100.0 * (self.end.steal - self.start.steal) / total if total > 0 else 0.0

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU used by other processes (test runs, other engineers) meanwhile."""
        if self.seconds <= 0:
            return 0.0
        busy = self.end.busy - self.start.busy
        ours = self.end.ours - self.start.ours
        return max(0.0, busy - ours) / self.seconds

    def line(self) -> str:
        cores = os.cpu_count() or 1
        return (f"  machine during this section ({self.seconds:.0f} s): other processes used "
                f"{self.others_cores:.2f} of {cores} cores, CPU steal {self.steal_pct:.1f}%")


class CpuMeter:
    """``with CpuMeter() as m: ...`` then ``m.window``."""

    def __enter__(self) -> CpuMeter:
        self._start = CpuSample.now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.window = CpuWindow(self._start, CpuSample.now())
