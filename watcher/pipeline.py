"""The only place that knows the stage order: validate → remove → compose → publish.

Each stage is wrapped once with timing, metrics and logging. CPU-heavy stages hold one of the
``WORKERS`` CPU slots; a remote removal only waits on the network and holds none, so many remote
calls can be in flight while the CPU slots keep composing.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import ContextManager

from loguru import logger
from PIL import Image

from watcher import encoding, messages
from watcher.claim import Claims
from watcher.config import Settings
from watcher.errors import (UNEXPECTED, ClaimLost, ModelError, RejectedImage,
                            RemovalUnavailable)
from watcher.faults import Faults, folder_of, is_setup_error, probe_write
from watcher.metrics import Metrics
from watcher.model import Job, JobStatus
from watcher.outputs import OutputSpec, output_rel
from watcher.stages import checks
from watcher.stages import compose as compose_stage
from watcher.stages import publish, refine
from watcher.stages import validate
from watcher.stages.removal.base import Remover

# Errors of the disk itself: the photo is fine, so it waits in the inbox instead of _falhas/.
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ESTALE}
UNEXPECTED_REASON = messages.text(messages.ENGLISH, "reason.unexpected")
# A file's own alpha counts as a cut-out when at least this share of it is transparent.
_OWN_ALPHA_MIN_TRANSPARENT = 0.01
# A file that cannot be read yet may be an upload that paused longer than SETTLE_SECONDS: it goes
# back to the inbox, and is rejected only once it has looked the same to this daemon for this many
# settle periods (40 s by default), checked every _INCOMPLETE_RECHECK settle periods. Only what an
# unfinished upload can look like gets that grace: empty (created, nothing written yet), a valid
# start cut short ("incomplete"; "damaged": a truncated WebP has no decoder), and zeros where the
# start will go (uploaders that reserve the whole size first). A file whose first bytes are plainly
# something else (text, a PDF, another format's signature) is rejected at once.
MAY_BE_UPLOADING = frozenset({"empty", "incomplete", "damaged"})
INCOMPLETE_GRACE_SETTLES = 20
_INCOMPLETE_RECHECK_SETTLES = 5
_INCOMPLETE_REMEMBERED = 10_000
_ZEROS_LOOKED_AT = 64
STILL_UPLOADING = "it looks unfinished (it may still be uploading), so it is looked at again later"


class _Unwritable(Exception):
    """Writing into one of our own folders failed for a reason every photo would share."""

    def __init__(self, role: str, folder: Path, error: OSError) -> None:
        super().__init__(f"{role} folder {folder}: {error}")
        self.role, self.folder, self.error = role, folder, error


@dataclass(frozen=True)
class Folders:
    output: Path
    processed: Path
    failed: Path


@dataclass
class Rendered:
    """What the pure part of the pipeline produced for one input: one file per output, each
    with its path relative to OUTPUT_PATH."""

    files: list[tuple[OutputSpec, PurePosixPath, bytes]]
    backend: str
    # failed output checks, "amazon: fill 0.80 < 0.85": reported, never a reason to withhold
    problems: list[str] = field(default_factory=list)

    @property
    def rel(self) -> PurePosixPath:
        return self.files[0][1]

    @property
    def data(self) -> bytes:
        return self.files[0][2]


class Pipeline:
    def __init__(self, settings: Settings, remover: Remover, metrics: Metrics,
                 cpu_slots: threading.Semaphore | None = None) -> None:
        self.remover = remover
        self.metrics = metrics
        self.cpu = cpu_slots or threading.BoundedSemaphore(settings.cpu_workers)
        self.limits = validate.Limits(settings.max_file_size, settings.max_pixels,
                                      settings.allowed_formats, settings.output_size)
        self.plan = settings.plan
        for spec in self.plan.outputs:  # zeros before the first photo, so rates start at 0
            metrics.expect_checks(spec.name, checks.applicable(spec))
        self.backgrounds = compose_stage.Backgrounds(settings.background_path,
                                                     settings.output_size)
        self.folders = Folders(settings.output_path, settings.processed_path,
                               settings.failed_path)
        self.tag = settings.worker_id
        self.language = settings.language  # of the shop's lines of each .erro.txt
        self.faults = Faults()
        self.incomplete_grace = INCOMPLETE_GRACE_SETTLES * settings.settle_seconds
        self.incomplete_hold = _INCOMPLETE_RECHECK_SETTLES * settings.settle_seconds
        # rel → ((size, mtime_ns), when this daemon first saw it incomplete in that state)
        self._incomplete: OrderedDict[PurePosixPath, tuple[tuple[int, int], float]] = (
            OrderedDict())
        # rel → (size, mtime_ns) of files known to have arrived whole (the page's uploads)
        self._whole: OrderedDict[PurePosixPath, tuple[int, int]] = OrderedDict()
        self._incomplete_lock = threading.Lock()
        # One photo decoded at a time: decoding is when a photo takes the most memory (a 24 MP
        # JPEG: its bytes, the draft and the working copy, ~45 MB), and two at once were the
        # daemon's peak. It is a small part of a photo's time, so the workers rarely wait.
        self._decoding = threading.Lock()

    # -- the stages, timed ---------------------------------------------------------------------

    @contextmanager
    def _stage(self, job: Job, stage: str, slot: ContextManager[object]) -> Iterator[None]:
        with slot:
            start = time.perf_counter()
            try:
                yield
            finally:
                elapsed = time.perf_counter() - start
                job.durations[stage] = elapsed
                self.metrics.stage_seconds.labels(stage).observe(elapsed)

    def render(self, job: Job, source: Path) -> Rendered:
        """Validate, remove and compose ``source`` into each of its outputs: decoded once, one
        mask, then one canvas per output. Raises RejectedImage / RemovalUnavailable."""
        specs = self.plan.for_rel(job.rel)
        limits = replace(self.limits, target=working_target(specs))
        with self._stage(job, "validate", self.cpu):
            data = validate.read_input(source, limits.max_bytes)  # a slow share blocks no one
            with self._decoding:
                photo = validate.decode(data, limits)
            del data
        rgb, own_alpha = _split_alpha(photo.image)
        del photo  # its bytes (up to MAX_FILE_SIZE) are not needed past decoding
        remove_slot = self.cpu if self.remover.cpu_bound else nullcontext()
        with self._stage(job, "remove", remove_slot if own_alpha is None else nullcontext()):
            if own_alpha is not None:
                mask, job.backend = own_alpha, "input-alpha"
            else:
                mask, job.backend = self.remover.mask(rgb), self.remover.name
        files, problems = [], []
        with self._stage(job, "compose", self.cpu):
            # one clean mask for every output, remote or local (a shop's own cut-out stays
            # as it is); the edges the photo's frame cuts anchor the product on the canvas
            if own_alpha is None:
                refined = refine.refine(mask, rgb)
                # a product the model saw only faintly (a tiny photo) is kept as the model saw
                # it: cleaning never turns a photo into "no product"
                mask = refined if refined.getbbox() is not None else mask
            anchor = refine.touching_edges(mask)
            box = compose_stage.product_box(mask) if any(s.size for s in specs) else None
            for spec in specs:
                placed = None
                if spec.size is None:  # the cut-out itself, at the photo's own size
                    image = compose_stage.cutout(rgb, mask)
                else:
                    canvas = compose_stage.canvas_for(spec, self.backgrounds, job.rel)
                    assert spec.fill is not None
                    placed = compose_stage.place(rgb, mask, canvas, spec.fill, anchor,
                                                 shadow=spec.shadow, pure_white=spec.pure_white,
                                                 box=box)
                    image = placed.image
                data = encoding.encode(image, spec)
                files.append((spec, output_rel(job.rel, spec, self.plan.by_name), data))
                problems += self._check(job, spec, data, spec.size or rgb.size, placed)
                del image, placed
        return Rendered(files, job.backend, problems)

    def _check(self, job: Job, spec: OutputSpec, data: bytes, size: tuple[int, int],
               placed: compose_stage.Composed | None) -> list[str]:
        """Check one output as encoded; count each check, log and return the failed ones."""
        failed = []
        for result in checks.check(spec, data, size, placed.mask if placed else None,
                                   placed.at if placed else (0, 0)):
            self.metrics.output_checks.labels(spec.name, result.check, result.outcome).inc()
            if not result.ok:
                logger.bind(file=str(job.rel), output=spec.name, check=result.check).warning(
                    "{} → {}: {} (published all the same)", job.rel, spec.name, result.detail)
                failed.append(f"{spec.name}: {result.detail}")
        return failed

    def run(self, job: Job, claims: Claims) -> Job:
        """Take a claimed job to its end: published, rejected, failed, released or lost."""
        assert job.claimed is not None
        if job.claim_id is None:  # taken right after the claim by the worker; else now
            job.claim_id = claims.identity(job.claimed)
        try:
            self._attempt(job, claims)
        except ClaimLost as exc:
            # another daemon took the file back while we were stalled past the lease: whatever
            # we made is dropped; the file is that daemon's now
            job.status, job.reason = JobStatus.LOST, (
                "this daemon lost its claim: another daemon took the file back while this one "
                f"was stalled for longer than CLAIM_LEASE_SECONDS; {exc}")
        except _Unwritable as exc:
            self.faults.folder(exc.folder, exc.role, exc.error.strerror or str(exc.error))
            self._release(job, claims, f"the {exc.role} folder cannot be written")
        return job

    def _attempt(self, job: Job, claims: Claims) -> None:
        assert job.claimed is not None
        fence = partial(claims.owns, job.claimed, job.claim_id)
        try:
            rendered = self.render(job, job.claimed)
            with self._stage(job, "publish", nullcontext()):
                with self._writing("output", self.folders.output):
                    written = publish.write_set(
                        self.folders.output, [(rel, data) for _, rel, data in rendered.files],
                        self.tag, fence)
                job.output = written[0][0]
                with self._writing("processed", self.folders.processed):
                    publish.archive_original(job.claimed, self.folders.processed, job.rel)
            for path, replaced in written:
                if replaced:
                    logger.bind(file=str(job.rel)).warning(
                        "thumbnail {} replaced an earlier one of the same name",
                        path.relative_to(self.folders.output))
            self._forget_incomplete(job.rel)
            job.status = JobStatus.DONE
        except (ClaimLost, _Unwritable):
            raise
        except RejectedImage as exc:
            if _may_be_unfinished(exc.kind, job.claimed) and self._may_still_be_uploading(job):
                job.hold = self.incomplete_hold
                self._release(job, claims, STILL_UPLOADING)
                return
            self._forget_incomplete(job.rel)
            self._reject(job, fence, exc.reason, exc.kind, exc.stage, type(exc).__name__,
                         exc.detail, JobStatus.REJECTED, exc.key, exc.fields)
        except RemovalUnavailable as exc:
            self._release(job, claims, str(exc))
        except ModelError as exc:
            self._model_fault(exc)
            self._release(job, claims, "the background-removal model cannot run")
        except OSError as exc:
            if exc.errno in _TRANSIENT_ERRNOS:
                logger.bind(file=str(job.rel)).error("disk problem, the file waits: {}", exc)
                self._release(job, claims, str(exc))
            else:
                self._fail(job, fence, exc)
        except Exception as exc:  # the per-item boundary: log, count, keep the file, go on
            self._fail(job, fence, exc)

    @contextmanager
    def _writing(self, role: str, root: Path) -> Iterator[None]:
        """Turn a setup error (permission, read-only) writing into one of our folders into a
        fault of the daemon: the photo is not to blame."""
        try:
            yield
        except OSError as exc:
            if is_setup_error(exc):
                raise _Unwritable(role, folder_of(exc, root), exc) from exc
            if probe_write(root) is not None:  # the folder itself is gone, or is now a file
                raise _Unwritable(role, root, exc) from exc
            raise

    def _model_fault(self, exc: ModelError) -> None:
        load = getattr(self.remover, "load", None)

        def check() -> str | None:
            if not callable(load):
                return None
            try:
                load()
            except ModelError as still:
                return str(still)
            return None

        self.faults.report("model", _MODEL_HINT.sub("", str(exc)),
                           "run `thumbgen models fetch` as the daemon's user, or point "
                           "MODEL_PATH at the model file", check)

    def check_setup(self) -> None:
        """At start-up: report what would fail every photo before a photo finds it."""
        for role, folder in (("output", self.folders.output),
                             ("processed", self.folders.processed),
                             ("failed", self.folders.failed)):
            problem = probe_write(folder)
            if problem is not None:
                self.faults.folder(folder, role, problem)
        setup_problem = getattr(self.remover, "setup_problem", None)
        problem = setup_problem() if callable(setup_problem) else None
        if problem is not None:
            self._model_fault(ModelError(problem))

    def _may_still_be_uploading(self, job: Job) -> bool:
        """True until the incomplete file has stayed the same (size, mtime) for the grace time,
        as seen by this daemon: a writer that paused is given time to finish. Another daemon
        that takes the file meanwhile starts its own count, so none rejects it sooner."""
        assert job.claimed is not None
        if self.incomplete_grace <= 0:  # SETTLE_SECONDS 0: files are complete when they appear
            return False
        try:
            st = os.lstat(job.claimed)
        except OSError:
            return False
        state, now = (st.st_size, st.st_mtime_ns), time.monotonic()
        with self._incomplete_lock:
            if self._whole.get(job.rel) == state:
                return False  # arrived whole and unchanged since: damaged, not unfinished
            seen = self._incomplete.get(job.rel)
            # said once per file: the checks that follow are quiet (the log says when it is done
            # or rejected)
            job.quiet = seen is not None
            if seen is None or seen[0] != state:
                self._incomplete[job.rel] = (state, now)
                self._incomplete.move_to_end(job.rel)
                while len(self._incomplete) > _INCOMPLETE_REMEMBERED:
                    self._incomplete.popitem(last=False)
                return True
            return now - seen[1] < self.incomplete_grace

    def known_whole(self, rel: PurePosixPath, path: Path) -> None:
        """``path``, at ``rel`` in the inbox, arrived whole: the page renamed it in once the
        upload was complete. If it does not decode, that is damage, not an upload still going,
        so it is rejected at once rather than after the grace. (Another replica that takes it
        gives the grace as usual; a file changed since is given it too.)"""
        try:
            st = os.lstat(path)
        except OSError:
            return
        with self._incomplete_lock:
            self._whole[rel] = (st.st_size, st.st_mtime_ns)
            self._whole.move_to_end(rel)
            while len(self._whole) > _INCOMPLETE_REMEMBERED:
                self._whole.popitem(last=False)

    def _forget_incomplete(self, rel: PurePosixPath) -> None:
        with self._incomplete_lock:
            self._incomplete.pop(rel, None)
            self._whole.pop(rel, None)

    @staticmethod
    def _release(job: Job, claims: Claims, reason: str) -> None:
        """Back to the inbox to wait; unless a forced shutdown already put it back, or another
        daemon took it back (then it is not ours to move)."""
        assert job.claimed is not None
        job.reason = reason
        job.status = JobStatus.RELEASED
        if claims.owns(job.claimed, job.claim_id):
            claims.release(job.claimed, job.rel)

    def _fail(self, job: Job, fence: publish.Fence, exc: Exception) -> None:
        if not fence():  # e.g. the file went from under a read: another daemon took it back
            raise ClaimLost(f"the file left the claim folder while it was worked on ({exc})")
        logger.bind(file=str(job.rel)).exception("unexpected error processing {}", job.rel)
        stage = next(reversed(job.durations), "validate") if job.durations else "validate"
        self._reject(job, fence, UNEXPECTED_REASON, UNEXPECTED, stage, type(exc).__name__,
                     str(exc), JobStatus.FAILED, key=UNEXPECTED)

    def _reject(self, job: Job, fence: publish.Fence, reason: str, kind: str, stage: str,
                error: str, detail: str, status: JobStatus, key: str | None = None,
                fields: Mapping[str, object] | None = None) -> None:
        """To _falhas/ with its note: the shop's two lines (``reason.<key>`` and the advice for
        ``kind``) in LANGUAGE, the technical lines and the log in English."""
        assert job.claimed is not None
        shop_reason, advice = messages.shop_lines(self.language, kind, key, fields or {}, reason)
        with self._writing("failed", self.folders.failed):
            job.output = publish.reject(job.claimed, self.folders.failed, job.rel,
                                        reason=shop_reason, kind=kind, stage=stage, error=error,
                                        detail=detail, advice=advice, fence=fence)
        job.reason, job.kind = reason, kind
        job.status = status


# the model's own errors end with this hint; the fault says what to do in its own words
_MODEL_HINT = re.compile(r"[;:,]? *(it may be corrupt: )?run `thumbgen models fetch`.*$")


def _may_be_unfinished(kind: str, path: Path) -> bool:
    """Could this rejection be an upload that has not finished? (see MAY_BE_UPLOADING)"""
    if kind in MAY_BE_UPLOADING:
        return True
    if kind != "not_a_photo":
        return False
    try:
        with open(path, "rb", buffering=0) as fh:  # the claimed file: a regular file by now
            start = fh.read(_ZEROS_LOOKED_AT)
    except OSError:
        return False
    return start.count(0) == len(start)  # reserved zeros, the real start still to come


def working_target(specs: tuple[OutputSpec, ...]) -> tuple[int, int]:
    """The least size the decoded photo must keep to serve every output: the largest canvas, or
    the photo's own size when one output is the cut-out at full size."""
    if any(spec.size is None for spec in specs):
        return (1 << 20, 1 << 20)  # more than any photo: nothing is reduced
    side = max(max(spec.size) for spec in specs if spec.size is not None)
    return (side, side)


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """RGB for the remover, and the file's own alpha when it already is a cut-out."""
    if image.mode != "RGBA":
        return image, None
    alpha = image.getchannel("A")
    histogram = alpha.histogram()
    transparent = sum(histogram[:128]) / max(1, image.size[0] * image.size[1])
    rgb = image.convert("RGB")
    return rgb, (alpha if transparent >= _OWN_ALPHA_MIN_TRANSPARENT else None)
