"""Train the small checkpoint that notebook 05 (NMS and evaluation) loads.

    .venv/bin/python notebooks/train_checkpoint.py --epochs 12 --lr 5e-3 --out /tmp/first.keras
    .venv/bin/python notebooks/train_checkpoint.py --init /tmp/first.keras --epochs 10 --lr 5e-3 --out /tmp/second.keras
    .venv/bin/python notebooks/train_checkpoint.py --init /tmp/second.keras --epochs 10 --lr 5e-3

(the shipped file: these three one-cycles, 32 epochs, about 55 minutes on 2 busy CPU cores; the
`history` in its metadata records them with the held-out mAP after each: 0.27, 0.43, 0.47).

The lesson's recipe on the embedded `shapes` data: the lesson's multi-grid head (grids 4, 2, 1;
k = 9; 189 anchors) on the small `tiny` body at 128 px, BCE loss, one-cycle schedule
(`fit_one_cycle`, the lesson's `use_clr=(20, 10)`), the lesson's augmentations. The head uses
64 filters instead of the lesson's 256 so that the checkpoint stays small enough (~3 MB) to
ship in the repository, and dropout 0.1 instead of the lesson's 0.4 (a choice for this short CPU
run, not tuned); everything else is the library's. Writes
`notebooks/assets/shapes_tiny128.keras` (with class names and anchors inside, see
an `SSDDetector`).

Why a checkpoint: CI executes every notebook on 2 CPU cores in a few minutes, which is not
enough to train a detector worth looking at; notebook 04 shows the same recipe on a short run.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import ssd_keras  # noqa: E402
from ssd_keras.callbacks import MeanAveragePrecisionCallback  # noqa: E402
from ssd_keras.data import lesson_augmentations, make_shapes  # noqa: E402
from ssd_keras.saving import load_model  # noqa: E402
from ssd_keras.training import fit_one_cycle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "assets", "shapes_tiny128.keras")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--train-images", type=int, default=1200)
    p.add_argument("--init", help="continue from this checkpoint (a new one-cycle of --epochs)")
    args = p.parse_args()

    keras.utils.set_random_seed(0)
    size = args.image_size
    train = make_shapes(count=args.train_images, image_size=size, split="train")
    val = make_shapes(count=200, image_size=size, split="val")
    names = list(train.class_names)
    train_ds = train.dataset(size, 32, augment=lesson_augmentations(), shuffle=True, seed=0)
    val_ds = val.dataset(size, 50)
    anchors = ssd_keras.AnchorConfig()
    history = []
    if args.init:
        model = load_model(args.init)
        history = list(model.metadata.get("history") or [])
    else:
        # The lesson's BCE loss and match IoU 0.4; a narrower head than the lesson's 256.
        model = ssd_keras.SSDDetector(names, anchors, backbone="tiny", image_size=size,
                                      head_filters=args.filters, dropout=args.dropout, bias=-4.0,
                                      pos_threshold=0.4, focal=None)
    print(f"{model.count_params():,} parameters")
    val_map = MeanAveragePrecisionCallback(val_ds, every=2)
    start = time.time()
    fit_one_cycle(model, train_ds, args.epochs, args.lr, map_callback=val_map, verbose=2)
    result = val_map.evaluate(model)
    print(f"held-out mAP (VOC07, IoU 0.5): {result['map']:.3f}; {time.time() - start:.0f} s")
    history.append({"epochs": args.epochs, "max_lr": args.lr, "val_map": round(float(result["map"]), 4)})
    model.metadata.update({
        "backbone": "tiny", "head_filters": args.filters, "head_dropout": args.dropout,
        "train_images": args.train_images, "data": "shapes", "loss": "BCE", "history": history,
        "val_map": round(float(result["map"]), 4),
        "split": {"data": "shapes", "train_split": "train", "val": {"kind": "split", "split": "val", "count": 200}}})
    # Save, then re-save the uncompiled reload: no optimizer state in the shipped file (a third
    # of the size).
    tmp = args.out + ".tmp.keras"
    model.save(tmp)
    load_model(tmp).save(args.out)
    os.remove(tmp)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
