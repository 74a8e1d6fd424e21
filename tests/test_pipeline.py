"""tf.data pipeline: shapes, padding, max_boxes, letterbox, determinism, bad records."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.data import (
    SAMPLE_VOC,
    Record,
    lesson_augmentations,
    letterbox,
    make_dataset,
    make_shapes,
    pad_targets,
    read_voc,
)


@pytest.fixture(scope="module")
def voc():
    return read_voc(SAMPLE_VOC, "train")


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(count=24, image_size=48, seed=3)


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_voc_batches_shapes_and_targets(voc):
    recs = voc.records[:10]
    ds = make_dataset(recs, image_size=64, batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, 64, 64, 3]
    x, y = _all(ds)
    assert x.shape == (10, 64, 64, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255 and x.max() > 1
    m = max(r.num_objects for r in recs)
    assert y.shape == (10, m, 5)
    for r, yi in zip(recs, y):  # squash leaves relative boxes unchanged; padding rows class -1
        n = r.num_objects
        np.testing.assert_allclose(yi[:n, :4], r.boxes, atol=1e-7)
        np.testing.assert_array_equal(yi[:n, 4], r.classes)
        assert np.all(yi[n:, 4] == -1) and np.all(yi[n:, :4] == 0)
    # Pixels equal a direct decode + resize of the first image.
    direct = tf.image.resize(tf.cast(tf.io.decode_jpeg(tf.io.read_file(recs[0].path)), tf.float32), [64, 64])
    np.testing.assert_allclose(x[0], direct, atol=1e-3)


def test_in_memory_images_and_drop_remainder(shapes):
    ds = make_dataset(shapes, image_size=48, batch_size=5, drop_remainder=True)
    x, y = _all(ds)
    assert x.shape == (20, 48, 48, 3)
    np.testing.assert_array_equal(x[0], shapes.records[0].image.astype(np.float32))
    np.testing.assert_allclose(y[0, :shapes.records[0].num_objects, :4], shapes.records[0].boxes)


def test_max_boxes_drops_and_warns(shapes, caplog):
    counts = np.array([r.num_objects for r in shapes.records])
    with caplog.at_level(logging.WARNING, logger="ssd_keras.data"):
        ds = make_dataset(shapes, image_size=48, batch_size=8, max_boxes=2)
    n_drop = int(np.maximum(counts - 2, 0).sum())
    assert n_drop > 0 and f"drops {n_drop} object(s) in {(counts > 2).sum()} image(s)" in caplog.text
    _, y = _all(ds)
    assert y.shape[1] == 2
    np.testing.assert_array_equal((y[..., 4] >= 0).sum(1), np.minimum(counts, 2))


def test_empty_image_all_padding():
    rec = Record("e", None, np.zeros((0, 4)), [], [], 8, 8, image=np.zeros((8, 8, 3), np.uint8))
    x, y = next(iter(make_dataset([rec], 8, 1, max_boxes=3)))
    assert y.numpy().tolist() == [[[0, 0, 0, 0, -1]] * 3]


def test_pad_targets():
    y = pad_targets(tf.constant([[0.1, 0.2, 0.3, 0.4]]), tf.constant([5]), 3).numpy()
    np.testing.assert_allclose(y, [[0.1, 0.2, 0.3, 0.4, 5], [0, 0, 0, 0, -1], [0, 0, 0, 0, -1]])


def test_letterbox_moves_boxes():
    # 100x200 (HxW) image -> 64: scale 0.32, content 32x64, 16 px bands top and bottom.
    img = np.zeros((100, 200, 3), np.float32)
    img[20:60, 50:150] = 255  # box (0.2, 0.25, 0.6, 0.75)
    out, b = letterbox(tf.constant(img), tf.constant([[0.2, 0.25, 0.6, 0.75]]), 64)
    np.testing.assert_allclose(b, [[(16 + 0.2 * 32) / 64, 0.25, (16 + 0.6 * 32) / 64, 0.75]], atol=1e-6)
    assert out.shape == (64, 64, 3)
    assert out.numpy()[:16].max() == 0 and out.numpy()[48:].max() == 0
    ys, xs = np.nonzero(out.numpy()[..., 0] > 127)
    np.testing.assert_allclose([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.array(b[0]) * 64, atol=1)


def test_letterbox_in_dataset(voc):
    rec = next(r for r in voc.records if r.image_id == "000012")  # 500x333
    _, y = next(iter(make_dataset([rec], 100, 1, resize="letterbox")))
    nh = round(333 * 100 / 500)
    off = (100 - nh) // 2
    b = rec.boxes[0]
    np.testing.assert_allclose(y[0, 0, :4], [(b[0] * nh + off) / 100, b[1], (b[2] * nh + off) / 100, b[3]], atol=1e-6)


def test_deterministic_with_seed_and_new_each_epoch(shapes):
    def two_epochs():
        ds = make_dataset(shapes.records[:12], 48, 6, augment=lesson_augmentations(20), shuffle=True, seed=7)
        return _all(ds), _all(ds)

    (x1, y1), (x2, y2) = two_epochs()
    (z1, w1), (z2, w2) = two_epochs()
    for a, b in ((x1, z1), (y1, w1), (x2, z2), (y2, w2)):  # same seed, same data, every epoch
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(y1, y2)  # but each epoch is reshuffled and re-augmented


def test_repeat_and_fit_shapes(shapes):
    ds = make_dataset(shapes, 48, 8, repeat=True, shuffle=True, seed=0)
    batches = list(ds.take(5))
    assert len(batches) == 5 and all(b[0].shape == (8, 48, 48, 3) for b in batches)


def test_bad_records_raise_clearly(shapes):
    bad = Record("bad", None, [[0.5, 0.1, 0.4, 0.3]], [1], [False], 8, 8, image=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="record bad .*relative yxyx"):
        make_dataset([bad], 8, 1)
    with pytest.raises(ValueError, match="resize must be"):
        make_dataset(shapes, 8, 1, resize="crop")
    with pytest.raises(ValueError, match="no records"):
        make_dataset([], 8, 1)
    nothing = Record("none", None, np.zeros((0, 4)), [], [], 8, 8)
    with pytest.raises(ValueError, match="neither a path nor image"):
        make_dataset([nothing], 8, 1)


def test_mixed_sources_and_bytes(voc, shapes):
    rec = voc.records[0]
    with open(rec.path, "rb") as f:
        as_bytes = Record(rec.image_id, None, rec.boxes, rec.classes, rec.difficult, rec.width, rec.height, image=f.read())
    recs = [rec, as_bytes, shapes.records[0]]
    x, y = _all(make_dataset(recs, 32, 3))
    np.testing.assert_array_equal(x[0], x[1])  # file and in-memory bytes decode the same
    assert x.shape == (3, 32, 32, 3)
