"""Make the README pictures of tiling, tracking and streams (docs/images/*.png) by real runs of
the embedded yolo-fastest-1.1 on the shared images.

    python tools/readme_video_images.py [SHARED_IMAGES_DIR]
"""
import os
import sys

import cv2
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from darknet_py.infer.detector import Detector  # noqa: E402
from darknet_py.infer.tiling import tile_grid  # noqa: E402
from darknet_py.infer.tracking import ByteTracker  # noqa: E402

IMAGES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "..", "shared", "images")
OUT = os.path.join(REPO, "docs", "images")


def image(name):
    return cv2.imread(os.path.join(IMAGES, name + ".jpg"))


def save(bgr, name, width):
    s = width / bgr.shape[1]
    small = cv2.resize(bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    pil = Image.fromarray(small[:, :, ::-1]).quantize(colors=128, dither=Image.Dither.NONE)
    path = os.path.join(OUT, name)
    pil.save(path, optimize=True)
    print(path, os.path.getsize(path) // 1024, "KB")


def label(bgr, text):
    cv2.putText(bgr, text, (12, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 6, cv2.LINE_AA)
    cv2.putText(bgr, text, (12, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 2,
                cv2.LINE_AA)
    return bgr


def main():
    os.makedirs(OUT, exist_ok=True)
    cfg = os.path.join(REPO, "cfg", "yolo-fastest-1.1.cfg")
    weights = os.path.join(REPO, "weights", "yolo-fastest-1.1.weights")
    det = Detector(cfg, weights, names=os.path.join(REPO, "cfg", "coco.names"), backend="fast")

    # tiling: the test's canvas, untiled vs -tiles 5x4 (tile grid in grey)
    W, H = 2000, 1500
    grid = tile_grid(W, H, 5, 4, 0.2, *det.input_size)
    canvas = np.full((H, W, 3), 114, np.uint8)
    for name, (c, r) in zip(["dog", "horses", "person", "giraffe", "eagle", "bus"],
                            [(0, 0), (2, 0), (4, 0), (0, 2), (2, 2), (4, 2)]):
        im = image(name)
        s = 400 / max(im.shape[:2])
        im = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        x0, y0, x1, y1 = grid[r * 5 + c]
        left, top = (x0 + x1 - im.shape[1]) // 2, (y0 + y1 - im.shape[0]) // 2
        canvas[top:top + im.shape[0], left:left + im.shape[1]] = im
    tiler = Detector(cfg, backend=det.backend, names=det.names, tiles=(5, 4))
    plain = det.draw(canvas, det(canvas)[0].raw)
    tiled = tiler.draw(canvas, tiler(canvas)[0].raw)
    for x0, y0, x1, y1 in grid:
        cv2.rectangle(tiled, (x0, y0), (x1 - 1, y1 - 1), (200, 200, 200), 2)
    both = np.concatenate([label(plain, "untiled"), np.full((H, 20, 3), 255, np.uint8),
                           label(tiled, "-tiles 5x4")], axis=1)
    save(both, "tiling.png", 1100)

    # tracking and streams: a window panning across zidane.jpg (whole image kept in view)
    im = image("zidane")
    im = cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    pad = w // 4
    strip = np.full((h, w + 2 * pad, 3), 114, np.uint8)
    strip[:, pad:pad + w] = im
    frames = [strip[:, x:x + w + pad].copy() for x in np.linspace(0, pad, 8).astype(int)]
    tracker = ByteTracker(det.names, det.thresh)
    shown = []
    for result in det.stream(iter(frames)):
        tracked = tracker.update(result.raw, result.frame_id)
        if result.frame_id in (1, 4, 8):
            from darknet_py.imaging.image import image_from_array, image_to_bgr_uint8
            drawn = image_to_bgr_uint8(tracker.draw(image_from_array(result.frame), tracked,
                                                    det.classes))
            for d in tracked.detections:        # the id again, large enough for the README
                org = (max(0, d.left) + 6, max(0, d.top) + 40)
                cv2.putText(drawn, f"#{d.track_id} {d.name}", org, cv2.FONT_HERSHEY_SIMPLEX, 1.1,
                            (0, 0, 0), 6, cv2.LINE_AA)
                cv2.putText(drawn, f"#{d.track_id} {d.name}", org, cv2.FONT_HERSHEY_SIMPLEX, 1.1,
                            (80, 255, 255), 2, cv2.LINE_AA)
            shown.append(label(drawn, f"frame {result.frame_id}").copy())
    gap = np.full((h, 12, 3), 255, np.uint8)
    save(np.concatenate([shown[0], gap, shown[1], gap, shown[2]], axis=1), "tracking.png", 1100)

    # streams: detections per frame of a video file read on the background thread
    video = os.path.join(OUT, ".pan.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w + pad, h))
    for f in frames:
        vw.write(f)
    vw.release()
    tiles = []
    for result in det.stream(video):
        drawn = det.draw(result.frame, result.raw)
        tiles.append(label(drawn, f"#{result.frame_id}: {len(result.detections)} objects"))
    os.remove(video)
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in (0, 4)]
    save(np.concatenate(rows, axis=0), "streams.png", 1100)


if __name__ == "__main__":
    main()
