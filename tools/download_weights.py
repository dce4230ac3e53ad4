#!/usr/bin/env python3
"""Fetch AlexeyAB's released weights, checking sha256, from GitHub or from a mirror.

    python tools/download_weights.py yolov4-tiny.weights yolov4-tiny.conv.29 -o weights/
    python tools/download_weights.py all --mirror /data/darknet-weights     # offline: a folder
    python tools/download_weights.py yolov4.weights --mirror https://my.host/darknet/  # URL base

A file is written atomically (temp + rename) and only if its sha256 matches the recorded one;
files whose checksum is not recorded here are downloaded and their sha256 printed, marked
"unverified". An existing file with the right checksum is not fetched again.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from typing import Dict, Optional, Tuple

BASE = "https://github.com/AlexeyAB/darknet/releases/download/"
#: name -> (release path, sha256 or None when not recorded)
FILES: Dict[str, Tuple[str, Optional[str]]] = {
    "yolov4-tiny.weights": ("darknet_yolo_v4_pre/yolov4-tiny.weights",
                            "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"),
    "yolov4-tiny.conv.29": ("darknet_yolo_v4_pre/yolov4-tiny.conv.29",
                            "3c794b8420b12ed2a609daa71d075880e7bd152671323f5eb3e8d9e57e31785b"),
    "yolov4.weights": ("darknet_yolo_v3_optimal/yolov4.weights", None),
    "yolov4.conv.137": ("darknet_yolo_v3_optimal/yolov4.conv.137", None),
}


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_for(name: str, mirror: Optional[str]) -> str:
    rel = FILES[name][0]
    if mirror is None:
        return BASE + rel
    if os.path.isdir(mirror):
        for cand in (os.path.join(mirror, name), os.path.join(mirror, rel)):
            if os.path.exists(cand):
                return cand
        return os.path.join(mirror, name)
    return mirror.rstrip("/") + "/" + name


def fetch(name: str, out_dir: str, mirror: Optional[str] = None) -> str:
    """Download (or copy from a mirror) one file into ``out_dir``; return its path."""
    if name not in FILES:
        raise SystemExit(f"unknown file '{name}' (known: {', '.join(FILES)})")
    expected = FILES[name][1]
    dest = os.path.join(out_dir, name)
    if os.path.exists(dest) and expected and sha256_of(dest) == expected:
        print(f"{dest}: already present, sha256 ok")
        return dest
    src = source_for(name, mirror)
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.path.exists(src):
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f)
            else:
                try:
                    with urllib.request.urlopen(src, timeout=60) as r:
                        shutil.copyfileobj(r, f)
                except OSError as e:
                    raise SystemExit(f"{name}: cannot fetch {src}: {e}") from None
        got = sha256_of(tmp)
        if expected and got != expected:
            raise SystemExit(f"{name}: sha256 mismatch (got {got}, expected {expected}); "
                             "nothing written")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"{dest}: sha256 {got} {'ok' if expected else '(unverified: no recorded checksum)'}")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help=f"files to fetch, or 'all' ({', '.join(FILES)})")
    ap.add_argument("-o", "--out", default="weights", help="output folder (default: weights/)")
    ap.add_argument("--mirror", help="a local folder or a URL base holding the files")
    a = ap.parse_args(argv)
    names = list(FILES) if a.names == ["all"] else a.names
    for n in names:
        fetch(n, a.out, a.mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
