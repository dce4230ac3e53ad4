"""Make a small sample video from still images (for trying ``darknet-py detector demo``).

    python tools/make_video.py video.mp4 img1.jpg img2.jpg ... [--fps 10] [--seconds 1]
        [--size 416x416]

Every image is resized to ``--size`` (default: the first image's size) and shown for
``--seconds`` seconds at ``--fps`` frames per second; ``.mp4`` is written with the mp4v codec,
``.avi`` with MJPG (what Darknet's demo writes). Needs only OpenCV (``cv2``).
"""
from __future__ import annotations

import argparse
import sys

import cv2


def make_video(out: str, images, fps: float = 10.0, seconds: float = 1.0, size=None) -> int:
    """Write the video; returns the number of frames. Raises SystemExit with a one-line message."""
    frames = []
    for path in images:
        img = cv2.imread(path)
        if img is None:
            raise SystemExit(f"make_video: cannot read image {path}")
        if size is None:
            size = (img.shape[1], img.shape[0])
        frames.append(cv2.resize(img, size))
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.lower().endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(out, fourcc, fps, size)
    if not writer.isOpened():
        raise SystemExit(f"make_video: OpenCV cannot write {out}")
    n = 0
    for frame in frames:
        for _ in range(max(1, round(fps * seconds))):
            writer.write(frame)
            n += 1
    writer.release()
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output video (.mp4 or .avi)")
    ap.add_argument("images", nargs="+", help="still images, in order")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per image")
    ap.add_argument("--size", default=None, help="WxH of the video (default: first image's)")
    a = ap.parse_args(argv)
    size = None
    if a.size:
        try:
            w, h = (int(v) for v in a.size.lower().split("x"))
        except ValueError:
            ap.error(f"--size expects WxH, got '{a.size}'")
        size = (w, h)
    n = make_video(a.out, a.images, a.fps, a.seconds, size)
    print(f"wrote {a.out}: {n} frames, {len(a.images)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
