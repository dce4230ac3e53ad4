"""What `detector test` and `detector demo` share: obj.data names and the Detector set-up."""
from __future__ import annotations

import os
from typing import List, Optional

from ..data.datacfg import read_data_cfg, read_names
from ..errors import DataError
from ..infer.detector import Detector
from ._common import eprint, open_backend

#: ``-hier``'s help (``detector test``, ``demo``); the why: ``model.decode.get_network_boxes``
HIER_THRESH_HELP = ("Darknet's hierarchy threshold, accepted for its command lines: no effect, as "
                    "in Darknet (AlexeyAB's get_network_boxes passes it to a function that never "
                    "reads it; it once applied to hierarchical tree= [region] heads only, which "
                    "darknet-py cannot decode).")


def names_from_data(data_path: str, classes: int) -> List[str]:
    """Class names from obj.data ``names=`` (Darknet's default data/names.list); too few is an error."""
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


def split_model_args(cfg: str, weights: Optional[str], rest: Optional[str]):
    """``data model.onnx image``: an ONNX export takes no weights argument, so the third
    positional is the image."""
    if cfg.lower().endswith(".onnx") and rest is None:
        return None, weights
    return weights, rest


def make_detector(data: str, cfg: str, weights: Optional[str], thresh: float, hier_thresh: float,
                  letter_box: bool, batch_size: int = 1, tiling: Optional[dict] = None,
                  **backend_options):
    backend = open_backend(cfg, weights, data=data, **backend_options)
    det = Detector(cfg, backend=backend, letter_box=True if letter_box else None, thresh=thresh,
                   hier_thresh=hier_thresh, batch_size=batch_size, **(tiling or {}))
    det.names = names_from_data(data, det.classes)
    return det
