"""Named configurations of `SSDDetector`, each complete on its own (no preset inherits another).

A preset is a configuration, not weights: the architecture and the detector's loss and decoder
settings (`"detector"`, the keyword arguments of `SSDDetector`), plus the recipe that trains it
(`"recipe"`: what `python -m ssd_keras demo` / `train` use as defaults). No trained weights are
published; `SSDDetector.from_preset(name, weights=...)` takes body weights as `build_ssd` does.

Why the demo's settings are what they are (runs and numbers): `bench/README.md`, "The demo's
defaults".
"""

from __future__ import annotations

import copy

from ssd_keras.data.records import VOC_CLASSES
from ssd_keras.data.shapes import SHAPE_CLASSES

LESSON_ANCHORS = {
    "grids": [4, 2, 1],
    "zooms": [0.7, 1.0, 1.3],
    "ratios": [[1.0, 1.0], [1.0, 0.5], [0.5, 1.0]],
}

# The demo's 64 px images hold objects from 13 px; on the lesson's grids alone a small object
# between two 4x4 cells overlaps no anchor above IoU 0.4 and has only its forced best anchor to
# learn from. The tiny8 body's own 8x8 map carries a fourth grid for them; its anchors cover the
# smallest objects, so the 0.7 zoom goes (k = 6: 510 anchors, not 765). bench/README.md, "The
# demo's defaults", has the runs.
DEMO_ANCHORS = dict(LESSON_ANCHORS, grids=[8, 4, 2, 1], zooms=[1.0, 1.3])

PRESETS = {
    # The lesson's final model: ResNet34 body at 224 px, SSD_MultiHead (k = 9, 189 anchors,
    # dropout 0.4, bias -4), focal loss (0.25, 1), matched above IoU 0.4. Its recipe is the
    # lesson's: `learn.fit(lr, 1, cycle_len=5, use_clr=(20, 10))` with the body frozen, then
    # `freeze_to(-2)` and `fit(lrs / 4, 1, cycle_len=10, use_clr=(20, 10))` with
    # `lrs = [lr/100, lr/10, lr]`; lr = 3e-3 as in the lesson's notebook, batch 64 there.
    "lesson_resnet34_224": {
        "description": "fastai lesson 9's final SSD: ResNet34 body, 224 px, 4x4/2x2/1x1 grids, "
                       "k=9 (189 anchors), focal loss; Pascal VOC classes",
        "detector": {
            "class_names": list(VOC_CLASSES),
            "anchors": LESSON_ANCHORS,
            "backbone": "resnet34",
            "image_size": 224,
            "head": "multi",
            "head_filters": 256,
            "dropout": 0.4,
            "bias": -4.0,
            "pos_threshold": 0.4,
            "focal": [0.25, 1.0],
            "loc_weight": 1.0,
        },
        "recipe": {
            "data": "voc:data/voc2007_sample/VOC2007",
            "weights": "imagenet",
            "batch_size": 64,
            "lr": 3e-3,
            "stage1_epochs": 5,
            "stage1_clr": [20.0, 10.0],
            "stage2_epochs": 10,
            "stage2_clr": [20.0, 10.0],
            "stage2_divisor": 4.0,  # lrs / 4 with focal loss (lrs / 2 with BCE, cycle_len 4, clr (20, 8))
            "group_multipliers": [0.01, 0.1, 1.0],
            "augment": "lesson",
        },
    },
    # `python -m ssd_keras demo`: the lesson's multi-grid head on the small "tiny8" body at 64 px
    # (its 8x8 map carries the 8x8 grid and goes through the head's stride-2 StdConv to the 4x4
    # grid, as ResNet34's 7x7 map does in the lesson), trained from scratch on generated shapes
    # on two CPU cores, in batches of 64: a third less CPU per image than 16, with the training
    # loss of 16 at equal images seen. Matching at IoU 0.3 and the location loss weighted 4 place
    # small boxes better; a 64-wide head costs ~15 % less per step than 128 and scored as well
    # (bench/README.md, "The demo's defaults").
    "demo_tiny64": {
        "description": "the CPU demo: tiny8 body, 64 px, the lesson's multi-grid head (64 wide, no "
                       "dropout) with an 8x8 grid added, zooms 1 and 1.3, k=6 (510 anchors), focal loss, "
                       "match IoU 0.3, loc weighted 4; the six shapes classes",
        "detector": {
            "class_names": list(SHAPE_CLASSES),
            "anchors": DEMO_ANCHORS,
            "backbone": "tiny8",
            "image_size": 64,
            "head": "multi",
            "head_filters": 64,
            "dropout": 0.0,
            "bias": -4.0,
            "pos_threshold": 0.3,
            "focal": [0.25, 1.0],
            "loc_weight": 4.0,
        },
        "recipe": {
            "data": "shapes",
            "weights": None,
            "batch_size": 64,
            "lr": 6e-3,
            "epochs": 4,
            "clr": [20.0, 10.0],
            "augment": "flip",
            "train_images": 24000,
            "val_images": 300,
            "shapes": {"seed": 0, "min_size": 0.2, "max_size": 0.6, "max_objects": 4},
        },
    },
}


def get_preset(name):
    """A deep copy of preset `name` (`{"description", "detector", "recipe"}`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
