"""The -mjpeg_port pages of `detector train` and `detector demo` in a real browser.

Headless Chromium (Debian's ``chromium`` package) driven by playwright, never a browser that
playwright downloads: the live image must load (``naturalWidth > 0``) within a time limit and the
status text must show the current iteration, formatted. Skipped, saying why, where Chromium or
playwright is missing (``.ci/run`` installs both). Loopback only, every wait bounded.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import cv2
import pytest

from conftest import REPO
from http_fixtures import free_port, open_stream
from train_fixtures import make_facemask_workdir

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:                       # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium browser on PATH (Debian package "
                       "'chromium': apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install "
                       "playwright; the system Chromium is used, no browser download)"),
]

#: seconds the page's image may take to show
IMAGE_LIMIT_MS = 20000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def page_shows_image(browser, url: str):
    """Open ``url``; wait for the live image to be decoded; return the status text."""
    page = browser.new_page()
    try:
        # the page never finishes loading (the image is an endless stream): DOM ready is enough
        page.goto(url, wait_until="domcontentloaded", timeout=IMAGE_LIMIT_MS)
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0",
                               timeout=IMAGE_LIMIT_MS)
        page.wait_for_function("document.getElementById('status').textContent.length > 0",
                               timeout=IMAGE_LIMIT_MS)
        return page.evaluate("document.getElementById('status').textContent")
    finally:
        page.close()


def _drain(stream, sink: list):
    for line in iter(stream.readline, ""):
        sink.append(line)


def test_train_page_shows_the_chart_and_fresh_status(browser, tmp_path):
    """`detector train -map -mjpeg_port`: while the (long) mAP of iteration 1 runs, the page's
    chart is shown and /status says iteration 1, its rate to 6 significant digits. The chart
    used to arrive only after the evaluation and, without the next part's boundary, never
    showed; /status said the previous iteration."""
    work = make_facemask_workdir(tmp_path / "w", n_train=4, n_valid=2, size=64, batch=2,
                                 max_batches=1, burn_in=1000)
    images = (work / "valid.txt").read_text().split()
    (work / "valid.txt").write_text("".join(images[i % 2] + "\n" for i in range(4000)))
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "train", "obj.data",
                          "small.cfg", "yolov4-tiny.conv.29", "-dont_show", "-map", "-workers",
                          "0", "-mjpeg_port", str(port)], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    err: list = []
    threading.Thread(target=_drain, args=(p.stderr, err), daemon=True).start()
    try:
        out = ""
        while "calculation mAP" not in out:
            line = p.stdout.readline()
            assert line, "".join(err)[-2000:]
            out += line
        status = json.loads(open_stream(port, "/status").read())
        assert status["iteration"] == "1 / 1", status
        rate = status["learning rate"]
        assert float(f"{rate:.6g}") == rate and len(repr(rate)) <= 12, rate
        text = page_shows_image(browser, f"http://127.0.0.1:{port}/")
        assert "iteration: 1 / 1" in text, text
        line = next(ln for ln in text.splitlines() if ln.startswith("learning rate: "))
        assert re.fullmatch(r"learning rate: [0-9.e+-]{1,12}", line), line
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()


def test_demo_page_shows_the_frames(browser, tmp_path):
    video = tmp_path / "long.avi"
    img = cv2.resize(cv2.imread(str(REPO / "data" / "dog.jpg")), (320, 240))
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for i in range(1500):                 # a minute or more of detection: outlives the check
        w.write(img if i % 2 else cv2.flip(img, 1))
    w.release()
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "demo",
                          str(REPO / "cfg" / "coco.data"), str(REPO / "cfg" / "yolo-fastest-1.1.cfg"),
                          str(REPO / "weights" / "yolo-fastest-1.1.weights"), str(video),
                          "-dont_show", "-mjpeg_port", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    err: list = []
    threading.Thread(target=_drain, args=(p.stderr, err), daemon=True).start()
    try:
        open_stream(port, "/status", wait=120).read()          # the server is up
        page_shows_image(browser, f"http://127.0.0.1:{port}/")
        assert p.poll() is None, "the demo ended before the page was checked"
    finally:
        p.kill()
        p.wait(timeout=60)
