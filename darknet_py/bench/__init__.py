"""Benchmark darknet-py's forward pass against OpenCV DNN (and Darknet) in one process: what
``darknet-py bench`` and ``tools/benchmark.py`` run.

>>> from darknet_py.bench import BenchConfig, format_report, run_benchmark
>>> report = run_benchmark(BenchConfig(cfg="yolov4-tiny.cfg", weights="yolov4-tiny.weights"))
>>> print(format_report(report))

What is measured, per *runner* (one way of running the same cfg + weights on the same input):

* ``network``: one forward pass on an already prepared ``(B, 3, H, W)`` float input (the same
  array for every runner), outputs materialised (CUDA synchronised);
* ``end_to_end``: decode the image file, resize it to the network size, forward, decode the boxes
  and run NMS (thresh 0.25, NMS 0.45). darknet-py runs its
  :class:`~darknet_py.infer.pipeline.Pipeline` (Darknet-exact image loading, decode and NMS);
  OpenCV runs its users' usual pipeline (``imread`` + ``blobFromImages`` + ``forward`` +
  ``NMSBoxesBatched``, :mod:`.opencv`).

Runners (:mod:`.runners`): darknet-py's backends as ``make_backend`` builds them (``auto``,
``exact``, ``fast`` and its bf16 / ``torch.compile`` variants, ``onnxruntime``, ``openvino``),
the CUDA variants (fp32/fp16/bf16) when CUDA exists, OpenCV DNN 4.x on CPU
(``DNN_BACKEND_OPENCV``) and on CUDA when the cv2 build has it, and Darknet's own
``darknet detector test`` ("Predicted in X milli-seconds", network only, :mod:`.darknet`) when a
``darknet`` binary is on ``PATH``.

Fairness: all in-process runners are timed *interleaved* (round-robin, one call each per round:
:func:`darknet_py.timing.interleave`), so background load hits them alike; medians are reported
together with the 10th/90th percentiles and the process CPU time per call (:mod:`.measure`).
PyTorch and OpenCV get the same thread count (``torch.set_num_threads`` /
``cv2.setNumThreads``). Darknet runs in its own process afterwards (``OMP_NUM_THREADS`` = the
same count), so its figure is not interleaved. The machine is described in the report
(:mod:`.machine`).

This package uses :mod:`darknet_py.infer`; nothing in ``infer`` uses it.
"""
from .config import BenchConfig, parse_variants
from .report import format_report, write_json
from .run import run_benchmark

__all__ = ["BenchConfig", "parse_variants", "run_benchmark", "format_report", "write_json"]
