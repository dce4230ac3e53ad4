"""``[net] track=1``: Darknet's tracking loader (``get_sequential_paths`` and the shared
augmentation of ``load_data_detection``) as :class:`SequenceBatchSampler` +
:class:`DetectionDataset`."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from darknet_py.data.augment import AugmentConfig
from darknet_py.data.dataset import (DetectionDataset, SequenceBatchSampler, make_loader,
                                     make_sequence_loader)
from darknet_py.errors import DataError

M = 50      # list lines


def sampler(**kw):
    args = dict(num_images=M, sequences=3, time_steps=4, subdivisions=2, schedule=None,
                width=64, height=64, augment_speed=3, seed=1)
    args.update(kw)
    return SequenceBatchSampler(**args)


def forwards(s, n):
    """The first ``n`` mini-batches, over as many passes as it takes (as training reads them)."""
    out = []
    while len(out) < n:
        out += list(s)
    return out[:n]


def runs(mb, sequences, time_steps):
    """The frames of each sequence of a step-major mini-batch, in time order."""
    return [[mb[t * sequences + q] for t in range(time_steps)] for q in range(sequences)]


def stride(lines):
    steps = {(b - a) % M for a, b in zip(lines, lines[1:])}
    assert len(steps) == 1, lines
    return steps.pop()


def test_sequences_are_consecutive_lines_step_major():
    fws = forwards(sampler(), 40)                   # 20 iterations of 2 forward passes
    speeds = set()
    for i, mb in enumerate(fws):
        assert len(mb) == 12                        # 3 sequences x 4 time steps
        seqs = runs(mb, 3, 4)
        # one loader chunk per forward pass (sequential_subdivisions = subdivisions): one speed
        # and one augmentation key for the whole chunk
        chunk_speeds = {stride([f.indices[0] for f in seq]) for seq in seqs}
        assert len(chunk_speeds) == 1
        speeds |= chunk_speeds
        assert len({f.key for f in mb}) == 1
        # positions in the chunk are Darknet's image order: t * sequences + s
        assert [f.position for f in mb] == list(range(12))
        if i % 2:
            assert mb[0].key != fws[i - 1][0].key   # the next chunk draws anew
    assert speeds == {1, 2, 3}                      # rand_int(1, augment_speed)
    # the sequences start at random lines (and wrap around the end of the list)
    starts = {seq[0].indices[0] for mb in fws for seq in runs(mb, 3, 4)}
    assert len(starts) > 30


def test_augment_speed_1_is_every_frame():
    for mb in forwards(sampler(augment_speed=1), 10):
        for seq in runs(mb, 3, 4):
            assert stride([f.indices[0] for f in seq]) == 1


def test_fewer_chunks_continue_sequences_over_forward_passes():
    # sequential_subdivisions=1: one chunk per iteration; its sequences run through both passes
    fws = forwards(sampler(seq_subdivisions=lambda it: 1), 8)
    for a, b in zip(fws[0::2], fws[1::2]):
        assert a[0].key == b[0].key
        assert [f.position for f in b] == list(range(12, 24))
        for sa, sb in zip(runs(a, 3, 4), runs(b, 3, 4)):
            assert stride([f.indices[0] for f in sa + sb]) in (1, 2, 3)
    with pytest.raises(DataError, match=r"sequential_subdivisions=3 .* subdivisions=2"):
        forwards(sampler(seq_subdivisions=lambda it: 3), 1)


def test_mosaic_chunks_have_four_consecutive_passes():
    fws = forwards(sampler(mixup=3), 60)
    used = [mb[0].use_mixup for mb in fws]
    assert set(used) == {0, 3}                      # 50 % of the chunks
    for mb in fws:
        assert {f.use_mixup for f in mb} == {mb[0].use_mixup}
        passes = 4 if mb[0].use_mixup else 1
        assert all(len(f.indices) == passes for f in mb)
        for k in range(passes):                     # every pass is sequences of its own
            for seq in runs(mb, 3, 4):
                stride([f.indices[k] for f in seq])


def test_ranks_get_whole_sequences():
    whole = forwards(sampler(sequences=4), 6)
    halves = [forwards(sampler(sequences=4, rank=r, world=2), 6) for r in range(2)]
    for mb, a, b in zip(whole, *halves):
        assert len(a) == len(b) == 8
        seqs = runs(mb, 4, 4)
        assert runs(a, 2, 4) == seqs[:2] and runs(b, 2, 4) == seqs[2:]
    with pytest.raises(DataError, match="3 sequences.*smaller than the 4 processes"):
        sampler(world=4)


@pytest.fixture(scope="module")
def same_image_list(tmp_path_factory):
    """12 list lines holding the same picture: whatever differs between their samples is the
    augmentation."""
    root = tmp_path_factory.mktemp("same")
    (root / "JPEGImages").mkdir()
    (root / "labels").mkdir()
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    paths = []
    for i in range(12):
        p = root / "JPEGImages" / f"f{i}.png"
        cv2.imwrite(str(p), img)
        (root / "labels" / f"f{i}.txt").write_text("0 0.5 0.5 0.3 0.4\n1 0.3 0.3 0.2 0.2\n")
        paths.append(str(p))
    return paths


CFG = dict(width=64, height=64, classes=2, max_boxes=10, jitter=0.3, hue=0.1, saturation=1.5,
           exposure=1.5, flip=1)


def sorted_rows(truth):
    rows = [tuple(r) for r in truth.tolist() if r[2] > 0]
    return sorted(rows)


def test_one_augmentation_per_chunk(same_image_list):
    ds = DetectionDataset(same_image_list, AugmentConfig(**CFG))
    loader = make_sequence_loader(ds, sequences=2, time_steps=3, subdivisions=1, num_workers=0,
                                  seed=4)
    batches = [b for _, b in zip(range(4), loader)]
    for x, truth in batches:
        assert x.shape == (6, 3, 64, 64)
        for k in range(1, 6):                      # every frame: the same crop, flip, colour
            assert torch.equal(x[k], x[0])
            assert sorted_rows(truth[k]) == sorted_rows(truth[0])
    assert not all(torch.equal(batches[0][0][0], x[0]) for x, _ in batches[1:])
    # without track the same list gets a new augmentation per image
    x, _ = next(iter(make_loader(ds, batch=6, num_workers=0, seed=4)))
    assert not all(torch.equal(x[k], x[0]) for k in range(1, 6))


def test_sequence_samples_do_not_depend_on_the_worker(same_image_list):
    paths = same_image_list
    ds = DetectionDataset(paths, AugmentConfig(**{**CFG, "mixup": 3}))
    mb = forwards(SequenceBatchSampler(len(paths), 2, 3, 1, None, 64, 64, mixup=3, seed=2), 4)
    for item in (mb[0][1], mb[3][4]):
        a, b = ds[item], DetectionDataset(paths, AugmentConfig(**{**CFG, "mixup": 3}))[item]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
