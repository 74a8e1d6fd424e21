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

__version__ = "0.1.0"
