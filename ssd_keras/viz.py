"""Pictures (matplotlib): the lesson's `show_img` / `draw_rect` / `draw_text` and grids built on them.

Boxes: the lesson's helpers take **pixel** boxes at this edge, as in the lesson
(`draw_rect(ax, b)` with `b = (x, y, w, h)`, from `bb_hw`); everything else takes relative yxyx
boxes and converts with the image size. `show_img` returns the axis it drew on, as the
lesson's does; every other `show_*` returns the `Figure` and saves a PNG when `path` is given.

Why matplotlib patches and not `keras.visualization.draw_bounding_boxes` /
`plot_bounding_box_gallery`: those draw with OpenCV (`cv2`, not a dependency of this project)
into the pixels; the lesson's outlined text and boxes are matplotlib artists, and notebooks
want axes they can add to.
"""

from __future__ import annotations

import os

import matplotlib

if not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")  # headless: render to files

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches, patheffects  # noqa: E402
import numpy as np  # noqa: E402

_COLOURS = plt.get_cmap("tab20").colors


def _to_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _as_image(im):
    """float 0-255, float 0-1 or uint8 `[H, W, 3]` -> something imshow shows right."""
    im = _to_numpy(im)
    if im.dtype != np.uint8:
        im = im.astype(np.float32)
        im = np.clip(im / 255.0 if im.max() > 1.5 else im, 0.0, 1.0)
    return im


def _finish(fig, path):
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return fig


def colour(class_id):
    """A fixed colour per class id (the lesson uses `cmap('tab20')` too)."""
    return _COLOURS[int(class_id) % len(_COLOURS)]


def show_img(im, figsize=None, ax=None):
    """The lesson's `show_img`: image on an axis without ticks; returns the axis."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.imshow(_as_image(im))
    ax.get_xaxis().set_visible(False)
    ax.get_yaxis().set_visible(False)
    return ax


def draw_outline(obj, lw):
    """The lesson's `draw_outline`: a black stroke so text/boxes read on any background."""
    obj.set_path_effects([patheffects.Stroke(linewidth=lw, foreground="black"), patheffects.Normal()])


def draw_rect(ax, b, color="white", lw=2):
    """The lesson's `draw_rect`: `b` = pixel `(x, y, w, h)` (its `bb_hw` format)."""
    patch = ax.add_patch(patches.Rectangle(tuple(b[:2]), *b[-2:], fill=False, edgecolor=color, lw=lw))
    draw_outline(patch, 4)
    return patch


def draw_text(ax, xy, txt, sz=14, color="white"):
    """The lesson's `draw_text` at pixel `(x, y)`."""
    text = ax.text(*xy, txt, verticalalignment="top", color=color, fontsize=sz, weight="bold")
    draw_outline(text, 1)
    return text


def yxyx_to_bb_hw(boxes, height, width):
    """Relative yxyx `[n, 4]` -> pixel `(x, y, w, h)` for `draw_rect` (matplotlib's pixel
    edges are at -0.5, so continuous pixel coordinate `u` is drawn at `u - 0.5`)."""
    b = _to_numpy(boxes).reshape(-1, 4).astype(np.float64) * np.array([height, width, height, width])
    return np.stack([b[:, 1] - 0.5, b[:, 0] - 0.5, b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], 1)


def draw_boxes(ax, image_shape, boxes, classes=None, class_names=None, scores=None, color=None, sz=10):
    """Draw relative yxyx `boxes` with optional class labels/scores on `ax` (an image of
    `image_shape` `(H, W, ...)`); classes < 0 (padding) are skipped."""
    h, w = image_shape[:2]
    boxes = _to_numpy(boxes).reshape(-1, 4)
    labelled = classes is not None
    classes = np.zeros(len(boxes), int) if classes is None else _to_numpy(classes).astype(int).reshape(-1)
    for i, (b, c) in enumerate(zip(yxyx_to_bb_hw(boxes, h, w), classes)):
        if c < 0:
            continue
        col = color or colour(c)
        draw_rect(ax, b, color=col)
        label = (class_names[c] if class_names is not None else str(c)) if labelled else ""
        if scores is not None:
            label = f"{label} {float(_to_numpy(scores).reshape(-1)[i]):.2f}"
        if label:
            draw_text(ax, b[:2], label, sz=sz, color=col)


def _grid(n, cols, size, aspect=1.0):
    """`n` axes in `cols` columns; `aspect` = height / width of the images."""
    cols = min(cols, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * aspect + 0.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def show_ground_truth(images, y_true, class_names, cols=4, size=3, path=None, max_images=16):
    """A grid of a batch with its targets: `images` `[B, H, W, 3]`, `y_true` `[B, max_boxes, 5]`
    (relative yxyx + class, padding -1), titled with the lesson's `mc` (class-name set)."""
    images, y_true = _to_numpy(images), _to_numpy(y_true)
    n = min(len(images), max_images)
    fig, axes = _grid(n, cols, size)
    for ax, im, y in zip(axes, images[:n], y_true[:n]):
        show_img(im, ax=ax)
        cls = y[:, 4].astype(int)
        draw_boxes(ax, im.shape, y[:, :4], cls, class_names)
        ax.set_title(" ".join(sorted({class_names[c] for c in cls if c >= 0})), fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)


def show_augmentations(image, boxes, classes, augment, class_names=None, n=9, seed=0, size=3, path=None):
    """The lesson's `In [53]`: a 3x3 grid of augmented versions of one image with its boxes.

    `image` `[H, W, 3]` (0-255), `boxes` relative yxyx `[n, 4]`, `classes` `[n]`, `augment` a
    list of `ssd_keras.data.augment` transforms."""
    import tensorflow as tf

    from ssd_keras.data.augment import apply_augmentations

    image = tf.convert_to_tensor(_to_numpy(image), tf.float32)
    boxes = tf.convert_to_tensor(_to_numpy(boxes), tf.float32)
    classes = tf.convert_to_tensor(_to_numpy(classes), tf.int32)
    fig, axes = _grid(n, 3, size, aspect=float(image.shape[0]) / float(image.shape[1]))
    for i, ax in enumerate(axes):
        if i >= n:
            break
        im, b, c = apply_augmentations(augment, image, boxes, classes, tf.constant([seed, i], tf.int64))
        show_img(im, ax=ax)
        draw_boxes(ax, im.shape, b, c, class_names)
    fig.tight_layout()
    return _finish(fig, path)


def show_anchors(anchors, image=None, grid=None, cells=None, size=6, path=None):
    """Anchor overlay for an `AnchorConfig`: each grid's cell lines, and the `k` anchor boxes
    of some cells (default: the centre-most cell of every grid), on `image` (or a grey canvas).

    Args:
        anchors: `AnchorConfig` (its `.corners` are relative yxyx in the lesson's order).
        grid: draw only this grid size (e.g. 4); default all.
        cells: list of `(grid_size, row, col)` whose anchors to draw.
    """
    image = np.full((256, 256, 3), 200, np.uint8) if image is None else _to_numpy(image)
    h, w = image.shape[:2]
    grids = [g for g in anchors.grids if grid is None or g == grid]
    if cells is None:
        cells = [(g, (g - 1) // 2, (g - 1) // 2) for g in grids]
    fig, ax = plt.subplots(figsize=(size, size))
    show_img(image, ax=ax)
    corners = np.asarray(anchors.corners)
    start = 0
    for gi, g in enumerate(anchors.grids):
        n = g * g * anchors.k
        if g in grids:
            ls = ["-", "--", ":"][gi % 3]
            for t in range(1, g):
                ax.axhline(t * h / g - 0.5, color=colour(2 * gi), lw=1, ls=ls)
                ax.axvline(t * w / g - 0.5, color=colour(2 * gi), lw=1, ls=ls)
        for cg, row, col in cells:
            if cg == g:
                first = start + (row * g + col) * anchors.k
                for j in range(anchors.k):
                    draw_rect(ax, yxyx_to_bb_hw(corners[first + j], h, w)[0], color=colour(2 * gi + 1), lw=1)
        start += n
    ax.set_title(f"anchors: grids {tuple(anchors.grids)}, k={anchors.k}, {anchors.num_anchors} in all")
    return _finish(fig, path)


def show_detections(image, detections, ground_truth=None, class_names=None, score_threshold=0.0,
                    size=6, path=None, ax=None):
    """Detections next to ground truth on one image.

    Args:
        image: `[H, W, 3]`.
        detections: `(boxes [n, 4] yxyx, scores [n], classes [n])`, or a dict with those keys
            (one image of `decode_detections`' output; rows with class -1 are skipped).
        ground_truth: None, `(boxes [m, 4], classes [m])` (yxyx), or `y_true` rows `[m, 5]`.
        score_threshold: hide detections below this score.
    Left panel: ground truth; right panel: detections with scores. One panel when no
    ground truth is given or when `ax` is given (detections only, on that axis).
    """
    if isinstance(detections, dict):
        detections = (detections["boxes"], detections["scores"], detections["classes"])
    boxes, scores, classes = (_to_numpy(x) for x in detections)
    boxes, scores, classes = boxes.reshape(-1, 4), scores.reshape(-1), classes.reshape(-1).astype(int)
    keep = (classes >= 0) & (scores >= score_threshold)
    if ax is not None:
        fig, axes = ax.figure, [ax]
    elif ground_truth is None:
        fig, ax1 = plt.subplots(figsize=(size, size))
        axes = [ax1]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    im = _as_image(image)
    if ground_truth is not None and len(axes) == 2:
        gt = ground_truth
        if not isinstance(gt, (tuple, list)):
            gt = _to_numpy(gt)
            gt = (gt[:, :4], gt[:, 4])
        show_img(im, ax=axes[0])
        draw_boxes(axes[0], im.shape, gt[0], _to_numpy(gt[1]).astype(int), class_names)
        axes[0].set_title("ground truth")
    show_img(im, ax=axes[-1])
    draw_boxes(axes[-1], im.shape, boxes[keep], classes[keep], class_names, scores=scores[keep])
    axes[-1].set_title(f"detections ({int(keep.sum())})")
    fig.tight_layout()
    return _finish(fig, path)


def plot_anchor_coverage(coverage, title=None):
    """A matplotlib `Figure` for `anchor_coverage`'s result: the best-IoU histogram with the
    threshold, and the uncovered fraction per size bucket."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    counts, edges = coverage["histogram"]
    ax1.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="k", alpha=0.7)
    ax1.axvline(coverage["threshold"], color="r", ls="--", label=f"threshold {coverage['threshold']}")
    ax1.set(xlabel="best anchor IoU per object", ylabel="objects",
            title=f"{coverage['num_uncovered']}/{coverage['num_objects']} objects below threshold")
    ax1.legend()
    names = list(coverage["by_size"])
    frac = [coverage["by_size"][k]["fraction_uncovered"] for k in names]
    lo, hi = coverage["size_edges"]
    labels = [f"small\n<{lo}", f"medium\n{lo}-{hi}", f"large\n>={hi}"]
    bars = ax2.bar(labels, np.nan_to_num(frac), color=["tab:red", "tab:orange", "tab:green"])
    for bar, k in zip(bars, names):
        d = coverage["by_size"][k]
        ax2.annotate(f"{d['num_uncovered']}/{d['num_objects']}",
                     (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                     ha="center", va="bottom")
    ax2.set(ylim=(0, 1.05), ylabel="fraction uncovered", title="by size (sqrt(area))")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_detection_grid(detector, images, y_true, path, score_threshold=None, max_detections=50):
    """Images, one per row: ground truth (left) next to `detector`'s detections (right).

    Args:
        detector: an `SSDDetector` (its `detect`, the one inference path, with the display
            threshold `ssd_keras.decode.DISPLAY_SCORE_THRESHOLD` unless `score_threshold`).
        images: `[N, H, W, 3]` 0–255; y_true: `[N, M, 5]` (relative yxyx + class, -1 padding).
    Returns the path of the PNG written.
    """
    from ssd_keras.decode import DISPLAY_SCORE_THRESHOLD

    threshold = DISPLAY_SCORE_THRESHOLD if score_threshold is None else score_threshold
    out = {k: _to_numpy(v) for k, v in detector.detect(
        images, score_threshold=threshold, max_detections=max_detections).items()}
    images, y_true = _to_numpy(images), _to_numpy(y_true)
    names = detector.class_names
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(7, 3.5 * n), squeeze=False)
    for i in range(n):
        image = np.clip(images[i], 0, 255).astype(np.uint8)
        gt = y_true[i][y_true[i, :, 4] >= 0]
        show_img(image, ax=axes[i, 0])
        draw_boxes(axes[i, 0], image.shape, gt[:, :4], gt[:, 4].astype(int), names)
        axes[i, 0].set_title("ground truth")
        k = int(out["num_detections"][i])
        show_detections(image, {"boxes": out["boxes"][i, :k], "scores": out["scores"][i, :k],
                                "classes": out["classes"][i, :k]}, None, names, ax=axes[i, 1])
        axes[i, 1].set_title(f"{k} detection{'' if k == 1 else 's'} (score > {threshold:g})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
