"""The overlap mechanism (darknet_py.infer.prefetch.Prefetcher): order, a bounded queue, errors
in order, early close, a worker blocked reading, Ctrl-C; and Pipeline.process on top of it."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import torch
from conftest import REPO, refpath, require

from darknet_py.errors import DataError
from darknet_py.infer.prefetch import READ_GRACE, Prefetcher


def _alive(name: str):
    return [t for t in threading.enumerate() if t.name.startswith(name) and t.is_alive()]


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_out_in_input_order(workers):
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.004) for _ in range(60)]

    def work(k):
        time.sleep(delays[k])           # later items often finish first with several workers
        return k * k

    with Prefetcher(range(60), work, depth=4, workers=workers, name="t-order") as p:
        assert list(p) == [k * k for k in range(60)]
    assert not _alive("t-order")


def test_the_queue_is_bounded_by_depth():
    consumed = 0
    most_ahead = 0

    def source():
        nonlocal most_ahead
        for k in range(40):
            most_ahead = max(most_ahead, k - consumed)   # items read but not yet consumed
            yield k

    with Prefetcher(source(), lambda k: k, depth=3, name="t-bound") as p:
        for k in p:
            time.sleep(0.003)            # a slow consumer: an unbounded reader would race ahead
            consumed = k + 1
    # read ahead: the `depth` items in the queue, plus at most the one just handed out
    assert consumed == 40 and most_ahead <= 3 + 1


def test_work_error_reaches_the_consumer_at_its_place():
    read = []

    def source():
        for k in range(100):
            read.append(k)
            yield k

    def work(k):
        if k == 5:
            raise DataError("bad image", file=f"{k}.jpg")
        return k

    got = []
    p = Prefetcher(source(), work, depth=2, name="t-error")
    with pytest.raises(DataError, match="bad image"):
        for k in p:
            got.append(k)
    assert got == [0, 1, 2, 3, 4]           # everything before the failed item, in order
    assert max(read) <= 5 + 2               # nothing much after it was read
    assert not _alive("t-error")


def test_source_error_reaches_the_consumer_after_the_items_before_it():
    def source():
        yield from range(3)
        raise OSError("camera unplugged")

    p = Prefetcher(source(), lambda k: k + 10, depth=2, name="t-src")
    got = []
    with pytest.raises(OSError, match="camera unplugged"):
        for k in p:
            got.append(k)
    assert got == [10, 11, 12]


def test_early_close_stops_the_workers_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for k in range(10 ** 6):
                yield k
        finally:
            closed.set()             # e.g. a video capture released

    p = Prefetcher(source(), lambda k: k, depth=2, workers=2, name="t-close")
    it = iter(p)
    assert [next(it), next(it)] == [0, 1]
    p.close()
    assert closed.is_set() and not _alive("t-close")
    with pytest.raises(StopIteration):
        next(it)
    p.close()                        # twice is fine


def test_break_out_of_a_with_block_closes():
    closed = threading.Event()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()

    with Prefetcher(source(), lambda k: k, name="t-break") as p:
        for k in p:
            if k == 3:
                break
    assert closed.is_set() and not _alive("t-break")


def test_close_does_not_wait_for_a_worker_blocked_reading():
    release = threading.Event()
    closed = threading.Event()

    def source():
        try:
            yield 0
            release.wait(30)         # a pipe or a camera that sends nothing
            yield 1
        finally:
            closed.set()

    p = Prefetcher(source(), lambda k: k, depth=2, name="t-blocked")
    assert next(iter(p)) == 0
    time.sleep(0.05)                 # the worker is now inside the blocked read
    t0 = time.perf_counter()
    p.close()
    assert time.perf_counter() - t0 < READ_GRACE + 2
    assert not closed.is_set()       # still reading: the worker closes the source itself...
    release.set()
    for _ in range(100):
        if closed.is_set():
            break
        time.sleep(0.02)
    assert closed.is_set() and not _alive("t-blocked")   # ...when the read returns


def test_chained_prefetchers_close_together():
    closed = threading.Event()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()

    first = Prefetcher(source(), lambda k: k, name="t-first")
    second = Prefetcher(first, lambda k: -k, name="t-second")
    it = iter(second)
    assert [next(it) for _ in range(3)] == [0, -1, -2]
    second.close()
    assert closed.is_set() and not _alive("t-first") and not _alive("t-second")


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_ctrl_c_while_waiting_stops_the_workers():
    def slow(k):
        time.sleep(0.5)
        return k

    main = threading.get_ident()
    threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    p = Prefetcher(range(100), slow, depth=2, name="t-sigint")
    with pytest.raises(KeyboardInterrupt):
        with p:
            for _ in p:
                pass
    assert not _alive("t-sigint")


def test_bad_arguments():
    with pytest.raises(ValueError):
        Prefetcher([], lambda k: k, depth=0)


# --------------------------------------------------------------------------- Pipeline.process
CFG = REPO / "cfg" / "yolo-fastest-1.1.cfg"
WEIGHTS = REPO / "weights" / "yolo-fastest-1.1.weights"


@pytest.fixture(scope="module")
def backend():
    from darknet_py.infer.backends.factory import make_backend
    return make_backend(CFG, WEIGHTS, backend="exact", device="cpu")


@pytest.fixture(scope="module")
def images():
    folder = require(refpath("datasets", "coco128", "images", "val2017"))
    return sorted(str(p) for p in folder.glob("*.jpg"))[:7]


def _equal(a, b):
    return a.image_size == b.image_size and torch.equal(a.boxes, b.boxes) and \
        torch.equal(a.probs, b.probs) and torch.equal(a.objectness, b.objectness)


@pytest.mark.parametrize("batch, readers, tiles", [(1, 1, None), (3, 2, None), (2, 1, (2, 2))])
def test_overlapped_pipeline_equals_the_sequential_one_bit_for_bit(backend, images, batch,
                                                                   readers, tiles):
    from darknet_py.infer.pipeline import Pipeline
    from darknet_py.infer.tiling import tiled
    seq = tiled(Pipeline(backend, thresh=0.005, batch_size=batch, loader_threads=0), tiles)
    ovl = tiled(Pipeline(backend, thresh=0.005, batch_size=batch, loader_threads=readers), tiles)
    want = seq.run(images, keep_images=False)
    got = list(ovl.iterate(iter(images), keep_images=False))
    assert [n for n, _, _ in got] == [n for n, _, _ in want] == images
    assert all(_equal(a, b) for (_, _, a), (_, _, b) in zip(got, want))
    assert sum(len(d.boxes) for _, _, d in want) > 100


def test_process_keeps_the_place_of_empty_items_and_of_errors(backend, images, tmp_path):
    from darknet_py.infer.pipeline import Pipeline
    pipe = Pipeline(backend, batch_size=2, loader_threads=1)
    missing = str(tmp_path / "missing.jpg")
    items = [("a", images[0]), ("gap", None), ("b", missing), ("c", images[1])]
    out = list(pipe.process(items, keep_images=True, errors_per_image=True))
    assert [o.tag for o in out] == ["a", "gap", "b", "c"]
    assert out[1].name is None and out[1].detections is None and out[1].error is None
    assert isinstance(out[2].error, DataError) and out[2].detections is None
    # each went through the network alone (its batch-mate had no image, or failed)
    alone = Pipeline(backend, batch_size=1, loader_threads=0).run([images[0], images[1]])
    for o, (name, image, dets) in zip((out[0], out[3]), alone):
        assert o.name == name and torch.equal(o.image, image) and _equal(o.detections, dets)
        assert o.forward_ms > 0
    # without errors_per_image the error ends the iteration, after the batches before it
    got = []
    with pytest.raises(DataError):
        for name, _, _ in pipe.iterate([images[0], images[1], missing, images[2]]):
            got.append(name)
    assert got == images[:2]


def test_stopping_early_ends_the_threads_and_closes_the_items(backend, images):
    from darknet_py.infer.pipeline import Pipeline
    closed = threading.Event()

    def items():
        try:
            for k in range(10 ** 6):
                yield k, images[k % len(images)]
        finally:
            closed.set()

    results = Pipeline(backend, batch_size=1, loader_threads=2).process(items(),
                                                                        keep_images=False)
    assert next(results).tag == 0
    results.close()
    assert closed.is_set()
    assert not _alive("darknet-py-read") and not _alive("darknet-py-network")


def test_a_list_of_one_batch_runs_in_the_calling_thread(backend, images, monkeypatch):
    from darknet_py.infer import pipeline as module
    started = []
    real = module.Prefetcher
    monkeypatch.setattr(module, "Prefetcher", lambda *a, **k: started.append(1) or real(*a, **k))
    pipe = module.Pipeline(backend, batch_size=4, loader_threads=1)
    pipe.run(images[:4])
    assert started == []
    pipe.run(images[:5])
    assert len(started) == 2       # the reader and the network stage


def test_default_reader_threads_follow_the_usable_cpus(monkeypatch):
    from darknet_py.infer import pipeline as module
    for cpus, want in ((1, 1), (2, 1), (3, 2), (16, module.MAX_DEFAULT_LOADERS)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)),
                            raising=False)
        assert module.default_loader_threads() == want


def test_the_three_stages_run_at_the_same_time(backend):
    """Reading, the network and finishing each take 25 ms of waiting per batch (as a decode in
    OpenCV, a backend call or a slow disk release the GIL): one after the other 12 batches take
    at least 0.9 s, overlapped about a third of that (whatever the CPUs are busy with)."""
    import numpy as np

    from darknet_py.infer.pipeline import Pipeline
    pipe = Pipeline(backend, batch_size=1, loader_threads=1)
    wait = 0.025
    pipe._prepare_sources = lambda originals: time.sleep(wait)
    pipe._forward_prepared = lambda prepared, count: (time.sleep(wait), 1.0)
    pipe._finish_outputs = lambda originals, prepared, outputs: time.sleep(wait) or [None]
    frames = [np.zeros((8, 8, 3), np.uint8)] * 12
    took = {}
    for overlap in (False, True):
        t0 = time.perf_counter()
        out = list(pipe.process(((k, f) for k, f in enumerate(frames)), keep_images=False,
                                frames=True, overlap=overlap))
        took[overlap] = time.perf_counter() - t0
        assert [o.tag for o in out] == list(range(12))
    assert took[False] >= 12 * 3 * wait
    assert took[True] < 0.6 * took[False], took


def test_a_frame_reader_iterated_by_itself():
    import numpy as np

    from darknet_py.errors import UsageError
    from darknet_py.infer.stream import FrameReader
    frames = [np.full((4, 4, 3), k, np.uint8) for k in range(10)]
    reader = FrameReader(iter(frames), lambda f: int(f[0, 0, 0]) * 2, queue_size=3)
    got = list(reader)
    assert [(k, int(f[0, 0, 0]), v) for k, f, v in got] == [(k + 1, k, 2 * k) for k in range(10)]
    with pytest.raises(UsageError, match="once"):
        list(reader)
    assert not _alive("darknet-py-frames")


@pytest.mark.parametrize("one_ms, cpus, switched", [(5.0, 2, True), (500.0, 2, False),
                                                    (5.0, 4, False), (None, 2, False)])
def test_a_small_network_runs_on_one_thread_beside_the_reader(backend, images, monkeypatch,
                                                             one_ms, cpus, switched):
    """On the first overlapped batch: with one CPU left beside the reader and a network whose
    one-thread time is within ONE_THREAD_NETWORK_RATIO x the reading time, the rest of the list
    runs the network on one thread; the backend gets its set-up back at the end. The results
    stay those of the sequential pipeline."""
    from darknet_py.infer import pipeline as module
    monkeypatch.setattr(module, "usable_cpus", lambda: cpus)
    calls, undone = [], []
    monkeypatch.setattr(backend, "one_thread_ms", lambda: one_ms, raising=False)
    monkeypatch.setattr(backend, "use_one_thread",
                        lambda: calls.append(1) or (lambda: undone.append(1)), raising=False)
    pipe = module.Pipeline(backend, batch_size=1, loader_threads=1)
    monkeypatch.setattr(pipe, "_prepare_sources",
                        lambda originals, real=pipe._prepare_sources: time.sleep(0.01) or
                        real(originals))      # reading takes >= 10 ms an image here
    got = pipe.run(images[:3], keep_images=False)
    assert calls == undone == ([1] if switched else [])
    want = module.Pipeline(backend, batch_size=1, loader_threads=0).run(images[:3],
                                                                       keep_images=False)
    assert all(_equal(a[2], b[2]) for a, b in zip(got, want))
    text = pipe.describe_threads()
    assert ("decided on the first batch" in text) == (one_ms is not None and cpus == 2)


def test_onnxruntime_switches_to_its_raced_one_thread_session(monkeypatch):
    """The ONNX Runtime backend keeps the one-thread session of its thread race for
    use_one_thread, and restores its choice after."""
    pytest.importorskip("onnxruntime")
    from darknet_py.infer.backends import onnxruntime as ortmod
    monkeypatch.setattr(ortmod, "usable_cpus", lambda: 2)
    path = ortmod.cached_export(CFG, WEIGHTS)
    be = ortmod.OnnxRuntimeBackend(path)
    assert be.one_thread_ms() == pytest.approx(1000 * be.calibration[(1, False)])
    chosen = (be.session, be.threads, be.spinning)
    restore = be.use_one_thread()
    assert be.threads == 1 and not be.spinning and be.session is be._one_thread_session
    x = torch.rand(1, 3, be.height, be.width)
    one = be(x)
    restore()
    assert (be.session, be.threads, be.spinning) == chosen
    for a, b in zip(one, be(x)):
        assert torch.allclose(a, b, atol=1e-5)
    unraced = ortmod.OnnxRuntimeBackend(path, calibrate_threads=False)
    assert unraced.one_thread_ms() is None and unraced.use_one_thread() is None
