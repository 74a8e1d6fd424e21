"""tf.data pipeline: shapes, padding, max_boxes, letterbox, determinism, bad records; in-memory
arrays read in place; `shapes` generated inside the pipeline (same batches as in memory)."""

import logging
import os
import re

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
from ssd_keras.data.shapes import ShapesData


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
    # In-memory pixels a uint8 cast would change: floats in [0, 1] (black), > 255 (wrapped), NaN.
    for pixels, hint in ((0.5, "multiply by 255"), (300.0, "values in"), (np.nan, "values in")):
        floats = Record("f", None, np.zeros((0, 4)), [], [], 8, 8, image=np.full((8, 8, 3), pixels))
        with pytest.raises(ValueError, match=rf"record 'f': in-memory images must hold whole numbers 0–255.*{hint}"):
            make_dataset([floats], 8, 1)
    whole = Record("w", None, np.zeros((0, 4)), [], [], 8, 8, image=np.full((8, 8, 3), 200.0))
    assert float(next(iter(make_dataset([whole], 8, 1)))[0].numpy().max()) == 200.0
    with pytest.raises(ValueError, match=r"augment must be None or a list of transforms .*augmentations_by_name\('flip'\)"):
        make_dataset(shapes, 8, 1, augment="flip")
    # Sizes are whole numbers: int() would cut 8.5 px or a batch of 2.5 without a word.
    for kwargs, match in ((dict(image_size=8.5), "image_size must be an integer, got 8.5"),
                          (dict(batch_size=2.5), "batch_size must be an integer, got 2.5"),
                          (dict(max_boxes=1.5), "max_boxes must be an integer, got 1.5"),
                          (dict(image_size=True), "image_size must be an integer, got True"),
                          (dict(batch_size=0), "batch_size must be positive, got 0"),
                          (dict(image_size=-8), "image_size must be positive, got -8")):
        with pytest.raises(ValueError, match=f"make_dataset: {match}"):
            make_dataset(shapes, **{"image_size": 8, "batch_size": 1, **kwargs})
    x, y = next(iter(make_dataset(shapes, 8.0, np.int64(2), max_boxes=np.int32(3))))
    assert x.shape == (2, 8, 8, 3) and y.shape == (2, 3, 5)


def test_mixed_sources_and_bytes(voc, shapes):
    rec = voc.records[0]
    with open(rec.path, "rb") as f:
        as_bytes = Record(rec.image_id, None, rec.boxes, rec.classes, rec.difficult, rec.width, rec.height, image=f.read())
    recs = [rec, as_bytes, shapes.records[0]]
    x, y = _all(make_dataset(recs, 32, 3))
    np.testing.assert_array_equal(x[0], x[1])  # file and in-memory bytes decode the same
    assert x.shape == (3, 32, 32, 3)


def test_undecodable_image_bytes_are_named_when_the_dataset_is_built(voc, tmp_path):
    # Without the check they failed inside TensorFlow, at the first batch, naming no record.
    from PIL import Image

    jpeg = open(voc.records[0].path, "rb").read()
    Image.open(voc.records[0].path).save(tmp_path / "a.tif")
    for data, problem in ((b"not an image", r"not a readable image \(no known image format; it starts with b'not an i'\)"),
                          (b"", r"empty \(0 bytes\)"),
                          (jpeg[: len(jpeg) // 2], r"truncated JPEG"),
                          ((tmp_path / "a.tif").read_bytes(), r"a TIFF image; TensorFlow decodes only")):
        rec = Record("junk", None, np.zeros((0, 4)), [], [], 8, 8, image=data)
        with pytest.raises(ValueError, match=rf"make_dataset: record 'junk': its image bytes are {problem}"):
            make_dataset([voc.records[0], rec], 8, 2)
    # Something else in `image` (a file name, say) is named too.
    named = Record("n", None, np.zeros((0, 4)), [], [], 8, 8, image="a.jpg")
    with pytest.raises(ValueError, match=r"record 'n': image must be None \(read from its path\), a uint8 array "
                                         r"\[H, W, 3\] \(or grayscale \[H, W\]\) or encoded image bytes, got str"):
        make_dataset([named], 8, 1)


def test_missing_or_unreadable_image_files_are_named_when_the_dataset_is_built(voc, tmp_path):
    # A hand-made Record(path=...) was not checked: a missing or non-image file failed inside
    # TensorFlow, at the first batch, naming no record.
    import dataclasses
    import shutil

    def by_hand(path):
        return Record("mine", str(path), np.zeros((0, 4)), [], [], 8, 8)

    (tmp_path / "notes.jpg").write_text("not an image")
    jpeg = open(voc.records[0].path, "rb").read()
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    for name, problem in (("gone.jpg", "image file missing"),
                          ("notes.jpg", "not a readable image"),
                          ("half.jpg", r"truncated JPEG \(no end-of-image marker\)")):
        path = tmp_path / name
        with pytest.raises(ValueError, match=rf"make_dataset: record 'mine' \({re.escape(str(path))}\): {problem}"):
            make_dataset([voc.records[0], by_hand(path)], 8, 2)
    assert len(_all(make_dataset([by_hand(voc.records[0].path)], 8, 1))[0]) == 1
    # A reader's records were checked when read (check_image_file): only a file gone since is
    # looked for, not the header again.
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLE_VOC, copy)
    records = read_voc(str(copy), "train").records[:2]
    os.remove(records[0].path)
    with pytest.raises(ValueError, match=rf"make_dataset: record {records[0].image_id!r} "
                                         rf"\({re.escape(records[0].path)}\): image file missing"):
        make_dataset(records, 8, 2)
    with open(records[1].path, "wb") as f:
        f.write(b"spoilt after reading")
    make_dataset(records[1:], 8, 1)  # built: its header is not read again
    # A copy (dataclasses.replace, as one would give it another path) is checked as one made by hand.
    with pytest.raises(ValueError, match="not a readable image"):
        make_dataset([dataclasses.replace(records[1])], 8, 1)


def test_in_memory_images_are_read_in_place():
    # The pipeline reads the records' own arrays (no stacked copy): a change made after
    # building the dataset shows up in its output.
    recs = make_shapes(count=3, image_size=16, seed=0).records
    ds = make_dataset(recs, 16, 3)
    recs[1].image[:] = 7
    x, _ = _all(ds)
    assert (x[1] == 7).all()
    np.testing.assert_array_equal(x[0], recs[0].image.astype(np.float32))
    # Non-uint8 arrays of whole numbers 0-255 are converted; others are refused (test above).
    rec = Record("f", None, np.zeros((0, 4)), [], [], 8, 8, image=np.full((8, 8, 3), 3, np.int64))
    x, _ = next(iter(make_dataset([rec], 8, 1, max_boxes=1)))
    assert (x.numpy() == 3).all()


def test_grayscale_and_rgba_arrays_read_like_image_files(tmp_path):
    # [H, W] failed with a bare shape error (one size) or TensorFlow's EncodePng error naming no
    # record (mixed sizes). Now arrays read as tf.io.decode_image(channels=3) reads such a PNG
    # file: grey repeated, alpha dropped; the same whatever the sizes.
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (8, 8), np.uint8)
    rgba = rng.integers(0, 256, (8, 8, 4), np.uint8)
    images = [grey, grey[..., None], np.stack([grey, grey], -1), rgba]
    want = [np.repeat(grey[..., None], 3, -1)] * 3 + [rgba[..., :3]]
    for i, (image, expected) in enumerate(zip(images, want)):
        path = tmp_path / f"{i}.png"
        tf.io.write_file(str(path), tf.io.encode_png(image if image.ndim == 3 else image[..., None]))
        from_file = Record("file", str(path), np.zeros((0, 4)), [], [], 8, 8)
        rec = Record("g", None, np.zeros((0, 4)), [], [], 8, 8, image=image)
        bigger = Record("b", None, np.zeros((0, 4)), [], [], 16, 16, image=np.zeros((16, 16, 3), np.uint8))
        same_size, _ = _all(make_dataset([rec, rec], 8, 2))
        mixed, _ = _all(make_dataset([rec, bigger, from_file], 8, 3))
        for x in (same_size[0], same_size[1], mixed[0], mixed[2]):
            np.testing.assert_array_equal(x, expected.astype(np.float32))
    # Not an image: named with its record, in both paths.
    for bad in (np.zeros((8, 8, 5), np.uint8), np.zeros((3, 8, 8, 3), np.uint8), np.zeros(8, np.uint8)):
        rec = Record("g", None, np.zeros((0, 4)), [], [], 8, 8, image=bad)
        other = Record("o", None, np.zeros((0, 4)), [], [], 4, 4, image=np.zeros((4, 4, 3), np.uint8))
        for recs in ([rec], [other, rec]):
            with pytest.raises(ValueError, match=rf"make_dataset: record 'g': in-memory images must be "
                                                 rf"\[H, W, 3\] .* got shape {re.escape(str(bad.shape))}"):
                make_dataset(recs, 8, 1)


def _index_of(images, reference):
    """Index in `reference` (uint8 images) of each float image in `images`."""
    where = {r.tobytes(): i for i, r in enumerate(reference)}
    return [where[x.astype(np.uint8).tobytes()] for x in images]


@pytest.mark.parametrize("kw", [dict(image_size=48, seed=3),
                                dict(image_size=40, split="val", seed=1, min_objects=0, max_objects=10)])
def test_streamed_shapes_pixel_identical(kw):
    """Images generated inside tf.data equal `make_shapes`' pixels, boxes and classes."""
    size, bound = kw["image_size"], kw.get("max_objects", 8)
    eager = make_shapes(count=7, **kw)
    x, y = _all(ShapesData(count=7, **kw).dataset(size, 3))
    assert x.shape == (7, size, size, 3) and y.shape == (7, bound, 5)  # default max_boxes: the bound
    for r, xi, yi in zip(eager.records, x, y):
        np.testing.assert_array_equal(xi, r.image.astype(np.float32))
        n = r.num_objects
        np.testing.assert_array_equal(yi[:n, :4], r.boxes)
        np.testing.assert_array_equal(yi[:n, 4], r.classes)
        assert np.all(yi[n:, 4] == -1) and np.all(yi[n:, :4] == 0)


def test_streamed_shapes_same_batches_as_in_memory():
    """Same seed, same batches as the in-memory path: order, resizing, letterbox, augmentation,
    over two epochs (each reshuffled and re-augmented)."""
    lazy, eager = ShapesData(count=22, image_size=48, seed=3), make_shapes(count=22, image_size=48, seed=3)
    m = max(r.num_objects for r in eager.records)
    cases = [dict(image_size=48), dict(image_size=32, resize="letterbox"),
             dict(image_size=40, shuffle=True, seed=5, augment=lesson_augmentations(20))]
    for kw in cases:
        a = make_dataset(lazy, batch_size=5, max_boxes=m, **kw)
        b = make_dataset(eager, batch_size=5, max_boxes=m, **kw)
        for _epoch in range(2):
            for u, v in zip(_all(a), _all(b)):
                np.testing.assert_array_equal(u, v)
    # The CLI passes `data.records`: the lazy records stream the same way.
    np.testing.assert_array_equal(_all(make_dataset(lazy.records[2:9], 48, 4, max_boxes=m))[1],
                                  _all(make_dataset(eager.records[2:9], 48, 4, max_boxes=m))[1])


def test_streamed_shapes_order_shuffle_and_counts():
    kw = dict(image_size=16, seed=0)
    reference = [r.image for r in make_shapes(count=20, **kw).records]
    lazy = ShapesData(count=20, **kw)
    x, _ = _all(lazy.dataset(16, 6))
    assert _index_of(x, reference) == list(range(20))  # no shuffle: file order
    ds = lazy.dataset(16, 6, shuffle=True, seed=11)
    first, second = (_index_of(_all(ds)[0], reference) for _ in range(2))
    assert sorted(first) == sorted(second) == list(range(20))  # each epoch: every image once
    assert first != list(range(20)) and first != second  # shuffled, and reshuffled each epoch
    again = lazy.dataset(16, 6, shuffle=True, seed=11)
    assert [_index_of(_all(again)[0], reference) for _ in range(2)] == [first, second]  # seeded
    assert int(ds.cardinality()) == 4
    assert len(list(lazy.dataset(16, 6, drop_remainder=True))) == 3
    batches = list(lazy.dataset(16, 6, repeat=True, shuffle=True, seed=0).take(7))
    assert [int(b[0].shape[0]) for b in batches] == [6] * 7


def test_streamed_shapes_any_count_and_bad_arguments(caplog):
    # No work per image up front: the first batch of a billion-image source comes at once.
    x, y = next(iter(ShapesData(count=10**9, image_size=16, seed=2).dataset(16, 2)))
    assert x.shape == (2, 16, 16, 3) and y.shape == (2, 8, 5)
    with caplog.at_level(logging.WARNING, logger="ssd_keras.data"):
        _, y = next(iter(ShapesData(count=4, image_size=16, max_objects=5).dataset(16, 4, max_boxes=2)))
    assert "max_boxes=2 may drop objects: the generated images have up to 5" in caplog.text
    assert y.shape == (4, 2, 5)
    with pytest.raises(ValueError, match="no records"):
        ShapesData(count=0).dataset(16, 2)
    with pytest.raises(ValueError, match="max_boxes must be >= 1"):
        ShapesData(count=2).dataset(16, 2, max_boxes=0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        ShapesData(count=2).dataset(16, 0)
    with pytest.raises(ValueError, match="resize must be"):
        ShapesData(count=2).dataset(16, 2, resize="crop")


def test_streamed_shapes_keep_makes_each_image_once(monkeypatch):
    from ssd_keras.data import shapes as shapes_module

    lazy = ShapesData(count=10, image_size=16, seed=4, keep=True)
    ds = lazy.dataset(16, 4, shuffle=True, seed=1)
    first = _all(ds)
    assert len(lazy.records._kept) == 10  # every image made once and kept

    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(shapes_module, "_example", fail)
    second = _all(ds)  # served from memory, reshuffled
    assert sorted(map(bytes, second[0])) == sorted(map(bytes, first[0]))
    lazy.ground_truths()  # the kept images' boxes, nothing made
    monkeypatch.undo()
    reference = ShapesData(count=10, image_size=16, seed=4).dataset(16, 4, shuffle=True, seed=1)
    for u, v in zip(first, _all(reference)):  # keeping changes nothing in the batches
        np.testing.assert_array_equal(u, v)


def test_in_memory_and_streamed_data_sets_know_their_length():
    """fit_one_cycle (steps per epoch) and Keras' progress bar need the cardinality."""
    from ssd_keras.data import RandomFlip, make_shapes
    from ssd_keras.data.shapes import ShapesData

    for data in (make_shapes(40, image_size=32), ShapesData(40, image_size=32)):
        for kwargs in ({}, {"shuffle": True, "seed": 0, "augment": [RandomFlip()]}):
            ds = data.dataset(32, 16, **kwargs)
            assert int(ds.cardinality()) == 3
            assert sum(1 for _ in ds) == 3
