"""ssd_keras: fastai lesson 9 (multi-object detection, SSD-style head) in Keras 3 / TensorFlow.

Boxes are relative yxyx everywhere (see DESIGN.md); one `AnchorConfig` threads through the
head, the loss, the decoder and the evaluation.

Importing the package imports every module, as keras-hub does, so that all of ssd_keras'
serialisable layers, losses and optimizers are registered before a `.keras` file is loaded
with plain `keras.saving.load_model`.
"""

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import activations_to_boxes, centers_to_corners, corners_to_centers, jaccard
from ssd_keras.matching import map_to_ground_truth, match_anchors
from ssd_keras.losses import SSDLoss, SSDLossPart
from ssd_keras.layers import OutConv, SSDHead, SSDMultiHead, StdConv, flatten_conv
from ssd_keras.backbones import get_backbone, layer_groups, load_torchvision_resnet34
from ssd_keras.model import build_detector, build_ssd
from ssd_keras.decode import DecodeDetections, decode_detections
from ssd_keras.data import (
    VOC_CLASSES,
    DetectionData,
    Record,
    lesson_augmentations,
    load_source,
    make_dataset,
    make_shapes,
    read_voc,
)
from ssd_keras.metrics import (
    MeanAveragePrecisionCallback,
    anchor_coverage,
    coco_map,
    evaluate_detections,
    plot_anchor_coverage,
)
from ssd_keras.training import (
    MomentumCycle,
    NaNGuard,
    OneCycleSchedule,
    default_callbacks,
    discriminative_optimizer,
    fit_one_cycle,
    freeze_to,
    lr_find,
    prepare_for_multi_worker,
    unfreeze,
)
from ssd_keras.export import export_savedmodel, export_tflite, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "AnchorConfig", "DecodeDetections", "DetectionData", "MeanAveragePrecisionCallback",
    "MomentumCycle", "NaNGuard", "OneCycleSchedule", "OutConv", "Record", "SSDHead", "SSDLoss",
    "SSDLossPart", "SSDMultiHead", "StdConv", "VOC_CLASSES", "activations_to_boxes",
    "anchor_coverage", "build_detector", "build_ssd", "centers_to_corners", "coco_map",
    "corners_to_centers", "decode_detections", "default_callbacks", "discriminative_optimizer",
    "evaluate_detections", "export_savedmodel", "export_tflite", "fit_one_cycle", "flatten_conv",
    "freeze_to", "get_backbone", "jaccard", "layer_groups", "lesson_augmentations",
    "load_model", "load_source", "load_torchvision_resnet34", "lr_find", "make_dataset",
    "make_shapes", "map_to_ground_truth", "match_anchors", "plot_anchor_coverage", "read_voc",
    "save_model", "unfreeze",
    "prepare_for_multi_worker",
]
