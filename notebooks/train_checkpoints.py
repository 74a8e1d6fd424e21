"""Train the three SSD checkpoints the notebooks load (04, 05, 06), the same way except for what the
lesson varies.

    PYTHONPATH=. python notebooks/train_checkpoints.py                   # all three
    PYTHONPATH=. python notebooks/train_checkpoints.py --model focal     # one of grid4_bce, multi_bce, focal

| name        | anchors                          | head            | loss           | file                              |
|-------------|----------------------------------|-----------------|----------------|-----------------------------------|
| `grid4_bce` | `AnchorConfig.single_grid(4)`: 16 | `SSDHead`       | BCE            | `assets/shapes_grid4_bce.keras`   |
| `multi_bce` | grids 4, 2, 1, k = 9: 189         | `SSDMultiHead`  | BCE            | `assets/shapes_multi_bce.keras`   |
| `focal`     | grids 4, 2, 1, k = 9: 189         | `SSDMultiHead`  | focal (0.25, 1)| `assets/shapes_multi_focal.keras` |

Everything else is the `demo_tiny64` preset and `python -m ssd_keras demo`'s recipe as they were
when the checkpoints were made (2026-11-29; the `focal` model *was* the demo's model then; the
demo has since moved to the `tiny8` body at batch 64, lr 6e-3, an added 8x8 anchor grid, match
IoU 0.3, the location loss weighted 4 and a 64-wide head; `CHECKPOINT_DETECTOR` and
`CHECKPOINT_RECIPE` below keep the old values so that this script still makes these files):
the tiny body at 64 px trained from scratch, head 128 filters, no dropout, bias -4, matched
above IoU 0.5; generated `shapes` with 1-4 objects of 20-60 % of the side, seed 0: 24000 training images (split "train"), 4 epochs, batch 16, one-cycle to lr 3e-3
(`use_clr=(20, 10)`), random horizontal flips; the held-out set is split "val", 300 images, which
`python -m ssd_keras evaluate --model FILE --data shapes` rebuilds from the metadata ("shapes",
"split") to reproduce the recorded mAP. The held-out loss is computed after every epoch (the
`history` in the metadata: loss, loc, clas and val_* per epoch).

Each file is saved without optimizer state (an uncompiled reload re-saved): 2.6 MB (16 anchors) or
5.1 MB (189 anchors). Its
metadata records the command, the wall time of training and the held-out mAP (VOC07 11-point,
IoU 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras

from ssd_keras.anchors import AnchorConfig
from ssd_keras.data.augment import augmentations_by_name
from ssd_keras.data.pipeline import make_dataset
from ssd_keras.data.shapes import make_shapes
from ssd_keras.detector import SSDDetector
from ssd_keras.evaluation import evaluate_model
from ssd_keras.presets import LESSON_ANCHORS, get_preset
from ssd_keras.saving import load_model
from ssd_keras.training import fit_one_cycle

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "assets")

#: The demo's settings of 2026-11-29, with which the three checkpoints were trained (the preset's
#: other settings have not changed since): the detector's, then the recipe's.
CHECKPOINT_DETECTOR = {"backbone": "tiny", "pos_threshold": 0.5, "loc_weight": 1.0,
                       "anchors": LESSON_ANCHORS, "head_filters": 128}
CHECKPOINT_RECIPE = {"batch_size": 16, "lr": 3e-3, "train_images": 24000}

#: What the lesson varies between the three models (overrides of the demo_tiny64 preset).
MODELS = {
    "grid4_bce": {"file": "shapes_grid4_bce.keras", "loss": "BCE",
                  "overrides": {"anchors": AnchorConfig.single_grid(4), "head": "single", "focal": None}},
    "multi_bce": {"file": "shapes_multi_bce.keras", "loss": "BCE", "overrides": {"focal": None}},
    "focal": {"file": "shapes_multi_focal.keras", "loss": "focal (alpha 0.25, gamma 1)", "overrides": {}},
}


def build_detector(name):
    """The untrained detector of model `name`: the demo preset with `CHECKPOINT_DETECTOR`'s pins
    and the model's overrides."""
    return SSDDetector.from_preset("demo_tiny64", **{**CHECKPOINT_DETECTOR, **MODELS[name]["overrides"]})


def train(name, out_dir=ASSETS, epochs=None, train_images=None, log=print):
    """Train model `name` of `MODELS` with the demo's recipe; returns (path, metadata)."""
    recipe = get_preset("demo_tiny64")["recipe"]
    recipe.update(CHECKPOINT_RECIPE)
    epochs = epochs or recipe["epochs"]
    train_images = train_images or recipe["train_images"]
    shapes = dict(recipe["shapes"])
    seed = shapes.pop("seed")
    spec = MODELS[name]
    start = time.time()
    keras.utils.set_random_seed(seed)
    detector = build_detector(name)
    size = detector.image_size
    settings = dict(image_size=size, seed=seed, **shapes)
    train_data = make_shapes(train_images, split="train", **settings)
    val = make_shapes(recipe["val_images"], split="val", **settings)
    train_ds = make_dataset(train_data, size, recipe["batch_size"],
                            augment=augmentations_by_name(recipe["augment"]), shuffle=True, seed=seed)
    val_ds = make_dataset(val, size, recipe["batch_size"])
    a = detector.anchors
    log(f"{name}: {a.num_anchors} anchors (grids {a.grids}, k={a.k}), loss {spec['loss']}, "
        f"{len(train_data)} x {epochs} epochs, batch {recipe['batch_size']}, lr {recipe['lr']}")
    hist = fit_one_cycle(detector, train_ds, epochs, recipe["lr"], *recipe["clr"], val_ds=val_ds, verbose=2)
    train_seconds = time.time() - start
    result = evaluate_model(detector, val_ds, ground_truths=val.ground_truths())
    command = f"PYTHONPATH=. python notebooks/train_checkpoints.py --model {name}"
    if epochs != recipe["epochs"] or train_images != recipe["train_images"]:
        command += f" --epochs {epochs} --train-images {train_images}"
    detector.metadata.update({
        "data": "shapes", "shapes": dict(shapes, seed=seed),
        "split": {"data": "shapes", "train_split": "train",
                  "val": {"kind": "split", "split": "val", "count": len(val)}},
        "command": command, "model": name, "loss": spec["loss"], "train_images": len(train_data),
        "epochs": epochs, "batch_size": recipe["batch_size"], "lr": recipe["lr"], "augment": recipe["augment"],
        "train_seconds": round(train_seconds, 1), "val_map": round(float(result["map"]), 4),
        "history": {k: [round(float(x), 5) for x in v] for k, v in hist.history.items()},
    })
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, spec["file"])
    # Save, then re-save the uncompiled reload: no optimizer state in the shipped file.
    tmp = path + ".tmp.keras"
    detector.save(tmp)
    load_model(tmp).save(path)
    os.remove(tmp)
    log(f"{name}: held-out mAP {result['map']:.3f} ({len(val)} images); training {train_seconds:.0f} s; "
        f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return path, detector.metadata


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=(*MODELS, "all"), default="all")
    p.add_argument("--out-dir", default=ASSETS)
    p.add_argument("--epochs", type=int, default=None, help="default: the demo's (4)")
    p.add_argument("--train-images", type=int, default=None, help="default: the demo's (24000)")
    args = p.parse_args(argv)
    for name in (MODELS if args.model == "all" else (args.model,)):
        train(name, args.out_dir, args.epochs, args.train_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
