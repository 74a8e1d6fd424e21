"""Every registered ssd_keras class through the one round-trip harness (tests/serialization.py).

The list of cases is checked against Keras' registry, so a new serialisable class without a
case here fails `test_every_registered_class_has_a_case`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssd_keras
from ssd_keras.anchors import AnchorConfig
from ssd_keras.backbones import FusedBatchNorm, ImagePreprocessing
from ssd_keras.layers import OutConv, SSDHead, SSDMultiHead, StdConv
from ssd_keras.lesson_models import (
    BoxSigmoid,
    ConcatPooling,
    MultiLabelF1,
    SingleObjectAccuracy,
    SingleObjectIoU,
    SingleObjectL1,
    SingleObjectLoss,
)
from ssd_keras.losses import SSDLoss, SSDLossPart
from ssd_keras.optimizers import DiscriminativeAdam, DiscriminativeAdamW, DiscriminativeRMSprop, DiscriminativeSGD
from ssd_keras.schedules import MomentumCycle, OneCycleSchedule

from random_inputs import random_boxes
from serialization import run_round_trip

RNG = np.random.default_rng(0)
ANCHORS = AnchorConfig()


def _y_true(batch=2, m=3, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.full((batch, m, 5), -1.0, np.float32)
    for b in range(batch):
        n = 1 + b % m
        y[b, :n, :4] = random_boxes(rng, n)
        y[b, :n, 4] = rng.integers(0, num_classes, n)
    return y


def _layer_probe(x):
    return lambda layer: layer(x, training=False)


def _optimizer_probe(opt):
    """One update of two variables, the second at a 0.1 LR multiplier when the optimizer has one."""
    a, b = keras.Variable(np.ones(3, np.float32), name="a"), keras.Variable(np.ones(3, np.float32), name="b")
    opt.apply_gradients([(tf.constant([1.0, -2.0, 0.5]), a), (tf.constant([0.5, 0.5, 0.5]), b)])
    return [np.array(a), np.array(b)]


FEATURES = RNG.normal(size=(2, 4, 4, 16)).astype("float32")
IMAGES = RNG.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
Y_TRUE = _y_true()
Y_PRED = RNG.normal(size=(2, ANCHORS.num_anchors, 4 + 3 + 1)).astype("float32")
# The single-object model's targets [B, 5] (one padding row) and outputs [B, 4 + C].
ONE_TRUE = np.array([[0.1, 0.2, 0.5, 0.7, 1], [0.3, 0.3, 0.9, 0.6, 0], [0, 0, 0, 0, -1]], np.float32)
ONE_PRED = np.array([[0.15, 0.2, 0.45, 0.6, 0.3, 2.0, -1.0], [0.1, 0.3, 0.8, 0.7, 1.5, 0.2, 0.1],
                     [0.2, 0.2, 0.4, 0.4, 0.0, 0.0, 0.0]], np.float32)
MULTI_TRUE = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
MULTI_LOGITS = RNG.normal(size=(2, 3)).astype("float32")


def _metric_probe(y_true, y_pred):
    return lambda m: (m.reset_state(), m.update_state(y_true, y_pred), m.result())[-1]

CASES = {
    "StdConv": lambda: (StdConv(8, strides=2, dropout=0.1), _layer_probe(FEATURES), FEATURES),
    "OutConv": lambda: (OutConv(9, 3, bias=-4.0), _layer_probe(FEATURES), FEATURES),
    "SSDHead": lambda: (SSDHead(3, AnchorConfig.single_grid(4)), _layer_probe(FEATURES), FEATURES),
    "SSDMultiHead": lambda: (SSDMultiHead(3, ANCHORS, filters=16), _layer_probe(FEATURES), FEATURES),
    "FusedBatchNorm": lambda: (FusedBatchNorm(momentum=0.9, epsilon=1e-5), _layer_probe(FEATURES), FEATURES),
    "ImagePreprocessing": lambda: (ImagePreprocessing(), _layer_probe(IMAGES), IMAGES),
    "SSDLoss": lambda: (SSDLoss(ANCHORS, 3, pos_threshold=0.5, focal=(0.3, 2.0), loc_weight=2.0),
                        lambda loss: loss(Y_TRUE, Y_PRED), None),
    "SSDLossPart": lambda: (SSDLossPart("clas", ANCHORS, 3, focal=True),
                            lambda m: (m.reset_state(), m.update_state(Y_TRUE, Y_PRED), m.result())[-1], None),
    "OneCycleSchedule": lambda: (OneCycleSchedule(1e-2, 50, 20, 10),
                                 lambda s: [s(i) for i in (0, 3, 5, 20, 49)], None),
    "MomentumCycle": lambda: (MomentumCycle(50, (0.95, 0.85), 10),
                              lambda s: [s(i) for i in (0, 3, 5, 20, 49)], None),
    "DiscriminativeAdam": lambda: (DiscriminativeAdam(1e-2, lr_multipliers={"b": 0.1},
                                                      momentum_schedule=MomentumCycle(10)), _optimizer_probe, None),
    "DiscriminativeAdamW": lambda: (DiscriminativeAdamW(1e-2, weight_decay=0.01, lr_multipliers={"b": 0.1}),
                                    _optimizer_probe, None),
    "DiscriminativeSGD": lambda: (DiscriminativeSGD(1e-2, momentum=0.9, lr_multipliers={"b": 0.1}),
                                  _optimizer_probe, None),
    "DiscriminativeRMSprop": lambda: (DiscriminativeRMSprop(1e-2, lr_multipliers={"b": 0.1}),
                                      _optimizer_probe, None),
    "BoxSigmoid": lambda: (BoxSigmoid(), _layer_probe(ONE_PRED), ONE_PRED),
    "ConcatPooling": lambda: (ConcatPooling(), _layer_probe(FEATURES), FEATURES),
    "SingleObjectLoss": lambda: (SingleObjectLoss(box_weight=3.0), lambda loss: loss(ONE_TRUE, ONE_PRED), None),
    "SingleObjectAccuracy": lambda: (SingleObjectAccuracy(), _metric_probe(ONE_TRUE, ONE_PRED), None),
    "SingleObjectIoU": lambda: (SingleObjectIoU(), _metric_probe(ONE_TRUE, ONE_PRED), None),
    "SingleObjectL1": lambda: (SingleObjectL1(), _metric_probe(ONE_TRUE, ONE_PRED), None),
    "MultiLabelF1": lambda: (MultiLabelF1(threshold=0.4), _metric_probe(MULTI_TRUE, MULTI_LOGITS), None),
    "SSDDetector": lambda: (ssd_keras.SSDDetector(["a", "b", "c"], backbone="tiny", image_size=64,
                                                  head_filters=16, focal=True, score_threshold=0.2,
                                                  metadata={"data": "shapes"}),
                            lambda d: [d(IMAGES, training=False), d.predict(IMAGES, verbose=0)], None),
}


def test_every_registered_class_has_a_case():
    registered = {k.split(">", 1)[1] for k in keras.saving.get_custom_objects() if k.startswith("ssd_keras>")}
    assert registered == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name, tmp_path):
    obj, probe, inputs = CASES[name]()
    if isinstance(obj, keras.layers.Layer) and inputs is not None and not obj.built:
        obj(inputs)
    clone = run_round_trip(obj, probe, tmp_path, inputs)
    assert clone.get_config() == obj.get_config()
