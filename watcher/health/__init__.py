"""Is the daemon alive, is it ready, how is it doing: the checks behind /livez, /readyz, /health.

- **Alive** (``/livez``, systemd's ``WATCHDOG=1``): the file watcher's threads run, the main loop
  ticks, every worker thread lives and the workers make progress: idle workers refresh
  ``pool.last_progress`` every 0.2 s, and no file stays in work longer than ``stall_after``.
  Restarting fixes a daemon that is not alive; it would not bring a remote back, so a remote that
  is down never fails liveness.
- **Ready** (``/readyz``): the start-up scan is done, the daemon is not stopping, every folder
  it writes to takes a real write (a probe file created and removed: permissions alone do not stop
  root) and the disk is above the critical threshold.
- **/health**: the document ``{status, timestamp, uptime, checks: {application, dependencies,
  storage, resources}}``; each check has its own ``status`` and the worst one wins. A remote that
  is down, a breaker that is open, the fallback in use or a folder of the inbox whose photos wait
  (one the daemon cannot write, a filesystem mounted inside it) make it *degraded*; a daemon that
  is not alive or cannot write makes it *unhealthy* (HTTP 503).

The remover may offer ``state()``, a dict read here with these keys (all optional):
``reachable`` / ``remote_reachable`` (bool), ``breaker`` / ``breaker_state`` (``closed``, ``open``,
``half-open``), ``last_error`` (str), ``fallback_in_use`` / ``fallback_active`` (bool),
``local_model_loaded`` (bool), ``local_runtime`` (``{runtime, precision, why}``), ``waiting``
(bool: no fallback, files wait). A ``LocalRemover`` answers through its ``loaded`` and ``choice``
properties.

The package: ``verdicts.py`` (statuses, thresholds, probes) → ``checks.py`` (``Health``).
"""

from __future__ import annotations

from watcher.faults import probe_write
from watcher.health.checks import Health
from watcher.health.verdicts import (DEGRADED, HEALTHY, MIN_STALL_SECONDS, UNHEALTHY,
                                     DiskThresholds, Pulse, Verdict, remover_state,
                                     stall_seconds, watcher_alive, worst)

__all__ = ["Health", "Verdict", "DiskThresholds", "Pulse", "HEALTHY", "DEGRADED", "UNHEALTHY",
           "MIN_STALL_SECONDS", "worst", "probe_write", "remover_state", "watcher_alive",
           "stall_seconds"]
