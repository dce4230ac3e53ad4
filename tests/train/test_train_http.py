"""`-mjpeg_port` in training: a client reads chart.png and the status while the trainer runs."""
import io
import json
import threading

import cv2

from darknet_py.train.trainer import TrainOptions, Trainer
from http_fixtures import free_port, open_stream, read_jpeg_parts
from train_fixtures import make_shapes_workdir


def test_training_serves_its_chart_and_status(tmp_path, monkeypatch):
    work = make_shapes_workdir(tmp_path / "shapes", n_images=4, size=64, max_batches=2, batch=2)
    monkeypatch.chdir(work)          # -dont_show: chart.png goes to the working folder
    port = free_port()
    got = {}

    def client():
        got["chart"] = read_jpeg_parts(open_stream(port, wait=120), 1, seconds=120)
        got["status"] = json.loads(open_stream(port, "/status").read())

    t = threading.Thread(target=client, daemon=True)
    t.start()
    out = io.StringIO()
    Trainer(TrainOptions(data="obj.data", cfg="small.cfg", weights="yolov4-tiny.conv.29",
                         dont_show=True, max_batches=2, workers=0, seed=1, mjpeg_port=port),
            out=out).run()
    t.join(20)
    assert out.getvalue().count(" MJPEG-stream sent. ") == 2
    [chart] = got["chart"]
    assert chart.shape == cv2.imread(str(work / "chart.png")).shape
    assert got["status"]["iteration"].endswith(" / 2") and "avg loss" in got["status"]
    # the server is gone once training returns
    try:
        open_stream(port, "/status", timeout=2)
        raise AssertionError("the MJPEG server still answers after training")
    except ConnectionRefusedError:
        pass
