"""darknet_py.serve on the loopback address: MJPEG frames, Darknet's JSON stream, slow clients."""
import io
import json
import socket
import time

import cv2
import numpy as np
import pytest
import torch

from darknet_py.infer.results import detection_to_json
from darknet_py.serve import Broadcaster, JsonServer, MjpegServer, ServeError, TrainStreams
from darknet_py.structures.detections import DetectionSet

from http_fixtures import HOST, free_port, open_stream, read_jpeg_parts, wait_until


@pytest.fixture
def mjpeg():
    s = MjpegServer(0, max_clients=2).start(announce=False)
    yield s
    s.close()


def grey(value, w=64, h=48):
    return np.full((h, w, 3), value, np.uint8)


def test_mjpeg_stream_sends_decodable_jpegs_in_order(mjpeg):
    r = open_stream(mjpeg.port)
    assert r.status == 200
    assert r.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=mjpegstream"
    assert wait_until(lambda: mjpeg.streams[""].client_count == 1)
    for v in (40, 120, 200):
        mjpeg.publish_image(grey(v))
        time.sleep(0.05)  # queue_len 2: let the handler take each one
    images = read_jpeg_parts(r, 3, seconds=10)
    assert [img.shape for img in images] == [(48, 64, 3)] * 3
    assert [int(round(img.mean())) for img in images] == pytest.approx([40, 120, 200], abs=3)
    r.close()


def test_page_status_and_a_late_client_gets_the_latest_frame(mjpeg):
    mjpeg.publish_image(grey(90))
    mjpeg.set_status(loss=1.5, mAP="-")
    page = open_stream(mjpeg.port, "/", {"Accept": "text/html,*/*"})
    body = page.read().decode()
    assert page.getheader("Content-Type").startswith("text/html")
    assert '<img id="stream" src="/stream.mjpg"' in body and 'fetch("/status"' in body
    assert json.loads(open_stream(mjpeg.port, "/status").read()) == {"loss": 1.5, "mAP": "-"}
    assert open_stream(mjpeg.port, "/nothing").status == 404
    # a video reader (no text/html in Accept) asking for / gets the stream, as from Darknet,
    # and the frame published before it connected
    r = open_stream(mjpeg.port, "/", {"Accept": "*/*"})
    assert r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    [img] = read_jpeg_parts(r, 1, seconds=10)
    assert abs(img.mean() - 90) < 3
    r.close()


def test_json_stream_is_darknets_array_of_frames():
    dets = DetectionSet(torch.tensor([[0.5, 0.4, 0.2, 0.3]]), torch.tensor([0.9]),
                        torch.tensor([[0.0, 0.8]]), None, (100, 100))
    with JsonServer(0).start(announce=False) as js:
        r = open_stream(js.port, "/")
        assert r.getheader("Content-Type") == "application/json"
        assert wait_until(lambda: js.objects.client_count == 1)
        for frame_id in (1, 2, 3):
            js.publish(detection_to_json(dets, ["a", "b"], frame_id))
            time.sleep(0.05)
    raw = r.read().decode()  # the server closed the array when it stopped
    assert raw.startswith("[\n{\n \"frame_id\":1, ") and "}, \n{\n \"frame_id\":2" in raw
    frames = json.loads(raw)
    assert [f["frame_id"] for f in frames] == [1, 2, 3]
    obj = frames[0]["objects"][0]
    assert obj["class_id"] == 1 and obj["name"] == "b"
    assert obj["relative_coordinates"] == pytest.approx(
        {"center_x": 0.5, "center_y": 0.4, "width": 0.2, "height": 0.3})
    assert obj["confidence"] == pytest.approx(0.8)


def test_images_are_encoded_only_when_someone_watches():
    encoded = []

    def encode(obj):
        encoded.append(obj)
        return b"jpeg%d" % obj

    b = Broadcaster(max_clients=1)
    for i in range(5):
        b.publish_lazy(i, encode)
    assert encoded == [] and b.published == 5
    q = b.register()                    # the first client gets the latest, encoded now
    assert encoded == [4] and q.get(1) == b"jpeg4"
    b.publish_lazy(5, encode)
    assert encoded == [4, 5] and q.get(1) == b"jpeg5"
    assert b.register() is None         # max_clients


def test_a_client_that_never_reads_does_not_slow_the_producer(mjpeg):
    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(
        0, 255, (480, 640, 3), np.uint8))[1].tobytes()   # ~200 kB, fills socket buffers fast
    n = 300

    def produce():
        worst = 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            mjpeg.publish_jpeg(jpeg)
            worst = max(worst, time.perf_counter() - t)
        return time.perf_counter() - t0, worst

    base_total, _ = produce()
    stalled = socket.create_connection((HOST, mjpeg.port), timeout=5)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")   # ... and never reads a byte
    assert wait_until(lambda: mjpeg.streams[""].client_count == 1)
    total, worst = produce()          # 60 MB offered to a client that reads nothing
    print(f"producer: {n} frames {base_total * 1e3:.1f} ms alone, {total * 1e3:.1f} ms with a "
          f"stalled client (worst publish {worst * 1e3:.2f} ms)")
    assert total < base_total + 0.5 and worst < 0.05
    # a client reading meanwhile still gets frames
    r = open_stream(mjpeg.port)
    mjpeg.publish_jpeg(jpeg)
    assert len(read_jpeg_parts(r, 1, seconds=10)) == 1
    r.close()
    t = time.perf_counter()
    mjpeg.close()                     # unblocks the handler stuck writing to the stalled client
    assert time.perf_counter() - t < 3
    stalled.close()


def test_client_count_is_bounded(mjpeg):
    a, b = open_stream(mjpeg.port), open_stream(mjpeg.port)
    assert a.status == b.status == 200
    c = open_stream(mjpeg.port)
    assert c.status == 503
    a.close()                        # the handler notices while idle, with no frame to send
    assert wait_until(lambda: mjpeg.streams[""].client_count < 2, seconds=5)
    assert open_stream(mjpeg.port).status == 200


def test_port_in_use_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ServeError) as e:
            MjpegServer(port).start(announce=False)
    msg = str(e.value)
    assert "\n" not in msg and f"127.0.0.1:{port}" in msg and "-mjpeg_port" in msg


def test_train_streams_serve_chart_plots_and_status(tmp_path):
    chart = tmp_path / "chart.png"
    cv2.imwrite(str(chart), grey(200, 100, 80))
    (tmp_path / "plots").mkdir()
    cv2.imwrite(str(tmp_path / "plots" / "pr_curve.png"), grey(60, 50, 40))
    out = io.StringIO()
    assert TrainStreams.open(0, None, str(tmp_path)) is None            # -mjpeg_port off
    assert TrainStreams.open(free_port(), None, str(tmp_path), main_process=False) is None
    port = free_port()
    ts = TrainStreams.open(port, None, str(tmp_path), out=out)
    try:
        ts.update([str(chart)], 7, 100, 2.5, 3.25, 0.00261, -1.0, -1.0, 1.5)
        assert out.getvalue() == " MJPEG-stream sent. \n"
        status = json.loads(open_stream(port, "/status").read())
        assert status["iteration"] == "7 / 100" and status["avg loss"] == 3.25
        assert status["learning rate"] == pytest.approx(0.00261) and status["mAP"] == "-"
        assert status["time left"] == "1.50 hours"
        page = open_stream(port, "/", {"Accept": "text/html"}).read().decode()
        assert 'src="/plots/pr_curve.mjpg"' in page
        [img] = read_jpeg_parts(open_stream(port), 1, seconds=10)
        assert img.shape == (80, 100, 3) and abs(img.mean() - 200) < 3
        [plot] = read_jpeg_parts(open_stream(port, "/plots/pr_curve.mjpg"), 1, seconds=10)
        assert plot.shape == (40, 50, 3)
        ts.update([str(chart)], 8, 100, 2.0, 3.0, 0.0026, 0.4567, 0.4567, 1.4)
        status = json.loads(open_stream(port, "/status").read())
        assert status["mAP"] == "45.67 %" and status["best mAP"] == "45.67 %"
    finally:
        ts.close()
