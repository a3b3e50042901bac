"""The daemon end to end, offline: files in, thumbnails out, nothing lost, failures explained."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import THUMBGEN, Daemon, daemon_env, visible_files, wait_for

pytestmark = pytest.mark.e2e


def _copy_products(data_dir: Path, inbox: Path) -> dict[str, bytes]:
    """The 9 sample photos: four at the top, the rest in ``camisetas/``. Returns rel → bytes."""
    originals = {}
    for n, src in enumerate(sorted((data_dir / "products").glob("*.jpg"))):
        rel = src.name if n < 4 else f"camisetas/{src.name}"
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, inbox / rel)
        originals[rel] = src.read_bytes()
    return originals


def _done_lines(log: str, rel: str) -> int:
    return len(re.findall(rf"done {re.escape(rel)} in ", log))


def test_sample_photos_become_thumbnails_with_folder_backgrounds(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon()
    # camisetas/ has its own background: a saturated blue the default never has
    Image.new("RGB", (600, 600), (20, 40, 200)).save(d.base / "backgrounds" / "camisetas.png")
    Image.new("RGB", (600, 600), (250, 250, 250)).save(d.base / "backgrounds" / "default.png")
    originals = _copy_products(data_dir, d.inbox)
    d.start()
    d.wait_started()
    d.wait_idle(len(originals))
    assert d.stop() == 0
    # a clean stop leaves no temp file of its own or of its libraries (onnxruntime's .ses)
    assert [p for p in (d.inbox / ".thumbgen" / "tmp").rglob("*")] == []

    for rel, data in originals.items():
        thumb = d.output / Path(rel).with_suffix(".jpg")
        assert thumb.is_file(), f"no thumbnail for {rel}"
        with Image.open(thumb) as im:
            assert (im.format, im.size) == ("JPEG", (1200, 1200))
            corner = im.convert("RGB").getpixel((5, 5))
        if rel.startswith("camisetas/"):
            assert corner[2] > 150 and corner[0] < 80, f"{rel}: folder background not used"
        else:
            assert min(corner) > 230, f"{rel}: default background not used"
        assert (d.processed / rel).read_bytes() == data, f"{rel} changed in _processados"
    assert not visible_files(d.failed)
    assert not [p for p in visible_files(d.inbox) if not str(p).count("/_")]


def test_hostile_files_are_thumbnailed_or_rejected_with_a_reason(
        daemon: Daemon, data_dir: Path) -> None:
    hostile = sorted((data_dir / "hostile").iterdir())
    for src in hostile:
        shutil.copyfile(src, daemon.inbox / src.name)
    daemon.wait_idle(len(hostile), timeout=120)
    assert daemon.running(), "the daemon died on hostile input"

    for src in hostile:
        thumb = daemon.output / (src.stem + ".jpg")
        rejected = daemon.failed / src.name
        if rejected.exists():
            assert rejected.read_bytes() == src.read_bytes(), f"{src.name} changed"
            reason = (daemon.failed / (src.name + ".erro.txt")).read_text().splitlines()
            assert reason[0].endswith(".") and len(reason[0]) > 20, reason
            assert any(line.startswith("stage: ") for line in reason)
        else:
            assert (daemon.processed / src.name).read_bytes() == src.read_bytes()
            with Image.open(thumb) as im:
                assert im.size == (1200, 1200)
    # the corrupt and truncated ones are among the rejected, with a plain sentence
    note = (daemon.failed / "truncated_jpeg.jpg.erro.txt").read_text()
    assert note.startswith("O arquivo não é uma imagem JPEG completa")  # LANGUAGE pt-BR
    assert (daemon.failed / "decompression_bomb.gif").exists()
    assert daemon.stop() == 0


def _big_jpeg(data_dir: Path, path: Path) -> bytes:
    with Image.open(data_dir / "products" / "mugs.jpg") as im:
        big = im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    # sensor-like grain, so the file has the size of a real 12 MP photo
    grain = Image.effect_noise((4000, 3000), 40).convert("RGB")
    Image.blend(big, grain, 0.08).save(path, quality=90)
    return path.read_bytes()


def test_slow_writer_is_processed_once_and_never_half_written(
        daemon: Daemon, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    data = _big_jpeg(data_dir, tmp_path_factory.mktemp("src") / "big.jpg")
    assert len(data) > 1_000_000
    target = daemon.inbox / "slow.jpg"
    chunks = 30
    step = -(-len(data) // chunks)
    with target.open("wb") as fh:  # 30 chunks over ~3 s, flushed, like an upload
        for n in range(chunks):
            fh.write(data[n * step:(n + 1) * step])
            fh.flush()
            time.sleep(0.1)
    daemon.wait_idle(1)
    time.sleep(1.5)  # longer than a settle window and a rescan: nothing more must happen
    log = daemon.log()
    assert _done_lines(log, "slow.jpg") == 1, log[-2000:]
    assert not visible_files(daemon.failed)
    assert (daemon.processed / "slow.jpg").read_bytes() == data
    assert daemon.stop() == 0


def test_an_upload_that_pauses_longer_than_the_settle_time_is_finished_not_rejected(
        daemon: Daemon, data_dir: Path) -> None:
    data = (data_dir / "products" / "mugs.jpg").read_bytes()
    target = daemon.inbox / "parada.jpg"
    with target.open("wb") as fh:  # a phone's upload: half, a 2.5 s stall, the rest
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(2.5)  # > SETTLE_SECONDS 0.3: the daemon takes it and finds it incomplete
        fh.write(data[len(data) // 2:])
    daemon.wait_idle(1, timeout=60)
    # the summary line is logged right after the original is archived: wait for it too
    wait_for(lambda: _done_lines(daemon.log(), "parada.jpg") >= 1, 10, message="its done line")
    log = daemon.log()
    assert "looks unfinished" in log  # it did find the half file, and let it wait
    assert _done_lines(log, "parada.jpg") == 1, log[-2000:]
    assert not visible_files(daemon.failed)
    assert (daemon.processed / "parada.jpg").read_bytes() == data
    assert daemon.stop() == 0


def test_moved_in_and_renamed_in_files_are_processed(
        daemon: Daemon, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    shutil.copyfile(data_dir / "products" / "books.jpg", outside / "moved.jpg")
    os.rename(outside / "moved.jpg", daemon.inbox / "moved.jpg")      # mv in
    partial = daemon.inbox / "renamed.jpg.part"                       # an upload's temp name
    shutil.copyfile(data_dir / "products" / "stickers.jpg", partial)
    time.sleep(0.5)
    os.rename(partial, daemon.inbox / "renamed.jpg")                  # renamed in place
    daemon.wait_idle(2)
    assert (daemon.output / "moved.jpg").is_file()
    assert (daemon.output / "renamed.jpg").is_file()
    assert daemon.stop() == 0


def test_symlink_and_fifo_are_rejected_without_hanging(daemon: Daemon, data_dir: Path,
                                                       tmp_path_factory: pytest.TempPathFactory
                                                       ) -> None:
    secret = tmp_path_factory.mktemp("secret") / "photo.jpg"
    shutil.copyfile(data_dir / "products" / "caps_cap_03.jpg", secret)
    os.symlink(secret, daemon.inbox / "link.jpg")
    os.mkfifo(daemon.inbox / "x.jpg")
    shutil.copyfile(data_dir / "products" / "mugs.jpg", daemon.inbox / "after.jpg")
    daemon.wait_idle(3)
    assert (daemon.failed / "link.jpg").is_symlink(), "the link itself is kept in _falhas"
    assert "link" in (daemon.failed / "link.jpg.erro.txt").read_text().splitlines()[0]
    assert (daemon.failed / "x.jpg.erro.txt").read_text().startswith("O arquivo é um pipe")
    assert (daemon.output / "after.jpg").is_file(), "a FIFO blocked the pipeline"
    assert not (daemon.output / "link.jpg").exists()
    assert secret.read_bytes() == (data_dir / "products" / "caps_cap_03.jpg").read_bytes()
    assert daemon.stop() == 0


def test_a_photo_the_daemon_may_not_read_is_rejected_with_what_to_do(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    # root reads any file whatever its mode: the daemon runs as root without the right to
    # override permissions (its bounding set), and the photo belongs to another uid, mode 0400
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1)")
    daemon = make_daemon()
    daemon.prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    locked = daemon.inbox / "locked.jpg"
    shutil.copyfile(data_dir / "products" / "mugs.jpg", locked)
    os.chown(locked, 12345, 12345)
    locked.chmod(0o400)
    shutil.copyfile(data_dir / "products" / "mugs.jpg", daemon.inbox / "open.jpg")
    daemon.start()
    daemon.wait_started()

    wait_for(lambda: (daemon.failed / "locked.jpg.erro.txt").exists()
             and (daemon.output / "open.jpg").is_file(), 30, message="both photos handled")

    note = (daemon.failed / "locked.jpg.erro.txt").read_text().splitlines()
    assert note[:2] == [
        "O thumbgen não tem permissão para ler este arquivo (o usuário com que ele roda no "
        "servidor não pode abri-lo).",
        "Peça a quem cuida do servidor que libere a leitura deste arquivo para o thumbgen; "
        "depois use Tentar de novo na página ou mova a foto de volta para produtos/."]
    assert "kind: not_readable" in note
    assert (daemon.failed / "locked.jpg").stat().st_uid == 12345, "the photo is kept as it was"
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0


def test_temp_and_system_files_are_left_alone(daemon: Daemon, data_dir: Path) -> None:
    ignored = ["upload.jpg.part", "download.jpg.crdownload", "x.tmp", "~$sheet.jpg",
               ".~lock.doc#", ".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.jpg",
               "_rascunhos/draft.jpg"]
    photo = (data_dir / "products" / "mugs.jpg").read_bytes()
    for rel in ignored:
        (daemon.inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (daemon.inbox / rel).write_bytes(photo)
    (daemon.inbox / "real.jpg").write_bytes(photo)
    daemon.wait_idle(1, left_alone=tuple(ignored))
    time.sleep(2.5)  # past a rescan
    for rel in ignored:
        assert (daemon.inbox / rel).read_bytes() == photo, f"{rel} was touched"
    assert [p.name for p in daemon.thumbnails()] == ["real.jpg"]
    assert daemon.stop() == 0


def test_same_stem_different_formats_both_processed_later_replaces(
        daemon: Daemon, data_dir: Path) -> None:
    src = data_dir / "products" / "caps_cap_03.jpg"
    shutil.copyfile(src, daemon.inbox / "a.jpg")
    with Image.open(src) as im:
        im.save(daemon.inbox / "a.png")
    daemon.wait_idle(2)
    assert (daemon.processed / "a.jpg").exists() and (daemon.processed / "a.png").exists()
    assert [p.name for p in daemon.thumbnails()] == ["a.jpg"]
    assert "replaced an earlier one" in daemon.log()
    assert daemon.stop() == 0


def test_two_daemons_on_one_folder_publish_each_file_once(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    a = make_daemon("a", WORKER_ID="node-a")
    b = make_daemon("b", WORKER_ID="node-b")
    a.start(), b.start()
    a.wait_started(), b.wait_started()
    photos = sorted((data_dir / "products").glob("*.jpg"))
    (a.inbox / "lote").mkdir()
    for n in range(50):
        shutil.copyfile(photos[n % len(photos)], a.inbox / f"lote/p{n:02d}.jpg")
    a.wait_idle(50, timeout=180)
    assert a.stop() == 0 and b.stop() == 0
    logs = a.log() + b.log()
    for n in range(50):
        assert _done_lines(logs, f"lote/p{n:02d}.jpg") == 1, f"p{n:02d} not done exactly once"
    assert len(visible_files(a.processed)) == 50
    assert len(a.thumbnails()) == 50
    done_by = [len(re.findall(r"done lote/p\d+\.jpg in ", d.log())) for d in (a, b)]
    assert min(done_by) > 0, f"one daemon did all the work ({done_by}): the test proves nothing"


def _fill_inbox(data_dir: Path, inbox: Path, count: int) -> None:
    photos = sorted((data_dir / "products").glob("*.jpg"))
    for n in range(count):
        shutil.copyfile(photos[n % len(photos)], inbox / f"f{n:02d}.jpg")


def test_sigterm_mid_work_exits_0_and_a_restart_finishes_the_rest(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon()
    _fill_inbox(data_dir, d.inbox, 24)
    d.start()
    wait_for(lambda: len(d.thumbnails()) >= 2, 60, message="the first thumbnails")
    assert d.stop(signal.SIGTERM) == 0
    done_first = len(visible_files(d.processed))
    assert done_first < 24, "everything finished before SIGTERM: the test proves nothing"
    left = [p for p in visible_files(d.inbox) if "_processados" not in str(p)]
    assert len(left) + done_first == 24, "a file was lost or duplicated at shutdown"
    claimed = d.inbox / ".thumbgen" / "claimed"
    assert not claimed.exists() or not list(claimed.iterdir()), "a clean stop left its claims"
    d.start()
    d.wait_idle(24)
    assert d.stop() == 0
    assert len(d.thumbnails()) == 24


def test_sigkill_mid_work_restart_finishes_everything_without_partial_output(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon()
    _fill_inbox(data_dir, d.inbox, 24)
    d.start()
    wait_for(lambda: len(d.thumbnails()) >= 2, 60, message="the first thumbnails")
    d.kill()
    assert len(visible_files(d.processed)) < 24
    d.start()
    d.wait_idle(24)
    assert d.stop() == 0
    thumbs = d.thumbnails()
    assert len(thumbs) == 24
    for thumb in thumbs:
        with Image.open(thumb) as im:
            im.load()  # a partial file would raise
            assert im.size == (1200, 1200)
    assert len(visible_files(d.processed)) == 24


def test_second_signal_exits_at_once_and_returns_claims(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon(SHUTDOWN_TIMEOUT="60")
    _fill_inbox(data_dir, d.inbox, 12)
    d.start()
    wait_for(lambda: len(d.thumbnails()) >= 1, 60, message="the first thumbnail")
    d.send(signal.SIGTERM)
    d.send(signal.SIGTERM)
    start = time.monotonic()
    d.stop(timeout=10)
    assert time.monotonic() - start < 10
    inputs = [p for p in visible_files(d.inbox) if "_processados" not in str(p)]
    assert len(inputs) + len(visible_files(d.processed)) == 12


@pytest.mark.parametrize(("key", "value"), [("WORKERS", "lots"), ("FILL_RATIO", "1.5"),
                                            ("WATCH_MODE", "sometimes")])
def test_bad_config_exits_2_naming_the_key(tree: Path, key: str, value: str) -> None:
    env = {**daemon_env(tree), f"THUMBGEN_{key}": value}
    proc = subprocess.run([THUMBGEN, "run"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert key in proc.stderr and value in proc.stderr


def test_process_command_leaves_inputs_untouched(tree: Path, data_dir: Path,
                                                 model_path: Path) -> None:
    src = tree / "fotos"
    shutil.copytree(data_dir / "products", src)
    (src / "broken.png").write_bytes((data_dir / "hostile" / "broken.png").read_bytes())
    before = {p: p.read_bytes() for p in src.iterdir()}
    out = tree / "saida"
    proc = subprocess.run([THUMBGEN, "process", str(src), "--out", str(out)], cwd=tree,
                          env=daemon_env(tree), capture_output=True, timeout=120)
    # bytes: text mode would turn each carriage return into a newline
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, stderr  # one file failed
    assert {p: p.read_bytes() for p in src.iterdir()} == before
    assert len(visible_files(out)) == 9
    assert "9/10" in stderr or "10/10" in stderr
    # not a terminal: each frame of the bar on a line of its own, never two glued together
    assert all(line.count("/10  ") <= 1 for line in stderr.split("\n")), stderr
    # what it says about a photo is for the shop: in LANGUAGE (pt-BR by default)
    assert "9 miniatura(s) de 9 foto(s) gravada(s)" in stdout and "1 falharam" in stdout
    assert "broken.png: O arquivo" in stderr
    english = subprocess.run([THUMBGEN, "process", str(src / "broken.png"), "--out", str(out)],
                             cwd=tree, env={**daemon_env(tree), "THUMBGEN_LANGUAGE": "en"},
                             capture_output=True, text=True, timeout=120)
    assert english.returncode == 1
    assert "0 thumbnail(s) of 0 photo(s) written" in english.stdout and "1 failed" in english.stdout
    assert "broken.png: The file" in english.stderr
