"""ssd_keras: fastai lesson 9 (multi-object detection, SSD-style head) in Keras 3 / TensorFlow.

Boxes are relative yxyx everywhere (docs/ARCHITECTURE.md); one `AnchorConfig` threads through
the head, the loss, the decoder and the evaluation; `SSDDetector` owns them all.

Importing the package imports every module that defines a serialisable object (and the public
functions below), as keras-hub does, so that all of ssd_keras' layers, losses and optimizers
are registered before a `.keras` file is loaded with plain `keras.saving.load_model`. The
recipes (`ssd_keras.recipes`), the held-out splits (`ssd_keras.data.splits`) and the command
line are imported where used. The lesson's PyTorch code (`ssd_keras.reference`) is
not imported: it needs torch, which ssd_keras does not.
"""

import os as _os

from ssd_keras._environment import configure_for_cli as _configure_for_cli
from ssd_keras._environment import quiet_native_stderr as _quiet_native_stderr

_configure_for_cli()  # only for `python -m ssd_keras`: must run before TensorFlow is imported

# The loss, the data pipeline and decoding are TensorFlow ops: say so before Keras starts on
# another backend and fails somewhere deep inside.
_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"ssd_keras needs the TensorFlow backend of Keras, but KERAS_BACKEND={_backend!r}; "
        "unset it or set KERAS_BACKEND=tensorflow before importing ssd_keras"
    )

with _quiet_native_stderr():  # TensorFlow's start-up lines, on the quiet command line only
    import keras as _keras  # noqa: E402
    import tensorflow as _tf  # noqa: E402, F401

if _keras.backend.backend() != "tensorflow":  # e.g. set in ~/.keras/keras.json
    raise ImportError(
        f"ssd_keras needs the TensorFlow backend of Keras, but Keras is running "
        f"{_keras.backend.backend()!r} (from ~/.keras/keras.json); set KERAS_BACKEND=tensorflow"
    )

from ssd_keras.anchors import AnchorConfig, anchor_coverage  # noqa: E402
from ssd_keras.boxes import activations_to_boxes, centers_to_corners, corners_to_centers, jaccard  # noqa: E402
from ssd_keras.matching import map_to_ground_truth, match_anchors  # noqa: E402
from ssd_keras.losses import SSDLoss, SSDLossPart  # noqa: E402
from ssd_keras.layers import OutConv, SSDHead, SSDMultiHead, StdConv, flatten_conv  # noqa: E402
from ssd_keras.backbones import get_backbone, layer_groups, load_torchvision_resnet34  # noqa: E402
from ssd_keras.model import build_ssd  # noqa: E402
from ssd_keras.decode import (  # noqa: E402
    DISPLAY_SCORE_THRESHOLD,
    EVAL_SCORE_THRESHOLD,
    decode_detections,
    decode_detections_builtin_nms,
)
from ssd_keras.inference import detect, detection_function  # noqa: E402
from ssd_keras.detector import SSDDetector  # noqa: E402
from ssd_keras.presets import PRESETS  # noqa: E402
from ssd_keras.lesson_models import (  # noqa: E402
    MultiLabelF1,
    SingleObjectLoss,
    build_multilabel_classifier,
    build_single_object_detector,
    largest_object_targets,
    multi_hot,
)
from ssd_keras.convert import convert_lesson_model  # noqa: E402
from ssd_keras.data import (  # noqa: E402
    VOC_CLASSES,
    DetectionData,
    Record,
    lesson_augmentations,
    load_source,
    make_dataset,
    make_shapes,
    read_voc,
)
from ssd_keras.evaluation import coco_map, evaluate_detections, evaluate_model  # noqa: E402
from ssd_keras.callbacks import MeanAveragePrecisionCallback, NaNGuard, default_callbacks  # noqa: E402
from ssd_keras.schedules import MomentumCycle, OneCycleSchedule  # noqa: E402
from ssd_keras.optimizers import discriminative_optimizer, freeze_to, unfreeze  # noqa: E402
from ssd_keras.distribute import prepare_for_multi_worker  # noqa: E402
from ssd_keras.training import fit_one_cycle, lr_find  # noqa: E402
from ssd_keras.saving import load_model  # noqa: E402
from ssd_keras.export import export_savedmodel, export_tflite  # noqa: E402
from ssd_keras.viz import plot_anchor_coverage  # noqa: E402

__version__ = "0.2.0"

__all__ = [
    "AnchorConfig", "DISPLAY_SCORE_THRESHOLD", "DetectionData", "EVAL_SCORE_THRESHOLD",
    "MeanAveragePrecisionCallback", "MomentumCycle", "NaNGuard", "OneCycleSchedule", "OutConv",
    "PRESETS", "Record", "SSDDetector", "SSDHead", "SSDLoss", "SSDLossPart", "SSDMultiHead",
    "StdConv", "VOC_CLASSES", "activations_to_boxes", "anchor_coverage", "build_ssd",
    "centers_to_corners", "coco_map", "corners_to_centers", "decode_detections",
    "decode_detections_builtin_nms", "default_callbacks", "detect", "detection_function",
    "discriminative_optimizer", "evaluate_detections", "evaluate_model", "export_savedmodel",
    "export_tflite", "fit_one_cycle", "flatten_conv", "freeze_to", "get_backbone", "jaccard",
    "layer_groups", "lesson_augmentations", "load_model", "load_source",
    "load_torchvision_resnet34", "lr_find", "make_dataset", "make_shapes", "map_to_ground_truth",
    "match_anchors", "plot_anchor_coverage", "prepare_for_multi_worker", "read_voc", "unfreeze",
    "MultiLabelF1", "SingleObjectLoss", "build_multilabel_classifier", "build_single_object_detector",
    "largest_object_targets", "multi_hot", "convert_lesson_model",
]
