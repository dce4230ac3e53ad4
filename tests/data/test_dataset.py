"""DetectionDataset / make_loader / multi-scale schedule on a small synthetic VOC-style tree."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknet_py.data import dataset as dataset_mod
from darknet_py.data.augment import AugmentConfig
from darknet_py.data.dataset import (DetectionBatchSampler, DetectionDataset, MultiScaleSchedule,
                                     make_loader)
from darknet_py.errors import DataError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """8 images in JPEGImages/ with labels/ (Darknet's VOC rule), one background image and one
    file that is not an image."""
    root = tmp_path_factory.mktemp("voc")
    (root / "JPEGImages").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        img = rng.integers(0, 256, (48 + 4 * i, 64, 3), dtype=np.uint8)
        p = root / "JPEGImages" / f"img{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
        if i == 7:
            continue          # background image: no label file
        (root / "labels" / f"img{i}.txt").write_text(
            f"{i % 3} 0.5 0.5 0.3 0.4\n{(i + 1) % 3} 0.25 0.3 0.2 0.2\n")
    bad = root / "JPEGImages" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    (root / "labels" / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return root, paths, str(bad)


CFG = dict(width=64, height=64, classes=3, max_boxes=20, jitter=0.3, hue=0.1, saturation=1.5,
           exposure=1.5, flip=1, mixup=3)


def test_sample_layout_and_reproducibility(tree):
    _, paths, _ = tree
    cfg = AugmentConfig(**CFG)
    a = DetectionDataset(paths, cfg, seed=1)
    b = DetectionDataset(paths, cfg, seed=1)
    c = DetectionDataset(paths, cfg, seed=2)
    xa, ya = a[3]
    assert xa.dtype == torch.float32 and xa.shape == (3, 64, 64)
    assert ya.dtype == torch.float32 and ya.shape == (20, 5)
    assert 0 <= float(xa.min()) and float(xa.max()) <= 1
    xb, yb = b[3]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xc, _ = c[3]
    assert not torch.equal(xa, xc)
    x, y = a[(2, 96, 32)]                      # another network size
    assert x.shape == (3, 32, 96)


def test_background_image_has_no_boxes(tree):
    _, paths, _ = tree
    cfg = AugmentConfig(**{**CFG, "mixup": 0})
    ds = DetectionDataset(paths, cfg, seed=0)
    _, y = ds[7]
    assert float(y.abs().sum()) == 0.0
    _, y = ds[0]
    assert int((y[:, 0] > 0).sum()) >= 1


def test_plain_resize_without_augmentation(tree):
    _, paths, _ = tree
    ds = DetectionDataset(paths, AugmentConfig(**CFG), augment=False)
    x, y = ds[0]
    img = cv2.cvtColor(cv2.imread(paths[0]), cv2.COLOR_BGR2RGB)
    want = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(x.numpy(), want, atol=1e-6)
    rows = y[y[:, 0] > 0].numpy()
    np.testing.assert_allclose(rows[np.argsort(rows[:, 4])],
                               [[0.5, 0.5, 0.3, 0.4, 0], [0.25, 0.3, 0.2, 0.2, 1]], atol=1e-6)


BAD_CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "files" / "bad"


@pytest.mark.parametrize("name", sorted(p.name for p in (BAD_CORPUS / "images").iterdir()
                                        if p.suffix in (".jpg", ".png")) + ["nope.jpg"])
def test_training_refuses_exactly_what_inference_refuses(name):
    """One decision: the training loader takes an image iff ``imaging.image.load_image`` does, and
    gets the same bytes (as HWC uint8)."""
    from darknet_py.data.augment import load_image as train_load
    from darknet_py.imaging.image import load_image as infer_load
    path = str(BAD_CORPUS / "images" / name)
    for channels in (3, 1):
        try:
            want = infer_load(path, channels)
        except DataError as err:
            with pytest.raises(DataError) as got:
                train_load(path, channels)
            assert str(got.value) == str(err)
            continue
        img = train_load(path, channels)
        assert img.dtype == np.uint8 and img.shape == tuple(want.permute(1, 2, 0).shape)
        assert torch.equal(torch.from_numpy(img).permute(2, 0, 1).float() * np.float32(1 / 255),
                           want)


def test_broken_image_replaced_and_reported_once(tree, caplog):
    _, paths, bad = tree
    dataset_mod._bad_images.discard(bad)
    ds = DetectionDataset(paths + [bad], AugmentConfig(**{**CFG, "mixup": 0}), seed=0)
    with caplog.at_level(logging.WARNING, logger="darknet_py.data"):
        for _ in range(3):
            x, y = ds[len(paths)]
            assert x.shape == (3, 64, 64)
    msgs = [r.getMessage() for r in caplog.records if "cannot load image" in r.getMessage()]
    assert len(msgs) == 1 and "broken.jpg" in msgs[0]
    only_bad = DetectionDataset([bad], AugmentConfig(**CFG), seed=0, max_load_retries=2)
    with pytest.raises(DataError, match="could not load any image"):
        only_bad[0]


def test_unsupported_extension_fails_early(tree):
    root, paths, _ = tree
    with pytest.raises(DataError, match="extension"):
        DetectionDataset(paths + [str(root / "x.webp")], AugmentConfig(**CFG))
    with pytest.raises(DataError, match="empty"):
        DetectionDataset([], AugmentConfig(**CFG))


def test_ram_cache(tree, tmp_path):
    _, paths, _ = tree
    p = tmp_path / "JPEGImages"
    p.mkdir()
    (tmp_path / "labels").mkdir()
    img = tmp_path / "JPEGImages" / "c.png"
    img.write_bytes(open(paths[0], "rb").read())
    ds = DetectionDataset([str(img)], AugmentConfig(**{**CFG, "mixup": 0}), seed=0,
                          cache_images=True)
    ds[0]
    img.unlink()
    x, _ = ds[0]                       # served from the cache
    assert x.shape == (3, 64, 64)


def test_loader_workers_reproducible(tree):
    _, paths, _ = tree
    cfg = AugmentConfig(**CFG)
    # use OpenCV's thread pool in the parent before forking workers (a worker that then called
    # cv2.setNumThreads(1) would hang forever)
    cv2.GaussianBlur(np.zeros((1200, 1200, 3), np.uint8), (17, 17), 0)

    def batches(seed):
        ds = DetectionDataset(paths, cfg)
        loader = make_loader(ds, batch=4, subdivisions=2, num_workers=2, seed=seed,
                             persistent_workers=True)
        out = [b for _, b in zip(range(4), loader)]
        del loader
        return out

    a, b, c = batches(5), batches(5), batches(6)
    assert len(a) == 4 and a[0][0].shape == (2, 3, 64, 64) and a[0][1].shape == (2, 20, 5)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_loader_main_process_reproducible(tree):
    _, paths, _ = tree
    cfg = AugmentConfig(**CFG)
    runs = []
    for _ in range(2):
        loader = make_loader(DetectionDataset(paths, cfg), batch=2, num_workers=0, seed=9)
        runs.append([x for x, _ in loader])
    assert len(runs[0]) == 4
    assert all(torch.equal(p, q) for p, q in zip(*runs))


# ----------------------------------------------------------------------------- multi-scale
def test_multiscale_schedule_darknet_rule():
    s = MultiScaleSchedule(416, 416, random=1.0, resize_step=32, max_batches=10000)
    assert s.coef == 1.4 and s.max_dims() == (608, 608)
    rng = np.random.default_rng(0)
    assert s.dims(rng, 0, first=True) == (608, 608)          # first resize: largest size
    assert s.dims(rng, 9950, first=False) == (608, 608)      # last 100 iterations: largest
    sizes = {s.dims(rng, 500, first=False) for _ in range(400)}
    ws = sorted(w for w, _ in sizes)
    assert all(w == h for w, h in sizes) and all(w % 32 == 0 for w in ws)
    assert ws[0] == 320 and ws[-1] == 608
    assert 448 not in ws or 416 in ws       # below-1 scales never exceed the initial size
    assert set(ws) <= set(range(320, 417, 32)) | set(range(448, 609, 32))
    s2 = MultiScaleSchedule(416, 256, random=1.5, resize_step=32, max_batches=10000)
    assert s2.coef == 1.5 and s2.max_dims() == (672, 416)    # roundl(20.5) = 21: half away
    assert s.batch_for(608, 608) == 1 and MultiScaleSchedule(416, 416, 1.0, 32, 0, 64) \
        .batch_for(320, 320) == int(64 * 608 * 608 // (320 * 320) * 0.8)


def test_batch_sampler_resizes_every_10_iterations():
    sched = MultiScaleSchedule(64, 64, random=1.0, resize_step=32, max_batches=1000)
    sampler = DetectionBatchSampler(8, mini_batch=2, subdivisions=2, schedule=sched, width=64,
                                    height=64, seed=3)
    assert len(sampler) == 4
    seen = []
    while len(seen) < 60:               # 30 iterations over several epochs
        for mb in sampler:
            seen.append(mb)
    sizes = [mb[0][1:3] for mb in seen[:60]]
    assert sizes[0] == (128, 128)                       # first: max size
    for i in range(60):
        assert all(item[1:3] == sizes[i] for item in seen[i])
        if i % 20:                                      # 10 iterations x 2 subdivisions
            assert sizes[i] == sizes[i - 1]
    assert sampler.iteration == 30 + (len(seen) - 60) // 2


def test_loader_follows_multiscale(tree):
    _, paths, _ = tree
    cfg = AugmentConfig(**{**CFG, "random": 1.0})
    sched = MultiScaleSchedule(64, 64, random=1.0, resize_step=32, max_batches=1000)
    loader = make_loader(DetectionDataset(paths, cfg), batch=2, num_workers=0, seed=0,
                         multiscale=sched)
    shapes = [tuple(x.shape[2:]) for x, _ in loader]
    assert shapes[0] == (128, 128) and all(h == w and h % 32 == 0 for h, w in shapes)


def test_show_batch_command(tree, tmp_path):
    from click.testing import CliRunner
    from darknet_py.cli import main as cli_main
    root, paths, _ = tree
    (tmp_path / "train.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "obj.names").write_text("a\nb\nc\n")
    (tmp_path / "obj.data").write_text(f"classes=3\ntrain={tmp_path / 'train.txt'}\n"
                                       f"names={tmp_path / 'obj.names'}\n")
    (tmp_path / "net.cfg").write_text(
        "[net]\nbatch=4\nsubdivisions=1\nwidth=96\nheight=64\nchannels=3\nmosaic=1\nhue=.1\n"
        "saturation=1.5\nexposure=1.5\n[convolutional]\nfilters=24\nsize=1\nstride=1\n"
        "activation=linear\n[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=3\nnum=3\n"
        "jitter=.3\n")
    out = tmp_path / "aug"
    r = CliRunner().invoke(cli_main, ["detector", "show_batch", str(tmp_path / "obj.data"),
                                      str(tmp_path / "net.cfg"), "-n", "3", "-out_dir", str(out),
                                      "-seed", "1"])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("aug_*.jpg"))
    assert len(files) == 3
    img = cv2.imread(str(files[0]))
    assert img.shape == (64, 96, 3)
    r = CliRunner().invoke(cli_main, ["detector", "show_batch", str(tmp_path / "nope.data"),
                                      str(tmp_path / "net.cfg")])
    assert r.exit_code == 1 and "not found" in r.output


def test_sharded_sampler_is_the_single_process_batch(tree):
    """torchrun ranks: the shards of each mini-batch put together are the single-process
    mini-batch, and each sample is the same tensor whichever process (or worker) loads it."""
    _, paths, _ = tree
    cfg = AugmentConfig(**{**CFG, "random": 1.0})

    def sampler(rank, world):
        sched = MultiScaleSchedule(64, 64, random=1.0, resize_step=32, max_batches=1000)
        return DetectionBatchSampler(len(paths), mini_batch=4, subdivisions=2, schedule=sched,
                                     width=64, height=64, seed=4, rank=rank, world=world)
    whole = list(sampler(0, 1))
    halves = [list(sampler(r, 2)) for r in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1]) >= 1
    for mb, a, b in zip(whole, *halves):
        assert a + b == mb and len(a) == 2
    ds, ds2 = DetectionDataset(paths, cfg, seed=4), DetectionDataset(paths, cfg, seed=4)
    item = whole[0][1]
    x1, t1 = ds[item]
    x2, t2 = ds2[item]
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    other = (item[0], item[1], item[2], item[3] + 1, item[4])     # another iteration's draw
    assert not torch.equal(ds[other][0], x1)
    with pytest.raises(Exception, match="smaller than the 8 processes"):
        sampler(0, 8)


def test_show_batch_boxes_and_labels_are_readable_at_416(tmp_path):
    """`detector show_batch` at 416x416 (no augmentation moves the box): the box outline is at
    least 2 px thick and its label sits on a filled band at least 14 px high (Darknet's 1-px
    brown box with 8-px text was unreadable on a photo)."""
    from click.testing import CliRunner
    from darknet_py.cli import main as cli_main
    cv2.imwrite(str(tmp_path / "grey.jpg"), np.full((416, 416, 3), 115, np.uint8))
    (tmp_path / "grey.txt").write_text("1 0.5 0.6 0.4 0.3\n")
    (tmp_path / "train.txt").write_text(f"{tmp_path / 'grey.jpg'}\n")
    (tmp_path / "obj.names").write_text("chin_diaper\nmask\nno_mask\n")
    (tmp_path / "obj.data").write_text(f"classes=3\ntrain={tmp_path / 'train.txt'}\n"
                                       f"names={tmp_path / 'obj.names'}\n")
    (tmp_path / "net.cfg").write_text(
        "[net]\nbatch=1\nsubdivisions=1\nwidth=416\nheight=416\nchannels=3\nmosaic=0\nhue=0\n"
        "saturation=1\nexposure=1\n[convolutional]\nfilters=24\nsize=1\nstride=1\n"
        "activation=linear\n[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=3\nnum=3\n"
        "jitter=0\nrandom=0\n")
    r = CliRunner().invoke(cli_main, ["detector", "show_batch", str(tmp_path / "obj.data"),
                                      str(tmp_path / "net.cfg"), "-n", "1", "-out_dir",
                                      str(tmp_path / "aug"), "-seed", "0"])
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(tmp_path / "aug" / "aug_0000.jpg")).astype(int)
    drawn = np.abs(img - 115).max(axis=2) > 50           # not the grey background
    left, top, mid = int(0.3 * 416), int(0.45 * 416), int(0.6 * 416)
    row = drawn[mid, left - 4:left + 12]
    assert row.any(), "no box edge at the label's left side"
    first = int(np.argmax(row))
    thickness = int(np.argmin(row[first:])) if not row[first:].all() else row[first:].size
    assert thickness >= 2, thickness
    column = drawn[:top, left + 1][::-1]                  # upwards from the box's top edge
    band = int(np.argmin(column)) if not column.all() else column.size
    assert band >= 14, band
