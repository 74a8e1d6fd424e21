"""ssd_keras: fastai lesson 9 (multi-object detection, SSD-style head) in Keras 3 / TensorFlow.

Boxes are relative yxyx everywhere (see DESIGN.md); one `AnchorConfig` threads through the
head, the loss, the decoder and the evaluation.
"""

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import (
    activations_to_boxes,
    centers_to_corners,
    corners_to_centers,
    jaccard,
)
from ssd_keras.losses import SSDLoss, SSDLossPart
from ssd_keras.matching import map_to_ground_truth, match_anchors
from ssd_keras.backbones import get_backbone, layer_groups, load_torchvision_resnet34
from ssd_keras.decode import DecodeDetections, decode_detections
from ssd_keras.layers import OutConv, SSDHead, SSDMultiHead, StdConv, flatten_conv
from ssd_keras.model import build_detector, build_ssd

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
    unfreeze,
)
from ssd_keras.export import export_savedmodel, export_tflite, load_model, save_model

__version__ = "0.1.0"
