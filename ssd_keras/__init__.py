"""ssd_keras: fastai lesson 9 (multi-object detection, SSD-style head) in Keras 3 / TensorFlow.

Boxes are relative yxyx everywhere (see DESIGN.md); one `AnchorConfig` threads through the
head, the loss, the decoder and the evaluation.

The names below are imported on first use (PEP 562), so `import ssd_keras` and
`python -m ssd_keras --help` do not pay for importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ssd_keras.anchors": ["AnchorConfig"],
    "ssd_keras.boxes": ["activations_to_boxes", "centers_to_corners", "corners_to_centers", "jaccard"],
    "ssd_keras.matching": ["map_to_ground_truth", "match_anchors"],
    "ssd_keras.losses": ["SSDLoss", "SSDLossPart"],
    "ssd_keras.layers": ["OutConv", "SSDHead", "SSDMultiHead", "StdConv", "flatten_conv"],
    "ssd_keras.backbones": ["get_backbone", "layer_groups", "load_torchvision_resnet34"],
    "ssd_keras.model": ["build_detector", "build_ssd"],
    "ssd_keras.decode": ["DecodeDetections", "decode_detections"],
    "ssd_keras.data": [
        "VOC_CLASSES", "DetectionData", "Record", "lesson_augmentations", "load_source",
        "make_dataset", "make_shapes", "read_voc",
    ],
    "ssd_keras.metrics": [
        "MeanAveragePrecisionCallback", "anchor_coverage", "coco_map", "evaluate_detections",
        "plot_anchor_coverage",
    ],
    "ssd_keras.training": [
        "MomentumCycle", "NaNGuard", "OneCycleSchedule", "default_callbacks",
        "discriminative_optimizer", "fit_one_cycle", "freeze_to", "lr_find", "unfreeze",
    ],
    "ssd_keras.export": ["export_savedmodel", "export_tflite", "load_model", "save_model"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ssd_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
