"""Lesson 9's main path with plain `model.compile` / `model.fit`, on the embedded shapes data.

    python examples/train_shapes.py                  # tiny body at 64 px (the demo's settings), CPU
    python examples/train_shapes.py --lesson         # the lesson's ResNet34 at 224 px (GPU)

The same steps as `python -m ssd_keras demo`, written out for people who train in scripts.
Boxes are relative yxyx (ymin, xmin, ymax, xmax) everywhere.
"""

import argparse

import keras
import tensorflow as tf

import ssd_keras
from ssd_keras.data import lesson_augmentations, make_dataset, make_shapes  # noqa: F401
from ssd_keras.export import save_model
from ssd_keras.metrics import MeanAveragePrecisionCallback
from ssd_keras.training import OneCycleSchedule

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--lesson", action="store_true", help="ResNet34 body at 224 px, as in the lesson")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--out", default="out/train_shapes.keras")
args = parser.parse_args()
backbone, size = ("resnet34", 224) if args.lesson else ("tiny", 64)
keras.utils.set_random_seed(0)

# 1. Data: generated images with 1-8 shapes each; train and held-out streams never overlap.
train = make_shapes(count=2400, image_size=size, split="train")
val = make_shapes(count=200, image_size=size, split="val")
names = train.class_names
# Fresh generated images instead of augmentation (rotation enlarges boxes); for real photos
# pass augment=lesson_augmentations() (flip, rotate, lighting).
train_ds = make_dataset(train, size, batch_size=32, augment=None, shuffle=True, seed=0)
val_ds = make_dataset(val, size, batch_size=32)  # (images 0-255 [B,S,S,3], y_true [B,max_boxes,5])

# 2. Model: body + the lesson's SSD_MultiHead; one AnchorConfig for the head, loss and decoder.
anchors = ssd_keras.AnchorConfig()  # grids 4, 2, 1; zooms .7, 1, 1.3; 3 ratios: k = 9, 189 anchors
model = ssd_keras.build_ssd(len(names), anchors, backbone=backbone, image_size=size)

# 3. Loss and schedule: the lesson's BCE loss (focal=(0.25, 1.) for its focal loss) and
#    fit(lr, 1, cycle_len=epochs, use_clr=(20, 10)) as a Keras learning-rate schedule.
loss = ssd_keras.SSDLoss(anchors, len(names))
steps = args.epochs * len(train_ds)
optimizer = keras.optimizers.Adam(OneCycleSchedule(5e-3, steps, div=20, cut_div=10))
on_gpu = bool(tf.config.list_physical_devices("GPU"))  # XLA: faster on GPU, 2x slower on CPU here
model.compile(optimizer=optimizer, loss=loss, metrics=loss.metrics(), jit_compile=on_gpu)

# 4. Train; the callback decodes the held-out set with NMS and logs VOC mAP as val_map.
val_map = MeanAveragePrecisionCallback(val_ds, anchors, len(names), every=args.epochs)
model.fit(train_ds, epochs=args.epochs, callbacks=[val_map, keras.callbacks.TerminateOnNaN()])
print(f"held-out mAP (VOC07, IoU 0.5): {val_map.history[-1][1]['map']:.3f}")

# 5. Detections for a batch: boxes [B,N,4] rel. yxyx, scores, classes (-1 = padding).
images, _ = next(iter(val_ds))
detections = ssd_keras.decode_detections(model.predict(images, verbose=0), anchors, score_threshold=0.3)
first = int(detections["num_detections"][0])
for box, score, cls in zip(detections["boxes"][0][:first], detections["scores"][0], detections["classes"][0]):
    print(f"{names[int(cls)]:>8} {float(score):.2f} {[round(float(v), 3) for v in box]}")

# 6. Save with the class names and anchors inside the .keras file (evaluate/predict/export need
#    nothing else): python -m ssd_keras export --model out/train_shapes.keras --out out/savedmodel
save_model(model, args.out, names, anchors)
print(f"saved {args.out}")
