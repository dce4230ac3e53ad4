"""`detector train -mjpeg_port`: a client reads chart.png and the status while training runs."""
import json
import threading

import cv2

from http_fixtures import free_port, open_stream, read_jpeg_parts
from train_fixtures import make_facemask_workdir, run_cli


def test_training_serves_its_chart_and_status(tmp_path):
    work = make_facemask_workdir(tmp_path / "train")
    port = free_port()
    got = {}

    def client():
        frames = read_jpeg_parts(open_stream(port, wait=120), 1, seconds=120)
        got["chart"] = frames
        got["status"] = json.loads(open_stream(port, "/status").read())

    t = threading.Thread(target=client, daemon=True)
    t.start()
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                "-max_batches", 3, "-workers", 0, "-seed", 1, "-mjpeg_port", port, cwd=work,
                timeout=300)
    t.join(20)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"MJPEG stream: http://127.0.0.1:{port}/" in r.stderr
    assert r.stdout.count(" MJPEG-stream sent. ") == 3
    [chart] = got["chart"]
    assert chart.shape == cv2.imread(str(work / "chart.png")).shape
    assert got["status"]["iteration"].endswith(" / 3") and "avg loss" in got["status"]
