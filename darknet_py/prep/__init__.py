"""Dataset and cfg tools around Darknet's custom-training workflow.

* :mod:`darknet_py.prep.voc`: PASCAL VOC XML to Darknet/YOLO label files (``data voc2yolo``).
* :mod:`darknet_py.prep.split`: train/valid/test list files plus ``obj.data`` (``data split``).
* :mod:`darknet_py.prep.custom_cfg`: a custom ``yolo-obj.cfg`` for N classes (``cfg custom``).

These modules use only numpy and the standard library (OpenCV only as a fallback to read an image
size), so importing them never imports torch.
"""
from __future__ import annotations

from .custom_cfg import (CustomCfgResult, custom_max_batches, custom_steps, make_custom_cfg,
                         write_custom_cfg)
from .split import SplitResult, split_dataset
from .voc import (FACEMASK_NAME_MAP, ConversionResult, check_names, convert_voc_dataset,
                  label_path_for_image, parse_name_map, parse_voc_xml, read_class_names, read_names,
                  voc_to_yolo_boxes)

__all__ = [
    "FACEMASK_NAME_MAP", "ConversionResult", "convert_voc_dataset", "label_path_for_image",
    "parse_name_map", "parse_voc_xml", "read_names", "check_names", "read_class_names",
    "voc_to_yolo_boxes",
    "SplitResult", "split_dataset",
    "CustomCfgResult", "custom_max_batches", "custom_steps", "make_custom_cfg", "write_custom_cfg",
]
