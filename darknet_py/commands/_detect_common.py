"""What `detector test` and `detector demo` share: obj.data names and the Detector set-up."""
from __future__ import annotations

import os
from typing import List

from ..errors import DataError
from ._common import eprint


def names_from_data(data_path: str, classes: int) -> List[str]:
    """Class names from obj.data ``names=`` (Darknet's default data/names.list); too few is an error."""
    from ..data.datacfg import read_data_cfg, read_names
    data = read_data_cfg(data_path)
    names_path = data.names_or_default()
    if not os.path.exists(names_path):
        raise DataError(f"names file '{names_path}' (names= in {data_path}) not found",
                        file=names_path)
    names = read_names(names_path)
    if len(names) < classes:
        raise DataError(f"the names file has {len(names)} names but the cfg has classes={classes}",
                        file=names_path, value=len(names))
    if len(names) > classes:
        eprint(f"\n Warning: in the file {names_path} number of names {len(names)} that isn't "
               f"equal to classes={classes} ")
    return names


def make_detector(data: str, cfg: str, weights: str, thresh: float, hier_thresh: float,
                  letter_box: bool, device: str, half: bool = False, batch_size: int = 1):
    from ..infer.detector import Detector
    from ..model.weights import format_load_report, LoadReport
    det = Detector(cfg, weights, names=None, device=device, half=half,
                   letter_box=True if letter_box else None, thresh=thresh,
                   hier_thresh=hier_thresh, batch_size=batch_size)
    det.net.print_table()
    h = det.net.weights_header
    if h is not None:
        eprint(format_load_report(LoadReport(weights, h, len(det.net.layers), 0, 0)))
    det.names = names_from_data(data, det.classes)
    return det


def device_from_index(gpu_index: int) -> str:
    """``-i N``: ``cuda:N`` (CPU without CUDA); under torchrun each rank takes the GPU of its
    LOCAL_RANK (:func:`darknet_py.distributed.local_device`)."""
    from ..distributed import local_device
    return local_device(gpu_index)
