"""Lesson 9's main path with plain `compile` / `fit` on an `SSDDetector`, on the embedded shapes data.

    python examples/train_shapes.py                  # the demo's preset (tiny8 body, 64 px), CPU
    python examples/train_shapes.py --lesson         # the lesson's ResNet34 at 224 px (GPU)

The same steps as `python -m ssd_keras demo`, written out for people who train in scripts.
Boxes are relative yxyx (ymin, xmin, ymax, xmax) everywhere.
"""

import argparse

import keras
import tensorflow as tf

import ssd_keras
from ssd_keras.data import RandomFlip, make_dataset, make_shapes
from ssd_keras.presets import LESSON_ANCHORS
from ssd_keras.schedules import OneCycleSchedule

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--lesson", action="store_true", help="ResNet34 body at 224 px, as in the lesson")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--train-images", type=int, default=6000)
parser.add_argument("--out", default="out/train_shapes.keras")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# 1. The detector: body + the lesson's SSD_MultiHead, its AnchorConfig (the demo's: the lesson's
#    4x4, 2x2, 1x1 grids plus 8x8, k = 6, 510 anchors), class names, loss settings (focal loss)
#    and decoder, from a preset. --lesson: the lesson's body, anchors (k = 9, 189) and loss.
lesson = dict(backbone="resnet34", image_size=224, head_filters=256, anchors=LESSON_ANCHORS,
              pos_threshold=0.4, loc_weight=1.0)
detector = ssd_keras.SSDDetector.from_preset("demo_tiny64", **(lesson if args.lesson else {}))
size = detector.image_size

# 2. Data: generated images with 1-4 shapes each; train and held-out streams never overlap.
shapes = dict(image_size=size, min_size=0.2, max_size=0.6, max_objects=4)
train = make_shapes(args.train_images, split="train", **shapes)
val = make_shapes(200, split="val", **shapes)
train_ds = make_dataset(train, size, batch_size=16, augment=[RandomFlip()], shuffle=True, seed=0)
val_ds = make_dataset(val, size, batch_size=32)  # (images 0-255 [B,S,S,3], y_true [B,max_boxes,5])

# 3. compile() without a loss uses the detector's SSDLoss; the schedule is the lesson's
#    fit(lr, 1, cycle_len=epochs, use_clr=(20, 10)). fit logs loss, loc and clas.
steps = args.epochs * len(train_ds)
on_gpu = bool(tf.config.list_physical_devices("GPU"))  # XLA: faster on GPU, slower on CPU here
detector.compile(optimizer=keras.optimizers.Adam(OneCycleSchedule(3e-3, steps, div=20, cut_div=10)),
                 jit_compile=on_gpu)

# 4. Train; the callback runs the held-out set through predict's path and logs VOC mAP as val_map.
val_map = ssd_keras.MeanAveragePrecisionCallback(val_ds, every=args.epochs)
detector.fit(train_ds, epochs=args.epochs, validation_data=val_ds,
             callbacks=[val_map, ssd_keras.NaNGuard()])
print(f"held-out mAP (VOC07, IoU 0.5): {val_map.history[-1][1]['map']:.3f}")

# 5. predict returns detections: boxes [B,N,4] rel. yxyx, scores, classes (-1 = padding).
images, _ = next(iter(val_ds))
detections = detector.predict(images, verbose=0)
first = int(detections["num_detections"][0])
for box, score, cls in zip(detections["boxes"][0][:first], detections["scores"][0], detections["classes"][0]):
    if score > ssd_keras.DISPLAY_SCORE_THRESHOLD:
        print(f"{detector.class_names[int(cls)]:>8} {float(score):.2f} {[round(float(v), 3) for v in box]}")

# 6. One file holds everything evaluate/predict/export need:
#    python -m ssd_keras export --model out/train_shapes.keras --out out/savedmodel
detector.save(args.out)
print(f"saved {args.out}")
