"""The command line: `python -m ssd_keras demo|train|evaluate|predict|export`.

Argument parsing and printing only; the work is in the library (`ssd_keras.recipes`,
`ssd_keras.evaluation`, `ssd_keras.inference`, `ssd_keras.export`). Every command is also a
function of an argv list (`main(["demo", "--epochs", "1"])`), so scripts and tests run it
in-process. User errors (a bad flag value, a missing file, a data source that cannot be read)
print `ssd_keras <command>: error: argument --x: ...` and exit with status 2, no traceback.

Defaults come from the presets (`ssd_keras.presets`): `demo` from `demo_tiny64`, `train` from
`lesson_resnet34_224`. A saved model carries its class names, anchors and held-out split, so
`evaluate`, `predict` and `export` need only `--model`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ssd_keras._environment import CLI_ENVIRONMENT, quiet_native_stderr
from ssd_keras.backbones import BACKBONES
from ssd_keras.data.augment import AUGMENT_CHOICES
from ssd_keras.data.splits import source_kind
from ssd_keras.decode import DISPLAY_SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS
from ssd_keras.losses import LESSON_FOCAL, parse_focal
from ssd_keras.presets import get_preset

log = logging.getLogger("ssd_keras")

PROG = "ssd_keras"
DATA_HELP = "shapes | voc:PATH/VOC2007 | coco:FILE.json | csv:FILE.csv | tfds:voc/2007"
#: Bodies with ImageNet weights (`--weights auto` uses them).
PRETRAINED = ("resnet34", "resnet50", "mobilenetv2")


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
_open_unit_float = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
_dropout_rate = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")  # 1 drops everything
_seed = _checked(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")  # numpy's seed range


def _data_spec(text):
    """Checked lightly here; the data module names the file when it cannot read it."""
    try:
        kind = source_kind(text)
    except ValueError:
        kind = None
    if kind is None or (kind != "shapes" and ":" not in text):
        raise argparse.ArgumentTypeError(f"unknown data source {text!r}; use {DATA_HELP}")
    return text


def _image_size(text):
    value = _positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"image size must be at least 32 pixels, got {value}")
    return value


def _class_names(text):
    """`--classes`: "auto", or comma-separated names (id = position), each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["auto"]:
        return "auto"
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a class name is given twice or none at all: {text!r}")
    return tuple(names)


# --------------------------------------------------------------------------- parser


def build_parser():
    """The `argparse` parser with one sub-command per task (defaults shown in `--help`)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=fmt,
        description="fastai lesson 9 SSD detector in Keras 3: train, evaluate, predict, export.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="TensorFlow's start-up lines, debug logging, one line per epoch")
    common.add_argument("--no-onednn", action="store_true",
                        help="keep TensorFlow's own choice of oneDNN CPU kernels (the command line "
                        "turns them on where TensorFlow leaves them off; effective only on the "
                        "command line, before TensorFlow starts)")
    reading = argparse.ArgumentParser(add_help=False)
    reading.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                         help="unreadable or malformed images and annotations: stop with an error "
                         "naming the file, or skip them, counted and reported in one line")

    def add_model_args(p, det):
        p.add_argument("--backbone", choices=BACKBONES, default=det["backbone"],
                       help="body of the detector ('tiny' and 'tiny8' are small CPU bodies; the lesson: resnet34)")
        p.add_argument("--image-size", type=_image_size, default=det["image_size"],
                       help="square input size in pixels (the lesson: 224)")
        loss = p.add_mutually_exclusive_group()
        loss.add_argument("--focal", type=_positive_float, nargs=2, metavar=("ALPHA", "GAMMA"),
                          default=None, help="focal-loss parameters (default when neither --focal "
                          f"nor --bce: the lesson's focal loss, {LESSON_FOCAL[0]} {LESSON_FOCAL[1]:g})")
        loss.add_argument("--bce", action="store_true",
                          help="the lesson's plain binary cross-entropy instead of focal loss")
        p.add_argument("--dropout", type=_dropout_rate, default=det["dropout"], help="head dropout")
        p.add_argument("--head-filters", type=_positive_int, default=det["head_filters"],
                       help="channels of the head's StdConvs (the lesson: 256)")
        p.add_argument("--pos-threshold", type=_unit_float, default=det["pos_threshold"],
                       help="IoU above which an anchor is matched to an object (the lesson: 0.4)")
        p.add_argument("--loc-weight", type=_positive_float, default=det["loc_weight"],
                       help="loss = loc_weight * loc + clas (the lesson: 1)")
        anchors = det["anchors"]
        p.add_argument("--grids", type=_positive_int, nargs="+", default=anchors["grids"], metavar="G",
                       help="anchor grids, coarsest last as the head makes them (the lesson: 4 2 1)")
        p.add_argument("--zooms", type=_positive_float, nargs="+", default=anchors["zooms"], metavar="Z",
                       help="anchor sizes per grid cell (the lesson: 0.7 1 1.3); the ratios stay the "
                       "lesson's (1:1, 1:0.5, 0.5:1)")

    def add_fit_args(p, recipe):
        p.add_argument("--batch-size", type=_positive_int, default=recipe["batch_size"],
                       help="images per training step")
        p.add_argument("--lr", type=_positive_float, default=recipe["lr"],
                       help="the lesson's lr: the peak learning rate of the one-cycle schedule (Adam)")
        p.add_argument("--augment", choices=AUGMENT_CHOICES, default=recipe["augment"],
                       help="training augmentation: none, horizontal flips, or the lesson's "
                       "flip/rotate/lighting (boxes follow)")
        p.add_argument("--seed", type=_seed, default=0, help="random seed (data order, augmentation, init)")

    demo_preset = get_preset("demo_tiny64")
    ddet, drec = demo_preset["detector"], demo_preset["recipe"]
    demo = sub.add_parser(
        "demo", formatter_class=fmt, parents=[common],
        help="train on the embedded shapes data, print held-out mAP, save a picture",
        description="Train the lesson's multi-grid SSD from scratch on the embedded 'shapes' data set "
        "(preset demo_tiny64: the lesson's 4x4, 2x2, 1x1 grids plus an 8x8 grid for small objects, "
        "zooms 1 and 1.3, k=6), evaluate on held-out images (VOC07 11-point mAP@0.5), print "
        "'mAP: 0.xxx', and save detections.png, model.keras and metrics.json under --out. No download. "
        "The lesson's anchors are --grids 4 2 1 --zooms 0.7 1 1.3; its own configuration adds "
        "--backbone resnet34 --image-size 224 (a GPU job).")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    add_model_args(demo, ddet)
    add_fit_args(demo, drec)
    demo.add_argument("--epochs", type=_positive_int, default=drec["epochs"], help="epochs of the one-cycle schedule")
    demo.add_argument("--train-images", type=_positive_int, default=drec["train_images"],
                      help="number of generated training images")
    demo.add_argument("--val-images", type=_positive_int, default=drec["val_images"],
                      help="number of held-out images for the mAP")
    shapes = drec["shapes"]
    demo.add_argument("--min-size", type=_unit_float, default=shapes["min_size"],
                      help="smallest object side, as a fraction of the image side")
    demo.add_argument("--max-size", type=_unit_float, default=shapes["max_size"],
                      help="largest object side, as a fraction of the image side")
    demo.add_argument("--max-objects", type=_positive_int, default=shapes["max_objects"],
                      help="at most this many objects per image (at least 1)")
    demo.set_defaults(func=cmd_demo)

    lesson = get_preset("lesson_resnet34_224")
    tdet, trec = lesson["detector"], lesson["recipe"]
    train = sub.add_parser(
        "train", formatter_class=fmt, parents=[common, reading],
        help="train a detector on your data with the lesson's recipe",
        description="The lesson's recipe (preset lesson_resnet34_224). With a pretrained body: stage 1 "
        "trains the head with the body frozen; stage 2 is freeze_to(-2) (upper body + head) with "
        "the differential learning rates lr/100, lr/10, lr divided by --stage2-divisor. From scratch "
        "(--weights none): one stage, every layer trainable. Validation every epoch (val_loss, "
        "val_loc, val_clas, val_map); writes model.keras, best.keras (by val_map), last.keras, "
        "metrics.json, per-stage CSV and TensorBoard logs under --out.")
    train.add_argument("--data", type=_data_spec, default="shapes", help=DATA_HELP)
    train.add_argument("--train-split", default="train", help="the split to train on (VOC: an "
                       "ImageSets/Main list; coco/csv files are one set: 'all')")
    train.add_argument("--val-split", default="auto", help="'auto': the source's val split when it "
                       "has one, else --val-fraction of the training images; a split name; or 'none'")
    train.add_argument("--val-fraction", type=_open_unit_float, default=0.1,
                       help="the part of the training images held out when the source has no val split")
    train.add_argument("--classes", type=_class_names, default=None,
                       help="the class names of a VOC folder or CSV: comma-separated (id = position) or "
                       "'auto' (the 20 VOC names when every name found is one, else the sorted names "
                       "found); default: the 20 VOC names for a VOC folder, 'auto' for a CSV")
    train.add_argument("--weights", default="auto",
                       help="body weights: 'auto' (ImageNet for resnet34/resnet50/mobilenetv2, none "
                       "for tiny/tiny8), 'imagenet' (downloaded once), 'none' (from scratch), or a file: "
                       ".safetensors / .pth with torchvision's names, or a Keras .weights.h5")
    add_model_args(train, tdet)
    add_fit_args(train, trec)
    train.add_argument("--stage1-epochs", type=_positive_int, default=trec["stage1_epochs"],
                       help="stage 1 (body frozen): the lesson's cycle_len=5")
    train.add_argument("--stage2-epochs", type=_positive_int, default=None,
                       help="stage 2 (freeze_to(-2)): the lesson's cycle_len, 10 with focal loss, 4 with --bce")
    train.add_argument("--stage2-divisor", type=_positive_float, default=None,
                       help="stage 2 trains at lrs / d: the lesson's 4 with focal loss, 2 with --bce")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="from scratch (--weights none): epochs of the one stage "
                       "(default: stage 1 + stage 2 epochs)")
    train.add_argument("--train-images", type=_positive_int, default=None,
                       help="use at most this many training images (quick runs); shapes: how many to generate")
    train.add_argument("--max-boxes", type=_positive_int, default=50, help="objects kept per image")
    train.add_argument("--mixed-precision", action="store_true",
                       help="mixed_float16 compute (for GPUs; untested here, and slow on CPUs)")
    train.add_argument("--xla", choices=("auto", "on", "off"), default="auto",
                       help="XLA compilation of the training step: auto = on a GPU only")
    train.add_argument("--out", type=Path, default=Path("out/train"), help="output folder")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its backup in --out")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", formatter_class=fmt, parents=[common, reading],
        help="VOC mAP@0.5 and per-class AP of a saved model")
    evaluate.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    evaluate.add_argument("--data", type=_data_spec, default=None,
                          help=f"{DATA_HELP} (default: the data the model was trained on)")
    evaluate.add_argument("--split", default="held-out",
                          help="'held-out': the images the model's training held out (recorded in the "
                          "model); or a split name (val, test, ...; 'all' for a coco/csv file)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=16, help="images per step")
    evaluate.add_argument("--max-images", type=_positive_int, default=None,
                          help="evaluate at most this many images")
    evaluate.add_argument("--all-points", action="store_true",
                          help="area under the PR curve (VOC2010+) instead of VOC07 11-point AP")
    evaluate.add_argument("--iou", type=_unit_float, default=0.5, help="IoU for a true positive")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", formatter_class=fmt, parents=[common, reading],
        help="detect objects in image files, write PNGs and JSON")
    predict.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG/PNG/BMP/GIF files")
    predict.add_argument("--out", type=Path, default=Path("out/predict"), help="output folder")
    predict.add_argument("--score-threshold", type=_unit_float, default=DISPLAY_SCORE_THRESHOLD,
                         help="smallest score kept")
    predict.add_argument("--iou-threshold", type=_unit_float, default=IOU_THRESHOLD, help="NMS IoU")
    predict.add_argument("--max-detections", type=_positive_int, default=MAX_DETECTIONS,
                         help="detections kept per image")
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser(
        "export", formatter_class=fmt, parents=[common], help="SavedModel (in-graph NMS) or TFLite",
        description="savedmodel: serving signature images -> boxes/scores/classes/num_detections "
        "(NMS in the graph). tflite (builtin ops only): the raw y_pred (decode on the host with the "
        "anchors in the .json written next to it), or with --nms one image per call with decoding "
        "and per-class NMS in the graph. Decoder settings default to the model's own.")
    export.add_argument("--model", type=Path, required=True, help="a .keras file from train/demo")
    export.add_argument("--format", choices=("savedmodel", "tflite"), default="savedmodel",
                        help="what to write")
    export.add_argument("--out", type=Path, required=True, help="folder (savedmodel) or .tflite file")
    export.add_argument("--nms", action="store_true", help="tflite: include decoding + NMS (batch of 1)")
    export.add_argument("--quantize", action="store_true", help="tflite: dynamic-range quantisation")
    export.add_argument("--score-threshold", type=_unit_float, default=None,
                        help="smallest score kept (default: the model's, 0.01 for evaluation)")
    export.add_argument("--iou-threshold", type=_unit_float, default=None, help="NMS IoU (default: the model's)")
    export.add_argument("--max-detections", type=_positive_int, default=None,
                        help="detections per image (default: the model's)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's own errors (status 2) and --help (status 0)
        return int(e.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- shared steps


def _focal(args):
    if args.bce:
        return None
    try:
        return parse_focal(LESSON_FOCAL if args.focal is None else args.focal)
    except ValueError as e:
        raise UsageError("--focal", str(e)) from None


def _detector_overrides(args, preset):
    anchors = dict(get_preset(preset)["detector"]["anchors"], grids=args.grids, zooms=args.zooms)
    return dict(backbone=args.backbone, image_size=args.image_size, dropout=args.dropout,
                head_filters=args.head_filters, pos_threshold=args.pos_threshold,
                loc_weight=args.loc_weight, focal=_focal(args), anchors=anchors)


def _device_line():
    import tensorflow as tf

    with quiet_native_stderr():  # "failed call to cuInit" on machines without a GPU
        gpus = tf.config.list_physical_devices("GPU")
    where = f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"
    onednn = CLI_ENVIRONMENT.get("onednn", "TensorFlow's default (library call)")
    return f"device: {where}; oneDNN: {onednn}"


def _report_skips(data, what="images", also_read=0):
    """`also_read`: images read with `data` but not in it (a held-out part cut from the same read)."""
    skipped = getattr(data, "skipped", None) or []
    if skipped:
        total = len(data) + also_read + len(skipped)
        examples = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        print(f"skipped {len(skipped)} of {total} {what}: {examples}" + (" ..." if len(skipped) > 3 else ""))


def _format_metrics(result, class_names):
    width = max(len(n) for n in class_names) if class_names else 8
    lines = [f"  {name:<{width}}  AP {value:.3f}" if value == value else f"  {name:<{width}}  AP  n/a"
             for name, value in zip(class_names, result["ap"])]
    lines.append(f"mAP: {result['map']:.3f}")
    return "\n".join(lines)


def _check_output(flag, path, kind):
    """Fail before the work, not after it, on an output path that cannot be written: `kind`
    "dir" (a folder to write into) or "file"."""
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise UsageError(flag, f"{path} is a file; {flag} names a folder to write into")
    if kind == "file" and path.is_dir():
        raise UsageError(flag, f"{path} is a folder; {flag} names a file")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(flag, f"{existing} is a file, so {path} cannot be written")


def _load_model(path):
    from ssd_keras.saving import load_model

    try:
        return load_model(path)
    except (OSError, ValueError) as e:
        raise UsageError("--model", str(e)) from None


# --------------------------------------------------------------------------- commands


def cmd_demo(args):
    """Train on `shapes`, evaluate on held-out images, print `mAP: 0.xxx`, save picture + model."""
    from ssd_keras.recipes import run_demo

    if not 0 < args.min_size <= args.max_size:
        raise UsageError("--min-size", f"need 0 < --min-size <= --max-size, got {args.min_size} "
                                       f"and {args.max_size}")
    _check_output("--out", args.out, "dir")
    print(_device_line(), flush=True)
    import keras

    from ssd_keras.detector import SSDDetector
    from ssd_keras.layers import GridsUnreachableError

    keras.utils.set_random_seed(args.seed)  # as run_demo does before building its own
    try:
        detector = SSDDetector.from_preset("demo_tiny64", **_detector_overrides(args, "demo_tiny64"))
    except GridsUnreachableError as e:  # --grids the body's map cannot reach at --image-size
        raise UsageError("--grids", str(e)) from None
    except ValueError as e:
        raise UsageError(None, str(e)) from None
    shapes = dict(min_size=args.min_size, max_size=args.max_size, max_objects=args.max_objects)
    done = run_demo(args.out, epochs=args.epochs, train_images=args.train_images,
                    val_images=args.val_images, batch_size=args.batch_size, lr=args.lr,
                    augment=args.augment, seed=args.seed, shapes=shapes, detector=detector,
                    verbose=2 if args.verbose else "auto")
    names = done["detector"].class_names
    print("held-out AP per class (VOC07 11-point, IoU 0.5):")
    print(_format_metrics(done["result"], names).rsplit("\n", 1)[0])
    paths = done["paths"]
    print(f"wrote {paths['model']}, {paths['picture']}, {paths['metrics']} "
          f"(training {done['train_seconds']:.0f} s, total {done['seconds']:.0f} s)")
    print(f"mAP: {done['result']['map']:.3f}", flush=True)
    return 0


def _weights(args):
    w = args.weights
    if w == "auto":
        return "imagenet" if args.backbone in PRETRAINED else None
    if w in ("none", "None"):
        return None
    if w != "imagenet" and not Path(w).is_file():
        raise UsageError("--weights", f"file not found: {w}")
    return w


def _cli_words(error):
    """A reader's message in the CLI's terms (the library says `on_error='skip'`)."""
    return str(error).replace("pass on_error='skip'", "pass --on-error skip")


def _check_grids_reachable(backbone, image_size, grids):
    """Fail on `--grids` before the data is read (VOC takes a while), not after.

    The body's map size is read off a body built without weights, before the seed is set, and
    the Keras session is cleared after it (layer names and the random state the detector is
    then built from do not see it; a global dtype policy set before would be reset too, which
    is why it runs before `--mixed-precision` sets one).
    """
    import keras

    from ssd_keras.backbones import get_backbone
    from ssd_keras.layers import GridsUnreachableError, plan_head

    try:
        body = get_backbone(backbone, weights=None, input_shape=(image_size, image_size, 3))
        plan_head(body.outputs[0].shape[1], grids, image_size=image_size,
                  where=f"build_ssd(backbone={backbone!r})")
    except GridsUnreachableError as e:
        raise UsageError("--grids", str(e)) from None
    except ValueError as e:
        raise UsageError("--image-size", str(e)) from None
    finally:
        keras.backend.clear_session()


def cmd_train(args):
    """Train on `--data` with the lesson's recipe; write the model, checkpoints and logs to `--out`."""
    import keras

    from ssd_keras.data.augment import augmentations_by_name
    from ssd_keras.data.pipeline import make_dataset
    from ssd_keras.data.sources import SourceUnavailable
    from ssd_keras.data.splits import load_train_val
    from ssd_keras.detector import SSDDetector
    from ssd_keras.evaluation import evaluate_model
    from ssd_keras.layers import GridsUnreachableError
    from ssd_keras.recipes import fit_lesson_recipe, lesson_stages, metrics_summary

    weights = _weights(args)
    out = Path(args.out)
    _check_output("--out", out, "dir")
    if (out / "stage1").exists() and not args.resume:
        raise UsageError("--out", f"{out} holds an earlier run; pass --resume to continue it, "
                                  f"or choose another --out")
    _check_grids_reachable(args.backbone, args.image_size, args.grids)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    reader = {"on_error": args.on_error} if source_kind(args.data) != "shapes" else {}
    if args.classes:
        if source_kind(args.data) not in ("voc", "csv"):
            raise UsageError("--classes", f"a {source_kind(args.data)} source names its own classes")
        reader["class_names"] = args.classes
    val_reader = dict(reader)
    if source_kind(args.data) == "shapes":
        reader = dict(count=args.train_images or 2000, image_size=args.image_size, seed=args.seed)
        val_reader = dict(reader, count=max(100, reader["count"] // 10))
    try:
        train, val, split = load_train_val(args.data, args.train_split, args.val_split,
                                           args.val_fraction, args.seed, reader, val_reader)
    except (OSError, ValueError, ImportError, KeyError, SourceUnavailable) as e:
        raise UsageError("--data", f"cannot load {args.data!r}: {_cli_words(e)}") from None
    if split["val"]["kind"] == "fraction":  # one read, cut in two: its skips are counted once
        _report_skips(train, also_read=len(val))
    else:
        _report_skips(train)
        if val is not None:
            _report_skips(val, what="held-out images")
    if args.train_images:
        train.records = train.records[: args.train_images]
    if not len(train):
        raise UsageError("--data", f"{args.data}: no training images")
    try:
        detector = SSDDetector.from_preset(
            "lesson_resnet34_224", weights=weights, class_names=train.class_names,
            metadata={"split": split, "data": args.data}, **_detector_overrides(args, "lesson_resnet34_224"))
    except GridsUnreachableError as e:
        raise UsageError("--grids", str(e)) from None
    except (OSError, ValueError) as e:
        raise UsageError("--weights" if weights else "--image-size", str(e)) from None
    focal = detector.loss_settings["focal"] is not None
    stages = lesson_stages(args.lr, pretrained=weights is not None, focal=focal,
                           stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
                           stage2_divisor=args.stage2_divisor, epochs=args.epochs)
    print(_device_line())
    print(f"train: {train.summary()}")
    print(f"held out: {len(val)} images ({split['val']})" if val is not None else "held out: none")
    print(f"body: {args.backbone}, weights: {weights or 'none (from scratch)'}; loss: "
          f"{'focal ' + str(detector.loss_settings['focal']) if focal else 'BCE'}; "
          f"{len(stages)} stage(s):")
    for stage in stages:
        print(f"  {stage.describe()}", flush=True)
    kw = dict(max_boxes=args.max_boxes)
    train_ds = make_dataset(train, args.image_size, args.batch_size, augment=augmentations_by_name(args.augment),
                            shuffle=True, seed=args.seed, **kw)
    val_ds = None if val is None else make_dataset(val, args.image_size, args.batch_size, **kw)
    import tensorflow as tf

    jit = {"on": True, "off": False, "auto": bool(tf.config.list_physical_devices("GPU"))}[args.xla]
    fit_lesson_recipe(detector, train_ds, stages, val_ds=val_ds,
                      val_ground_truths=None if val is None else val.ground_truths(), out_dir=out,
                      resume=args.resume, verbose=2 if args.verbose else "auto", jit_compile=jit,
                      log=lambda m: print(m, flush=True))
    detector.save(out / "model.keras")
    print(f"wrote {out / 'model.keras'} (and best.keras, last.keras, stage*/log.csv, stage*/logs)")
    if val is not None:
        result = evaluate_model(detector, val_ds, ground_truths=val.ground_truths())
        (out / "metrics.json").write_text(json.dumps(metrics_summary(
            result, detector.class_names, command="train", data=args.data, split=split), indent=1))
        print(_format_metrics(result, detector.class_names))
    return 0


def cmd_evaluate(args):
    """Print per-class AP and `mAP: 0.xxx` of `--model` on `--data` / `--split`."""
    from ssd_keras.data.pipeline import make_dataset
    from ssd_keras.data.sources import SourceUnavailable, load_source
    from ssd_keras.data.splits import held_out
    from ssd_keras.evaluation import evaluate_model
    from ssd_keras.recipes import metrics_summary

    if args.json:
        _check_output("--json", args.json, "file")
    detector = _load_model(args.model)
    meta = detector.metadata
    spec = args.data or meta.get("data") or "shapes"
    kwargs = {} if source_kind(spec) == "shapes" else {"on_error": args.on_error}
    if source_kind(spec) in ("voc", "csv"):  # these files carry names, not the model's ids
        kwargs["class_names"] = tuple(detector.class_names)
    if source_kind(spec) == "shapes":
        # The shapes settings the model was trained on (a demo model records them), at its size.
        shapes = meta.get("shapes") or {}
        kwargs = {k: shapes[k] for k in ("seed", "min_size", "max_size", "max_objects") if k in shapes}
        kwargs["image_size"] = detector.image_size
    try:
        if args.split == "held-out":
            data = held_out(spec, meta.get("split"), **kwargs)
        else:
            if source_kind(spec) == "shapes":
                kwargs.setdefault("count", args.max_images or 300)
            data = load_source(spec, split=None if args.split == "all" else args.split, **kwargs)
    except (OSError, ValueError, ImportError, KeyError, SourceUnavailable) as e:
        raise UsageError("--split" if "split" in str(e) else "--data",
                         f"cannot load {spec!r}: {_cli_words(e)}") from None
    _report_skips(data)
    if args.max_images:
        data.records = data.records[: args.max_images]
    if list(data.class_names) != list(detector.class_names):
        raise UsageError("--data", f"the class names of {spec!r} ({list(data.class_names)[:4]}"
                                   f"...) differ from the model's ({detector.class_names[:4]}...)")
    ds = make_dataset(data, detector.image_size, args.batch_size)
    result = evaluate_model(detector, ds, ground_truths=data.ground_truths(), iou_threshold=args.iou,
                            use_07_metric=not args.all_points)
    print(data.summary())
    print(_format_metrics(result, detector.class_names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics_summary(
            result, detector.class_names, model=str(args.model), data=spec, split=args.split,
            images=len(data), metric="all-points" if args.all_points else "voc07-11-point", iou=args.iou),
            indent=1))
    return 0


def cmd_predict(args):
    """Detect objects in `IMAGE`s; write `<name>.png` with boxes and `detections.json` to `--out`."""
    import matplotlib.pyplot as plt

    from ssd_keras.inference import detect_files
    from ssd_keras.viz import show_detections

    _check_output("--out", args.out, "dir")
    detector = _load_model(args.model)
    try:
        results, skipped = detect_files(detector, args.images, on_error=args.on_error,
                                        score_threshold=args.score_threshold,
                                        iou_threshold=args.iou_threshold, max_detections=args.max_detections)
    except ValueError as e:
        raise UsageError("IMAGE", f"{e} (--on-error skip to go on without it)") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used = set()
    for r in results:
        image, det = r.pop("_arrays")
        stem = Path(r["image"]).stem
        while stem in used:  # a/img.jpg and b/img.jpg must not overwrite each other's picture
            stem += "_"
        used.add(stem)
        picture = out / f"{stem}.png"
        plt.close(show_detections(image, det, None, detector.class_names, path=picture))
        r["picture"] = str(picture)
        print(f"{r['image']}: {len(r['detections'])} objects -> {r['picture']}")
    payload = {"model": str(args.model), "box_format": "rel_yxyx; box_xyxy in pixels",
               "images": results, "skipped": [{"image": f, "reason": why} for f, why in skipped]}
    (out / "detections.json").write_text(json.dumps(payload, indent=1))
    if skipped:
        print(f"skipped {len(skipped)} of {len(args.images)} images: "
              + "; ".join(f"{f}: {why}" for f, why in skipped))
    print(f"wrote {out / 'detections.json'}")
    return 0


def cmd_export(args):
    """Export `--model` as a SavedModel (in-graph NMS) or a TFLite file."""
    from ssd_keras.export import export_savedmodel, export_tflite

    decode = {k: v for k, v in dict(score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                                    max_detections=args.max_detections).items() if v is not None}
    if args.format == "savedmodel":
        if args.nms or args.quantize:
            raise UsageError("--nms/--quantize", "apply to --format tflite only")
    elif args.out.suffix != ".tflite":
        raise UsageError("--out", f"a TFLite file name must end in .tflite, got {args.out}")
    _check_output("--out", args.out, "dir" if args.format == "savedmodel" else "file")
    detector = _load_model(args.model)
    if args.format == "savedmodel":
        path = export_savedmodel(detector, args.out, **decode)
    else:
        path = export_tflite(detector, args.out, include_nms=args.nms, quantize=args.quantize, **decode)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def main_entry():  # pragma: no cover - the installed `ssd_keras` script
    from ssd_keras._environment import freeze_imported_objects

    freeze_imported_objects()
    sys.exit(main())
