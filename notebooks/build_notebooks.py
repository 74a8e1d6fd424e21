"""Write (and execute) the lesson-9 walkthrough notebooks from the cell text below.

    .venv/bin/python notebooks/build_notebooks.py            # write all six, execute, save outputs
    .venv/bin/python notebooks/build_notebooks.py 03 05      # only these
    .venv/bin/python notebooks/build_notebooks.py --no-execute

The notebooks are generated so that their text lives in one reviewable Python file and their
committed outputs always come from a clean top-to-bottom run (nbclient, the venv's `python3`
kernel, working directory `notebooks/`). `tests/test_notebooks.py` executes the committed
notebooks again and checks that they match this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
CELL_TIMEOUT = 600  # seconds per cell (as tests/test_notebooks.py: a loaded 2-core machine is slow)

# Every notebook starts like this: quiet TensorFlow start-up, inline PNG figures, short floats.
SETUP = """\
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide TensorFlow's C++ start-up messages

%matplotlib inline
%config InlineBackend.figure_formats = ["jpeg"]  # photographs: a fraction of PNG's size
import matplotlib.pyplot as plt
import numpy as np
import keras
import tensorflow as tf

import ssd_keras

np.set_printoptions(precision=4, suppress=True, linewidth=130)
keras.utils.set_random_seed(0)"""


# Shared by the notebooks that load the trained checkpoints of `train_checkpoints.py`.
HELPERS = """\
from ssd_keras.data import make_shapes
from ssd_keras.evaluation import evaluate_model
from ssd_keras.viz import draw_boxes, show_img


def held_out_shapes(detector):
    \"\"\"The held-out images a checkpoint was scored on: `shapes` split "val", with its metadata's settings.\"\"\"
    m = detector.metadata
    return make_shapes(m["split"]["val"]["count"], split=m["split"]["val"]["split"],
                       image_size=detector.image_size, **m["shapes"])


def compare_detections(images, y_true, detectors, titles, names, score_threshold=0.3, per_row=2):
    \"\"\"Per image: the ground truth, then each detector's detections above `score_threshold`
    (after NMS); `per_row` images side by side in each row.\"\"\"
    outs = [{k: np.asarray(v) for k, v in d.detect(images, score_threshold=score_threshold).items()}
            for d in detectors]
    images, y_true = np.asarray(images), np.asarray(y_true)
    group = 1 + len(detectors)
    rows = -(-len(images) // per_row)
    fig, axes = plt.subplots(rows, group * per_row, figsize=(2.3 * group * per_row, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(len(images)):
        row = axes[i // per_row, (i % per_row) * group:(i % per_row + 1) * group]
        img = np.clip(images[i], 0, 255).astype("uint8")
        gt = y_true[i][y_true[i, :, 4] >= 0]
        show_img(img, ax=row[0])
        draw_boxes(row[0], img.shape, gt[:, :4], gt[:, 4].astype(int), names, sz=8)
        for ax, o in zip(row[1:], outs):
            k = int(o["num_detections"][i])
            show_img(img, ax=ax)
            draw_boxes(ax, img.shape, o["boxes"][i, :k], o["classes"][i, :k], names, scores=o["scores"][i, :k], sz=8)
        for ax, title in zip(row, ["ground truth", *titles]):
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig"""

# Captions written after looking at the pictures (the executed notebooks).
RECEPTIVE_CAPTION = """
Left, the input with anchor 5's cell (cyan); middle, the gradient per pixel: mostly a checkerboard
of noise from the stride-2 convolutions, spread over the whole image; right, the same summed over
16×16-px blocks, where the shape appears: the blocks of anchor 5's cell are the brightest and the
gradient falls off away from it, but gently. The cell (6.2 % of the image) receives 11 % of the
gradient and the brightest block is 1.9× the mean block, so in this untrained model the
concentration the lesson describes is present but weak; every pixel still reaches the cell.
"""
GRID4_CAPTION = """
Eight held-out images in pairs: ground truth, then the 4×4 model's detections above 0.3 (after
NMS). The classes are mostly right and confident (0.9-1.0), but the boxes of large objects are too
small: a box can only be 0.5-1.5× its 1/4-side anchor (`actn_to_bb`), at most 3/8 of the image
side, so the big circle (seventh pair) and the large diamond (fifth) get boxes well inside the
object, which fail IoU 0.5. Small and medium objects are boxed well. Held-out mAP 0.654, against
0.80 (BCE) and 0.84 (focal) for the 189-anchor models of notebook 5 trained the same way: the
reason the lesson adds anchors of more sizes and shapes.
"""
SINGLE_CAPTION = """
Twelve held-out images in pairs: left, the largest object (the target); right, the model's class
and box, with its IoU to the target in the title (red: wrong class). Here all 12 classes are right.
One box misses (second row, first pair): for the small ring at the top the model answers "ring"
but puts the box between the ring and the orange ellipse below it (IoU 0.08). The other boxes sit
on the right object (IoU 0.53-0.89). Over the 300 held-out images: class accuracy 0.900 and mean
IoU 0.66, **the aims (0.9 and 0.6) reached** with 24000 images × 8 epochs from the SSD's body
(259 s of fitting; 4 epochs gave 0.880 / 0.63, and 8000 images × 4 epochs 0.81 / 0.56).
"""
MULTI_CAPTION = """
Twelve held-out images with the true set of classes and the predicted one (red: not exactly
right). 8 of the 12 sets are exact. The errors are mostly missed classes: the triangle half covered
by a ring (second image) or by the diamond (fifth), the small diamond behind the cross (last); one
is an extra class (a diamond on the fourth). Over the 300 held-out images: precision 0.98, recall
0.88, micro F1 0.926 (aim 0.9), the exact set on 74 % of the images.
"""
CURVES_SHORT_CAPTION = """
The 4-epoch demonstration run: training (solid, the mean over each epoch) and validation (dashed,
32 held-out images at the end of each epoch); the dotted line separates stage 1 (head only) from
stage 2 (`freeze_to(-2)`). The training loss rises in epoch 2, the first of stage 2 (the late body
starts to move while the new cycle warms up), then falls; the validation loss falls throughout,
from about 2.4 to 1.6, and at epoch 4 meets the training loss. The location part (`loc`) rises on
both sides before it falls. A run this short detects nothing: it shows the mechanics only; the
trained models follow.
"""
COMPARE_CAPTION = """
Eight held-out images, each as ground truth | BCE model | focal model (detections above 0.3, after
NMS). The BCE model gives higher scores (0.7-0.99) and more duplicate or wrong boxes: two ring
boxes and a ring box on the triangle in the second image, two circle boxes on the orange circle in
the fourth. The focal model's scores are lower (0.4-0.9) with fewer duplicates, but it calls that
orange circle a diamond; both miss the triangle half hidden behind the ring and the diamond (fifth)
and the large circle behind the triangle (sixth). Over all 300 held-out images: mAP 0.80 with BCE,
0.84 with focal loss, the lesson's improvement.
"""

PARITY_CAPTION = """
Top: the loss of each step's batch, before that step's update, for the lesson's PyTorch code (red
circles), ssd_keras (blue crosses) and the PyTorch model trained in float64 (black dotted line). The steps
alternate between the two batches, so the curves zigzag while each batch's loss falls (with
`SSD_Head`, batch 1 from 0.229 to 0.097, batch 2 from 0.288 to 0.223). Bottom: the relative
differences on a log scale, Keras against PyTorch (blue) and PyTorch float32 against float64
(black). Left, `SSD_Head`: the three curves lie on one another; Keras stays within 3.2e-6 of
PyTorch for six steps and within 7.2e-5 at steps 6 and 7, PyTorch float32 within 5e-7 of float64.
Right, `SSD_MultiHead`: the first loss agrees to 1.5e-6 and the second to 2.5e-4, then the curves
part by 1.6-6.8 %, and PyTorch float32 and float64 part as well, by 0.09-2.2 %.
"""


def md(text):
    return ("markdown", text.strip("\n"))


def code(text):
    return ("code", text.strip("\n"))


# ------------------------------------------------------------------------------------------
# 01 · data
# ------------------------------------------------------------------------------------------

NB01 = [
    md("""
# 1 · Data: VOC photographs, the `shapes` set, and boxes that move with the image

Lesson 9 (fastai 2018, multi-object detection) builds a detector from three ingredients, in this
order: **data**, **architecture**, **loss**. This notebook is the data part.

| lesson | here |
|---|---|
| `pascal_train2007.json`, the CSV of `fn, bbox` | `ssd_keras.data` readers: `read_voc`, `read_coco_json`, `read_csv`, `read_tfds` (`data/voc.py`, `data/formats.py`, `data/sources.py`) |
| `mc`, the set of classes per image | `DetectionData.multi_labels()` (`data/records.py`) |
| `RandomFlip`, `RandomRotate`, `RandomLighting` with `tfm_y=TfmType.COORD` | `ssd_keras.data.augment` (the boxes always move with the image) |
| fastai's data loader | a `tf.data` pipeline: `make_dataset` (`data/pipeline.py`) |
| `show_img`, `draw_rect`, `draw_text` | `ssd_keras.viz` |

**Boxes** are relative `yxyx` everywhere: `(ymin, xmin, ymax, xmax)` in `[0, 1]` of the image, the
lesson's `(top, left, bottom, right)` order. Pixel boxes only exist inside the readers and the
drawing helpers.

*Run time:* about 20 s on 2 CPU cores, no download. It uses the 200 real VOC2007 photographs shipped
in `data/voc2007_sample/` and the generated `shapes` set.
"""),
    code(SETUP),
    md("""
## Pascal VOC 2007: the sample shipped with the repository

Sources are named the same way in the notebooks, the CLI and the API: `voc:/path/to/VOCdevkit/VOC2007`,
`coco:/path/to/pascal_train2007.json`, `csv:...`, `tfds:voc/2007` (needs the data set prepared or
a network) and `shapes`. The repository ships 200 VOC2007 *train* images in the devkit layout
(`ssd_keras.data.SAMPLE_VOC`); point the same call at a full devkit copy for real training.
"""),
    code("""
from ssd_keras.data import SAMPLE_VOC, load_source

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
print(voc.summary())
r = voc.records[0]
print(f"\\n{r.image_id}: {r.width}x{r.height} px, objects {[voc.class_names[c] for c in r.classes]}")
print("relative yxyx:", r.boxes, "  pixel yxyx:", r.pixel_boxes())
"""),
    md("""
The lesson's CSV (`fn, bbox` with space-separated `top left bottom right` pixel boxes) is one
`write_csv` away; the first row is the lesson's `000012.jpg  96 155 269 350` (a car).
"""),
    code("""
import tempfile
from ssd_keras.data import read_csv, write_csv

csv_path = os.path.join(tempfile.mkdtemp(), "voc_sample.csv")
write_csv(voc, csv_path, images_dir=os.path.join(SAMPLE_VOC, "JPEGImages"))
print("".join(open(csv_path).readlines()[:5]))
again = read_csv(csv_path, images_dir=os.path.join(SAMPLE_VOC, "JPEGImages"), class_names=voc.class_names)
print("CSV round trip, max box difference:", max(abs(a.boxes - b.boxes).max() for a, b in zip(voc.records, again.records)))
"""),
    md("""
## The multi-label view: `mc`

The lesson first treats detection as multi-label classification: the set of classes in each image
(`mc = [set([cats[p[1]] for p in tm_anno[o]]) for o in tm_ids]`, a class appears once however many
times it occurs).
"""),
    code("""
mc = voc.multi_labels()
mcs = [" ".join(sorted(o)) for o in mc]
for r, s in list(zip(voc.records, mcs))[:6]:
    print(f"{r.image_id}  {s}")
"""),
    md("""
## Ground truth with class names

`voc.dataset(image_size, batch_size)` is the `tf.data` pipeline that feeds `model.fit`: parallel
decode, resize (the lesson squashes, `CropType.NO`; `resize="letterbox"` keeps the aspect ratio),
optional augmentation, boxes padded to `max_boxes` rows. Each element is
`(images [B, S, S, 3] float 0-255, y_true [B, max_boxes, 5])`; a `y_true` row is
`(ymin, xmin, ymax, xmax, class_id)` and padding rows have `class_id = -1`.
"""),
    code("""
from ssd_keras.viz import show_ground_truth

images, y_true = next(iter(voc.dataset(image_size=224, batch_size=8)))
print("images", images.shape, " y_true", y_true.shape)
print(y_true[0, :3].numpy())
show_ground_truth(images, y_true, voc.class_names, cols=4, size=3);
"""),
    md("""
## The embedded default: `shapes`

VOC needs a download and a GPU to train on. So that the demo, the notebooks and the tests can train a
detector in minutes on a CPU, `ssd_keras.data.shapes` generates a deterministic multi-object set:
six shape classes with varied size, aspect ratio, colour, overlap and background clutter, 1–8 objects
per image. Same records, same pipeline.
"""),
    code("""
shapes = load_source("shapes", count=8, image_size=128)
print(shapes.summary())
images_s, y_true_s = next(iter(shapes.dataset(image_size=128, batch_size=8)))
show_ground_truth(images_s, y_true_s, shapes.class_names, cols=4, size=2.5);
"""),
    md("""
## Augmentation that moves the boxes

In the lesson, `RandomRotate(30)` without `tfm_y=TfmType.COORD` rotates the image but leaves the box
where it was (In [51]–[53]); with `tfm_y=TfmType.COORD` (In [54]) the box follows. In ssd_keras every
transform takes and returns `(image, boxes, classes)`, so the boxes always follow; they are clipped
to the image and degenerate ones are removed afterwards. The 3×3 grid is the lesson's In [53] with
the augmentations of In [54], on image 000012:
"""),
    code("""
from ssd_keras.data import RandomFlip, RandomLighting, RandomRotate
from ssd_keras.viz import show_augmentations

augs = [RandomFlip(), RandomRotate(30), RandomLighting(0.1, 0.1)]  # the lesson's In [54]
r = voc.records[0]
show_augmentations(r.load_image(), r.boxes, r.classes, augs, voc.class_names, size=3);
"""),
    md("""
### Tip from the lesson: rotation enlarges the boxes

After a rotation we only know the box's four corners, so the new box is the bounding box of the
rotated corners — bigger than the object (for a square, by a factor `(cos θ + sin θ)²`: 1.37 at 10°,
1.87 at 30°). Below, the yellow outline is the original box rotated with the image (what the object
really occupies), the red box (the car's class colour, labelled "car") is what training sees. That is why `lesson_augmentations()` uses at
most 10°, and the lesson used 30° only for the single-object case.
"""),
    code("""
from ssd_keras.data import rotate_boxes, rotate_image
from ssd_keras.viz import draw_boxes, show_img

image = r.load_image().astype("float32")
h, w = image.shape[:2]
box = r.boxes[:1]
mask = np.zeros((h, w, 1), "float32")  # the original box as a mask, rotated like the image
y0, x0, y1, x1 = np.round(box[0] * [h, w, h, w]).astype(int)
mask[y0:y1, x0:x1] = 1.0
area = lambda b: float((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]))
fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
for ax, deg in zip(axes, [0, 10, 20, 30]):
    new_box = np.clip(rotate_boxes(box, deg, h, w).numpy(), 0, 1)
    show_img(rotate_image(image, deg).numpy(), ax=ax)
    ax.contour(rotate_image(mask, deg).numpy()[..., 0] > 0.5, levels=[0.5], colors="yellow")
    draw_boxes(ax, image.shape, new_box, r.classes[:1], voc.class_names)
    ax.set_title(f"{deg}°: box area x{area(new_box) / area(box):.2f}")
"""),
    md("""
## Into `model.fit`

For training, the same pipeline shuffles and augments; with a `seed` the order and every random
transform are reproducible (stateless random ops), and they change from epoch to epoch.
"""),
    code("""
from ssd_keras.data import lesson_augmentations

train_ds = voc.dataset(image_size=224, batch_size=8, augment=lesson_augmentations(), shuffle=True, seed=0)
print(lesson_augmentations())
print(train_ds.element_spec)
images, y_true = next(iter(train_ds))
show_ground_truth(images, y_true, voc.class_names, cols=4, size=3);
"""),
]


# ------------------------------------------------------------------------------------------
# 02 · one grid
# ------------------------------------------------------------------------------------------

NB02 = [
    md("""
# 4 · The SSD's first step: one 4×4 grid, matching, BCE loss, trained

The first half of the lesson predicts, for each cell of a 4×4 grid over the image, one box (4
numbers) and one score per class plus background: `16 × (4 + C + 1)` outputs. The head sits on the
last feature map of a ResNet34 (7×7 for a 224-px image).

| lesson | here |
|---|---|
| `anchors`, `grid_sizes`, `anchor_cnr` (globals) | `AnchorConfig.single_grid(4)`: `.centers`, `.grid_sizes`, `.corners` (`anchors.py`) |
| `StdConv`, `OutConv`, `flatten_conv`, `SSD_Head` | the same names in `ssd_keras.layers` (`SSD_Head` → `SSDHead`) |
| `ConvnetBuilder(f_model, 0, 0, 0, custom_head=head_reg4)` | `build_ssd(num_classes, anchors, backbone="resnet34")` (`model.py`) |
| `actn_to_bb` | `activations_to_boxes` (`boxes.py`) |

*Run time:* about 30 s on 2 CPU cores. Forward passes use the small `tiny` body at 128 px (an 8×8
map, so the head halves it to 4×4 with one stride-2 `StdConv`, as the lesson's head does 7×7 → 4×4).
On a GPU, the lesson's model is
`build_ssd(20, AnchorConfig.single_grid(4), backbone="resnet34", weights="imagenet", image_size=224)`.
"""),
    code(SETUP),
    md("""
## The anchors of a 4×4 grid

An anchor is a cell's default box; the head predicts corrections to it. Centres are at
`1/8, 3/8, 5/8, 7/8` of the image (the lesson's `anc_offset = 1/(anc_grid*2)`), rows first. The
lesson keeps them as `(centre, height-width)` in `anchors` and as corners in `anchor_cnr`.
"""),
    code("""
from ssd_keras import AnchorConfig

anchors = AnchorConfig.single_grid(4)
print(anchors)
print("anchors (cy, cx, h, w), first 5:\\n", anchors.centers[:5])
print("grid_sizes:", anchors.grid_sizes[:5, 0], "...")
print("anchor_cnr (ymin, xmin, ymax, xmax), first 5:\\n", anchors.corners[:5])
"""),
    code("""
from ssd_keras.data import SAMPLE_VOC, load_source
from ssd_keras.viz import draw_boxes, draw_text, show_anchors

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
record = voc.records[0]
img = record.load_image()
fig = show_anchors(anchors, image=img, cells=[(4, 1, 2)], size=5)
ax = fig.axes[0]
h, w = img.shape[:2]
for i, (cy, cx, _, _) in enumerate(anchors.centers):  # anchor numbers, used in the matching below
    draw_text(ax, (cx * w - 8, cy * h - 10), str(i), sz=12)
draw_boxes(ax, img.shape, record.boxes, record.classes, voc.class_names)
ax.set_title("16 anchors (numbered), anchor 6 outlined; ground truth: car");
"""),
    md("""
## From a feature map to `16 × (4 + C + 1)`: `StdConv`, `OutConv`, `flatten_conv`

* `StdConv`: 3×3 conv (stride 2 by default) → ReLU → BatchNorm → Dropout. (The lesson's tip: BN after
  ReLU; the other order trains well too.) Stride 2 halves the map: 7×7 → 4×4.
* `OutConv`: two 3×3 convs on the same map, `(C + 1)·k` class channels (bias initialised to −3, so
  every class starts near `sigmoid(-3) ≈ 0.05`) and `4·k` box channels — the regression and the
  classification share everything but this last layer.
* `flatten_conv`: `[B, H, W, k·n]` → `[B, H·W·k, n]`, anchors row-major. Keras is channels-last, so
  the lesson's `permute(0, 2, 3, 1)` disappears.

`OutConv` concatenates the two as ssd_keras's `y_pred`: box activations first, then the class
logits with background last.
"""),
    code("""
from ssd_keras.layers import OutConv, StdConv, flatten_conv

x = keras.random.normal((2, 7, 7, 512), seed=0)  # ResNet34's last map for a 224-px image
h1 = StdConv(256)(x)
y = OutConv(k=1, num_classes=20, bias=-3.0)(h1)
print("feature map", tuple(x.shape), "-> StdConv", tuple(h1.shape), "-> OutConv", tuple(y.shape))

# flatten_conv's order: k = 2 anchors per cell, n = 3 numbers per anchor, labelled 100*row + 10*col + channel
grid = np.array([[[[100 * i + 10 * j + c for c in range(6)] for j in range(4)] for i in range(4)]], "float32")
flat = flatten_conv(grid, k=2)
print(tuple(grid.shape), "->", tuple(flat.shape))
print(np.asarray(flat[0, :5]))  # cell (0,0) anchor 0, cell (0,0) anchor 1, cell (0,1) anchor 0, ...
"""),
    md("""
## The whole model: body + `SSDHead`

`build_ssd` cuts the body before its pooling layer and puts the lesson's head on it: `dropout(relu(x))`
→ `sconv0` (stride 1) → `sconv2` (stride 2, to 4×4) → `out`. Images go in as 0–255 RGB; the
normalisation is inside the model.
"""),
    code("""
from ssd_keras import build_ssd

model = build_ssd(num_classes=20, anchors=anchors, backbone="tiny", image_size=128)
head = model.get_layer("head")
print(type(head).__name__, {name: type(layer).__name__ for name, layer in head.lesson_layers().items()})
print("body output:", model.get_layer("backbone").output.shape)
y_pred = model(np.zeros((2, 128, 128, 3), "float32"), training=False)
print("y_pred:", y_pred.shape, "= [batch, 16 anchors, 4 box activations + 20 classes + background]")

lesson_model = build_ssd(20, anchors, backbone="resnet34", image_size=224)  # weights="imagenet" to download
print(f"the lesson's model: ResNet34 body {lesson_model.get_layer('backbone').output.shape}, "
      f"{lesson_model.count_params():,} parameters")
"""),
    md("""
## The receptive field

Why should output cell *(1, 1)* be about the top-left-middle of the image? Because of its
**receptive field**: following the convolutions back, each output depends on a patch of the input.
The lesson traces it in a spreadsheet and notes that the centre of the patch is used by many more
paths than its edges, so a cell "looks" mostly at its middle. The same picture from autodiff: the
gradient of cell 5's class scores with respect to the input pixels (untrained weights — the shape
comes from the architecture). In this model the theoretical receptive field of a 4×4 cell (215 px:
ten 3×3 convs, five of them stride 2) is larger than the 128-px image, so every pixel can reach
every cell; the question is how the gradient is spread. The third panel sums it over 16×16-px
blocks, so the large-scale shape is visible through the pixel-level noise.
"""),
    code("""
image = tf.image.resize(img[None].astype("float32"), (128, 128))
with tf.GradientTape() as tape:
    tape.watch(image)
    y = model(image, training=False)
    score = tf.reduce_sum(y[0, 5, 4:])  # anchor 5 = row 1, column 1
grad = tf.reduce_sum(tf.abs(tape.gradient(score, image)[0]), axis=-1).numpy()
blocks = grad.reshape(8, 16, 8, 16).sum(axis=(1, 3))  # 16x16-px blocks
y0, x0, y1, x1 = (anchors.corners[5] * 128).astype(int)
inside = grad[y0:y1, x0:x1].sum() / grad.sum()
print(f"share of the gradient inside anchor 5's cell: {inside:.1%} (the cell is {1 / 16:.1%} of the image)")
print(f"largest 16-px block / mean block: {blocks.max() / blocks.mean():.1f}")
fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.5))
axes[0].imshow(image[0].numpy() / 255); axes[0].set_title("input (128 px)")
axes[1].imshow(grad, cmap="magma"); axes[1].set_title("|d score(anchor 5) / d pixel|")
axes[2].imshow(blocks, cmap="magma", extent=(-0.5, 127.5, 127.5, -0.5)); axes[2].set_title("the same, summed over 16x16-px blocks")
for ax in axes:
    draw_boxes(ax, (128, 128), anchors.corners[5:6], class_names=[""], color="cyan")
    ax.axis("off")
"""),
    md(RECEPTIVE_CAPTION),
    md("""
## `actn_to_bb`: activations → boxes

The 4 box activations are squashed by `tanh` to `[-1, 1]`; the centre moves at most half a grid
cell from the anchor's centre, height and width scale between 0.5× and 1.5× the anchor's. All-zero
activations give the anchors themselves.
"""),
    code("""
from ssd_keras import activations_to_boxes

acts = np.zeros((16, 4), "float32")
print("zero activations give the anchors:", np.allclose(activations_to_boxes(acts, anchors), anchors.corners))
acts[5], acts[6] = [10, 10, 10, 10], [-10, -10, -10, -10]
boxes = activations_to_boxes(acts, anchors).numpy()
print("anchor 5", anchors.corners[5], "-> activations +10:", boxes[5], "(centre +1/8, size x1.5)")
print("anchor 6", anchors.corners[6], "-> activations -10:", boxes[6], "(centre -1/8, size x0.5)")

# Random activations: each box stays within half a cell of its anchor's centre, 0.5x-1.5x its size.
pred_boxes = activations_to_boxes(np.random.default_rng(0).normal(size=(16, 4)), anchors).numpy()
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(image[0].numpy() / 255); ax.axis("off")
no_label = [""]  # draw_boxes labels boxes with their class name; these have none
draw_boxes(ax, (128, 128), anchors.corners, class_names=no_label, color="white")
draw_boxes(ax, (128, 128), pred_boxes, class_names=no_label, color="orange")
ax.set_title("anchors (white), boxes from random activations (orange)");
"""),
]


# ------------------------------------------------------------------------------------------
# 03 · matching and loss
# ------------------------------------------------------------------------------------------

NB03 = [
    md("""
## Loss: matching anchors to objects, then L1 + BCE

To compute a loss we must decide which of the 16 predictions is responsible for which object. The
lesson does it with IoU (`jaccard`) between the image's objects and the anchors, and
`map_to_ground_truth`. Then: an L1 loss on the boxes of the matched anchors, and a binary
cross-entropy on the classes of all anchors.

| lesson | here |
|---|---|
| `jaccard(bbox, anchor_cnr)` | `ssd_keras.jaccard` (`boxes.py`) |
| `map_to_ground_truth(overlaps)` | `ssd_keras.map_to_ground_truth` (one image), `match_anchors` (padded batch, TF ops) (`matching.py`) |
| `ssd_1_loss`, `ssd_loss`, `BCE_Loss` | `ssd_keras.SSDLoss` and its `components()` (`losses.py`) |
"""),
    code(SETUP),
    md("""
## An image with three objects

The lesson's example has a chair, a dining table and a sofa; the VOC sample's image 007263 has a
tv monitor, a chair and a sofa. The 4×4 grid and its anchor numbers are those above.
"""),
    code("""
from ssd_keras import AnchorConfig
from ssd_keras.data import SAMPLE_VOC, load_source
from ssd_keras.viz import draw_boxes, draw_text, show_anchors

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
names = voc.class_names
r = next(r for r in voc.records if r.image_id == "007263")
bbox, clas = r.boxes, r.classes
print("classes:", clas, [names[c] for c in clas])
print("boxes (relative yxyx):\\n", bbox)

anchors = AnchorConfig.single_grid(4)
img = r.load_image()
h, w = img.shape[:2]
fig = show_anchors(anchors, image=img, cells=[], size=5)
for i, (cy, cx, _, _) in enumerate(anchors.centers):
    draw_text(fig.axes[0], (cx * w - 8, cy * h - 10), str(i), sz=12)
draw_boxes(fig.axes[0], img.shape, bbox, clas, names)
"""),
    md("""
## `jaccard`: 3 objects × 16 anchors (the lesson's In [125])

Intersection over union of every object with every anchor.
"""),
    code("""
from ssd_keras import jaccard

overlaps = np.asarray(jaccard(bbox, anchors.corners))
print(overlaps.shape)
print(overlaps)
"""),
    md("""
## `map_to_ground_truth`, step by step

**Max over each row** (In [126]): for each object, the anchor it overlaps most.
"""),
    code("""
prior_overlap, prior_idx = overlaps.max(1), overlaps.argmax(1)
print(prior_overlap, prior_idx)
"""),
    md("""
**Max over each column** (In [127]): for each anchor, the object it overlaps most. Index 0 means
either "object 0" or "no overlap at all"; the overlap tells which.
"""),
    code("""
print(overlaps.max(0))
print(overlaps.argmax(0))
"""),
    md("""
**Combine** (In [128]): each object's best anchor is *forced* to that object with overlap 1.99, so
every object gets at least one anchor even when no IoU is above the threshold; every other anchor
keeps its best object and overlap. (When two objects share a best anchor, the later object wins, as
the lesson's `for` loop does.)
"""),
    code("""
from ssd_keras import map_to_ground_truth

gt_overlap, gt_idx = map_to_ground_truth(overlaps)
gt_overlap, gt_idx = gt_overlap.numpy(), gt_idx.numpy()
print(gt_overlap)
print(gt_idx)
"""),
    md("""
**Classes** (In [129]–[131]): anchors whose overlap is above the threshold (0.4 in the loss) take
their object's class; the others are background, class id `C` = `len(id2cat)`, shown as `bg`.
"""),
    code("""
pos = gt_overlap > 0.4
gt_clas = np.where(pos, clas[gt_idx], len(names))
print([names[c] if c < len(names) else "bg" for c in gt_clas])
print("positive anchors:", np.nonzero(pos)[0])

fig = show_anchors(anchors, image=img, cells=[], size=4)
draw_boxes(fig.axes[0], img.shape, anchors.corners[pos], gt_clas[pos], names)
fig.axes[0].set_title("positive anchors and their classes");
"""),
    md("""
### The batched matcher

The lesson loops over the images of a batch in Python. `SSDLoss` matches a whole padded batch
(`y_true [B, max_boxes, 5]`, padding rows class −1) at once with `match_anchors`, in TF ops that
also run under `tf.function` and XLA. Same answer for our image, and an image without objects is
all background:
"""),
    code("""
from ssd_keras import match_anchors
from ssd_keras.data import pad_targets

y_true = np.stack([
    pad_targets(bbox, clas, 5).numpy(),                                      # our image
    pad_targets(np.zeros((0, 4), "float32"), np.zeros(0, "int32"), 5).numpy(),  # no objects
])
print(y_true[0])
m = match_anchors(y_true, anchors, num_classes=len(names), pos_threshold=0.4)
print("same classes as above:", np.array_equal(m["classes"][0].numpy(), gt_clas))
print("empty image, any positive anchor:", bool(m["positive"][1].numpy().any()))
"""),
    md("""
## The loss: location (L1) + classification (BCE)

For one image (the lesson's `ssd_1_loss`):

* **loc**: turn the box activations of the positive anchors into boxes (`actn_to_bb`) and take the
  mean absolute difference to their matched objects' boxes;
* **clas**: binary cross-entropy of the class logits against one-hot targets *with the background
  column dropped* (a background anchor's target is all zeros), summed over anchors and classes,
  divided by `C` (the lesson's `BCE_Loss`; notebook 5 explains why not softmax).

We need a model output: an untrained model's `y_pred` for this image (the tiny body at 128 px; the
head and the loss only care about the 16 anchors).
"""),
    code("""
from ssd_keras import SSDLoss, activations_to_boxes, build_ssd

model = build_ssd(len(names), anchors, backbone="tiny", image_size=128)
image = tf.image.resize(img[None].astype("float32"), (128, 128))
y_pred = model(image, training=False).numpy()  # [1, 16, 4 + 20 + 1]

# The lesson's ssd_1_loss written out for this image ...
a_ic = activations_to_boxes(y_pred[0, :, :4], anchors).numpy()
loc_loss = np.abs(a_ic[pos] - bbox[gt_idx][pos]).mean()
targets = np.eye(len(names) + 1, dtype="float32")[gt_clas][:, :-1]  # one-hot, background column dropped
clas_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(targets, y_pred[0, :, 4:-1])).numpy() / len(names)
print(f"by hand:  loc {loc_loss:.4f}  clas {clas_loss:.4f}")

# ... and the library's loss on the padded y_true (first image of the batch above)
loss = SSDLoss(anchors, num_classes=len(names))
parts = loss.components(y_true[:1], y_pred)
print(f"SSDLoss:  loc {float(parts['loc'][0]):.4f}  clas {float(parts['clas'][0]):.4f}  total {float(loss(y_true[:1], y_pred)):.4f}")
"""),
    md("""
`SSDLoss` is a `keras.losses.Loss`: `model.compile(optimizer, loss=loss, metrics=loss.metrics())`
trains with it and logs `loc` and `clas` next to `loss`, as the lesson prints them. One difference
on purpose: the lesson's `ssd_loss` **sums** the per-image losses over the batch, `SSDLoss` takes
the **mean** (Keras' convention, so the learning rate does not depend on the batch size); the
lesson's numbers are `batch_size` times ours. Notebook 7 checks the values and gradients against
the lesson's PyTorch code.
"""),
]

GRID4_TRAINED = [
    md("""
## The 4×4 model, trained

The lesson trains this model (one 4×4 grid, `SSD_Head`, BCE) and shows its predictions next to the
ground truth: it finds the big objects and misses or mislabels others. Training it takes longer
than a notebook should (about 30 minutes of wall time on two heavily shared CPU cores), so it is a checkpoint in `assets/`, made by
`notebooks/train_checkpoints.py --model grid4_bce` with the recipe `python -m ssd_keras demo` had on
2026-11-29 (tiny body from scratch at 64 px, head 128 filters, 24000 generated `shapes` images with 1-4
objects of 20-60 % of the side × 4 epochs, batch 16, one-cycle to 3e-3, flips), the same recipe as
the two 189-anchor models of notebook 5; only the anchors and the head differ (16 anchors,
`SSDHead`). Its metadata records the command, the training time and the held-out mAP; `python -m
ssd_keras evaluate --model notebooks/assets/shapes_grid4_bce.keras --data shapes` reproduces it.
"""),
    code(HELPERS),
    code("""
grid4 = ssd_keras.load_model("assets/shapes_grid4_bce.keras")
m = grid4.metadata
print(grid4.anchors, "| head:", type(grid4.get_layer("head")).__name__, "| loss:", m["loss"])
print(f"made by: {m['command']} ({m['train_seconds'] / 60:.0f} min)")
val300 = held_out_shapes(grid4)
val300_ds = val300.dataset(grid4.image_size, 50)
result = evaluate_model(grid4, val300_ds, ground_truths=val300.ground_truths())
print(f"held-out mAP (VOC07, IoU 0.5, {len(val300)} images): {result['map']:.3f} (recorded {m['val_map']:.3f})")
for name, ap in zip(grid4.class_names, result["ap"]):
    print(f"  {name:>8s} AP {ap:.3f}")
"""),
    code("""
images300, y_true300 = next(iter(val300_ds))
compare_detections(images300[:8], y_true300[:8], [grid4], [f"4x4 grid, BCE (mAP {result['map']:.2f})"],
                   grid4.class_names);
"""),
    md(GRID4_CAPTION),
]

NB_SINGLE = [
    md("""
# 2 · The largest object: one class and one box per image

Before detecting every object, the lesson (continuing lesson 8) detects **one**: the largest object
of each image, its class and its box, from one head on the body. The head is lesson 8's
`head_reg4` (flatten → dropout → dense 256 → ReLU → BatchNorm → dropout → dense `4 + C`); the loss
is `detn_loss`: L1 on the box (through a sigmoid) plus 20 × cross-entropy on the class.

| lesson | here |
|---|---|
| `get_lrg` (the largest object of each image) | `lesson_models.largest_object_targets` |
| `head_reg4`, `ConvnetBuilder(..., custom_head=head_reg4)` | `lesson_models.build_single_object_detector` |
| `detn_loss`, `detn_l1`, `detn_acc` | `SingleObjectLoss`, `single_object_metrics()` (L1, accuracy, mean IoU) |

*Run time:* about 30 s on 2 CPU cores. On two CPU cores the lesson's ResNet34 on VOC cannot be
trained, so the model is the `tiny` body at 64 px on generated `shapes` (1-4 objects of 20-60 % of
the side), loaded from `assets/lesson_single.keras`: training it takes several CPU-minutes, more
than a notebook should. It was made by `scripts/train_lesson_models.py` (the command, time and
numbers are in `assets/lesson_single.json`, printed below); its body starts from the body of the
trained focal-loss SSD of notebook 5 (`--init-body`), the way the lesson starts from a pretrained
ResNet34, then the whole model trains on the largest-object task.
"""),
    code(SETUP),
    code("""
import json

from ssd_keras import lesson_models as lm
from ssd_keras.data import make_shapes

info = json.load(open("assets/lesson_single.json"))
print("made by:", info["command"])
print(f"  {info['train_images']} training images x {info['epochs']} epochs, batch {info['batch_size']}, "
      f"max lr {info['max_lr']}, fit {info['fit_seconds'] / 60:.1f} min; body from {info['init_body']}")
S = info["shapes"]["image_size"]
val = make_shapes(info["val_images"], split="val", **info["shapes"])  # held out: never trained on
print(val.summary())
"""),
    md("""
## The target: the largest object

`largest_object_targets` picks, per image, the object of largest area (the first of equal ones,
as `get_lrg` sorts) and returns one `y_true` row `(ymin, xmin, ymax, xmax, class_id)`.
"""),
    code("""
from ssd_keras.viz import draw_boxes, show_img

targets = lm.largest_object_targets(val)  # [N, 5]
names = val.class_names
images = np.stack([r.load_image() for r in val.records[:8]])
fig, axes = plt.subplots(1, 8, figsize=(16, 2.4))
for ax, img, r, t in zip(axes, images, val.records, targets):
    show_img(img, ax=ax)
    draw_boxes(ax, img.shape, r.boxes, color="white")  # every object, white
    draw_boxes(ax, img.shape, t[None, :4], [int(t[4])], names, sz=8)  # the largest, in its class colour
fig.suptitle("all objects (white) and the largest one (class colour, labelled): the training target", y=1.04);
"""),
    md("""
## The trained model on held-out images

Output `[B, 4 + C]`: the box (relative yxyx, already through the sigmoid) then the class logits.
Accuracy of the class and IoU of the box against the largest object, on the held-out images:
"""),
    code("""
model = keras.saving.load_model("assets/lesson_single.keras")
print(f"{model.name}: {model.count_params():,} parameters; output {model.output_shape}")
val_ds = lm.single_object_dataset(val, S, 100)
pred = model.predict(val_ds, verbose=0)
boxes, classes = pred[:, :4], pred[:, 4:].argmax(-1)
accuracy = float(np.mean(classes == targets[:, 4]))
iou = np.asarray(lm.box_iou_pairs(boxes, targets[:, :4]))
print(f"held-out ({len(val)} images): class accuracy {accuracy:.3f} (aim 0.9), mean IoU {iou.mean():.3f} (aim 0.6)")
print(f"recorded by the script: accuracy {info['val_accuracy']:.3f}, mean IoU {info['val_mean_iou']:.3f}")

model.compile(loss=lm.SingleObjectLoss(), metrics=lm.single_object_metrics())  # the same with Keras metrics
print({k: round(float(v), 3) for k, v in model.evaluate(val_ds, verbose=0, return_dict=True).items()})
"""),
    code("""
fig, axes = plt.subplots(4, 6, figsize=(12, 8.4))
for k in range(12):
    i, ax_gt, ax_p = k, axes.flat[2 * k], axes.flat[2 * k + 1]
    img = val.records[i].load_image()
    show_img(img, ax=ax_gt)
    draw_boxes(ax_gt, img.shape, targets[i:i + 1, :4], [int(targets[i, 4])], names, sz=8)
    show_img(img, ax=ax_p)
    draw_boxes(ax_p, img.shape, boxes[i:i + 1], [int(classes[i])], names, sz=8)
    ax_gt.set_title("largest object", fontsize=8)
    ax_p.set_title(f"prediction, IoU {iou[i]:.2f}", fontsize=8, color="k" if classes[i] == targets[i, 4] else "red")
fig.tight_layout()
"""),
    md(SINGLE_CAPTION),
]

NB_MULTI = [
    md("""
# 3 · Multi-label classification: which classes are in the image

The lesson's second warm-up: forget the boxes and predict the **set** of classes of each image
(`mc`, built in notebook 1). One sigmoid per class and binary cross-entropy (fastai's choice for
multi-label data): a class is predicted when its probability is above 0.5, independently of the
others.

| lesson | here |
|---|---|
| `mc`, `ImageClassifierData.from_csv(..., multi-label)` | `lesson_models.multi_hot`, `multilabel_dataset` |
| `ConvLearner.pretrained(f_model, md)` (concat pooling, dense) | `lesson_models.build_multilabel_classifier` |
| F1 / accuracy at threshold 0.5 | `MultiLabelF1` (micro F1) |

*Run time:* about 30 s on 2 CPU cores. As in notebook 2, the model is the `tiny` body at 64 px on
generated `shapes`, loaded from `assets/lesson_multi.keras`, made by `scripts/train_lesson_models.py`
(command, time and numbers in `assets/lesson_multi.json`), its body started from the trained
focal-loss SSD's body of notebook 5.
"""),
    code(SETUP),
    code("""
import json

from ssd_keras import lesson_models as lm
from ssd_keras.data import make_shapes

info = json.load(open("assets/lesson_multi.json"))
print("made by:", info["command"])
print(f"  {info['train_images']} training images x {info['epochs']} epochs, batch {info['batch_size']}, "
      f"max lr {info['max_lr']}, fit {info['fit_seconds'] / 60:.1f} min; body from {info['init_body']}")
S = info["shapes"]["image_size"]
val = make_shapes(info["val_images"], split="val", **info["shapes"])  # held out
names = val.class_names
truth = lm.multi_hot(val, len(names))  # [N, C], the lesson's mc as 0/1
print("classes:", names, "\\ntargets of the first 3 images:\\n", truth[:3])
"""),
    code("""
model = keras.saving.load_model("assets/lesson_multi.keras")
val_ds = lm.multilabel_dataset(val, S, 100)
prob = tf.sigmoid(model.predict(val_ds, verbose=0)).numpy()
pred = prob > 0.5
tp, fp, fn = (pred & (truth > 0)).sum(), (pred & (truth == 0)).sum(), (~pred & (truth > 0)).sum()
f1 = 2 * tp / (2 * tp + fp + fn)
print(f"held-out ({len(val)} images): micro F1 {f1:.3f} (aim 0.9); precision {tp / (tp + fp):.3f}, recall {tp / (tp + fn):.3f}")
print(f"images whose whole set is right: {np.mean((pred == (truth > 0)).all(1)):.3f}")
print(f"recorded by the script: F1 {info['val_f1']:.3f}")
for c, name in enumerate(names):
    p, t = pred[:, c], truth[:, c] > 0
    print(f"  {name:>8s}: precision {(p & t).sum() / max(p.sum(), 1):.2f}, recall {(p & t).sum() / max(t.sum(), 1):.2f}, in {t.sum()} images")
"""),
    code("""
from ssd_keras.viz import show_img

fig, axes = plt.subplots(2, 6, figsize=(14, 5.6))
for i, ax in enumerate(axes.flat):
    show_img(val.records[i].load_image(), ax=ax)
    true_set = {names[c] for c in np.flatnonzero(truth[i])}
    pred_set = {names[c] for c in np.flatnonzero(pred[i])}
    ax.set_title(f"true: {' '.join(sorted(true_set))}\\npred: {' '.join(sorted(pred_set))}", fontsize=8,
                 color="k" if true_set == pred_set else "red")
fig.tight_layout()
"""),
    md(MULTI_CAPTION),
]


# ------------------------------------------------------------------------------------------
# 04 · more anchors, focal loss, training
# ------------------------------------------------------------------------------------------

NB04 = [
    md("""
# 5 · More anchors, focal loss, and training the lesson's way

The 4×4 grid misses objects: a small object covers a fraction of one anchor, a big one spans many, a
thin one fits no square; their best IoU stays low. The second half of the lesson adds **grids**
(4×4, 2×2, 1×1), **zooms** (0.7, 1, 1.3) and **aspect ratios** (1:1, 1:2, 2:1): `k = 9` anchors per
cell, `(16 + 4 + 1) × 9 = 189` anchors. Then it replaces BCE by the **focal loss** and trains with
the one-cycle schedule.

| lesson | here |
|---|---|
| `anc_grids`, `anc_zooms`, `anc_ratios`, `k` | `AnchorConfig(grids, zooms, ratios)` (`anchors.py`) |
| `SSD_MultiHead(k, -4.)` | `SSDMultiHead`, `build_ssd(..., anchors=AnchorConfig())` (`layers.py`, `model.py`) |
| `FocalLoss` | `SSDLoss(..., focal=(0.25, 1.0))` (`losses.py`) |
| `learn.lr_find()`, `learn.sched.plot()` | `lr_find(model, ds)`, `.plot()` (`training.py`) |
| `learn.freeze_to(-2)`, `learn.unfreeze()` | `freeze_to(model, -2)`, `unfreeze(model)` over `layer_groups(model)` (fastai's meaning: the last two groups train) |
| `learn.fit(lrs, 1, cycle_len=5, use_clr=(20, 10))` | `fit_one_cycle(model, ds, 5, lr, div=20, cut_div=10, group_multipliers=(1/100, 1/10, 1))` |

*Run time:* about 1–2 minutes on 2 idle CPU cores (3–4 on a busy machine). Two kinds of training
here, both on generated `shapes` (a CPU cannot train the lesson's ResNet34 on VOC):

* a **short run inside the notebook** (the `tiny` body at 64 px, 256 images, 4 epochs, with 32
  held-out images for the validation curve) to show `lr_find`, `freeze_to` and the one-cycle
  schedule — far too short to detect anything;
* the **two trained models** of the lesson's comparison, 189 anchors with BCE and with focal loss,
  loaded from `assets/` at the end: both trained the same way by `notebooks/train_checkpoints.py`
  (the recipe `python -m ssd_keras demo` had when they were made: tiny body from scratch at 64 px,
  24000 images × 4 epochs, batch 16, one-cycle to 3e-3, flips), each about 31 minutes of wall time on two heavily shared CPU cores (printed below); only the loss differs.

The lesson's configuration on a GPU (`ssd_keras.recipes.lesson_stages` /
`python -m ssd_keras train --data voc:PATH --backbone resnet34 --image-size 224 --weights imagenet`):

```python
model = SSDDetector.from_preset("lesson_resnet34_224", backbone_weights="imagenet")  # focal loss (0.25, 1)
freeze_to(model, -1)                                  # learn.freeze(): the head only
fit_one_cycle(model, voc_ds, 5, 3e-3, div=20, cut_div=10)
freeze_to(model, -2)                                  # learn.freeze_to(-2): upper body + head
fit_one_cycle(model, voc_ds, 10, 3e-3 / 4, div=20, cut_div=10, group_multipliers=(1/100, 1/10, 1))
```
"""),
    code(SETUP),
    md("""
## 189 anchors: grids × zooms × ratios

Order (the lesson's): grid by grid, cells row-major, then the `k` scales of a cell (zoom-major,
then ratio). The picture shows each grid's lines and the 9 anchors of one cell per grid.
"""),
    code("""
from ssd_keras import AnchorConfig
from ssd_keras.viz import show_anchors

anchors = AnchorConfig()  # grids (4, 2, 1), zooms (0.7, 1, 1.3), ratios ((1, 1), (1, .5), (.5, 1))
print(anchors)
print("anchors per grid:", anchors.anchors_per_grid())
print("(h, w) scales of a cell, in grid-cell units:", [(round(h, 2), round(w, 2)) for h, w in anchors.scales])
from matplotlib.lines import Line2D
from ssd_keras.viz import colour

fig = show_anchors(anchors, size=5)
handles = []
for gi, g in enumerate(anchors.grids):  # show_anchors' colours: grid gi's lines colour(2 gi), its anchors colour(2 gi + 1)
    if g > 1:
        handles.append(Line2D([], [], color=colour(2 * gi), ls=["-", "--", ":"][gi % 3], label=f"{g}×{g} grid lines"))
    handles.append(Line2D([], [], color=colour(2 * gi + 1), label=f"9 anchors of one {g}×{g} cell"))
fig.axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=9);
"""),
    md("""
Do the extra anchors help? `anchor_coverage` (`anchors.py`) counts the objects of a data set whose
best anchor has IoU ≤ 0.4: such an object is only matched by `map_to_ground_truth`'s forced 1.99,
to an anchor that fits it badly. On the VOC sample:
"""),
    code("""
from ssd_keras.data import SAMPLE_VOC, load_source
from ssd_keras.anchors import anchor_coverage

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
for a in [AnchorConfig.single_grid(4), AnchorConfig(zooms=(1.0,), ratios=((1.0, 1.0),)),
          AnchorConfig(zooms=(1.0,)), anchors]:
    cov = anchor_coverage([r.boxes for r in voc.records], a, threshold=0.4)
    print(f"grids {a.grids}, k={a.k}, {a.num_anchors:3d} anchors: {cov['fraction_uncovered']:5.1%} of "
          f"{cov['num_objects']} objects have no anchor with IoU > 0.4")
"""),
    md("""
## Why not softmax, and why BCE drops the background column

With softmax, the scores of an anchor sum to 1 over the classes *plus background*, so the network
would have to learn what "background" looks like — but background is not a kind of thing, it is
the absence of every class. The lesson instead uses one sigmoid per class (binary cross-entropy)
and drops the background column from the one-hot target: a background anchor is trained to say
"no" to every class, and "background" is simply *all classes low*.
"""),
    code("""
num_classes = 6
matched = np.array([2, 6, 0])  # two objects (classes 2 and 0) and a background anchor (id C = 6)
one_hot = np.eye(num_classes + 1)[matched]
print("one-hot with background:\\n", one_hot)
print("BCE targets (background column dropped):\\n", one_hot[:, :-1])
"""),
    md("""
## Focal loss

Most of the 189 anchors are easy background. Summed over them, their small BCE terms still dominate
the loss. The focal loss (Lin et al. 2017, RetinaNet) multiplies each term by `(1 − p_t)^γ`, where
`p_t` is the probability given to the right answer, so confident, correct predictions count for
little:

$$\\text{FL}(p_t) = -\\alpha_t\\,(1 - p_t)^\\gamma \\log(p_t)$$

The lesson's tip on reading papers: the contribution is this one formula and its table. The paper's
Table 1(b), varying γ (with the best α for each; COCO AP):

| γ | α | AP | AP₅₀ | AP₇₅ |
|---:|---:|---:|---:|---:|
| 0 | .75 | 31.1 | 49.4 | 33.0 |
| 0.1 | .75 | 31.4 | 49.9 | 33.1 |
| 0.2 | .75 | 31.9 | 50.7 | 33.4 |
| 0.5 | .50 | 32.9 | 51.7 | 35.2 |
| 1.0 | .25 | 33.7 | 52.0 | 36.2 |
| 2.0 | .25 | **34.0** | **52.5** | **36.5** |
| 5.0 | .25 | 32.2 | 49.6 | 34.8 |

The lesson uses `alpha, gamma = 0.25, 1`: `SSDLoss(anchors, C, focal=(0.25, 1.0))` (or `focal=True`).
"""),
    code("""
pt = np.linspace(0.01, 1, 200)
fig, ax = plt.subplots(figsize=(6, 3.5))
for gamma in [0, 0.5, 1, 2, 5]:
    ax.plot(pt, -(1 - pt) ** gamma * np.log(pt), label=f"γ = {gamma}")
ax.set(xlabel="probability of the ground-truth class, $p_t$", ylabel="loss", ylim=(0, 4),
       title="focal loss (α omitted): well-classified examples count less")
ax.legend();
"""),
    md("""
The same batch under both losses: the focal loss's classification part is much smaller, because the
~180 background anchors per image that the untrained head already scores low (bias −4:
`sigmoid(-4) ≈ 0.02`) barely count any more.
"""),
    code("""
from ssd_keras import SSDLoss, build_ssd
from ssd_keras.data import make_shapes

S = 64
SHAPES = dict(seed=0, min_size=0.2, max_size=0.6, max_objects=4)  # the demo's shapes settings
train = make_shapes(count=256, image_size=S, split="train", **SHAPES)
val = make_shapes(count=32, image_size=S, split="val", **SHAPES)  # held out, for the validation curve
names = train.class_names
train_ds = train.dataset(S, 32, augment=[ssd_keras.data.RandomFlip()], shuffle=True, seed=0)
val_ds = val.dataset(S, 32)
model = build_ssd(len(names), anchors, backbone="tiny", image_size=S)
images, y_true = next(iter(train_ds))
y_pred = model(images, training=False)
print("y_pred:", y_pred.shape, " (the lesson's batch[0].size(), batch[1].size() in one tensor)")
for focal in [None, (0.25, 1.0)]:
    parts = SSDLoss(anchors, len(names), focal=focal).components(y_true, y_pred)
    print(f"{'focal' if focal else 'BCE  '}: loc {float(np.mean(parts['loc'])):.4f}  clas {float(np.mean(parts['clas'])):.4f}")
"""),
    md("""
## Training: `lr_find`, `freeze_to`, one-cycle

`lr_find` trains for a few dozen batches while the learning rate grows exponentially, records the
loss, then restores the weights and the optimizer (fastai's `learn.lr_find()`; `.plot()` is
`learn.sched.plot()`). Pick a rate somewhat below where the loss takes off; below we train at 1e-2.
"""),
    code("""
from ssd_keras.optimizers import freeze_to, unfreeze
from ssd_keras.schedules import OneCycleSchedule
from ssd_keras.training import fit_one_cycle, lr_find

import time

training_started = time.perf_counter()  # lr_find + the two stages below: the training done here
loss = SSDLoss(anchors, len(names), focal=(0.25, 1.0))
model.compile(optimizer="adam", loss=loss)
finder = lr_find(model, train_ds, start_lr=1e-4, end_lr=1.0, num_steps=30)
print(f"{len(finder.lrs)} steps, stopped early (loss exploded): {finder.stopped_early}")
finder.plot(skip_start=3, skip_end=2)
"""),
    md("""
`fit_one_cycle(model, ds, epochs, max_lr, div=20, cut_div=10)` is the lesson's
`learn.fit(lr, 1, cycle_len=epochs, use_clr=(20, 10))`: the rate rises from `max_lr / div` to `max_lr`
over the first `1 / cut_div` of the steps and falls back over the rest (`OneCycleSchedule`, a Keras
`LearningRateSchedule`):
"""),
    code("""
schedule = OneCycleSchedule(1e-2, total_steps=5 * 100, div=20, cut_div=10)
steps = np.arange(500)
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(steps, [float(schedule(s)) for s in steps])
ax.set(xlabel="iteration (5 epochs of 100 batches)", ylabel="learning rate", title="use_clr=(20, 10)");
"""),
    md("""
`freeze_to(model, n)` is fastai's: the layer groups `[early body, late body, head]`
(`layer_groups(model)`, split where fastai splits ResNet34) before `n` are frozen, the rest train; a
negative `n` counts from the end. The lesson's body is pretrained, so it first trains the head alone
(`learn.freeze()`, i.e. `freeze_to(model, -1)`), then calls `learn.freeze_to(-2)`: the **last two**
groups (late body + head) train, the early body stays frozen, with the rates
`lrs = [lr/100, lr/10, lr]` → `group_multipliers=(1/100, 1/10, 1)` (the frozen group's rate is
unused). Our `tiny` body starts from random weights, so these two stages only demonstrate the
mechanism; the trained models below train every layer from scratch in one cycle, as the demo does.
"""),
    code("""
def show_groups(groups):
    for name, group in zip(["early body", "late body", "head"], groups):
        print(f"  {name:10s}: {len(group):3d} layers, trainable: {all(l.trainable for l in group)}")
    print(f"  trainable parameters: {sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} of {model.count_params():,}")

print("stage 1, freeze_to(model, -1) = learn.freeze(): the head only")
show_groups(freeze_to(model, -1))
history_head = fit_one_cycle(model, train_ds, 1, 1e-2, val_ds=val_ds, loss=loss, verbose=2)

print("stage 2, freeze_to(model, -2) = learn.freeze_to(-2): late body + head")
show_groups(freeze_to(model, -2))
history = fit_one_cycle(model, train_ds, 3, 1e-2, val_ds=val_ds, loss=loss, group_multipliers=(1 / 100, 1 / 10, 1), verbose=2)
unfreeze(model)
print(f"training in this notebook (lr_find + stage 1 + stage 2, tracing included): "
      f"{time.perf_counter() - training_started:.0f} s")
"""),
    md("""
`fit` logs the two parts of the loss next to it (`loc`, `clas`, as the lesson prints them; they come
from `loss.metrics()`), and with `val_ds` the same three on the held-out images (`val_loss`,
`val_loc`, `val_clas`, computed after each epoch with the weights of that moment).
"""),
    code("""
logs = {k: history_head.history[k] + history.history[k] for k in history.history}
epochs = np.arange(1, len(logs["loss"]) + 1)
fig, axes = plt.subplots(1, 3, figsize=(13, 3))
for ax, key in zip(axes, ["loss", "loc", "clas"]):
    ax.plot(epochs, logs[key], "o-", label="training (mean over the epoch)")
    ax.plot(epochs, logs["val_" + key], "s--", label="validation (32 held-out images, end of epoch)")
    ax.axvline(1.5, color="grey", ls=":")
    ax.set(title=key, xlabel="epoch (1: head only; 2-4: freeze_to(-2))")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
fig.subplots_adjust(bottom=0.3);
"""),
    md(CURVES_SHORT_CAPTION),
    md("""
## The lesson's comparison, trained: 189 anchors with BCE, then with focal loss

The lesson trains the multi-grid model with BCE, looks at its predictions, then trains the same
model with the focal loss and shows the improvement. Here both are checkpoints in `assets/`, made by
`notebooks/train_checkpoints.py` with the same recipe (the `demo_tiny64` preset and recipe of
2026-11-29, when they were made: tiny body trained from scratch at 64 px, head 128 filters, 24000
generated images × 4 epochs, batch 16, one-cycle to 3e-3 with `use_clr=(20, 10)`, flips; `shapes`
with 1-4 objects of 20-60 % of the side, seed 0; the demo has since moved to the `tiny8` body at
batch 64); only the classification loss differs. Each file's metadata records the command, the
training time and the held-out mAP; `python -m ssd_keras evaluate --model FILE --data shapes`
rebuilds the same 300 held-out images (split "val") and prints the same mAP.
"""),
    code(HELPERS),
    code("""
bce, focal = ssd_keras.load_model("assets/shapes_multi_bce.keras"), ssd_keras.load_model("assets/shapes_multi_focal.keras")
val300 = held_out_shapes(focal)
assert held_out_shapes(bce).records[0].image_id == val300.records[0].image_id  # the same held-out images
val300_ds = val300.dataset(focal.image_size, 50)
scores = {}
for name, det in [("BCE", bce), ("focal", focal)]:
    m = det.metadata
    scores[name] = evaluate_model(det, val300_ds, ground_truths=val300.ground_truths())["map"]
    print(f"{name:5s}: {m['command']}\\n       trained {m['train_seconds'] / 60:.0f} min; held-out mAP recorded "
          f"{m['val_map']:.3f}, now {scores[name]:.3f} ({len(val300)} images, VOC07, IoU 0.5)")
"""),
    md("""
Their loss curves over the 4 epochs (the metadata's `history`: training loss, the mean over each
epoch, and the held-out loss after each epoch). BCE and focal losses are on different scales, so
each model has its own axes; `loc` (L1 on the boxes) is comparable.
"""),
    code("""
fig, axes = plt.subplots(1, 3, figsize=(13, 3))
for ax, (name, det) in zip(axes[:2], [("BCE", bce), ("focal", focal)]):
    h = det.metadata["history"]
    e = np.arange(1, len(h["loss"]) + 1)
    ax.plot(e, h["clas"], "o-", label="training clas")
    ax.plot(e, h["val_clas"], "s--", label="held-out clas")
    ax.set(title=f"{name}: classification loss", xlabel="epoch")
    ax.legend(fontsize=8)
    axes[2].plot(e, h["val_loc"], "s--", label=f"{name}: held-out loc")
axes[2].set(title="held-out box loss (L1)", xlabel="epoch")
axes[2].legend(fontsize=8);
"""),
    md("""
Left and middle: the classification loss per epoch, training (mean over the epoch) and held-out
(end of the epoch), for the BCE and the focal model; both fall at every epoch and the held-out
curve stays close to the training one (no overfitting in 4 epochs). Their scales differ (BCE
1-4, focal 0.2-0.5), which is why the two losses cannot be compared by their values. Right: the
held-out box loss, the same L1 for both: lower for the focal model at every epoch (0.027 against
0.034 at the end).
"""),
    md("""
Predictions on the first eight held-out images (score > 0.3, after NMS; notebook 6 shows what NMS
does): ground truth, the BCE model, the focal model.
"""),
    code("""
images300, y_true300 = next(iter(val300_ds))
compare_detections(images300[:8], y_true300[:8], [bce, focal],
                   [f"BCE (mAP {scores['BCE']:.2f})", f"focal loss (mAP {scores['focal']:.2f})"], focal.class_names);
"""),
    md(COMPARE_CAPTION),
]


# ------------------------------------------------------------------------------------------
# 05 · NMS and evaluation
# ------------------------------------------------------------------------------------------

NB05 = [
    md("""
# 6 · From predictions to detections: NMS and mAP

A trained head gives 189 boxes per image with a score per class; many of them cover the same object.
**Non-maximum suppression** keeps, per class, the best-scoring box and drops the ones that overlap it
too much. Then we measure the detector the way Pascal VOC does: average precision per class at
IoU 0.5, and their mean (mAP).

| lesson | here |
|---|---|
| `actn_to_bb`, `sigmoid`, the hand-written `nms` loop per image | `decode_detections(y_pred, anchors, ...)`: per-class NMS for the batch with `tf.image.combined_non_max_suppression`, in the graph (`decode.py`) |
| `show_nmf` pictures | `ssd_keras.viz.show_detections` |
| — | `evaluate_detections` (VOC devkit AP), `anchor_coverage` (`anchors.py`) |

*Run time:* about 30 s on 2 CPU cores. The model is the lesson's final one as trained in
notebook 5: 189 anchors, focal loss, the tiny body at 64 px, the checkpoint
`assets/shapes_multi_focal.keras` made by `notebooks/train_checkpoints.py --model focal` (the recipe
`python -m ssd_keras demo` had on 2026-11-29: 24000 generated `shapes` images × 4 epochs from scratch; the command,
training time and held-out mAP are in its metadata, printed below). The held-out images are the 300
of `shapes` split "val" it was scored on. The same cells run on the lesson's ResNet34 model: load a
checkpoint written by `python -m ssd_keras train --backbone resnet34 --image-size 224 ...` instead.
"""),
    code(SETUP),
    code(HELPERS),
    code("""
model = ssd_keras.load_model("assets/shapes_multi_focal.keras")
anchors, names, S = model.anchors, model.class_names, model.image_size
m = model.metadata
print(anchors, "\\nclasses:", names, f"\\nimage size {S}")
print(f"made by: {m['command']} ({m['train_seconds'] / 60:.0f} min); recorded held-out mAP {m['val_map']:.3f}")

val = held_out_shapes(model)  # the 300 held-out images of its metadata (shapes split "val")
val_ds = val.dataset(S, batch_size=50)
images, y_true = next(iter(val_ds))
y_pred = model.raw.predict(images, verbose=0)  # the raw output; model.predict decodes
print("y_pred:", y_pred.shape)
"""),
    md("""
## Before NMS

Decoding is the lesson's `actn_to_bb` on the box activations and a sigmoid on the class logits
(background column left out: each class is an independent yes/no). Keep every (anchor, class) with
a score above 0.1 and there are several boxes per object:
"""),
    code("""
from ssd_keras import activations_to_boxes
from ssd_keras.viz import show_detections

num_objects = (y_true[:, :, 4] >= 0).numpy().sum(axis=1)
i = int(np.argmax(num_objects >= 3))  # the first held-out image with 3 or more objects
boxes = activations_to_boxes(y_pred[i, :, :4], anchors).numpy().clip(0, 1)
scores = tf.sigmoid(y_pred[i, :, 4:-1]).numpy()  # [189, C]
anchor_idx, cls = np.nonzero(scores > 0.1)
print(f"image {i}: {len(cls)} (anchor, class) pairs above 0.1 for {num_objects[i]} objects")
show_detections(images[i], (boxes[anchor_idx], scores[anchor_idx, cls], cls), y_true[i].numpy(), names, size=4);
"""),
    md("""
Held-out image 1 (a triangle and two overlapping rings), every (anchor, class) pair above 0.1: a
stack of about ten ring boxes of different sizes around the two rings and, on the triangle, a
triangle box (0.47) with a weaker box of another class at the same place.
"""),
    md("""
## Per-class NMS: `decode_detections`

For each class, in order of score: keep the box, drop every remaining box of that class whose IoU
with it is above `iou_threshold` (0.45); `score_threshold` drops weak boxes first. Boxes of different
classes never suppress each other. Output, padded to `max_detections` per image: `boxes [B, N, 4]`
(relative yxyx), `scores [B, N]`, `classes [B, N]` (−1 for padding), `num_detections [B]`.
"""),
    code("""
from ssd_keras import decode_detections

detections = decode_detections(y_pred, anchors, score_threshold=0.2, iou_threshold=0.45, max_detections=20)
n = int(detections["num_detections"][i])
print({k: tuple(v.shape) for k, v in detections.items()}, f"; image {i}: {n} detections")
for box, score, c in zip(detections["boxes"][i][:n].numpy(), detections["scores"][i][:n].numpy(), detections["classes"][i][:n].numpy()):
    print(f"  {names[c]:>8s} {score:.2f}  {box}")
show_detections(images[i], {k: v[i] for k, v in detections.items()}, y_true[i].numpy(), names, size=4);
"""),
    md("""
After per-class NMS (IoU 0.45) and the 0.2 threshold, 5 detections remain: the left ring at 0.80,
the right ring by two weaker ring boxes (0.29 and 0.22, which overlap each other less than 0.45,
so both stay), and the triangle twice, as triangle 0.47 and as cross 0.24 on the same box: NMS
runs per class, so boxes of different classes never suppress each other.
"""),
    md("""
More held-out images (left: ground truth; right: detections above 0.2):
"""),
    code("""
for j in [i + 1, i + 2, i + 3]:
    show_detections(images[j], {k: v[j] for k, v in detections.items()}, y_true[j].numpy(), names, size=3.5)
"""),
    md("""
Three more held-out images. First: the triangle, found at 0.61 with a box slightly narrower than
the truth. Second: the ring found (0.51), while the orange circle (circles are stretched into
ellipses in this set) is called diamond (0.49): a false positive for diamond and a missed circle.
Third: ring (0.83), diamond (0.87) and cross (0.44) found; the triangle, half hidden behind the
ring and the diamond, is missed.
"""),
    md("""
## VOC mAP

`evaluate_detections` is the Pascal VOC devkit's definition: per class, detections of all images
sorted by score; a detection is a true positive if its IoU with a not-yet-matched ground-truth box of
its class is ≥ 0.5, else a false positive (a second detection of the same object is a false
positive); AP is the 11-point interpolated area under the precision–recall curve (VOC2007;
`use_07_metric=False` for the all-point area of VOC2010+); "difficult" objects neither count nor
penalise. mAP needs the low-scoring detections too (recall): `evaluate_model` decodes with the
detector's evaluation threshold (`EVAL_SCORE_THRESHOLD`, 0.01), the path `python -m ssd_keras
evaluate` takes, so the number is the one recorded in the checkpoint.
"""),
    code("""
from ssd_keras.evaluation import evaluate_detections

ground_truths = val.ground_truths()  # (boxes, classes, difficult) per image
voc07 = evaluate_model(model, val_ds, ground_truths=ground_truths)
detections = voc07["detections"]
all_point = evaluate_detections(detections, ground_truths, len(names), use_07_metric=False)
print(f"{len(val)} held-out images, {sum(voc07['num_positives'])} objects")
print(f"{'class':>10s}  {'AP (VOC07)':>10s}  {'AP (all-point)':>14s}  objects")
for c, name in enumerate(names):
    print(f"{name:>10s}  {voc07['ap'][c]:10.3f}  {all_point['ap'][c]:14.3f}  {voc07['num_positives'][c]:7d}")
print(f"{'mAP':>10s}  {voc07['map']:10.3f}  {all_point['map']:14.3f}")
"""),
    code("""
fig, ax = plt.subplots(figsize=(5, 3.5))
for c, name in enumerate(names):
    ax.plot(voc07["recall"][c], voc07["precision"][c], label=f"{name} (AP {voc07['ap'][c]:.2f})")
ax.set(xlabel="recall", ylabel="precision", title="precision-recall per class (IoU 0.5)", xlim=(0, 1), ylim=(0, 1.02))
ax.legend(fontsize=8);
"""),
    md("""
Precision-recall of each class over the 300 held-out images: every class keeps a precision above
about 0.9 up to a recall of 0.6-0.7, then precision falls as the low-scoring detections come in;
the curves end near recall 0.95-0.98 (objects never detected at IoU 0.5, even at score 0.01).
The triangle is the weakest class (AP 0.80), the ring the best (0.87).
"""),
    md("""
## Anchor-coverage diagnostics

When a class scores low, one question is whether the anchors can represent its objects at all.
`anchor_coverage` gives every object's best IoU with any anchor; objects at or below the matching
threshold (`SSDLoss`'s `pos_threshold`: 0.5 for this model; the lesson's is 0.4; the demo's, since 2026-12-02, 0.3 with an added 8×8 grid) are
matched only through the forced 1.99 of `map_to_ground_truth`, to one anchor that fits them badly.
Per size bucket (`sqrt(area)` of the box):
"""),
    code("""
from ssd_keras.anchors import anchor_coverage
from ssd_keras.viz import plot_anchor_coverage

threshold = model.loss_settings["pos_threshold"]
print("matching threshold:", threshold)
coverage = anchor_coverage([b for b, _, _ in ground_truths], anchors, threshold=threshold)
for size, d in coverage["by_size"].items():
    print(f"{size:>6s}: {d['num_uncovered']:3d} of {d['num_objects']:3d} objects uncovered, mean best IoU {d['mean_best_iou']:.2f}")
plot_anchor_coverage(coverage, title=f"300 held-out shapes (1-4 objects of 20-60 % of the side), 189 anchors, IoU {threshold}")
"""),
    md("""
Left: each held-out object's best IoU with any of the 189 anchors; the histogram peaks right at the
threshold 0.5, and 328 of the 765 objects fall at or below it (matched only through the forced
best anchor). Right: no object is small here (the set's objects are 20-60 % of the side); 137 of
255 medium and 191 of 510 large objects are below the threshold. The anchors fit these shapes only
roughly; the box activations (`actn_to_bb`: the centre moves up to half a cell, the size 0.5-1.5×)
do the rest.
"""),
    md("""
On real photographs the single 4×4 grid of the first half of the lesson leaves far more objects
uncovered than the lesson's 189 anchors (the VOC sample, 718 objects):
"""),
    code("""
from ssd_keras import AnchorConfig
from ssd_keras.data import SAMPLE_VOC, load_source

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
voc_boxes = [r.boxes for r in voc.records]
for a in [AnchorConfig.single_grid(4), anchors]:
    cov = anchor_coverage(voc_boxes, a, threshold=0.4)
    print(f"{a.num_anchors:3d} anchors: {cov['num_uncovered']} of {cov['num_objects']} objects uncovered; "
          + ", ".join(f"{k} {d['num_uncovered']}/{d['num_objects']}" for k, d in cov["by_size"].items()))
plot_anchor_coverage(anchor_coverage(voc_boxes, AnchorConfig.single_grid(4), threshold=0.4),
                     title="VOC sample, one 4x4 grid (16 anchors)")
"""),
    md("""
The VOC sample with the 4×4 grid alone: 632 of the 718 objects have no anchor with IoU above 0.4,
including all 112 small ones and 278 of the 300 large ones (an object much bigger than a cell
overlaps every 4×4 anchor weakly). With the 189 anchors (printed above) 319 remain, nearly all of
the small ones (110 of 112) but only 17 of the 300 large ones: the 2×2 and 1×1 grids and the
zooms cover the large objects; no grid here is fine enough for the small ones.
"""),
]


# ------------------------------------------------------------------------------------------
# 06 · Keras vs PyTorch
# ------------------------------------------------------------------------------------------

NB06 = [
    md("""
# 7 · Keras vs PyTorch, side by side

The same head, the same batch, the same anchors in both frameworks: do we compute the lesson's
numbers? The PyTorch side is the lesson's code, transcribed for torch 2.13 with its globals turned
into arguments:

* `ssd_keras.reference.lesson`: `hw2corners`, `jaccard`, `actn_to_bb`, `map_to_ground_truth`,
  `BCE_Loss`, `FocalLoss`, `ssd_1_loss`, `ssd_loss` and the anchor cell;
* `ssd_keras.reference.lesson_model`: a torchvision-structured ResNet34 body and the lesson's `StdConv`,
  `OutConv`, `SSD_Head`, `SSD_MultiHead`, plus `copy_weights_to_keras`;
* `ssd_keras.reference.parity`: both models trained side by side, `train_side_by_side`.

They need `torch==2.13.0` (CPU), an optional dependency (`requirements-test.txt`). The comparisons run
the lesson's full architecture (ResNet34 at 224 px, random weights: no download) on VOC images;
*run time* under a minute on 2 CPU cores (32 s when last run, 20 s of it the side-by-side training).
"""),
    code(SETUP),
    code("""
import torch

from ssd_keras import AnchorConfig, SSDLoss, build_ssd
from ssd_keras.reference import lesson as lt
from ssd_keras.reference import lesson_model as ltm

torch.manual_seed(0)
print("torch", torch.__version__, "| tensorflow", tf.__version__, "| keras", keras.__version__)
"""),
    md("""
## Same anchors

The lesson's anchor cell (`anc_grids = [4, 2, 1]`, `anc_zooms = [0.7, 1., 1.3]`,
`anc_ratios = [(1., 1.), (1., .5), (.5, 1.)]`) against `AnchorConfig()`:
"""),
    code("""
anchors = AnchorConfig()
lesson = lt.make_anchors()
for name, ours, theirs in [("anchors", anchors.centers, lesson.anchors), ("grid_sizes", anchors.grid_sizes, lesson.grid_sizes),
                           ("anchor_cnr", anchors.corners, lesson.anchor_cnr)]:
    print(f"{name:10s} {tuple(ours.shape)}  max |keras - torch| = {np.abs(ours - theirs.numpy()).max():.1e}")
"""),
    md("""
## Same model, same batch

Build both models (ResNet34 body + `SSD_MultiHead(k=9, bias=-4)`), copy the PyTorch weights into
the Keras model (`copy_weights_to_keras`: conv kernels OIHW → HWIO, BatchNorm statistics included),
and run both on 4 VOC images at 224 px in inference mode. The lesson's model returns
`[class_logits, box_activations]`; `to_y_pred` concatenates them in ssd_keras's `y_pred` layout
(boxes first, background last). The Keras model takes 0–255 images and normalises inside; the
PyTorch one takes ImageNet-normalised NCHW tensors, as fastai fed it.
"""),
    code("""
from ssd_keras.data import SAMPLE_VOC, load_source

voc = load_source(f"voc:{SAMPLE_VOC}", split="train")
images, y_true = next(iter(voc.dataset(image_size=224, batch_size=4)))
images, y_true = images.numpy(), y_true.numpy()

torch_model = ltm.LessonSSD(num_classes=20, k=anchors.k, multi=True).eval()
keras_model = build_ssd(20, anchors, backbone="resnet34", image_size=224)
ltm.copy_weights_to_keras(torch_model, keras_model)

with torch.no_grad():
    y_pred_torch = ltm.to_y_pred(torch_model(ltm.normalize_images(images))).numpy()
y_pred = keras_model(images, training=False).numpy()
print("y_pred", y_pred.shape, f" max |keras - torch| = {np.abs(y_pred - y_pred_torch).max():.1e}"
      f"  (values up to {np.abs(y_pred_torch).max():.1f})")
"""),
    md("""
## Same loss, same gradients

The lesson's `ssd_loss` loops over the images in Python and **sums** over the batch; `SSDLoss` matches
the batch at once and takes the **mean**, so we compare against the lesson's value divided by the batch
size. The targets go to the lesson's code in its own format (`targets_from_y_true`: padding rows of
zeros, which its `get_y` removes). Gradients are taken with respect to `y_pred`, for the BCE loss and
for the focal loss.
"""),
    code("""
def lesson_loss_and_grad(loss_f):
    leaf, pred = lt.pred_from_y_pred(y_pred, requires_grad=True)
    value, loc, clas = lt.ssd_loss(pred, lt.targets_from_y_true(y_true), lesson, loss_f, return_parts=True)
    batch = len(y_pred)
    (value / batch).backward()
    return value.item() / batch, loc.item() / batch, clas.item() / batch, leaf.grad.numpy()


def keras_loss_and_grad(loss):
    y = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y)
        value = loss(y_true, y)
    parts = loss.components(y_true, y)
    return float(value), float(np.mean(parts["loc"])), float(np.mean(parts["clas"])), tape.gradient(value, y).numpy()


print(f"{'loss':6s} {'framework':8s} {'loss':>9s} {'loc':>8s} {'clas':>9s}   max |grad diff| (max |grad|)")
for name, lesson_f, ours in [("BCE", lt.BCE_Loss(20), SSDLoss(anchors, 20)),
                             ("focal", lt.FocalLoss(20), SSDLoss(anchors, 20, focal=(0.25, 1.0)))]:
    t_value, t_loc, t_clas, t_grad = lesson_loss_and_grad(lesson_f)
    k_value, k_loc, k_clas, k_grad = keras_loss_and_grad(ours)
    print(f"{name:6s} {'PyTorch':8s} {t_value:9.5f} {t_loc:8.5f} {t_clas:9.5f}")
    print(f"{name:6s} {'Keras':8s} {k_value:9.5f} {k_loc:8.5f} {k_clas:9.5f}   "
          f"{np.abs(k_grad - t_grad).max():.1e} ({np.abs(t_grad).max():.1e})")
    print(f"{'':15s} relative difference of the loss: {abs(k_value - t_value) / abs(t_value):.1e}")
"""),
    md("""
## Same training: the loss curves, step by step

Same outputs and gradients for one batch are not yet the same *training*. `train_side_by_side`
(`ssd_keras.reference.parity`) gives both frameworks the same start and the same steps:

* **the same initial weights**: a `LessonSSD` built after `torch.manual_seed(0)`, converted with
  `convert_lesson_model` (every weight, BatchNorm statistics included);
* **the same batches**: the first 4 images of the VOC sample in file order, 2 batches of 2 used in
  turn, squashed to 224 px, no augmentation;
* **the same optimizer**: SGD with momentum 0.9, learning rate 0.01 on both sides (Keras'
  `m = 0.9 m - lr g; w += m` is PyTorch's `b = 0.9 b + g; w -= lr b` with `m = -lr b`). Not Adam
  as it stands: Keras adds its epsilon before the bias correction, PyTorch after, so Keras' ε is
  PyTorch's ε/√(1 − β₂ᵗ); `optimizer="adam"` sets PyTorch's ε to that at every step;
* **the same loss**: the lesson's `ssd_loss` with `FocalLoss`, divided by the batch size, against
  `SSDLoss(anchors, 20, focal=(0.25, 1.0))`, both matching at IoU 0.4;
* **the same layers training**: the lesson's first stage, `freeze_to(-1)`: the body frozen, the
  head trained. As in fastai 0.7 (which puts the BatchNorm of frozen layers in `eval()`) and in
  Keras (`trainable=False`), the body's BatchNorm uses its running statistics and the head's its
  batch statistics, with momentum 0.1 / 0.9 and eps 1e-5 on both sides. Dropout is 0 on both
  sides: two frameworks cannot draw the same masks.

A third run, the PyTorch model trained in **float64**, shows how far float32 rounding alone moves
the curve: the yardstick for the Keras–PyTorch difference. Two heads: the lesson's 4×4 `SSD_Head`
(16 anchors, notebook 4) and its final `SSD_MultiHead` (189 anchors, notebook 5).
"""),
    code("""
import time

from ssd_keras.reference.parity import train_side_by_side

runs = {}
for head in ["single", "multi"]:
    start = time.time()
    runs[head] = r = train_side_by_side(head=head, steps=8, batch_size=2, num_batches=2, float64_reference=True)
    print(f"{head} head: {r['settings']['trained_tensors']} trained tensors, {time.time() - start:.0f} s")
    print(f"{'step':>4s} {'PyTorch':>9s} {'Keras':>9s} {'|K - P| / P':>11s}   {'float64':>9s} {'|P - P64| / P64':>15s}")
    for i, row in enumerate(zip(r["torch_loss"], r["keras_loss"], r["loss_rel_diff"], r["float64_loss"], r["float64_rel_diff"])):
        print(f"{i:4d} {row[0]:9.6f} {row[1]:9.6f} {row[2]:11.1e}   {row[3]:9.6f} {row[4]:15.1e}")
    print(f"trained weights, max |K - P|: {r['weight_rel_diff']:.1e} of the tensor's size ({r['worst_weight']}), "
          f"{r['update_rel_diff']:.1e} of how far it moved; PyTorch float32 vs float64: "
          f"{r['float64_weight_rel_diff']:.1e} and {r['float64_update_rel_diff']:.1e}")
    print(f"BatchNorm running means {r['moving_mean_rel_diff']:.1e}, running variances "
          f"{r['moving_variance_rel_diff']:.1e} (Keras averages the biased batch variance, PyTorch the unbiased)\\n")
"""),
    code("""
fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
for col, (head, title) in enumerate([("single", "SSD_Head (4×4, 16 anchors)"), ("multi", "SSD_MultiHead (189 anchors)")]):
    r, steps = runs[head], np.arange(len(runs[head]["torch_loss"]))
    ax = axes[0, col]
    ax.plot(steps, r["torch_loss"], "o-", color="tab:red", label="PyTorch (lesson code)")
    ax.plot(steps, r["keras_loss"], "x--", color="tab:blue", ms=9, label="Keras (ssd_keras)")
    ax.plot(steps, r["float64_loss"], ":", color="black", label="PyTorch, float64")
    ax.set_title(title)
    ax.set_ylabel("loss of the step's batch")
    ax.legend(fontsize=8)
    ax = axes[1, col]
    ax.semilogy(steps, r["loss_rel_diff"], "x--", color="tab:blue", label="|Keras − PyTorch| / PyTorch")
    ax.semilogy(steps, r["float64_rel_diff"], "o:", color="black", label="|PyTorch − float64| / float64")
    ax.set_ylim(1e-9, 1)
    ax.set_xlabel("training step (even: batch 1, odd: batch 2)")
    ax.set_ylabel("relative difference")
    ax.legend(fontsize=8)
fig.tight_layout()
"""),
    md(PARITY_CAPTION),
    md("""
**The tolerance reached.** With the lesson's 4×4 head, the losses agree to 3.2e-6 (relative) for six
steps and to 7.2e-5 at steps 6 and 7; the trained weights to 1.7e-3 of each tensor's size, 0.8 % of
how far training moved it. `tests/test_reference_parity.py` checks 6 steps against looser bounds
(loss 1e-3, weights 2e-2 of their size: room for other CPUs' kernels) and that a learning rate 2 %
off on one side fails them. With `SSD_MultiHead`, the first loss and the first update agree (the
test: the update within 5 % of its size; measured 0.6 %, PyTorch float32 vs float64 0.4 %), the
later steps only to a few percent.

**Why the floats differ at all.** Both sides compute the same formulas (the sections above) in
float32, with other kernels and other summation orders: TensorFlow's oneDNN
convolutions against PyTorch's, BatchNorm's batch means and variances, the loss summed image by image
in a Python loop (the lesson) or over the whole batch at once (`SSDLoss`). One 256-channel 3×3
convolution (ResNet34's layer3 size) shows the scale of it (below): TensorFlow rounds several times more than PyTorch, which
is why Keras is further from PyTorch than PyTorch float32 is from float64. And each step starts from
weights that already differ by the earlier steps' rounding, so the difference grows with the steps.

**Why it grows so fast with `SSD_MultiHead`.** Its last `StdConv` works on a 1×1 map: at batch 2,
BatchNorm normalises 2 numbers per channel. The lesson's `StdConv` applies the ReLU *before*
BatchNorm, so a channel in which one image is just above 0 and the other at 0 has a batch variance
far below BatchNorm's eps = 1e-5 (7 of the 256 channels at the first step here; 66 more are 0 for
both images). There BatchNorm's output moves up to 1/√1e-5 ≈ 300 times as fast as its input, and
which channels sit there changes with every update: rounding differences of 1e-7 become percents
within two steps, between PyTorch float32 and float64 too. So it is a property of the lesson's model
at batch 2 (the lesson's batches of 64 give each of those channels 64 numbers), not of either
framework. Training the body as well (`freeze_to=0`, its BatchNorm in training mode) is as
sensitive: measured when this was written, PyTorch float32 and float64 part by 0.6-6 % from the
second step on.
"""),
    code("""
# One 3x3 convolution, 256 -> 256 channels on a 2 x 14 x 14 map, in three ways: max relative error.
rng = np.random.default_rng(0)
x_nchw = rng.normal(size=(2, 256, 14, 14)).astype(np.float32)
w_oihw = (0.03 * rng.normal(size=(256, 256, 3, 3))).astype(np.float32)
exact = torch.nn.functional.conv2d(torch.tensor(x_nchw, dtype=torch.float64), torch.tensor(w_oihw, dtype=torch.float64), padding=1).numpy()
by_torch = torch.nn.functional.conv2d(torch.tensor(x_nchw), torch.tensor(w_oihw), padding=1).numpy()
by_tf = tf.nn.conv2d(x_nchw.transpose(0, 2, 3, 1), w_oihw.transpose(2, 3, 1, 0), 1, "SAME").numpy().transpose(0, 3, 1, 2)
scale = np.abs(exact).max()
print(f"float32 PyTorch: {np.abs(by_torch - exact).max() / scale:.1e}   float32 TensorFlow: {np.abs(by_tf - exact).max() / scale:.1e}")
"""),
    md("""
## Timing on this machine

`bench/loss.py` times the loss forward + backward for a VOC-like batch (64 images, 189 anchors,
20 classes, 1–20 objects per image): the lesson's per-image PyTorch loop against `SSDLoss` eager,
under `tf.function`, and compiled with XLA — same CPU, same process, values checked against each
other. Quick settings here (few repeats, numbers are noisy on a busy machine); the full table:
`python bench/loss.py --full`.
"""),
    code("""
import sys
from IPython.display import Markdown

sys.path.insert(0, os.path.abspath(os.path.join("..", "bench")))
import loss as loss_bench  # bench/loss.py

rows = loss_bench.run(quick=True)
Markdown(loss_bench.markdown(rows))
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 2.2))
ax.barh([r["name"] for r in rows][::-1], [r["ms_best"] for r in rows][::-1], color="tab:blue")
ax.set_xscale("log")
ax.set_xlabel("ms per batch of 64: loss forward + backward (best of the repeats, log scale)");
"""),
]


NOTEBOOKS = {
    "01_data.ipynb": NB01,
    "02_single_object.ipynb": NB_SINGLE,
    "03_multi_label.ipynb": NB_MULTI,
    # the lesson's 4x4 SSD: anchors and head (NB02), matching and loss (NB03 without its set-up), trained
    "04_one_grid.ipynb": NB02 + NB03[:1] + NB03[2:] + GRID4_TRAINED,
    "05_more_anchors_focal_loss.ipynb": NB04,
    "06_nms_and_evaluation.ipynb": NB05,
    "07_keras_vs_pytorch.ipynb": NB06,
}


def make_notebook(cells):
    """nbformat v4 notebook from `(kind, source)` pairs, with the venv's python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives a minimal diff
        nb.cells.append(cell)
    return nb


@contextlib.contextmanager
def this_python_kernel():
    """A temporary kernelspec that runs *this* interpreter (the venv with ssd_keras), so that a
    `python3` kernelspec of another Python in `~/.local/share/jupyter` cannot be picked instead.
    Yields its name; `JUPYTER_PATH` points at it while the context is open."""
    name = "ssd-keras-this-python"
    with tempfile.TemporaryDirectory() as root:
        spec_dir = os.path.join(root, "kernels", name)
        os.makedirs(spec_dir)
        # capture_fd_output=False: TensorFlow's C++ start-up lines go to the terminal, not into
        # the notebook's outputs.
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                "--IPKernelApp.capture_fd_output=False"]
        with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
            json.dump({"argv": argv, "display_name": "Python 3 (ssd_keras)", "language": "python"}, f)
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = root if old is None else root + os.pathsep + old
        try:
            yield name
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def execute(nb, timeout=CELL_TIMEOUT):
    """Run `nb` top to bottom in `notebooks/` with this interpreter's kernel; raises
    `nbclient.exceptions.CellExecutionError` on the first failing cell."""
    from nbclient import NotebookClient

    kernelspec = dict(nb.metadata.get("kernelspec", {}))
    with this_python_kernel() as kernel_name:
        NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                       resources={"metadata": {"path": HERE}}).execute()
    nb.metadata["kernelspec"] = kernelspec  # readers open it with their own python3 kernel
    return nb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("only", nargs="*", help="notebook name prefixes, e.g. 03 05 (default: all)")
    p.add_argument("--no-execute", action="store_true", help="write the notebooks without outputs")
    p.add_argument("--markdown-only", action="store_true",
                   help="only update the markdown cells of the committed notebooks (their code cells and "
                        "outputs must already equal this file's)")
    args = p.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        nb = make_notebook(cells)
        if args.markdown_only:
            old = nbformat.read(os.path.join(HERE, name), as_version=4)
            if [(c.cell_type, c.source) for c in old.cells if c.cell_type == "code"] != \
                    [(c.cell_type, c.source) for c in nb.cells if c.cell_type == "code"]:
                raise SystemExit(f"{name}: code cells changed; execute it instead")
            code_cells = iter(c for c in old.cells if c.cell_type == "code")
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    executed = next(code_cells)
                    executed.id = cell.id  # the generator's stable id for this position
                    nb.cells[i] = executed
            nb.metadata = old.metadata
            nbformat.write(nb, os.path.join(HERE, name))
            print(f"{name}: markdown updated")
            continue
        if not args.no_execute:
            start = time.time()
            try:
                execute(nb)
            except Exception:
                nbformat.write(nb, os.path.join(HERE, name + ".failed"))  # to inspect; not committed
                raise
            print(f"{name}: executed in {time.time() - start:.0f} s", flush=True)
        nbformat.write(nb, os.path.join(HERE, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
