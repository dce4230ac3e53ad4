"""A tiny face-mask training setup (converted VOC labels, small yolov4-tiny cfg, conv.29)."""
import subprocess
import sys
from pathlib import Path

from conftest import REFDATA, REPO, require

CONV29_BYTES = 19789716


def run_cli(*args, cwd, timeout=900, **kw):
    return subprocess.run([sys.executable, "-m", "darknet_py.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kw)


def make_facemask_workdir(root: Path, n_train: int = 8, n_valid: int = 4, size: int = 96,
                          batch: int = 2, subdivisions: int = 1, max_batches: int = 4,
                          extra_data: str = "", learning_rate: float = 0.001,
                          burn_in: int = 1) -> Path:
    fm = require(REFDATA / "datasets" / "facemask")
    root.mkdir(parents=True, exist_ok=True)
    names = [l for l in (fm / "train.list").read_text().split() if l][: n_train + n_valid]
    ann = root / "ann"
    ann.mkdir()
    for n in names:
        (ann / (n[:-4] + ".xml")).write_bytes((fm / "annotations" / (n[:-4] + ".xml")).read_bytes())
    r = run_cli("data", "voc2yolo", ann, "--names", REPO / "cfg" / "obj.names", "--map", "facemask",
                "--images-dir", fm / "images", "--out-dir", root / "fm", cwd=root)
    assert r.returncode == 0, r.stderr
    imgs = sorted(str(p) for p in (root / "fm").glob("*.jpg"))
    (root / "train.txt").write_text("\n".join(imgs[:n_train]) + "\n")
    (root / "valid.txt").write_text("\n".join(imgs[n_train:n_train + n_valid]) + "\n")
    (root / "obj.data").write_text(
        f"classes=3\ntrain=train.txt\nvalid=valid.txt\nnames={REPO / 'cfg' / 'obj.names'}\n"
        f"backup=backup\n{extra_data}")
    r = run_cli("cfg", "custom", "--classes", 3, "--from",
                require(REFDATA / "cfg" / "darknet" / "yolov4-tiny-custom.cfg"), "-o", "small.cfg",
                "--width", size, "--height", size, "--batch", batch, "--subdivisions", subdivisions,
                "--max-batches", max_batches, "--steps", f"{max_batches * 8},{max_batches * 9}",
                cwd=root)
    assert r.returncode == 0, r.stderr
    cfg = root / "small.cfg"
    text = cfg.read_text()
    import re
    text = re.sub(r"(?m)^learning_rate=.*$", f"learning_rate={learning_rate}", text)
    text = re.sub(r"(?m)^burn_in=.*$", f"burn_in={burn_in}", text)
    cfg.write_text(text)
    weights = require(REFDATA / "weights" / "yolov4-tiny.weights").read_bytes()[:CONV29_BYTES]
    (root / "yolov4-tiny.conv.29").write_bytes(weights)
    return root


def make_shapes_workdir(root: Path, n_images: int = 16, size: int = 128, max_batches: int = 100,
                        batch: int = 8, learning_rate: float = 0.002, burn_in: int = 10,
                        seed: int = 0) -> Path:
    """A synthetic 2-class set (filled squares = class 0, filled circles = class 1) on noisy
    backgrounds, with YOLO labels next to the images, a small yolov4-tiny cfg and conv.29."""
    import numpy as np
    import cv2
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / "shapes"
    img_dir.mkdir()
    paths = []
    for i in range(n_images):
        h, w = int(rng.integers(160, 240)), int(rng.integers(160, 240))
        img = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            s = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
            x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            color = tuple(int(c) for c in rng.integers(150, 255, 3))
            if cls == 0:
                cv2.rectangle(img, (x0, y0), (x0 + s, y0 + s), color, -1)
            else:
                cv2.circle(img, (x0 + s // 2, y0 + s // 2), s // 2, color, -1)
            lines.append(f"{cls} {(x0 + s / 2) / w:.6f} {(y0 + s / 2) / h:.6f} {s / w:.6f} {s / h:.6f}")
        p = img_dir / f"shape{i:03d}.jpg"
        cv2.imwrite(str(p), img)
        (img_dir / f"shape{i:03d}.txt").write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    (root / "train.txt").write_text("\n".join(paths) + "\n")
    (root / "shapes.names").write_text("square\ncircle\n")
    (root / "obj.data").write_text("classes=2\ntrain=train.txt\nvalid=train.txt\n"
                                   "names=shapes.names\nbackup=backup\n")
    r = run_cli("cfg", "custom", "--classes", 2, "--from",
                require(REFDATA / "cfg" / "darknet" / "yolov4-tiny-custom.cfg"), "-o", "small.cfg",
                "--width", size, "--height", size, "--batch", batch, "--subdivisions", 1,
                "--max-batches", max_batches, "--steps", f"{max_batches * 8},{max_batches * 9}",
                cwd=root)
    assert r.returncode == 0, r.stderr
    import re
    cfg = root / "small.cfg"
    text = re.sub(r"(?m)^learning_rate=.*$", f"learning_rate={learning_rate}", cfg.read_text())
    text = re.sub(r"(?m)^burn_in=.*$", f"burn_in={burn_in}", text)
    cfg.write_text(text)
    weights = require(REFDATA / "weights" / "yolov4-tiny.weights").read_bytes()[:CONV29_BYTES]
    (root / "yolov4-tiny.conv.29").write_bytes(weights)
    return root
