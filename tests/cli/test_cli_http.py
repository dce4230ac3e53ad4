"""`detector demo -json_port -mjpeg_port` end to end on the loopback address."""
import json
import socket
import subprocess
import sys
import threading

import cv2
import pytest

from conftest import REPO
from http_fixtures import HOST, free_port, open_stream, read_jpeg_parts

MODEL = [str(REPO / "cfg" / "coco.data"), str(REPO / "cfg" / "yolo-fastest-1.1.cfg"),
         str(REPO / "weights" / "yolo-fastest-1.1.weights")]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("http") / "dog.avi"
    img = cv2.resize(cv2.imread(str(REPO / "data" / "dog.jpg")), (320, 240))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(24):
        w.write(img if i % 2 else cv2.flip(img, 1))
    w.release()
    return path


def demo(*args, timeout=120):
    return subprocess.Popen([sys.executable, "-m", "darknet_py.cli", "detector", "demo", *MODEL,
                             *map(str, args), "-dont_show"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_demo_streams_frames_and_json(video):
    jport, mport = free_port(), free_port()
    p = demo(video, "-json_port", jport, "-mjpeg_port", mport)
    got = {}

    def read_json():
        got["json"] = open_stream(jport, "/", wait=60).read().decode()   # ends with "]" on exit

    def read_mjpeg():
        got["frames"] = read_jpeg_parts(open_stream(mport, wait=60), 3, seconds=60)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_json, read_mjpeg)]
    for t in threads:
        t.start()
    try:
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    for t in threads:
        t.join(20)
    assert p.returncode == 0, err[-2000:]
    assert f"MJPEG stream: http://127.0.0.1:{mport}/" in err
    assert f"JSON stream: http://127.0.0.1:{jport}/" in err
    assert out.count(" JSON-stream sent. ") == 24 and out.count(" MJPEG-stream sent. ") == 24
    frames = got["frames"]
    print(f"client got {len(frames)} JPEG frames and {len(json.loads(got['json']))} JSON frames")
    assert len(frames) >= 2 and all(f.shape == (240, 320, 3) for f in frames)
    stream = json.loads(got["json"])
    assert len(stream) >= 2, "the client read fewer than 2 JSON frames"
    ids = [f["frame_id"] for f in stream]
    assert ids == sorted(ids) and set(ids) <= set(range(1, 25))
    dogs = [o for f in stream for o in f["objects"] if o["name"] == "dog"]
    assert dogs and set(dogs[0]) == {"class_id", "name", "relative_coordinates", "confidence"}
    assert dogs[0]["class_id"] == 16


def test_port_in_use_is_one_line_error(video):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = demo(video, "-mjpeg_port", port)
        out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"darknet-py: server error: cannot serve the MJPEG stream on "
                           f"127.0.0.1:{port}: ") and "-mjpeg_port" in last
    assert "Traceback" not in err and "Objects:" not in out
