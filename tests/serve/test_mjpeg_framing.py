"""How a frame is cut into multipart parts: each part arrives whole, with what the client needs
to show it, before the next frame exists (a training chart's next frame may be minutes away)."""
import socket
import time

import cv2
import numpy as np
import pytest

from darknet_py.serve import MjpegServer

from http_fixtures import HOST

BROWSER_IMG_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


@pytest.fixture
def server():
    s = MjpegServer(0).start(announce=False)
    s.publish_image(np.full((48, 64, 3), 128, np.uint8))      # one frame, and no next one
    yield s
    s.close()


def read_available(port: int, accept: str, seconds: float = 5.0) -> bytes:
    """What a client gets for GET /stream.mjpg within ``seconds`` (the stream never ends)."""
    with socket.create_connection((HOST, port), timeout=seconds) as c:
        c.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: {HOST}\r\nAccept: {accept}\r\n\r\n"
                  .encode())
        data = b""
        deadline = time.monotonic() + seconds
        c.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                if b"\xff\xd9" in data:           # the JPEG is in: wait briefly for its trailer
                    deadline = min(deadline, time.monotonic() + 0.5)
                continue
            if not chunk:
                break
            data += chunk
        return data


def test_a_browser_gets_the_boundary_and_next_part_headers_with_the_frame(server):
    """Chromium shows a part once the next part's headers are parsed: they come right after
    the only frame, not with a next frame."""
    data = read_available(server.port, BROWSER_IMG_ACCEPT)
    body = data.split(b"\r\n\r\n", 1)[1]
    head = b"--mjpegstream\r\nContent-Type: image/jpeg\r\n\r\n"
    assert body.startswith(head)
    jpeg, rest = body[len(head):].split(b"\r\n--mjpegstream\r\n", 1)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert rest == b"Content-Type: image/jpeg\r\n\r\n"


def test_a_video_reader_gets_darknets_part_and_the_boundary_after_it(server):
    data = read_available(server.port, "*/*")
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"--mjpegstream\r\nContent-Type: image/jpeg\r\nContent-Length: ")
    headers, rest = body.split(b"\r\n\r\n", 1)
    length = int(headers.rsplit(b": ", 1)[1])
    assert rest[length:] == b"\r\n--mjpegstream\r\n"
    assert cv2.imdecode(np.frombuffer(rest[:length], np.uint8), cv2.IMREAD_COLOR) is not None


def test_opencv_reads_the_stream_and_the_page_address(server):
    """What the README says: OpenCV's VideoCapture reads `/` and `/stream.mjpg` (while frames
    come: OpenCV's reader probes a few before it opens)."""
    import threading
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.wait(0.05):
            i += 1
            server.publish_image(np.full((48, 64, 3), 100 + i % 50, np.uint8))
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        for path in ("", "stream.mjpg"):
            cap = cv2.VideoCapture(server.url + path)
            try:
                ok, frame = cap.read()
            finally:
                cap.release()
            assert ok and frame.shape == (48, 64, 3)
    finally:
        stop.set()
        t.join(5)


def test_training_status_numbers_have_six_significant_digits():
    """The page showed `learning rate: 8.100000569366203e-14` (a float32 rate during burn-in)."""
    import json
    from darknet_py.serve.streams import train_status
    rate = float(np.float32(8.1e-14))
    s = json.loads(json.dumps(train_status(3, 4, 1234.56789012, np.float32(2.25), rate, -1, -1,
                                           0.5)))
    assert s["learning rate"] == 8.1e-14 and s["loss"] == 1234.57 and s["avg loss"] == 2.25
    assert s["iteration"] == "3 / 4" and s["mAP"] == "-"
