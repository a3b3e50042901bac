"""Every Prometheus metric thumbgen exports, in one place, on an injectable registry.

Naming follows Prometheus conventions: ``thumbgen_`` prefix, ``_total`` for counters, base units
(``_seconds``, ``_bytes``). Tests build ``Metrics(CollectorRegistry())`` for a clean slate.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

from watcher import __version__
from watcher.errors import REJECT_KINDS, UNEXPECTED

# Stage latencies span a 10 ms compose to a two-minute remote call.
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGES = ("validate", "remove", "compose", "publish")
OUTCOMES = ("done", "rejected", "failed")
CHECK_OUTCOMES = ("pass", "fail")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # the default process, platform and GC collectors, on our own registry
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                try:
                    registry.register(collector)
                except ValueError:  # pragma: no cover - already registered
                    pass
        self.registry = registry
        r = registry
        self.files = Counter("thumbgen_files", "Input files finished, by outcome.", ["outcome"],
                             registry=r)
        self.failures = Counter("thumbgen_failures",
                                "Files that ended in _falhas/, by reason: the kind of rejection "
                                "(the `kind:` line of the .erro.txt), or unexpected.",
                                ["reason"], registry=r)
        self.claims_lost = Counter("thumbgen_claims_lost",
                                   "Results dropped because another daemon took the file back "
                                   "while this one was stalled past CLAIM_LEASE_SECONDS.",
                                   registry=r)
        self.setup_faults = Gauge("thumbgen_setup_faults",
                                  "Faults of the daemon's own setup in force (model, folders): "
                                  "while above 0, photos wait in the inbox.", registry=r)
        self.stage_seconds = Histogram("thumbgen_stage_seconds", "Time spent in each stage.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.removal_requests = Counter("thumbgen_removal_requests",
                                        "Background-removal calls, by backend and outcome.",
                                        ["backend", "outcome"], registry=r)
        self.output_checks = Counter("thumbgen_output_checks",
                                     "Checks of each output file against its preset's rules, by "
                                     "output, check and outcome (a failed one is still "
                                     "published).", ["output", "check", "outcome"], registry=r)
        self.queue_depth = Gauge("thumbgen_queue_depth",
                                 "Files seen in the inbox and not yet being processed.", registry=r)
        self.in_flight = Gauge("thumbgen_in_flight", "Files being processed now.", registry=r)
        self.cache_hits = Counter("thumbgen_cache_hits", "Cut-outs served from the cache.",
                                  registry=r)
        self.cache_misses = Counter("thumbgen_cache_misses", "Cut-outs not in the cache.",
                                    registry=r)
        self.backups = Counter("thumbgen_backups", "Backup runs, by outcome.", ["outcome"],
                               registry=r)
        self.last_backup = Gauge("thumbgen_last_backup_timestamp_seconds",
                                 "Unix time of the last complete backup.", registry=r)
        self.backup_bytes = Gauge("thumbgen_backup_bytes", "Size of the last backup set.",
                                  registry=r)
        self.cleanup_removed = Counter("thumbgen_cleanup_removed",
                                       "Files removed by retention cleanup, by kind.", ["kind"],
                                       registry=r)
        self.scheduled_jobs = Counter("thumbgen_scheduled_jobs",
                                      "Scheduled job runs (backup, cleanup), by outcome.",
                                      ["job", "outcome"], registry=r)
        self.rescans = Counter("thumbgen_rescans", "Full inbox rescans, by reason.", ["reason"],
                               registry=r)
        self.observer_restarts = Counter("thumbgen_observer_restarts",
                                         "Times the filesystem observer died and was restarted.",
                                         registry=r)
        # Read when Prometheus scrapes (Gauge.set_function), wired by health.Health.export.
        self.dependency_up = Gauge("thumbgen_dependency_up",
                                   "1 when a dependency can serve (remote reachable, local model "
                                   "present), 0 when it cannot.", ["dependency"], registry=r)
        self.breaker_open = Gauge("thumbgen_remote_breaker_open",
                                  "1 while the circuit breaker in front of the remote remover is "
                                  "open.", ["backend"], registry=r)
        self.storage_free = Gauge("thumbgen_storage_free_bytes",
                                  "Free bytes on the filesystem of each data folder.", ["folder"],
                                  registry=r)
        self.storage_size = Gauge("thumbgen_storage_size_bytes",
                                  "Size of the filesystem of each data folder.", ["folder"],
                                  registry=r)
        self.build_info = Info("thumbgen_build", "Version of thumbgen, and the runtime and "
                               "precision of the local model (none until it first loads).",
                               registry=r)
        self.set_runtime("none", "none")
        for outcome in OUTCOMES:
            self.files.labels(outcome)
        for reason in (*REJECT_KINDS, UNEXPECTED):
            self.failures.labels(reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage)

    def set_runtime(self, runtime: str, precision: str) -> None:
        """Say in ``thumbgen_build_info`` what runs the local model (LOCAL_RUNTIME's choice)."""
        self.build_info.info({"version": __version__, "runtime": runtime, "precision": precision})

    def expect_checks(self, output: str, checks: Iterable[str]) -> None:
        """Export zeros for the checks an output gets, before its first photo."""
        for check in checks:
            for outcome in CHECK_OUTCOMES:
                self.output_checks.labels(output, check, outcome)


__all__ = ["Metrics", "STAGES", "OUTCOMES", "CHECK_OUTCOMES"]
