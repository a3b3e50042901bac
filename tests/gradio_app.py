"""A real Gradio server that mirrors the Space ``not-lain/background-removal``, for tests only.

Three tabs, as on the Space: ``/image`` (``image: filepath`` → a pair: cut-out, original),
``/text`` (``image``: an image URL → the same pair) and ``/png`` (``f: filepath`` → the path of a
transparent PNG). The cut-out is real but cheap: a pixel is background when its colour is close
to the top-left corner's; or, with the ``model`` hook, the local U²-Net-p's mask (a real model
that, like the Space's at ~1024², sees the photo at a fixed 320², answered at the photo's size).

Test hooks are read from ``<control>/control.json`` on every call (absent keys are off):

- ``delay``: seconds every call sleeps before answering (a slow Space);
- ``raise``: a message every call raises as ``gr.Error`` (the client sees ``AppError``);
- ``hang_calls``: the next N calls hang until the hook is cleared (or 120 s pass);
- ``refuse_width``: images of exactly this width are refused as unreadable;
- ``result``: ``"opaque"`` answers a PNG without alpha, ``"squashed"`` one of the wrong aspect;
- ``model``: the path of ``u2netp.onnx``: the cut-out's alpha is that model's mask (benches);
- ``generation``: a new value resets the counters.

Counters (calls per endpoint, in flight now, peak in flight, widths and sizes seen) are written to
``<control>/stats.json`` after every change. Run it as a script:
``python tests/gradio_app.py --port N --control DIR [--concurrency 4] [--max-size 0]``, or from a
test through ``GradioServer``, which starts it as a subprocess (so that killing it mid-call and
starting it later are real) and pulls the levers. ``gradio`` is imported only by the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import gradio as gr

_BACKGROUND_DISTANCE = 60  # sum of |RGB - corner| above which a pixel belongs to the product
_HANG_LIMIT = 120.0


class Hooks:
    """Reads the control file and keeps the counters the tests assert on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.generation: object = None
        self.stats: dict[str, Any] = {}
        self.hung = 0
        self._reset(None)

    def control(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / "control.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _reset(self, generation: object) -> None:
        self.generation = generation
        self.hung = 0
        active = self.stats.get("active", 0)  # hung calls of an earlier generation still run
        self.stats = {"generation": generation, "calls": {}, "active": active, "peak": active,
                      "widths": [], "sizes": [], "finished": 0}

    def _write(self) -> None:
        tmp = self.folder / ".stats.json.tmp"
        tmp.write_text(json.dumps(self.stats))
        os.replace(tmp, self.folder / "stats.json")

    def enter(self, endpoint: str, size: tuple[int, int]) -> dict[str, Any]:
        control = self.control()
        with self.lock:
            if control.get("generation") != self.generation:
                self._reset(control.get("generation"))
            s = self.stats
            s["calls"][endpoint] = s["calls"].get(endpoint, 0) + 1
            s["active"] += 1
            s["peak"] = max(s["peak"], s["active"])
            s["widths"].append(size[0])
            s["sizes"].append(list(size))
            hang = self.hung < int(control.get("hang_calls", 0))
            if hang:
                self.hung += 1
            self._write()
        control["_hang"] = hang
        return control

    def leave(self) -> None:
        with self.lock:
            self.stats["active"] -= 1
            self.stats["finished"] += 1
            self._write()

    def hang(self) -> None:
        deadline = time.monotonic() + _HANG_LIMIT
        while time.monotonic() < deadline and self.control().get("hang_calls"):
            time.sleep(0.05)


def cut_out(image: Image.Image, model: str = "") -> Image.Image:
    """RGBA: alpha 255 where the colour is far from the top-left corner's, else 0; or, given
    ``model``, the alpha of that U²-Net-p model."""
    if model:
        rgba = image.convert("RGBA")
        rgba.putalpha(_local(model).mask(image.convert("RGB")))
        return rgba
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    distance = np.abs(rgb - rgb[0, 0]).sum(axis=2)
    alpha = np.where(distance > _BACKGROUND_DISTANCE, 255, 0).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb.astype(np.uint8), alpha]), "RGBA")


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _local(path: str) -> Any:
    """One loaded model per path, shared by the server's threads."""
    from watcher.stages.removal.local import LocalRemover

    with _MODELS_LOCK:
        if path not in _MODELS:
            _MODELS[path] = LocalRemover(Path(path))
        return _MODELS[path]


def make_app(hooks: Hooks) -> gr.Blocks:
    import gradio as gr
    def remove(endpoint: str, image: Image.Image) -> str:
        control = hooks.enter(endpoint, image.size)
        try:
            if control["_hang"]:
                hooks.hang()
            if control.get("delay"):
                time.sleep(float(control["delay"]))
            if control.get("raise"):
                raise gr.Error(str(control["raise"]))
            if control.get("refuse_width") == image.width:
                raise gr.Error("cannot identify image file")
            result = cut_out(image, str(control.get("model") or ""))
            if control.get("result") == "opaque":
                result = result.convert("RGB")
            elif control.get("result") == "squashed":
                result = result.resize((result.width, max(1, result.height // 2)))
            # one folder per call: identical inputs share an upload path on the server
            out = Path(tempfile.mkdtemp()) / "no_bg_image.png"
            result.save(out, compress_level=1)
            return str(out)
        finally:
            hooks.leave()

    def load(source: str) -> Image.Image:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310
                path = Path(tempfile.mkdtemp()) / "download"
                path.write_bytes(response.read())
                source = str(path)
        with Image.open(source) as im:
            return im.convert("RGB")

    def fn_image(image: str) -> tuple[str, str]:
        return remove("image", load(image)), image

    def fn_text(image: str) -> tuple[str, str]:
        return remove("text", load(image)), image

    def process_file(f: str) -> str:
        return remove("png", load(f))

    tab1 = gr.Interface(fn_image, inputs=gr.Image(type="filepath", label="Upload an image"),
                        outputs=gr.ImageSlider(type="filepath", label="birefnet"),
                        api_name="image")
    tab2 = gr.Interface(fn_text, inputs=gr.Textbox(label="Paste an image URL"),
                        outputs=gr.ImageSlider(type="filepath", label="birefnet"),
                        api_name="text")
    tab3 = gr.Interface(process_file, inputs=gr.Image(type="filepath", label="Upload an image"),
                        outputs=gr.File(label="output png file"), api_name="png")
    return gr.TabbedInterface([tab1, tab2, tab3], ["image", "text", "png"],
                              title="Birefnet for background removal")


class GradioServer:
    """This file's server as a subprocess on 127.0.0.1, seen from a test.

    Its temp folders (``GRADIO_TEMP_DIR``, ``TMPDIR``) are under ``root``, never ``/tmp``.
    ``port`` stays the same across ``kill()`` and ``start()``: the daemon's URL keeps working.
    """

    def __init__(self, root: Path, port: int = 0, concurrency: int = 4, max_size: int = 0) -> None:
        self.root = root
        self.control = root / "control"
        self.control.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.concurrency = concurrency
        self.max_size = max_size
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.set()

    def launch(self) -> GradioServer:
        """Start the process; it answers a few seconds later (see ``wait_ready``)."""
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_TEMP_DIR": str(self.root / "gradio"), "TMPDIR": str(self.root / "tmp"),
               "NO_PROXY": "127.0.0.1,localhost"}
        (self.root / "tmp").mkdir(exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--port", str(self.port), "--control", str(self.control),
             "--concurrency", str(self.concurrency), "--max-size", str(self.max_size)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def wait_ready(self, timeout: float = 60) -> GradioServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if httpx.get(self.url + "config", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the Gradio test server did not start:\n{self.log()}")

    def start(self) -> GradioServer:
        return self.launch().wait_ready()

    def kill(self) -> None:
        """SIGKILL: the server dies mid-call, as a crashed Space does."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.set()  # let hung calls end
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def set(self, **hooks: Any) -> None:
        """Replace the hooks (see the module docstring); counters keep counting."""
        tmp = self.control / ".control.json.tmp"
        tmp.write_text(json.dumps({**hooks, "generation": self.generation}))
        os.replace(tmp, self.control / "control.json")

    def reset(self) -> None:
        """No hooks, and counters from zero at the next call."""
        self.generation += 1
        self.set()

    def stats(self) -> dict[str, Any]:
        """Counters of the current generation: calls (per endpoint), active, peak, widths,
        sizes ([width, height] per call)."""
        try:
            stats = json.loads((self.control / "stats.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            stats = {}
        if stats.get("generation") != self.generation:
            return {"calls": {}, "active": 0, "peak": 0, "widths": [], "sizes": [], "finished": 0}
        return stats

    def calls(self) -> int:
        return sum(self.stats()["calls"].values())

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-size", type=int, default=0, help="queue size; 0 = unbounded")
    args = parser.parse_args()
    args.control.mkdir(parents=True, exist_ok=True)
    demo = make_app(Hooks(args.control))
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_size or None)
    # Gradio's queue polls every 1 ms when idle: ~9 % of a core for the whole test session on a
    # machine where the tests and the daemon under test need the cores. 5 ms costs ≤ 5 ms a call.
    demo._queue.sleep_when_free = 0.005
    demo.launch(server_name="127.0.0.1", server_port=args.port, show_error=True,
                prevent_thread_lock=False, quiet=True)


if __name__ == "__main__":
    main()
