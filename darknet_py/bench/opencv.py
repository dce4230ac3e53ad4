"""The OpenCV DNN peer, run the way OpenCV users run a Darknet model.

``readNetFromDarknet`` on the same cfg and weights; end to end: ``imread``, ``blobFromImages``
(stretched to the network size, RGB, 1/255), ``forward`` and :func:`opencv_boxes` (the
post-processing of OpenCV's ``object_detection`` sample: the best class of each row above the
threshold, NMS per class with ``NMSBoxesBatched``). darknet-py's own decode and NMS are
deliberately not used here: they are Darknet's (objectness threshold, every class above it,
Darknet's NMS), which is not what this peer's users run. The centre/size -> left/top box
arithmetic is written in numpy, as those users write it, rather than through the package's
:func:`~darknet_py.structures.boxes.xywh_to_ltwh`: that one is torch, and torch's per-operation
dispatch would add about 0.1-0.2 ms per image to the peer's time (measured on a few dozen rows).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .config import NMS_THRESH, THRESH
from .runners import BenchContext, Runner


def opencv_boxes(outs: Sequence[np.ndarray], batch: int, img_w: int, img_h: int):
    """Boxes + NMS from OpenCV's Region-layer rows ``(cx, cy, w, h, obj, obj*cls...)``, relative
    to the image: per image ``(boxes (left, top, width, height) in pixels, confidences, classes)``
    of the boxes NMS keeps."""
    import cv2
    results = []
    per_image = [o.reshape(batch, -1, o.shape[-1]) for o in outs]
    for b in range(batch):
        rows = np.concatenate([p[b] for p in per_image], axis=0)
        scores = rows[:, 5:]
        cls = scores.argmax(axis=1)
        conf = scores[np.arange(len(rows)), cls]
        keep = conf > THRESH
        rows, cls, conf = rows[keep], cls[keep], conf[keep]
        boxes = np.stack([(rows[:, 0] - rows[:, 2] / 2) * img_w,
                          (rows[:, 1] - rows[:, 3] / 2) * img_h,
                          rows[:, 2] * img_w, rows[:, 3] * img_h], axis=1)
        idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), conf.tolist(), cls.tolist(), THRESH,
                                      NMS_THRESH) if len(rows) else []
        idx = np.asarray(idx, dtype=int).reshape(-1)
        results.append((boxes[idx], conf[idx], cls[idx]))
    return results


def opencv_runners(ctx: BenchContext, variants: Sequence[str],
                   skipped: List[Dict[str, str]]) -> List[Runner]:
    """OpenCV DNN on the CPU (``DNN_BACKEND_OPENCV``) and, when the cv2 build has it, CUDA."""
    wanted = [k for k in variants if k.startswith("opencv")]
    if not wanted:
        return []
    try:
        import cv2
    except ImportError:
        for k in wanted:
            skipped.append({"runner": k, "reason": "OpenCV (cv2) is not installed"})
        return []
    cfg, weights = ctx.sized_cfg(), ctx.config.weights
    targets = {
        "opencv": (cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "cpu", "OpenCV DNN (cpu)"),
        "opencv-cuda": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA, "cuda",
                        "OpenCV DNN (cuda fp32)"),
        "opencv-cuda-fp16": (cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA_FP16, "cuda",
                             "OpenCV DNN (cuda fp16)"),
    }
    try:
        cuda_devices = cv2.cuda.getCudaEnabledDeviceCount()
    except (AttributeError, cv2.error):
        cuda_devices = 0
    runners = []
    for key in wanted:
        if key not in targets:
            skipped.append({"runner": key, "reason": "unknown variant"})
            continue
        backend, target, device, label = targets[key]
        if device == "cuda" and cuda_devices == 0:
            skipped.append({"runner": key, "reason": "this cv2 build has no CUDA device/backend "
                                                     "(cv2.cuda.getCudaEnabledDeviceCount() == 0)"})
            continue
        try:
            cvnet = cv2.dnn.readNetFromDarknet(cfg, weights)
            cvnet.setPreferableBackend(backend)
            cvnet.setPreferableTarget(target)
            names = cvnet.getUnconnectedOutLayersNames()
            cvnet.setInput(ctx.x_numpy)
            cvnet.forward(names)
        except cv2.error as e:
            skipped.append({"runner": key, "reason": f"OpenCV cannot run this cfg: "
                                                     f"{str(e).strip().splitlines()[-1]}"})
            continue

        def network(n=cvnet, names=names):
            n.setInput(ctx.x_numpy)
            return n.forward(names)

        def end_to_end(n=cvnet, names=names):
            imgs = [cv2.imread(ctx.image) for _ in range(ctx.config.batch)]
            blob = cv2.dnn.blobFromImages(imgs, 1 / 255.0, (ctx.width, ctx.height), swapRB=True,
                                          crop=False)
            n.setInput(blob)
            outs = n.forward(names)
            h, w = imgs[0].shape[:2]
            return opencv_boxes(outs, len(imgs), w, h)

        runners.append(Runner(key, label, device, network, end_to_end,
                              info={"opencv": cv2.__version__}))
    return runners
