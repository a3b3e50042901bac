"""``thumbgen diagnose``: what stands between this machine and a working daemon.

Each finding is one line, ``OK``, ``WARN`` or ``FAIL``, and every WARN or FAIL says what to do.
It checks the configuration, the folders and their permissions (by writing, since permission
bits do not stop root), free disk, the inotify limits, whether the remote remover answers,
whether the local model is in place, and which runtime and precision run it (it loads the model
as the daemon does). It changes nothing but a probe file it removes at once.
Every finding is masked (``masking.mask_text``): a password or token in a setting never shows.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from watcher import config, models, mounts
from watcher.config import Settings
from watcher.errors import ModelError
from watcher.health import DiskThresholds, probe_write
from watcher.masking import mask_text

OK, WARN, FAIL = "OK", "WARN", "FAIL"
INOTIFY = Path("/proc/sys/fs/inotify")
MIN_QUEUED_EVENTS = 16384
_MAX_FOLDERS_COUNTED = 1_000_000


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    text: str
    action: str = ""

    def line(self) -> str:
        todo = f"\n      -> {self.action}" if self.action else ""
        return f"{self.level:<4}  {self.topic:<11} {self.text}{todo}"


def run(settings: Settings, timeout: float = 5.0) -> list[Finding]:
    """Every finding, in the order an operator fixes things, with its secrets masked."""
    secrets = settings.secret_values()
    return [replace(f, text=mask_text(f.text, secrets), action=mask_text(f.action, secrets))
            for f in (*check_config(settings), *check_folders(settings), *check_disk(settings),
                      *check_inotify(settings), *check_remote(settings, timeout),
                      *check_model(settings), *check_runtime(settings))]


# -- configuration ---------------------------------------------------------------------------------

def check_config(s: Settings) -> Iterator[Finding]:
    changed = sorted(k for k, source in s.sources.items() if source != "default")
    yield Finding(OK, "config", f"valid; {len(changed)} value(s) set"
                  + (f" ({', '.join(changed)})" if changed else ", all defaults"))
    for name in config.unknown_env():
        yield Finding(WARN, "config", f"{name} is set but is no setting, so it is ignored",
                      "check its spelling against `thumbgen config`")
    cores = os.cpu_count() or 1
    if s.workers > cores:
        yield Finding(WARN, "config", f"WORKERS={s.workers} but this machine has {cores} core(s)",
                      "set WORKERS to the number of cores or less (0 = one per core)")
    if s.gradio_token and s.removal_kind != "gradio":
        yield Finding(WARN, "config", "GRADIO_TOKEN is set but the remote remover is not used",
                      "set GRADIO_API_URL, or remove the token")
    if os.environ.get("NOTIFY_SOCKET"):
        try:
            import systemd.daemon  # noqa: F401
        except ImportError:
            yield Finding(FAIL, "config", "NOTIFY_SOCKET is set but systemd-python is missing",
                          "pip install 'thumbgen[systemd]' into the daemon's venv")


# -- folders and disk ------------------------------------------------------------------------------

def _writable_folders(s: Settings) -> dict[str, Path]:
    return {"inbox": s.upload_path, "output": s.output_path, "processed": s.processed_path,
            "failed": s.failed_path, "state": s.state_path, "logs": s.log_path,
            "backups": s.backup_path}


def _who() -> str:
    return f"uid {os.geteuid()}"


def check_folders(s: Settings) -> Iterator[Finding]:
    for role, path in _writable_folders(s).items():
        yield _folder_finding(role, path)
    yield _backgrounds_finding(s.background_path)
    yield from _same_filesystem(s)
    yield from _mounts_inside(s)


def _folder_finding(role: str, path: Path) -> Finding:
    problem = probe_write(path)
    if problem is None:
        return Finding(OK, role, f"{path} is writable")
    if problem == "missing":
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if probe_write(parent) is None:
            return Finding(OK, role, f"{path} does not exist yet; it is created when first "
                           "needed")
        return Finding(FAIL, role, f"{path} does not exist and {parent} is not writable by "
                       f"{_who()}", f"create it: mkdir -p {path} && chown <daemon user> {path}")
    if problem == "not a folder":
        return Finding(FAIL, role, f"{path} is not a folder",
                       "move that file away and create the folder")
    st = path.stat()
    return Finding(FAIL, role, f"{path} is {problem} for {_who()} (owner uid {st.st_uid}, "
                   f"mode {st.st_mode & 0o7777:o})",
                   f"give the daemon's user write access: chown -R <daemon user> {path}, or a "
                   "shared group with g+rwx and the setgid bit; check for a read-only mount, "
                   f"and for the immutable flag (`lsattr -d {path}`; `chattr -i` clears it)")


def _backgrounds_finding(folder: Path) -> Finding:
    if not folder.is_dir():
        return Finding(WARN, "backgrounds", f"{folder} does not exist: thumbnails get a plain "
                       "white background", f"put a default.jpg in {folder}")
    images = [p for p in folder.rglob("*")
              if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and p.is_file()]
    if not images:
        return Finding(WARN, "backgrounds", f"no images in {folder}: thumbnails get a plain "
                       "white background", f"put a default.jpg in {folder}")
    return Finding(OK, "backgrounds", f"{len(images)} image(s) in {folder}")


def _same_filesystem(s: Settings) -> Iterator[Finding]:
    """Claims and moves to _processados/_falhas are renames: one filesystem, or not atomic."""
    try:
        inbox = s.upload_path.stat().st_dev
    except OSError:
        return
    for role, path in (("state", s.state_path), ("processed", s.processed_path),
                       ("failed", s.failed_path)):
        try:
            if path.stat().st_dev != inbox:
                yield Finding(FAIL, role, f"{path} is on another filesystem than the inbox",
                              "claims and archiving are atomic renames: do not mount anything "
                              "inside the inbox")
        except OSError:
            continue


def _mounts_inside(s: Settings) -> Iterator[Finding]:
    """A filesystem mounted inside the inbox: its photos cannot be claimed (a rename across
    filesystems fails), so they would wait there for ever."""
    real = Path(os.path.realpath(s.upload_path))
    for mount in mounts.inside(s.upload_path):
        shown = s.upload_path / mount.point.relative_to(real)
        yield Finding(FAIL, "inbox", f"{shown} is another filesystem ({mount.fstype}) mounted "
                      "inside the inbox: photos there cannot be moved atomically, so they wait "
                      "there untouched", f"mount the share at the inbox itself ({s.upload_path}) "
                      "or at BASE_PATH instead of inside it")


def check_disk(s: Settings, thresholds: DiskThresholds | None = None) -> Iterator[Finding]:
    thresholds = thresholds or DiskThresholds()
    seen: set[int] = set()
    for role, path in _writable_folders(s).items():
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        st = os.statvfs(existing)
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        level = {"healthy": OK, "degraded": WARN, "unhealthy": FAIL}[
            thresholds.status(free, total)]
        text = (f"{free / 1024**3:.1f} GiB free of {total / 1024**3:.1f} GiB "
                f"({100 * free / max(total, 1):.0f}%) on the filesystem of {existing}")
        yield Finding(level, "disk", text, "" if level == OK else
                      f"free space there (warning below {thresholds.warning_bytes // 1024**2} "
                      f"MiB or {thresholds.warning_ratio:.0%}, critical below "
                      f"{thresholds.critical_bytes // 1024**2} MiB)")


# -- inotify ---------------------------------------------------------------------------------------

def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def count_folders(root: Path, limit: int = _MAX_FOLDERS_COUNTED) -> int:
    """Folders under ``root`` (itself included): one inotify watch each, hidden ones too."""
    count, stack = 0, [root]
    while stack and count < limit:
        folder = stack.pop()
        count += 1
        try:
            with os.scandir(folder) as entries:
                stack += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    return count


def check_inotify(s: Settings, proc: Path = INOTIFY) -> Iterator[Finding]:
    choice = mounts.choose(s.watch_mode, s.upload_path)
    if choice.mode == "polling":
        yield Finding(OK, "inotify", f"not used: polling every {s.poll_interval:g} s "
                      f"({choice.why})")
        return
    mount = mounts.mount_of(s.upload_path)
    if mount is not None and mount.needs_polling:  # WATCH_MODE=native on a share
        yield Finding(WARN, "inotify", f"the inbox is on {mount.fstype} ({mount.point}): "
                      "files written there by other hosts raise no event, and wait for a "
                      "full rescan", "set WATCH_MODE=auto (it polls there) or polling")
    watches = _read_int(proc / "max_user_watches")
    queued = _read_int(proc / "max_queued_events")
    if watches is None:
        level = FAIL if s.watch_mode == "native" else WARN
        yield Finding(level, "inotify", f"{proc} is not readable: no inotify here",
                      "set WATCH_MODE=polling (auto falls back to it by itself)")
        return
    folders = count_folders(s.upload_path) if s.upload_path.is_dir() else 1
    text = (f"watch mode native ({choice.why}): {folders} folder(s) to watch, "
            f"max_user_watches {watches} (shared by the user)")
    sysctl = ("raise it: echo fs.inotify.max_user_watches=524288 > "
              "/etc/sysctl.d/60-thumbgen.conf && sysctl --system")
    if folders > watches:
        level = FAIL if s.watch_mode == "native" else WARN
        yield Finding(level, "inotify", text + ": not enough" + (
            "; auto mode will poll instead" if level == WARN else ""), sysctl)
    elif folders > watches // 2:
        yield Finding(WARN, "inotify", text + ": more than half used", sysctl)
    else:
        yield Finding(OK, "inotify", text)
    if queued is not None and queued < MIN_QUEUED_EVENTS:
        yield Finding(WARN, "inotify", f"max_queued_events {queued}: bursts will overflow and "
                      "cost a full rescan", f"raise fs.inotify.max_queued_events to "
                      f"{MIN_QUEUED_EVENTS} or more")


# -- remote and model ------------------------------------------------------------------------------

def check_remote(s: Settings, timeout: float = 5.0) -> Iterator[Finding]:
    url = s.gradio_api_url
    if not url:
        yield Finding(OK, "remote", "none configured (GRADIO_API_URL empty): the local model "
                      "makes every cut-out")
        return
    if not url.startswith(("http://", "https://")):
        yield Finding(WARN, "remote", f"{url} is a Space id: it is resolved when the daemon "
                      "starts", "run `thumbgen health` against the running daemon to see "
                      "whether it is reachable")
        return
    unreachable = FAIL if not s.gradio_fallback_enabled else WARN
    consequence = ("files wait in the inbox" if unreachable == FAIL
                   else "the local model stands in")
    started = time.monotonic()
    try:
        status, body = _get(_config_url(url), s.gradio_token, timeout)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        yield Finding(unreachable, "remote", f"{url} does not answer ({type(exc).__name__}: "
                      f"{exc}); {consequence}", "check the URL, the network and proxy "
                      "settings, and that the app is running")
        return
    ms = (time.monotonic() - started) * 1000
    if status in (401, 403):
        yield Finding(unreachable, "remote", f"{url} refuses us (HTTP {status})",
                      "set GRADIO_TOKEN to a token with access to the app")
    elif status >= 400:
        yield Finding(unreachable, "remote", f"{_config_url(url)} answered HTTP {status}; "
                      f"{consequence}", "check that GRADIO_API_URL points at a Gradio app")
    else:
        yield _endpoint_finding(url, s.gradio_api_name, body, ms)


def _endpoint_finding(url: str, api_name: str, body: bytes, ms: float) -> Finding:
    try:
        config: dict[str, Any] = json.loads(body)
    except ValueError:
        return Finding(WARN, "remote", f"{url} answers but not like a Gradio app",
                       "check that GRADIO_API_URL points at a Gradio app")
    wanted = api_name.lstrip("/")
    names = {str(d.get("api_name", "")).lstrip("/") for d in config.get("dependencies", [])
             if isinstance(d, dict)}
    version = config.get("version", "?")
    if names and wanted not in names:
        return Finding(WARN, "remote", f"{url} (Gradio {version}) has no endpoint /{wanted}; "
                       f"it has {', '.join('/' + n for n in sorted(names) if n)}",
                       "set GRADIO_API_NAME to the endpoint that returns the cut-out")
    return Finding(OK, "remote", f"{url} answers in {ms:.0f} ms (Gradio {version}, "
                   f"endpoint /{wanted})")


def _config_url(url: str) -> str:
    """Where a Gradio app describes itself: ``/config`` under its path, the query kept (a token
    in it may be what lets us in)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path=parts.path.rstrip("/") + "/config").geturl()


def _get(url: str, token: str, timeout: float) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # by host name, so that a password before the host does not hide that it is this machine
    local = urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    with httpx.Client(timeout=timeout, trust_env=not local, follow_redirects=True) as client:
        answer = client.get(url, headers=headers)
        return answer.status_code, answer.content


def check_model(s: Settings) -> Iterator[Finding]:
    needed = s.removal_kind == "local" or s.gradio_fallback_enabled
    path = s.model_path
    if models.verify(path):
        yield Finding(OK, "model", f"{path} is present and its sha256 matches")
        return
    state = "corrupt or another file" if path.exists() else "missing"
    if not needed:
        yield Finding(OK, "model", f"{path} is {state}; not needed (remote only, no fallback)")
        return
    level = FAIL if s.removal_kind == "local" else WARN
    yield Finding(level, "model", f"{path} is {state}", "run `thumbgen models fetch` as the "
                  "daemon's user (it downloads and verifies the model)")


def check_runtime(s: Settings) -> Iterator[Finding]:
    """Loads the local model as the daemon would (LOCAL_RUNTIME, the probe under ``auto``) and
    says which runtime and precision run it."""
    from watcher.stages.removal import runtime

    if not (s.removal_kind == "local" or s.gradio_fallback_enabled):
        return
    if not s.model_path.is_file():
        yield Finding(OK, "runtime", f"LOCAL_RUNTIME={s.local_runtime}: would run "
                      f"{runtime.plan(s.local_runtime)}; not loaded (no model)")
        return
    try:
        _, choice = runtime.open_engine(s.local_runtime, s.model_path, s.cpu_workers)
    except ModelError as exc:
        yield Finding(FAIL, "runtime", f"LOCAL_RUNTIME={s.local_runtime}: the model does not "
                      f"load ({exc})", "run `thumbgen models fetch` (it replaces a damaged "
                      "file); if only OpenVINO fails, set LOCAL_RUNTIME=onnxruntime")
        return
    yield Finding(OK, "runtime", f"LOCAL_RUNTIME={s.local_runtime}: {choice}")


__all__ = ["run", "Finding", "OK", "WARN", "FAIL"]
