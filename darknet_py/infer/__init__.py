"""Inference: one pipeline (load -> prepare -> backend -> decode -> NMS) that ``Detector``, every
command, the benchmark and export share.

* :mod:`.image`: Darknet-exact image loading, resizing and letterboxing
* :mod:`.decode`: detection-head outputs -> candidate boxes (``get_network_boxes``)
* :mod:`.nms`: Darknet's NMS kinds
* :mod:`.backends`: what runs the network (exact, fast, cuda, onnxruntime, openvino)
* :mod:`.pipeline`: the stages tied together
* :mod:`.detector`: the user-facing ``Detector``
* :mod:`.draw`: drawn boxes, ``detector test`` text and ``-out`` JSON
* :mod:`.tiling`: tiled inference (``-tiles CxR``) as a ``Pipeline`` subclass
* :mod:`.stream`: frames decoded on a thread, batched through the pipeline (``Detector.stream``)
* :mod:`.tracking`: ByteTrack (supervision) over per-frame detections (``-track``)
"""
