"""fastai lesson 9's whole SSD recipe on Pascal VOC2007, ending with the VOC07 test mAP (a GPU job).

    python examples/voc_lesson.py --voc /path/to/VOCdevkit/VOC2007      # the lesson, on a GPU
    python examples/voc_lesson.py --smoke                               # seconds, on a CPU (CI)

The lesson (preset `lesson_resnet34_224`): a ResNet-34 body with ImageNet weights (torchvision's,
read without PyTorch), the SSD_MultiHead over 4x4, 2x2 and 1x1 grids with k = 9 anchors per cell
(189 anchors), focal loss (alpha 0.25, gamma 1), 224 px, batch 64, the lesson's flip / rotate /
lighting augmentation, and its two stages:

1. the head alone, body frozen: `learn.fit(lr, 1, cycle_len=5, use_clr=(20, 10))`, lr = 3e-3;
2. `learn.freeze_to(-2)` (upper body + head) with `lrs = [lr/100, lr/10, lr] / 4`:
   `learn.fit(lrs, 1, cycle_len=10, use_clr=(20, 10))`.

It trains on VOC2007 `train`, validates on `val` every epoch (val_loss, val_loc, val_clas,
val_map), and prints the VOC07 11-point mAP@0.5 on VOC2007 `test` (the devkit folder must hold
the test images and annotations: VOCtest_06-Nov-2007.tar unpacked into the same VOC2007 folder).
Not run at full size on this project's CPU machines: no result of it is claimed here.

`--smoke` runs the same code on 16 images of `data/voc2007_sample` with the small `tiny` body
at 64 px, a random body (`weights=None`, so no download), one epoch per stage, holding out 8 of
the sample's images in place of `val` and `test`: it checks the plumbing, its mAP means nothing.
"""

import argparse
import json
import time
from pathlib import Path

import keras

from ssd_keras.data import load_source
from ssd_keras.data.augment import augmentations_by_name
from ssd_keras.data.pipeline import make_dataset
from ssd_keras.detector import SSDDetector
from ssd_keras.evaluation import evaluate_model
from ssd_keras.presets import get_preset
from ssd_keras.recipes import fit_lesson_recipe, lesson_stages, metrics_summary

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "voc2007_sample" / "VOC2007"


def parse_args(argv=None):
    recipe = get_preset("lesson_resnet34_224")["recipe"]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--voc", type=Path, default=None, help="the VOCdevkit/VOC2007 folder (train, val, test)")
    p.add_argument("--smoke", action="store_true", help="a few sample images, tiny sizes (CI)")
    p.add_argument("--out", type=Path, default=Path("out/voc_lesson"), help="output folder")
    p.add_argument("--lr", type=float, default=recipe["lr"], help="the lesson's lr")
    p.add_argument("--batch-size", type=int, default=recipe["batch_size"], help="the lesson's bs")
    p.add_argument("--stage1-epochs", type=int, default=recipe["stage1_epochs"], help="cycle_len of stage 1")
    p.add_argument("--stage2-epochs", type=int, default=recipe["stage2_epochs"], help="cycle_len of stage 2")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    args = p.parse_args(argv)
    if not args.smoke and args.voc is None:
        p.error("--voc PATH is required (or --smoke)")
    return args


def load_data(args):
    """(train, val, test) `DetectionData`: VOC2007 train / val / test; in smoke mode 16 training
    and 8 held-out images of the sample (the held-out ones serve as val and test)."""
    if args.smoke:
        data = load_source(f"voc:{SAMPLE}", split="train")
        held, rest = data.split(8 / len(data), seed=0)
        rest.records = rest.records[:16]
        return rest, held, held
    voc = f"voc:{args.voc}"
    return (load_source(voc, split="train"), load_source(voc, split="val"),
            load_source(voc, split="test"))


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(0)
    train, val, test = load_data(args)
    overrides = {"weights": "imagenet"}
    if args.smoke:
        overrides = {"weights": None, "backbone": "tiny", "image_size": 64, "head_filters": 32}
        args.batch_size, args.stage1_epochs, args.stage2_epochs = 8, 1, 1
    detector = SSDDetector.from_preset("lesson_resnet34_224", class_names=train.class_names,
                                       metadata={"data": f"voc:{args.voc or SAMPLE}"}, **overrides)
    size = detector.image_size
    # The lesson's two stages, also in smoke mode (its body is random there, so freezing it
    # is pointless for accuracy; the point is to run the same code).
    stages = lesson_stages(args.lr, pretrained=True, focal=True, stage1_epochs=args.stage1_epochs,
                           stage2_epochs=args.stage2_epochs)
    print(f"{detector.backbone_name} body at {size} px, weights {overrides['weights']}; "
          f"train {len(train)} / val {len(val)} / test {len(test)} images")
    for stage in stages:
        print(f"  {stage.describe()}")
    train_ds = make_dataset(train, size, args.batch_size, augment=augmentations_by_name("lesson"),
                            shuffle=True, seed=0)
    val_ds = make_dataset(val, size, args.batch_size)
    fit_lesson_recipe(detector, train_ds, stages, val_ds=val_ds, val_ground_truths=val.ground_truths(),
                      out_dir=args.out, resume=args.resume, verbose=2)
    detector.save(args.out / "model.keras")
    test_ds = make_dataset(test, size, args.batch_size)
    result = evaluate_model(detector, test_ds, ground_truths=test.ground_truths())
    summary = metrics_summary(result, detector.class_names, smoke=args.smoke, test_images=len(test),
                              seconds=round(time.time() - start, 1))
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'model.keras'} and {args.out / 'metrics.json'}")
    print(f"VOC07 test mAP{' (smoke run: meaningless)' if args.smoke else ''}: {result['map']:.3f}")
    return result


if __name__ == "__main__":
    main()
