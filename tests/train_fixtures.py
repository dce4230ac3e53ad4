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
