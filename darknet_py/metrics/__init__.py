"""Evaluation metrics: Darknet's ``detector map`` and the COCO results / pycocotools bridge."""
from .coco import (COCO_IDS, CocoStats, coco_evaluate, coco_image_id, coco_result_lines,
                   format_coco_results, scale_to_pixels, write_coco_results)
from .darknet_map import MapResult, darknet_map, format_map_report

__all__ = ["MapResult", "darknet_map", "format_map_report", "COCO_IDS", "CocoStats",
           "coco_evaluate", "coco_image_id", "coco_result_lines", "format_coco_results",
           "scale_to_pixels", "write_coco_results"]
