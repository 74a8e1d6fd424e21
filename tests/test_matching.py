"""Matching: the lesson's `map_to_ground_truth`, its tie rules, and the batched matcher."""

import numpy as np
import pytest
import tensorflow as tf

from random_inputs import random_boxes
from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import jaccard
from ssd_keras.matching import FORCED_OVERLAP, map_to_ground_truth, match_anchors


def random_y_true(rng, counts, num_classes, max_boxes=None, shuffle_padding=False):
    """Padded targets [B, M, 5]; padding rows (class -1) hold junk to prove they are ignored."""
    m = max_boxes or max(max(counts), 1)
    y = np.zeros((len(counts), m, 5), np.float32)
    y[..., :4] = rng.uniform(-5, 5, (len(counts), m, 4))  # junk in padding rows
    y[..., 4] = -1
    for b, n in enumerate(counts):
        rows = rng.permutation(m)[:n] if shuffle_padding else np.arange(n)
        rows.sort()
        y[b, rows, :4] = random_boxes(rng, n)
        y[b, rows, 4] = rng.integers(0, num_classes, n)
    return y


@pytest.fixture
def lt():
    pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")
    from ssd_keras.reference import lesson as lesson_torch

    return lesson_torch


# --- the seed's worked example ----------------------------------------------------------------

# The lesson's In[125]: IoU of the 3 objects of one image (chair, dining table, sofa) with the
# 16 anchors of the 4x4 grid, as printed (4 decimals).
SEED_OVERLAPS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0091, 0.0922, 0, 0, 0.0315, 0.3985, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0.0356, 0.0549, 0.0103, 0, 0.2598, 0.4538, 0.0653, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.1897, 0, 0, 0, 0],
    ],
    np.float32,
)


def test_seed_example():
    gt_overlap, gt_idx = map_to_ground_truth(SEED_OVERLAPS)
    # Out[128] of the lesson.
    np.testing.assert_allclose(
        gt_overlap.numpy(),
        [0, 0, 0, 0, 0, 0, 0, 0, 0.0356, 0.0549, 0.0922, 1.99, 0.2598, 1.99, 1.99, 0],
        rtol=1e-6,
    )
    # Out[128]'s index column as printed in the notes has one extra leading 0 (17 rows for
    # 16 anchors, a transcription slip); these are its 16 values.
    np.testing.assert_array_equal(gt_idx.numpy(), [0] * 8 + [1, 1, 0, 2, 1, 1, 0, 0])
    # Out[130]: thresh 0.5 -> positive anchors 11, 13, 14.
    assert np.flatnonzero(gt_overlap.numpy() > 0.5).tolist() == [11, 13, 14]
    # Out[129]/[131]: classes chair=8, diningtable=10, sofa=17 (VOC order) -> sofa at 11,
    # dining table at 13, chair at 14, background (20) elsewhere.
    clas = np.array([8, 10, 17])
    gt_clas = np.where(gt_overlap.numpy() > 0.5, clas[gt_idx.numpy()], 20)
    assert gt_clas[[11, 13, 14]].tolist() == [17, 10, 8]
    assert (np.delete(gt_clas, [11, 13, 14]) == 20).all()


def test_seed_example_lesson_code(lt):
    import torch

    ref_overlap, ref_idx = lt.map_to_ground_truth(torch.from_numpy(SEED_OVERLAPS.copy()))
    gt_overlap, gt_idx = map_to_ground_truth(SEED_OVERLAPS)
    np.testing.assert_array_equal(gt_overlap.numpy(), ref_overlap.numpy())
    np.testing.assert_array_equal(gt_idx.numpy(), ref_idx.numpy())


# --- tie rules, by hand -----------------------------------------------------------------------

TIES = {
    # Both objects' best anchor is 0: the later object (1) wins it.
    "shared_best_anchor_later_wins": (
        [[0.5, 0.1, 0.0], [0.6, 0.2, 0.0]],
        [FORCED_OVERLAP, 0.2, 0.0],
        [1, 1, 0],
    ),
    # Anchor 1 overlaps both objects equally: the first object takes it.
    "tie_over_objects_first_wins": (
        [[0.9, 0.3, 0.0], [0.1, 0.3, 0.8]],
        [FORCED_OVERLAP, 0.3, FORCED_OVERLAP],
        [0, 0, 1],
    ),
    # One object, equally good on anchors 0 and 1: the first anchor is forced.
    "tie_over_anchors_first_forced": (
        [[0.5, 0.5, 0.1]],
        [FORCED_OVERLAP, 0.5, 0.1],
        [0, 0, 0],
    ),
    # Three objects with one best anchor (all zero overlaps: anchor 0): the last one wins.
    "all_zero": (
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        [FORCED_OVERLAP, 0.0],
        [2, 0],
    ),
}


@pytest.mark.parametrize("name", TIES)
def test_ties_by_hand(name):
    overlaps, want_overlap, want_idx = TIES[name]
    gt_overlap, gt_idx = map_to_ground_truth(np.array(overlaps, np.float32))
    np.testing.assert_allclose(gt_overlap.numpy(), want_overlap, rtol=1e-7)
    np.testing.assert_array_equal(gt_idx.numpy(), want_idx)
    assert gt_idx.dtype == tf.int32


@pytest.mark.parametrize("name", TIES)
def test_ties_equal_lesson(lt, name):
    import torch

    overlaps = np.array(TIES[name][0], np.float32)
    ref_overlap, ref_idx = lt.map_to_ground_truth(torch.from_numpy(overlaps))
    gt_overlap, gt_idx = map_to_ground_truth(overlaps)
    np.testing.assert_array_equal(gt_overlap.numpy(), ref_overlap.numpy())
    np.testing.assert_array_equal(gt_idx.numpy(), ref_idx.numpy())


def test_ties_batched_under_xla():
    # Same tie cases padded into one batch, compiled: the tie rules must not depend on XLA's
    # argmax or scatter order.
    overlaps = np.zeros((len(TIES), 3, 3), np.float32)
    valid = np.zeros((len(TIES), 3), bool)
    for b, (ov, _, _) in enumerate(TIES.values()):
        ov = np.array(ov, np.float32)
        overlaps[b, : ov.shape[0], : ov.shape[1]] = ov
        valid[b, : ov.shape[0]] = True
    from ssd_keras.matching import _map

    f = tf.function(_map, jit_compile=True)
    gt_overlap, gt_idx = f(tf.constant(overlaps), tf.constant(valid))
    for b, (ov, want_overlap, want_idx) in enumerate(TIES.values()):
        n = len(want_idx)
        np.testing.assert_allclose(gt_overlap.numpy()[b, :n], want_overlap, rtol=1e-7)
        np.testing.assert_array_equal(gt_idx.numpy()[b, :n], want_idx)


@pytest.mark.parametrize("name", TIES)
def test_ties_in_a_tf1_graph(name):
    # In a TF1-style graph (tf.compat.v1.Session, e.g. an Estimator), `tensor == tensor` is
    # Python identity, not element-wise: the tie rules must use tf.equal to work there too.
    overlaps, want_overlap, want_idx = TIES[name]
    with tf.Graph().as_default():
        ops = map_to_ground_truth(tf.constant(overlaps, tf.float32))
        with tf.compat.v1.Session() as session:
            gt_overlap, gt_idx = session.run(ops)
    np.testing.assert_allclose(gt_overlap, want_overlap, rtol=1e-7)
    np.testing.assert_array_equal(gt_idx, want_idx)


# --- random cases against the lesson ----------------------------------------------------------


@pytest.mark.parametrize("config", [{}, dict(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),))])
def test_random_equal_lesson(lt, config):
    import torch

    anchors = AnchorConfig(**config)
    rng = np.random.default_rng(5)
    for n in [1, 2, 3, 7, 20, 60]:
        boxes = random_boxes(rng, n)
        overlaps = np.asarray(jaccard(boxes, anchors.corners))
        ref_overlaps = lt.jaccard(torch.from_numpy(boxes), torch.from_numpy(anchors.corners))
        ref_overlap, ref_idx = lt.map_to_ground_truth(ref_overlaps)
        gt_overlap, gt_idx = map_to_ground_truth(overlaps)
        np.testing.assert_allclose(gt_overlap.numpy(), ref_overlap.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(gt_idx.numpy(), ref_idx.numpy())


# --- the batched matcher ----------------------------------------------------------------------


def per_image_reference(y_true, anchors, num_classes, thresh):
    """Loop of the one-image `map_to_ground_truth` over the valid rows of each image."""
    out = []
    for y in y_true:
        rows = np.flatnonzero(y[:, 4] >= 0)
        if len(rows) == 0:
            out.append(None)
            continue
        boxes = y[rows, :4]
        gt_overlap, gt_idx = map_to_ground_truth(jaccard(boxes, anchors.corners))
        gt_overlap, gt_idx = gt_overlap.numpy(), gt_idx.numpy()
        pos = gt_overlap > thresh
        out.append(
            dict(gt_overlap=gt_overlap, gt_idx=rows[gt_idx], positive=pos, boxes=boxes[gt_idx],
                 classes=np.where(pos, y[rows[gt_idx], 4].astype(int), num_classes))
        )
    return out


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_ties_on_the_object_list(mode):
    # The tie cases as the images of one batch, with an image without objects between them,
    # through the object-list form of the rule (`match_anchors` outside XLA): per image, the
    # same winners as the padded form, and `obj` indexes the batch's object list.
    from ssd_keras.matching import _map_objects

    # Each case padded to 3 anchors with overlap 0, which changes none of its winners.
    cases = [np.pad(np.array(ov, np.float32), [(0, 0), (0, 3 - len(ov[0]))]) for ov, _, _ in TIES.values()]
    cases.insert(2, np.zeros((0, 3), np.float32))
    overlaps = np.concatenate(cases)
    image = np.concatenate([np.full(len(ov), b, np.int32) for b, ov in enumerate(cases)])
    fn = _map_objects if mode == "eager" else tf.function(_map_objects)
    gt_overlap, obj = (t.numpy() for t in fn(tf.constant(overlaps), tf.constant(image), len(cases)))
    first = np.cumsum([0] + [len(ov) for ov in cases])
    wants = [(want_overlap, want_idx) for _, want_overlap, want_idx in TIES.values()]
    wants.insert(2, ([0.0] * 3, [len(overlaps) - first[2]] * 3))  # no objects: overlap 0, obj N
    for b, (want_overlap, want_idx) in enumerate(wants):
        n = len(want_idx)
        np.testing.assert_allclose(gt_overlap[b, :n], want_overlap, rtol=1e-7, err_msg=f"image {b}")
        np.testing.assert_array_equal(obj[b, :n] - first[b], want_idx, err_msg=f"image {b}")


def test_in_xla_context_picks_the_form(monkeypatch):
    # The object-list form runs outside XLA and the padded one under it; were the private TF
    # helper to stop answering, both would silently be the padded form.
    from ssd_keras import matching

    calls = []
    real = matching._match_objects
    monkeypatch.setattr(matching, "_match_objects", lambda *args: calls.append(1) or real(*args))
    seen = []

    def fn(y):
        seen.append(matching.in_xla_context())
        return match_anchors(y, AnchorConfig(), 20)["classes"]

    y_true = tf.constant(random_y_true(np.random.default_rng(3), [2, 1], 20))
    fn(y_true)
    tf.function(fn)(y_true)
    assert seen == [False, False] and len(calls) == 2
    tf.function(fn, jit_compile=True)(y_true)
    assert seen[-1] is True and len(calls) == 2


@pytest.mark.parametrize("seed", range(4))
def test_object_list_equals_padded_form_with_ties(seed):
    # IoUs drawn from four values, so that ties over objects and over anchors are everywhere;
    # real rows anywhere, and an image without objects.
    from ssd_keras.matching import _map, _map_objects

    rng = np.random.default_rng(seed)
    b, m, a = 6, 5, 7
    overlaps = rng.choice([0.0, 0.25, 0.5, 0.75], size=(b, m, a)).astype(np.float32)
    valid = rng.random((b, m)) < 0.5
    valid[1] = False
    want_overlap, want_idx = (t.numpy() for t in _map(tf.constant(overlaps), tf.constant(valid)))
    where = np.argwhere(valid)  # row-major, as tf.where
    got_overlap, obj = (t.numpy() for t in _map_objects(
        tf.constant(overlaps[valid]), tf.constant(where[:, 0].astype(np.int32)), b))
    np.testing.assert_array_equal(got_overlap, want_overlap)
    np.testing.assert_array_equal(np.append(where[:, 1], 0)[obj], want_idx)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_object_list_equals_padded_batch(mode):
    # Outside XLA the matcher works on the real rows only (VOC pads to 42 objects, batches
    # hold ~2.5 per image); XLA matches the padded batch (static shapes), so it is the
    # reference. `gt_idx` must still index the caller's rows, padding anywhere.
    anchors = AnchorConfig()
    y_true = random_y_true(np.random.default_rng(8), [2, 0, 5, 1], 20, max_boxes=6, shuffle_padding=True)
    assert (y_true[:, -1, 4] >= 0).any()  # the last real row is the last of the six
    junk = np.tile(np.array([[[9.0, 9.0, -9.0, -9.0, -1.0]]], np.float32), (4, 36, 1))
    fn = lambda y: match_anchors(y, anchors, 20, 0.4)  # noqa: E731
    xla = tf.function(fn, jit_compile=True)
    if mode == "function":
        fn = tf.function(fn)
    all_padding = np.full((4, 42, 5), -1.0, np.float32)
    all_padding[:, :, :4] = np.nan  # never read
    for y in (np.concatenate([y_true, junk], axis=1), all_padding):
        padded = xla(tf.constant(y))
        for key, value in fn(tf.constant(y)).items():
            np.testing.assert_array_equal(value.numpy(), padded[key].numpy(), err_msg=key)
    got = fn(tf.constant(all_padding))  # no objects at all: background, zero boxes, row 0
    assert not got["positive"].numpy().any() and (got["classes"].numpy() == 20).all()
    assert (got["boxes"].numpy() == 0).all() and (got["gt_idx"].numpy() == 0).all()
    assert (got["gt_overlap"].numpy() == 0).all()


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_object_with_nan_overlaps_does_not_crash(mode):
    # match_anchors does not validate (SSDLoss does). An object whose IoUs are all NaN has no
    # best anchor; it must not make TF raise (its segment would be past the last one) nor
    # change another image's matching.
    from ssd_keras.matching import _map_objects

    overlaps = np.array([[0.5, 0.1, 0.0], [0.0, 0.2, 0.7], [0.1, 0.6, 0.0]], np.float32)
    image = np.array([0, 0, 1], np.int32)
    fn = _map_objects if mode == "eager" else tf.function(_map_objects)
    clean = [t.numpy() for t in fn(tf.constant(overlaps), tf.constant(image), 2)]
    overlaps[2] = np.nan  # the last object of the last image
    got = [t.numpy() for t in fn(tf.constant(overlaps), tf.constant(image), 2)]
    for want, value in zip(clean, got):
        np.testing.assert_array_equal(value[0], want[0])
    assert not (got[0][1] > 0.4).any()  # the NaN object makes no positive anchor


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_batched_equals_per_image(mode):
    anchors, num_classes = AnchorConfig(), 20
    rng = np.random.default_rng(6)
    counts = [0, 1, 3, 20, 2, 0, 60, 5]
    y_true = random_y_true(rng, counts, num_classes, max_boxes=64, shuffle_padding=True)
    fn = lambda y: match_anchors(y, anchors, num_classes, 0.4)  # noqa: E731
    if mode != "eager":
        fn = tf.function(fn, jit_compile=(mode == "xla"))
    got = {k: v.numpy() for k, v in fn(tf.constant(y_true)).items()}
    A = anchors.num_anchors
    assert got["boxes"].shape == (8, A, 4) and got["classes"].shape == (8, A)
    assert got["positive"].dtype == bool and got["gt_overlap"].shape == (8, A)
    for b, ref in enumerate(per_image_reference(y_true, anchors, num_classes, 0.4)):
        if ref is None:  # no objects: all background, nothing NaN
            assert not got["positive"][b].any()
            assert (got["classes"][b] == num_classes).all()
            assert (got["gt_overlap"][b] == 0).all()
            assert (got["boxes"][b] == 0).all() and (got["gt_idx"][b] == 0).all()
            continue
        np.testing.assert_allclose(got["gt_overlap"][b], ref["gt_overlap"], rtol=1e-6)
        for key in ("gt_idx", "positive", "classes", "boxes"):
            np.testing.assert_array_equal(got[key][b], ref[key], err_msg=f"{key}, image {b}")
        # Objects that lost their best anchor to a later one may have none (the lesson's rule),
        # but every image with objects has positives.
        assert got["positive"][b].any()


def test_batched_equals_lesson_with_60_objects(lt):
    import torch

    anchors, num_classes = AnchorConfig(), 20
    ref_anc = lt.make_anchors()
    rng = np.random.default_rng(7)
    y_true = random_y_true(rng, [60, 55], num_classes)
    got = match_anchors(y_true, anchors, num_classes)
    for b in range(2):
        boxes = torch.from_numpy(y_true[b, :, :4].copy())
        ref_overlap, ref_idx = lt.map_to_ground_truth(lt.jaccard(boxes[: [60, 55][b]], ref_anc.anchor_cnr))
        np.testing.assert_allclose(got["gt_overlap"].numpy()[b], ref_overlap.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(got["gt_idx"].numpy()[b], ref_idx.numpy())


def test_threshold_and_config_dict():
    anchors = AnchorConfig.single_grid(4)
    # One object exactly on anchor 5 and one half over anchors 0 and 1.
    y_true = np.array([[[0.25, 0.25, 0.5, 0.5, 3], [0.0, 0.125, 0.25, 0.375, 1]]], np.float32)
    got = match_anchors(y_true, anchors.get_config(), num_classes=4, pos_threshold=0.3)
    classes = got["classes"].numpy()[0]
    # Object 1 overlaps anchors 0 and 1 with IoU 1/3 each: anchor 0 (first) is forced, and
    # anchor 1 is positive only because 1/3 > 0.3.
    assert classes.tolist() == [1, 1, 4, 4, 4, 3] + [4] * 10
    got = match_anchors(y_true, anchors, num_classes=4, pos_threshold=0.4)
    assert got["classes"].numpy()[0].tolist() == [1, 4, 4, 4, 4, 3] + [4] * 10
    np.testing.assert_allclose(got["gt_overlap"].numpy()[0, :2], [1.99, 1 / 3], rtol=1e-6)


def test_map_to_ground_truth_errors():
    with pytest.raises(ValueError, match="no objects"):
        map_to_ground_truth(np.zeros((0, 16), np.float32))
    with pytest.raises(ValueError, match=r"\[num_objects, num_anchors\]"):
        map_to_ground_truth(np.zeros((2, 3, 16), np.float32))
