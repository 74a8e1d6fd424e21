"""The command line: `python -m ssd_keras demo|train|evaluate|predict|export`.

Every command is also a function taking an argv list (`main(["demo", "--epochs", "1"])`), so
scripts and tests run it in-process. User errors (a bad flag value, a missing file, a data
source that cannot be read) print `ssd_keras <command>: error: argument --x: ...` and exit
with status 2, without a traceback.

A trained model carries its class names and `AnchorConfig` (see `ssd_keras.export.save_model`),
so `evaluate`, `predict` and `export` need only `--model`.

TensorFlow is imported inside the commands, not at module level, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("ssd_keras")

PROG = "ssd_keras"
BACKBONES = ("tiny", "resnet34", "resnet50", "mobilenetv2")
DATA_KINDS = ("shapes", "voc", "tfds", "coco", "csv")
AUGMENTS = ("none", "flip", "lesson")

# The demo's defaults: the lesson's multi-grid head (4x4, 2x2, 1x1 grids, zooms .7/1/1.3, three
# ratios, k = 9, 189 anchors) on the small "tiny" body at 64 px, trained from scratch on two CPU
# cores in about ten minutes (the body's 4x4 map feeds the 4x4 grid directly). Each choice below
# was worth held-out mAP in the runs listed in bench/README.md ("The demo's defaults"):
# - shapes with 1-4 objects of 20-60% of the image side, objects the lesson's anchors reach (its
#   smallest anchor is 0.175 of the side); `make_shapes`' harder default (1-8 objects from 12%)
#   needs far more training than a demo has (--min-size 0.12 --max-objects 8 to try it);
# - the lesson's focal loss (alpha 0.25, gamma 1): it localises better than BCE here;
# - 24000 images x 4 epochs with horizontal flips: the model under-fits, steps matter most
#   (held-out mAP 0.836 in 582 s; 3 epochs: 0.798 in 446 s);
# - the SSD paper's match threshold 0.5 instead of the lesson's 0.4 (fewer positive anchors
#   whose box the lesson's tanh parameterisation cannot reach), no dropout (nothing over-fits:
#   train and held-out mAP agree) and a 128-wide head (a 20% cheaper step);
# - batch 16, one-cycle lr 3e-3.
# The lesson's own configuration is `--backbone resnet34 --image-size 224` (a GPU job).
DEMO_DEFAULTS = dict(
    backbone="tiny",
    image_size=64,
    epochs=4,
    batch_size=16,
    lr=3e-3,
    dropout=0.0,
    head_filters=128,
    pos_threshold=0.5,
    loc_weight=1.0,
    focal=[],  # [] = the lesson's focal loss (0.25, 1); --bce for BCE
    train_images=24000,
    val_images=300,
    min_size=0.2,
    max_size=0.6,
    max_objects=4,
    augment="flip",
)
# `train` keeps the lesson's settings.
TRAIN_DEFAULTS = dict(DEMO_DEFAULTS, backbone="resnet34", image_size=224, dropout=None,
                      head_filters=256, pos_threshold=0.4, augment="lesson", focal=None)


class UsageError(Exception):
    """A user error: reported as `argument <name>: <message>`, exit status 2, no traceback."""

    def __init__(self, argument, message):
        super().__init__(f"argument {argument}: {message}" if argument else message)


# --------------------------------------------------------------------------- argument types


def _checked(cast, ok, expected):
    """An argparse `type=`: `cast(text)`, then `ok(value)`, else "expected <expected>"."""
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
# `0 < v < inf` also rejects NaN.
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
_unit_float = _checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _data_spec(text):
    """`shapes`, `voc:PATH`, `tfds:NAME`, `coco:PATH.json`, `csv:PATH` (checked lightly here;
    the data module checks paths and names the file when it cannot read it)."""
    kind = text.split(":", 1)[0]
    if kind not in DATA_KINDS or (kind != "shapes" and ":" not in text):
        raise argparse.ArgumentTypeError(
            f"unknown data source {text!r}; use shapes, voc:/path/to/VOCdevkit/VOC2007, "
            f"tfds:voc/2007, coco:/path/to/annotations.json or csv:/path/to/file.csv"
        )
    return text


def _image_size(text):
    value = _positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"image size must be at least 32 pixels, got {value}")
    return value


# --------------------------------------------------------------------------- parser


def build_parser():
    """The `argparse` parser with one sub-command per task (defaults shown in `--help`)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="fastai lesson 9 SSD detector in Keras 3: train, evaluate, predict, export.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_training_args(p, defaults):
        p.add_argument("--backbone", choices=BACKBONES, default=defaults["backbone"],
                       help="body of the detector ('tiny' is a small CPU body; the lesson used resnet34)")
        p.add_argument("--image-size", type=_image_size, default=defaults["image_size"],
                       help="square input size in pixels (the lesson used 224)")
        p.add_argument("--epochs", type=_positive_int, default=defaults["epochs"],
                       help="epochs of the one-cycle schedule")
        p.add_argument("--batch-size", type=_positive_int, default=defaults["batch_size"],
                       help="images per training step")
        p.add_argument("--lr", type=_positive_float, default=defaults["lr"],
                       help="peak learning rate of the one-cycle schedule (Adam)")
        loss = p.add_mutually_exclusive_group()
        loss.add_argument("--focal", type=_positive_float, nargs="*", metavar="ALPHA_GAMMA",
                          default=defaults["focal"],
                          help="use the focal loss instead of BCE; optional ALPHA GAMMA (the "
                          "lesson's 0.25 1 when none); [] = focal 0.25 1, None = BCE")
        loss.add_argument("--bce", action="store_true",
                          help="use the lesson's BCE classification loss (no focal loss)")
        p.add_argument("--dropout", type=_unit_float, default=defaults.get("dropout"),
                       help="head dropout (None: the lesson's 0.4 for the multi-grid head)")
        p.add_argument("--head-filters", type=_positive_int, default=defaults["head_filters"],
                       help="channels of the head's StdConvs (the lesson: 256)")
        p.add_argument("--pos-threshold", type=_unit_float, default=defaults["pos_threshold"],
                       help="IoU above which an anchor is matched to an object (the lesson: 0.4)")
        p.add_argument("--loc-weight", type=_positive_float, default=defaults["loc_weight"],
                       help="loss = loc_weight * loc + clas (the lesson: 1)")
        p.add_argument("--augment", choices=AUGMENTS, default=defaults["augment"],
                       help="training augmentation: none, horizontal flips, or the lesson's "
                       "flip/rotate/lighting")
        p.add_argument("--seed", type=int, default=0, help="random seed")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="more logging (one line per epoch instead of progress bars)")
    demo = sub.add_parser(
        "demo", formatter_class=fmt, parents=[common],
        help="train on the embedded shapes data, print held-out mAP, save a picture",
        description="Train the lesson's multi-grid SSD (4x4, 2x2, 1x1 grids, k=9) on the embedded "
        "'shapes' data set, evaluate on held-out images (VOC07 11-point mAP@0.5), print "
        "'mAP: 0.xxx', and save detections.png, model.keras and metrics.json under --out. "
        "No download; about 10 minutes on a 2-core CPU with the defaults (--epochs 3: 7).",
    )
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    add_training_args(demo, DEMO_DEFAULTS)
    demo.add_argument("--train-images", type=_positive_int, default=DEMO_DEFAULTS["train_images"],
                      help="number of generated training images")
    demo.add_argument("--val-images", type=_positive_int, default=DEMO_DEFAULTS["val_images"],
                      help="number of held-out images for the mAP")
    demo.add_argument("--min-size", type=_unit_float, default=DEMO_DEFAULTS["min_size"],
                      help="smallest object side, as a fraction of the image side")
    demo.add_argument("--max-size", type=_unit_float, default=DEMO_DEFAULTS["max_size"],
                      help="largest object side, as a fraction of the image side")
    demo.add_argument("--max-objects", type=_positive_int, default=DEMO_DEFAULTS["max_objects"],
                      help="at most this many objects per image (at least 1)")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "train", formatter_class=fmt, parents=[common], help="train a detector on a data source",
        description="Train with the lesson's recipe (one-cycle schedule, Adam), logging loc/clas "
        "losses, writing .keras checkpoints, TensorBoard logs and a backup for --resume under --out.",
    )
    train.add_argument("--data", type=_data_spec, default="shapes",
                       help="shapes | voc:PATH | tfds:voc/2007 | coco:PATH.json | csv:PATH")
    train.add_argument("--train-split", default="train", help="split to train on")
    train.add_argument("--val-split", default="val", help="split for the mAP after training ('none' to skip)")
    train.add_argument("--weights", default=None,
                       help="body weights: none, 'imagenet' (download) or a local .weights.h5 file")
    add_training_args(train, TRAIN_DEFAULTS)
    train.add_argument("--div", type=_positive_float, default=20.0,
                       help="one-cycle: start/end LR = lr / div (fastai use_clr's first value)")
    train.add_argument("--cut-div", type=_positive_float, default=10.0,
                       help="one-cycle: LR rises over 1/cut_div of the steps (use_clr's second value)")
    train.add_argument("--max-boxes", type=_positive_int, default=50, help="objects kept per image")
    train.add_argument("--no-augment", action="store_true", help="the same as --augment none")
    train.add_argument("--limit", type=_positive_int, default=None,
                       help="use at most this many training images (quick runs)")
    train.add_argument("--out", type=Path, default=Path("out/train"), help="output folder")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from the backup in --out")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", formatter_class=fmt, parents=[common], help="VOC mAP@0.5 and per-class AP of a saved model",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    evaluate.add_argument("--data", type=_data_spec, default="shapes")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--batch-size", type=_positive_int, default=16, help="images per step")
    evaluate.add_argument("--limit", type=_positive_int, default=None, help="at most this many images")
    evaluate.add_argument("--all-points", action="store_true",
                          help="area under the PR curve (VOC2010+) instead of VOC07 11-point AP")
    evaluate.add_argument("--iou", type=_unit_float, default=0.5, help="IoU for a true positive")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", formatter_class=fmt, parents=[common], help="detect objects in image files, write PNGs and JSON",
    )
    predict.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG/PNG/BMP/GIF files")
    predict.add_argument("--out", type=Path, default=Path("out/predict"), help="output folder")
    predict.add_argument("--score-threshold", type=_unit_float, default=0.3,
                         help="smallest score kept")
    predict.add_argument("--iou-threshold", type=_unit_float, default=0.45, help="NMS IoU")
    predict.add_argument("--max-detections", type=_positive_int, default=100)
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser(
        "export", formatter_class=fmt, parents=[common], help="SavedModel (in-graph NMS) or TFLite",
        description="savedmodel: serving signature images -> boxes/scores/classes/num_detections "
        "(NMS in the graph). tflite (builtin ops only): the raw y_pred (decode on the host with the "
        "anchors in the .json written next to it), or with --nms one image per call with decoding "
        "and per-class NMS in the graph.",
    )
    export.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    export.add_argument("--format", choices=("savedmodel", "tflite"), default="savedmodel")
    export.add_argument("--out", type=Path, required=True, help="folder (savedmodel) or .tflite file")
    export.add_argument("--nms", action="store_true", help="tflite: include decoding + NMS (batch of 1)")
    export.add_argument("--quantize", action="store_true", help="tflite: dynamic-range quantisation")
    export.add_argument("--score-threshold", type=_unit_float, default=0.05)
    export.add_argument("--iou-threshold", type=_unit_float, default=0.45)
    export.add_argument("--max-detections", type=_positive_int, default=100)
    export.set_defaults(func=cmd_export)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's own errors (status 2) and --help (status 0)
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args) or 0
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- shared steps


def _focal(values, argument="--focal"):
    """`None` -> BCE; `[]` -> the lesson's focal (alpha .25, gamma 1); `[a, g]` -> focal(a, g)."""
    if values is None:
        return None
    if len(values) == 0:
        return (0.25, 1.0)
    if len(values) != 2:
        raise UsageError(argument, f"takes no value or two (ALPHA GAMMA), got {len(values)}")
    alpha, gamma = values
    if not 0 < alpha < 1:
        raise UsageError(argument, f"ALPHA must be in (0, 1), got {alpha}")
    return (float(alpha), float(gamma))


def _load_data(spec, split, argument="--data", **kwargs):
    """`ssd_keras.data.load_source`, with read errors turned into a usage error naming the flag."""
    from ssd_keras.data import SourceUnavailable, load_source

    try:
        return load_source(spec, split=split, **kwargs)
    except (OSError, ValueError, ImportError, KeyError, SourceUnavailable) as e:
        raise UsageError(argument, f"cannot load {spec!r} (split {split!r}): {e}") from None


def _load_splits(spec, train_split, val_split, seed=0):
    """Training and validation `DetectionData` (val None for 'none'). COCO-json and CSV files
    are one split each: they are split 90/10 here, deterministically."""
    if spec.split(":", 1)[0] in ("coco", "csv"):
        data = _load_data(spec, None)
        train, val = data.split(0.9, seed=seed)
        return train, (None if val_split.lower() == "none" else val)
    train = _load_data(spec, train_split, argument="--train-split")
    val = None if val_split.lower() == "none" else _load_data(spec, val_split, argument="--val-split")
    return train, val


def _augmentations(name):
    """`--augment`: "none", "flip" (horizontal) or "lesson" (flip, rotate, lighting)."""
    from ssd_keras.data import RandomFlip, lesson_augmentations

    return {"none": None, "flip": [RandomFlip()], "lesson": lesson_augmentations()}[name]


def _make_dataset(data, image_size, batch_size, training, seed=0, max_boxes=None, augment="none"):
    """`(images, y_true)` batches; training: shuffled and augmented (`--augment`)."""
    from ssd_keras.data import make_dataset

    return make_dataset(
        data.records, image_size=image_size, batch_size=batch_size, max_boxes=max_boxes,
        augment=_augmentations(augment) if training else None,
        shuffle=training, seed=seed,
    )


def _load_model(path):
    from ssd_keras.export import load_model

    try:
        return load_model(path)
    except (OSError, ValueError) as e:
        raise UsageError("--model", str(e)) from None


def evaluate_model(model, anchors, dataset, num_classes, ground_truths=None, iou_threshold=0.5,
                   use_07_metric=True, score_threshold=0.01, max_detections=100):
    """`ssd_keras.metrics.evaluate_model` with the CLI's decoding defaults: a low score
    threshold, so the low-confidence tail the AP integrates over is kept."""
    from ssd_keras import metrics

    return metrics.evaluate_model(model, dataset, anchors, num_classes, ground_truths=ground_truths,
                                  iou_threshold=iou_threshold, use_07_metric=use_07_metric,
                                  score_threshold=score_threshold, max_detections=max_detections)


def _format_metrics(result, class_names):
    lines = []
    ap = result["ap"]
    width = max(len(n) for n in class_names) if class_names else 8
    for name, value in zip(class_names, ap):
        lines.append(f"  {name:<{width}}  AP {value:.3f}" if value == value else f"  {name:<{width}}  AP  n/a")
    lines.append(f"mAP: {result['map']:.3f}")
    return "\n".join(lines)


def _metrics_json(result, class_names, **extra):
    ap = [None if v != v else float(v) for v in result["ap"]]
    return dict(extra, map=float(result["map"]), ap=dict(zip(class_names, ap)))


def _fit(model, anchors, num_classes, train_ds, epochs, lr, focal, out_dir=None, div=20.0,
         cut_div=10.0, pos_threshold=0.4, loc_weight=1.0, verbose="auto"):
    """Compile with `SSDLoss` (its loc/clas parts logged) and train with the one-cycle schedule
    (`ssd_keras.training.fit_one_cycle`: the lesson's `fit(lr, 1, cycle_len, use_clr)`)."""
    from ssd_keras.losses import SSDLoss
    from ssd_keras.training import fit_one_cycle

    import tensorflow as tf

    loss = SSDLoss(anchors, num_classes, pos_threshold=pos_threshold, focal=focal, loc_weight=loc_weight)
    # XLA only on GPU: on CPU it made a training step of the tiny demo model about 2x slower
    # (oneDNN convolutions beat XLA's) and added ~40 s of compilation.
    jit = bool(tf.config.list_physical_devices("GPU"))
    return fit_one_cycle(model, train_ds, epochs=epochs, max_lr=lr, div=div, cut_div=cut_div,
                         loss=loss, out_dir=out_dir, verbose=verbose, jit_compile=jit)


def _save_detection_picture(model, info, dataset, path, max_images=4, score_threshold=0.3):
    """Held-out images, one per row: ground truth (left) vs detections (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ssd_keras.metrics import detection_function
    from ssd_keras.viz import draw_boxes, show_detections, show_img

    detect = detection_function(model, info.anchors, score_threshold=score_threshold, max_detections=50)
    images, y_true = next(iter(dataset))
    images, y_true = images[:max_images], y_true[:max_images].numpy()
    out = {k: v.numpy() for k, v in detect(images).items()}
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(7, 3.5 * n), squeeze=False)
    for i in range(n):
        image = images[i].numpy().astype(np.uint8)
        gt = y_true[i][y_true[i, :, 4] >= 0]
        show_img(image, ax=axes[i, 0])
        draw_boxes(axes[i, 0], image.shape, gt[:, :4], gt[:, 4].astype(int), info.class_names)
        axes[i, 0].set_title("ground truth")
        k = int(out["num_detections"][i])
        show_detections(image, {"boxes": out["boxes"][i, :k], "scores": out["scores"][i, :k],
                                "classes": out["classes"][i, :k]}, None, info.class_names,
                        ax=axes[i, 1])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- commands


def cmd_demo(args):
    """Train on `shapes`, evaluate on held-out images, print `mAP: 0.xxx`, save picture + model."""
    import keras

    from ssd_keras.anchors import AnchorConfig
    from ssd_keras.export import save_model
    from ssd_keras.model import build_ssd

    focal = None if args.bce else _focal(args.focal)
    keras.utils.set_random_seed(args.seed)
    start = time.time()
    anchors = AnchorConfig()  # the lesson's 4x4, 2x2, 1x1 grids, k = 9
    if not 0 < args.min_size <= args.max_size:
        raise UsageError("--min-size", f"need 0 < --min-size <= --max-size, got {args.min_size} "
                                       f"and {args.max_size}")
    # Generated at the model's size: no resize, and disjoint train / val streams.
    shapes = dict(image_size=args.image_size, seed=args.seed, min_size=args.min_size,
                  max_size=args.max_size, max_objects=args.max_objects)
    train = _load_data("shapes", "train", count=args.train_images, **shapes)
    val = _load_data("shapes", "val", count=args.val_images, **shapes)
    names = list(train.class_names)
    train_ds = _make_dataset(train, args.image_size, args.batch_size, training=True, seed=args.seed,
                             augment=args.augment)
    val_ds = _make_dataset(val, args.image_size, args.batch_size, training=False)
    model = build_ssd(len(names), anchors, backbone=args.backbone, weights=None,
                      image_size=args.image_size, dropout=args.dropout,
                      head_filters=args.head_filters)
    print(f"demo: {args.backbone} body at {args.image_size} px, {anchors.num_anchors} anchors "
          f"(grids {anchors.grids}, k={anchors.k}), {len(names)} classes, {len(train)} training / "
          f"{len(val)} held-out images of 1-{args.max_objects} objects "
          f"({args.min_size:g}-{args.max_size:g} of the side), {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, head {args.head_filters} wide with dropout "
          f"{args.dropout}, match IoU > {args.pos_threshold}, "
          f"{'focal ' + str(focal) if focal else 'BCE'} loss, augmentation: {args.augment}", flush=True)
    _fit(model, anchors, len(names), train_ds, args.epochs, args.lr, focal,
         pos_threshold=args.pos_threshold, loc_weight=args.loc_weight,
         verbose=2 if args.verbose else "auto")
    train_time = time.time() - start
    result = evaluate_model(model, anchors, val_ds, len(names), val.ground_truths())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = save_model(model, out / "model.keras", names, anchors, args.image_size,
                      extra={"backbone": args.backbone, "data": "shapes", "shapes": shapes,
                             "val_images": len(val)})
    picture = _save_detection_picture(model, info, val_ds, out / "detections.png")
    total = time.time() - start
    metrics = _metrics_json(result, names, command="demo", backbone=args.backbone,
                            image_size=args.image_size, epochs=args.epochs,
                            train_images=len(train), val_images=len(val), focal=focal,
                            lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                            augment=args.augment, dropout=args.dropout,
                            head_filters=args.head_filters, pos_threshold=args.pos_threshold,
                            loc_weight=args.loc_weight, min_size=args.min_size,
                            max_size=args.max_size, max_objects=args.max_objects,
                            train_seconds=round(train_time, 1), total_seconds=round(total, 1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print("held-out AP per class (VOC07 11-point, IoU 0.5):")
    print(_format_metrics(result, names).rsplit("\n", 1)[0])
    print(f"wrote {out / 'model.keras'}, {picture}, {out / 'metrics.json'} "
          f"(training {train_time:.0f} s, total {total:.0f} s)")
    print(f"mAP: {result['map']:.3f}", flush=True)
    return 0


def cmd_train(args):
    """Train on `--data`, save `model.keras` (+ checkpoints, logs, backup) under `--out`."""
    import keras

    from ssd_keras.anchors import AnchorConfig
    from ssd_keras.export import save_model, write_metadata
    from ssd_keras.model import build_ssd

    focal = None if args.bce else _focal(args.focal)
    weights = None if args.weights in (None, "none", "None") else args.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise UsageError("--weights", f"file not found: {weights}")
    out = Path(args.out)
    if (out / "backup").exists() and not args.resume:
        raise UsageError("--out", f"{out} holds the backup of an interrupted run; pass --resume "
                                  f"to continue it, or choose another --out")
    keras.utils.set_random_seed(args.seed)
    anchors = AnchorConfig()
    train, val = _load_splits(args.data, args.train_split, args.val_split, args.seed)
    if args.limit:
        train.records = train.records[: args.limit]
    names = list(train.class_names)
    # For the checkpoints (last.keras, best.keras) that fit writes into --out.
    write_metadata(out / "ssd_keras.json", names, anchors, args.image_size,
                   extra={"backbone": args.backbone, "data": args.data})
    train_ds = _make_dataset(train, args.image_size, args.batch_size, training=True,
                             seed=args.seed, max_boxes=args.max_boxes,
                             augment="none" if args.no_augment else args.augment)
    try:
        model = build_ssd(len(names), anchors, backbone=args.backbone, weights=weights,
                          image_size=args.image_size, dropout=args.dropout,
                          head_filters=args.head_filters)
    except (OSError, ValueError) as e:
        raise UsageError("--weights" if weights else "--image-size", str(e)) from None
    print(f"train: {train.summary()}", flush=True)
    _fit(model, anchors, len(names), train_ds, args.epochs, args.lr, focal, out_dir=out,
         div=args.div, cut_div=args.cut_div, pos_threshold=args.pos_threshold,
         loc_weight=args.loc_weight, verbose=2 if args.verbose else "auto")
    info = save_model(model, out / "model.keras", names, anchors, args.image_size,
                      extra={"backbone": args.backbone, "data": args.data, "epochs": args.epochs,
                             "lr": args.lr, "focal": focal})
    print(f"wrote {out / 'model.keras'}")
    if val is not None:
        val_ds = _make_dataset(val, args.image_size, args.batch_size, training=False,
                               max_boxes=args.max_boxes)
        result = evaluate_model(model, anchors, val_ds, len(names), val.ground_truths())
        (out / "metrics.json").write_text(json.dumps(
            _metrics_json(result, names, command="train", data=args.data, split=args.val_split),
            indent=1))
        print(_format_metrics(result, info.class_names))
    return 0


def cmd_evaluate(args):
    """Print per-class AP and `mAP: 0.xxx` of `--model` on `--data` / `--split`."""
    model, info = _load_model(args.model)
    kwargs = {}
    if args.data.split(":", 1)[0] == "shapes":
        # The held-out stream of the model's shapes settings (a demo model records them), at
        # the model's size.
        shapes = info.extra.get("shapes") or {}
        kwargs = {k: shapes[k] for k in ("seed", "min_size", "max_size", "max_objects") if k in shapes}
        kwargs.update(count=args.limit or info.extra.get("val_images", 200), image_size=info.image_size)
    split = None if args.data.split(":", 1)[0] in ("coco", "csv") else args.split
    data = _load_data(args.data, split, **kwargs)
    if args.limit:
        data.records = data.records[: args.limit]
    if list(data.class_names) != list(info.class_names):
        raise UsageError("--data", f"the class names of {args.data!r} ({list(data.class_names)[:4]}"
                                   f"...) differ from the model's ({info.class_names[:4]}...)")
    ds = _make_dataset(data, info.image_size, args.batch_size, training=False)
    result = evaluate_model(model, info.anchors, ds, info.num_classes, data.ground_truths(),
                            iou_threshold=args.iou, use_07_metric=not args.all_points)
    print(f"{data.summary()}")
    print(_format_metrics(result, info.class_names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_metrics_json(
            result, info.class_names, model=str(args.model), data=args.data, split=split,
            metric="all-points" if args.all_points else "voc07-11-point", iou=args.iou), indent=1))
    return 0


def _read_image(path):
    """uint8 `[H, W, 3]` from an image file; a usage error naming the file when unreadable."""
    import tensorflow as tf

    if not path.is_file():
        raise UsageError("IMAGE", f"file not found: {path}")
    try:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
        raise UsageError("IMAGE", f"{path}: not a readable image ({e.message.splitlines()[0]})") from None
    return image.numpy()


def cmd_predict(args):
    """Detect objects in `IMAGE`s; write `<name>.png` with boxes and `detections.json` to `--out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf

    from ssd_keras.metrics import detection_function
    from ssd_keras.viz import show_detections

    model, info = _load_model(args.model)
    images = [_read_image(p) for p in args.images]  # read all first: fail before any work
    detect = detection_function(model, info.anchors, score_threshold=args.score_threshold,
                                iou_threshold=args.iou_threshold,
                                max_detections=args.max_detections)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for path, image in zip(args.images, images):
        h, w = image.shape[:2]
        x = tf.image.resize(tf.cast(image[None], tf.float32), (info.image_size, info.image_size))
        det = {k: v.numpy()[0] for k, v in detect(x).items()}
        n = int(det["num_detections"])
        boxes, scores, classes = det["boxes"][:n], det["scores"][:n], det["classes"][:n]
        objects = []
        for box, score, cls in zip(boxes, scores, classes):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            objects.append({
                "class": info.class_names[int(cls)], "class_id": int(cls), "score": float(score),
                "box_rel_yxyx": [ymin, xmin, ymax, xmax],
                "box_xyxy": [xmin * w, ymin * h, xmax * w, ymax * h],
            })
        stem = path.stem
        while stem in used:  # a/img.jpg and b/img.jpg must not overwrite each other's picture
            stem += "_"
        used.add(stem)
        png = out / (stem + ".png")
        fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1)))
        show_detections(image, {"boxes": boxes, "scores": scores, "classes": classes}, None,
                        info.class_names, ax=ax)
        fig.savefig(png, dpi=80, bbox_inches="tight")
        plt.close(fig)
        results.append({"image": str(path), "width": int(w), "height": int(h),
                        "picture": str(png), "detections": objects})
        print(f"{path}: {len(objects)} objects -> {png}")
    (out / "detections.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'detections.json'}")
    return 0


def cmd_export(args):
    """Export `--model` as a SavedModel (in-graph NMS) or a TFLite file."""
    from ssd_keras.export import export_savedmodel, export_tflite

    model, info = _load_model(args.model)
    decode = dict(score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                  max_detections=args.max_detections)
    if args.format == "savedmodel":
        if args.nms or args.quantize:
            raise UsageError("--nms/--quantize", "apply to --format tflite only")
        path = export_savedmodel(model, info.anchors, args.out, class_names=info.class_names,
                                 image_size=info.image_size, **decode)
    else:
        if args.out.suffix != ".tflite":
            raise UsageError("--out", f"a TFLite file name must end in .tflite, got {args.out}")
        path = export_tflite(model, args.out, anchors=info.anchors, include_nms=args.nms,
                             class_names=info.class_names, quantize=args.quantize, **decode)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
