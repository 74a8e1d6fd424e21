"""Pictures render to PNG files (and draw what they are given)."""

import os

import numpy as np
import pytest

from ssd_keras import AnchorConfig
from ssd_keras import viz
from ssd_keras.data import SAMPLE_VOC, VOC_CLASSES, lesson_augmentations, make_dataset, make_shapes, read_voc


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 2000


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(count=4, image_size=64, seed=0)


def test_lesson_helpers_pixel_boxes():
    ax = viz.show_img(np.zeros((40, 60, 3), np.uint8), figsize=(2, 2))
    rect = viz.draw_rect(ax, [5, 10, 20, 15])
    assert rect.get_xy() == (5, 10) and rect.get_width() == 20 and rect.get_height() == 15
    t = viz.draw_text(ax, (5, 10), "car")
    assert t.get_text() == "car"
    # relative yxyx -> the lesson's bb_hw pixel (x, y, w, h), pixel edges at -0.5
    np.testing.assert_allclose(viz.yxyx_to_bb_hw([[0.25, 0.5, 0.75, 1.0]], 40, 60), [[29.5, 9.5, 30, 20]])
    viz.plt.close("all")


def test_show_ground_truth(tmp_path, shapes):
    x, y = next(iter(make_dataset(shapes, 64, 4)))
    fig = viz.show_ground_truth(x, y, shapes.class_names, path=tmp_path / "gt.png")
    _png(tmp_path / "gt.png")
    n_rects = sum(len(ax.patches) for ax in fig.axes)
    assert n_rects == int((y.numpy()[..., 4] >= 0).sum())  # one rectangle per real row, none for padding
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0] == " ".join(sorted({shapes.class_names[c] for c in shapes.records[0].classes}))
    viz.plt.close(fig)


def test_show_augmentations_real_photo(tmp_path):
    rec = next(r for r in read_voc(SAMPLE_VOC, "train").records if r.image_id == "000012")
    fig = viz.show_augmentations(rec.load_image(), rec.boxes, rec.classes, lesson_augmentations(10),
                                 class_names=VOC_CLASSES, path=tmp_path / "aug.png")
    _png(tmp_path / "aug.png")
    assert len(fig.axes) == 9 and all(len(ax.patches) == 1 for ax in fig.axes)
    viz.plt.close(fig)


def test_show_anchors(tmp_path, shapes):
    anchors = AnchorConfig()
    fig = viz.show_anchors(anchors, image=shapes.records[0].image, path=tmp_path / "anchors.png")
    _png(tmp_path / "anchors.png")
    assert len(fig.axes[0].patches) == anchors.k * len(anchors.grids)  # k anchors of one cell per grid
    fig = viz.show_anchors(AnchorConfig.single_grid(4), cells=[(4, r, c) for r in range(4) for c in range(4)])
    assert len(fig.axes[0].patches) == 16
    viz.plt.close("all")


def test_show_detections(tmp_path, shapes):
    r = shapes.records[1]
    det = {"boxes": np.concatenate([r.boxes, np.zeros((2, 4))]), "scores": np.r_[np.linspace(0.9, 0.5, r.num_objects), 0, 0],
           "classes": np.r_[r.classes, -1, -1]}
    fig = viz.show_detections(r.image, det, (r.boxes, r.classes), shapes.class_names, path=tmp_path / "det.png")
    _png(tmp_path / "det.png")
    gt_ax, det_ax = fig.axes
    assert len(gt_ax.patches) == len(det_ax.patches) == r.num_objects
    assert det_ax.get_title() == f"detections ({r.num_objects})"
    assert any("0.90" in t.get_text() for t in det_ax.texts)
    fig = viz.show_detections(r.image, det, score_threshold=0.95)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 0
    viz.plt.close("all")


def test_save_detection_grid_rows_titles_and_png(tmp_path, monkeypatch):
    """Ground truth left, the detector's detections right, one image per row; the titles count
    the detections shown (in the singular for one)."""

    class StubDetector:  # save_detection_grid needs only `detect` and `class_names`
        class_names = ("circle", "square")

        def detect(self, images, score_threshold, max_detections):
            n = len(images)
            boxes = np.tile(np.float32([0.1, 0.1, 0.6, 0.6]), (n, 3, 1))
            return {"boxes": boxes, "scores": np.full((n, 3), 0.9, np.float32),
                    "classes": np.zeros((n, 3), np.int32), "num_detections": np.int32([1, 2])}

    made = []
    subplots = viz.plt.subplots
    monkeypatch.setattr(viz.plt, "subplots", lambda *a, **k: made.append(subplots(*a, **k)) or made[-1])
    images = np.zeros((2, 32, 32, 3), np.float32)
    y_true = np.full((2, 2, 5), -1, np.float32)
    y_true[:, 0] = [0.1, 0.1, 0.6, 0.6, 1]
    path = viz.save_detection_grid(StubDetector(), images, y_true, tmp_path / "grid.png")
    _png(path)
    axes = made[0][1]
    assert axes.shape == (2, 2)
    assert [axes[i, 0].get_title() for i in range(2)] == ["ground truth"] * 2
    assert [axes[i, 1].get_title() for i in range(2)] == ["1 detection (score > 0.3)", "2 detections (score > 0.3)"]
