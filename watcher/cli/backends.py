"""The only place that builds backends: the local model, or the remote app with the local model
as its fallback."""

from __future__ import annotations

import threading
from collections.abc import Callable

from watcher import config
from watcher.errors import ConfigError
from watcher.metrics import Metrics
from watcher.stages.removal.base import Remover


def _local(settings: config.Settings, metrics: Metrics,
           cpu_slots: threading.Semaphore) -> Remover:
    from watcher.stages.removal.local import LocalRemover

    # one model run at a time, on every CPU worker's core (see LocalRemover)
    return LocalRemover(settings.model_path, threads=settings.cpu_workers, metrics=metrics,
                        runtime_setting=settings.local_runtime,
                        on_load=lambda c: metrics.set_runtime(c.runtime, c.precision))


def _gradio(settings: config.Settings, metrics: Metrics,
            cpu_slots: threading.Semaphore) -> Remover:
    from watcher.stages.removal import gradio

    return gradio.build(settings, metrics, cpu_slots)


# short name → factory; REMOVAL_BACKEND picks one (auto: gradio when GRADIO_API_URL is set).
# A factory gets the pipeline's CPU semaphore: a remote backend's local fallback must take a slot.
BACKENDS: dict[str, Callable[[config.Settings, Metrics, threading.Semaphore], Remover]] = {
    "local": _local, "gradio": _gradio}


def build_remover(settings: config.Settings, metrics: Metrics,
                  cpu_slots: threading.Semaphore) -> Remover:
    kind = settings.removal_kind
    if kind not in BACKENDS:
        raise ConfigError("REMOVAL_BACKEND", kind, "this backend is not available in this build")
    return BACKENDS[kind](settings, metrics, cpu_slots)
