"""SSDLoss against the lesson's `ssd_loss` (values and gradients), by hand, and its errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from random_inputs import random_boxes
from ssd_keras.anchors import AnchorConfig
from ssd_keras.losses import SSDLoss, SSDLossPart, classification_loss

NUM_CLASSES = 20


def random_batch(rng, counts, anchors, num_classes=NUM_CLASSES, max_boxes=None):
    """(y_true [B, M, 5] with -1 padding, y_pred [B, A, 4 + C + 1]) with varied logits."""
    m = max_boxes or max(max(counts), 1)
    y_true = np.zeros((len(counts), m, 5), np.float32)
    y_true[..., 4] = -1
    for b, n in enumerate(counts):
        y_true[b, :n, :4] = random_boxes(rng, n)
        y_true[b, :n, 4] = rng.integers(0, num_classes, n)
    y_pred = rng.normal(scale=2.0, size=(len(counts), anchors.num_anchors, 4 + num_classes + 1))
    return y_true, y_pred.astype(np.float32)


def ours(loss, y_true, y_pred, mode):
    """(loss value, d loss / d y_pred, components) under eager / tf.function / XLA."""

    def f(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred)
        return value, tape.gradient(value, y_pred), loss.components(y_true, y_pred)

    if mode == "tf1-graph":  # tf.compat.v1.Session, where `tensor == tensor` is not element-wise
        with tf.Graph().as_default():
            ops = f(tf.constant(y_true), tf.constant(y_pred))
            with tf.compat.v1.Session() as session:
                value, grad, parts = session.run(ops)
        return float(value), grad, parts
    if mode != "eager":
        f = tf.function(f, jit_compile=(mode == "xla"))
    value, grad, parts = f(tf.constant(y_true), tf.constant(y_pred))
    return float(value), grad.numpy(), {k: v.numpy() for k, v in parts.items()}


def lesson(y_true, y_pred, focal=None, anchors_kwargs=(), per_image=False):
    """The lesson's loss / B, its gradient, and its summed parts / B."""
    from ssd_keras.reference import lesson as lt

    anc = lt.make_anchors(*anchors_kwargs)
    loss_f = lt.FocalLoss(NUM_CLASSES, *focal) if focal else lt.BCE_Loss(NUM_CLASSES)
    leaf, pred = lt.pred_from_y_pred(y_pred, requires_grad=True)
    total, loc, clas = lt.ssd_loss(pred, lt.targets_from_y_true(y_true), anc, loss_f, return_parts=True)
    b = len(y_true)
    (total / b).backward()
    return total.item() / b, leaf.grad.numpy(), loc.item() / b, clas.item() / b


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")


# --- parity with the lesson ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "focal, mode",
    [(None, "eager"), (None, "function"), (None, "xla"),
     ((0.25, 1.0), "eager"), ((0.25, 1.0), "function"), ((0.25, 1.0), "xla"),
     ((0.5, 2.0), "eager"), ((0.25, 1.0), "tf1-graph")],
)
def test_equals_lesson(torch, mode, focal):
    anchors = AnchorConfig()
    rng = np.random.default_rng(10)
    # Varied object counts (1..20); the lesson's loss is NaN for images with no objects.
    y_true, y_pred = random_batch(rng, [1, 20, 3, 2, 7, 1, 12, 2], anchors)
    value, grad, parts = ours(SSDLoss(anchors, NUM_CLASSES, focal=focal), y_true, y_pred, mode)
    ref_value, ref_grad, ref_loc, ref_clas = lesson(y_true, y_pred, focal)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(parts["loc"].mean(), ref_loc, rtol=1e-5)
    np.testing.assert_allclose(parts["clas"].mean(), ref_clas, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * np.abs(ref_grad).max())


def test_equals_lesson_single_grid_and_60_objects(torch):
    anchors = AnchorConfig.single_grid(4)
    rng = np.random.default_rng(11)
    y_true, y_pred = random_batch(rng, [60, 1, 4], anchors)
    value, grad, _ = ours(SSDLoss(anchors, NUM_CLASSES, focal=True), y_true, y_pred, "function")
    ref_value, ref_grad, _, _ = lesson(y_true, y_pred, (0.25, 1.0), ([4], [1.0], [(1.0, 1.0)]))
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * np.abs(ref_grad).max())


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_empty_images(torch, mode):
    """No objects: loc 0, clas = BCE against all-background; other images as in the lesson."""
    anchors = AnchorConfig()
    rng = np.random.default_rng(12)
    counts = [0, 3, 0, 60]
    y_true, y_pred = random_batch(rng, counts, anchors, max_boxes=64)
    value, grad, parts = ours(SSDLoss(anchors, NUM_CLASSES), y_true, y_pred, mode)
    assert np.isfinite(grad).all() and np.isfinite(value)
    logits = y_pred[..., 4 : 4 + NUM_CLASSES].astype(np.float64)
    for b in (0, 2):
        assert parts["loc"][b] == 0
        np.testing.assert_allclose(parts["clas"][b], np.logaddexp(0, logits[b]).sum() / NUM_CLASSES, rtol=1e-5)
        assert (grad[b, :, :4] == 0).all()  # no location gradient without objects
        assert (grad[b, :, -1] == 0).all()  # nor into the background logit
    for b in (1, 3):
        ref_value, ref_grad, _, _ = lesson(y_true[b : b + 1], y_pred[b : b + 1])
        np.testing.assert_allclose(parts["loc"][b] + parts["clas"][b], ref_value, rtol=1e-5)
        np.testing.assert_allclose(grad[b] * len(counts), ref_grad[0], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(value, (parts["loc"] + parts["clas"]).mean(), rtol=1e-6)


def test_all_images_empty():
    anchors = AnchorConfig.single_grid(4)
    y_true = np.full((2, 3, 5), -1.0, np.float32)
    y_pred = np.zeros((2, 16, 4 + 3 + 1), np.float32)
    parts = SSDLoss(anchors, 3).components(y_true, y_pred)
    np.testing.assert_allclose(parts["loc"].numpy(), [0.0, 0.0])
    np.testing.assert_allclose(parts["clas"].numpy(), [16 * np.log(2)] * 2, rtol=1e-6)
    # Zero padding rows too (M = 0).
    parts = SSDLoss(anchors, 3).components(np.zeros((2, 0, 5), np.float32), y_pred)
    np.testing.assert_allclose(parts["clas"].numpy(), [16 * np.log(2)] * 2, rtol=1e-6)


def test_by_hand():
    """One object exactly on anchor 5 of the 4x4 grid, all activations 0."""
    anchors, c = AnchorConfig.single_grid(4), 3
    y_true = np.array([[[0.25, 0.25, 0.5, 0.5, 2]]], np.float32)
    y_pred = np.zeros((1, 16, 4 + c + 1), np.float32)
    parts = SSDLoss(anchors, c).components(y_true, y_pred)
    # The decoded box of a zero activation is the anchor itself -> loc 0; one positive anchor.
    np.testing.assert_allclose(parts["loc"].numpy(), [0.0], atol=1e-7)
    # BCE at logit 0 is log 2 for each of 16 anchors x 3 classes, / 3.
    np.testing.assert_allclose(parts["clas"].numpy(), [16 * np.log(2)], rtol=1e-6)
    # Focal: weight alpha (1 target) or 1-alpha (47 zero targets), times (1 - pt) = 0.5.
    alpha = 0.25
    parts = SSDLoss(anchors, c, focal=(alpha, 1.0)).components(y_true, y_pred)
    want = np.log(2) * 0.5 * (alpha * 1 + (1 - alpha) * 47) / c
    np.testing.assert_allclose(parts["clas"].numpy(), [want], rtol=1e-6)
    # Move the box activations: tanh(1) moves the centre by tanh(1)/2 of a cell.
    y_pred[0, 5, :2] = 1.0
    parts = SSDLoss(anchors, c).components(y_true, y_pred)
    np.testing.assert_allclose(parts["loc"].numpy(), [np.tanh(1.0) / 2 * 0.25], rtol=1e-5)


def _plain_classification_loss(logits, classes, c, focal, dtype=tf.float32):
    """The textbook form, differentiated by TF: sum of softplus(z) (times the focal weight) / C."""
    t = tf.one_hot(classes, c, dtype=dtype)
    z = logits * (1.0 - 2.0 * t)
    per_class = tf.nn.softplus(z)
    if focal is not None:
        alpha, gamma = focal
        per_class *= (alpha * t + (1 - alpha) * (1 - t)) * tf.sigmoid(z) ** gamma
    return tf.reduce_sum(per_class, axis=[-2, -1]) / c


@pytest.mark.parametrize("focal", [None, (0.25, 0.0), (0.25, 0.5), (0.25, 1.0), (0.75, 2.0)])
def test_classification_loss_equals_its_plain_form(focal):
    """The hand-written value and gradient against autodiff of softplus, logits up to +-100."""
    rng = np.random.default_rng(16)
    c = 5
    logits = rng.normal(scale=6.0, size=(3, 40, c)).astype(np.float32)
    logits[0, :20] = np.linspace(-100, 100, 20 * c).reshape(20, c)  # both tails
    classes = tf.constant(rng.integers(0, c + 1, (3, 40)), tf.int32)  # c: background
    x = tf.constant(logits)
    values, grads = [], []
    for f in (classification_loss, _plain_classification_loss):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = f(x, classes, c, focal)
            total = tf.reduce_sum(value * [1.0, 2.0, 3.0])  # a different upstream per image
        values.append(value.numpy())
        grads.append(tape.gradient(total, x).numpy())
    np.testing.assert_allclose(values[0], values[1], rtol=2e-6)
    # Autodiff of pow(sigmoid(z), gamma < 1) is NaN where the sigmoid underflows (z << 0),
    # where the true gradient is 0; the written-out one stays finite there.
    assert np.isfinite(grads[0]).all()
    finite = np.isfinite(grads[1])
    if focal is None or focal[1] >= 1:
        assert finite.all()
    np.testing.assert_allclose(grads[0][finite], grads[1][finite], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[0][~finite], 0.0, atol=1e-30)


@pytest.mark.parametrize("focal", [None, (0.25, 0.5), (0.25, 1.0), (0.75, 2.0)])
def test_classification_loss_is_precise_on_confident_logits(focal):
    """A trained detector's logits: background far below 0, objects above. Value and gradient
    against the plain form in float64, relatively (`z - log(sigmoid(z))`, which cancels for
    z << 0, was 1e-4 high on the value and gave half the focal gradient there)."""
    rng = np.random.default_rng(17)
    c = 6
    classes = np.full((4, 300), c)
    classes[:, :10] = rng.integers(0, c, (4, 10))
    logits = rng.normal(-9.0, 3.0, (4, 300, c))
    b, a = np.nonzero(classes < c)
    logits[b, a, classes[b, a]] = rng.normal(3.0, 1.0, len(b))  # confident on their objects
    logits = logits.astype(np.float32)
    x32 = tf.constant(logits)
    x64 = tf.constant(logits.astype(np.float64))
    classes = tf.constant(classes, tf.int32)
    upstream = tf.constant([1.0, 2.0, 3.0, 4.0])
    with tf.GradientTape() as tape:
        tape.watch(x32)
        value = classification_loss(x32, classes, c, focal)
        total = tf.reduce_sum(value * upstream)
    grad = tape.gradient(total, x32).numpy()
    with tf.GradientTape() as tape:
        tape.watch(x64)
        ref = _plain_classification_loss(x64, classes, c, focal, tf.float64)
        ref_total = tf.reduce_sum(ref * tf.cast(upstream, tf.float64))
    ref_grad = tape.gradient(ref_total, x64).numpy()
    np.testing.assert_allclose(value.numpy(), ref.numpy(), rtol=5e-6)
    # Relative, down to a billionth of the largest element: below that (z < -17, where float32
    # rounds sigmoid(|z|) to 1) the focal gradient drops its softplus term, ~1e-15 here.
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-9 * np.abs(ref_grad).max())


def test_classification_loss_limits_and_nan():
    """softplus(-inf) = 0 with no NaN gradient, +inf stays inf, and NaN logits give a NaN loss."""
    classes = tf.constant([[1, 1, 1]])  # background of C = 1: every target is 0, z = x
    x = tf.constant([[[-np.inf], [-200.0], [0.0]]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = classification_loss(x, classes, 1)
    np.testing.assert_allclose(value.numpy(), [np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(value, x).numpy().ravel(), [0.0, 0.0, 0.5], atol=1e-30)
    assert np.isinf(classification_loss(tf.constant([[[np.inf]]]), tf.constant([[1]]), 1).numpy()).all()
    assert np.isnan(classification_loss(tf.constant([[[np.nan]]]), tf.constant([[1]]), 1).numpy()).all()


def test_loc_weight_scales_only_the_location_part():
    anchors = AnchorConfig.single_grid(4)
    rng = np.random.default_rng(15)
    y_true, y_pred = random_batch(rng, [2, 3], anchors, num_classes=4)
    parts = SSDLoss(anchors, 4).components(y_true, y_pred)
    assert float(tf.reduce_min(parts["loc"])) > 0  # so that the weight shows
    weighted = SSDLoss(anchors, 4, loc_weight=20.0, reduction=None)(y_true, y_pred)
    np.testing.assert_allclose(weighted, 20.0 * parts["loc"] + parts["clas"], rtol=1e-6)
    # The logged parts stay the lesson's, unweighted.
    metric = SSDLoss(anchors, 4, loc_weight=20.0).metrics()[0]
    metric.update_state(y_true, y_pred)
    np.testing.assert_allclose(float(metric.result()), float(tf.reduce_mean(parts["loc"])), rtol=1e-6)


def test_reduction_and_mixed_precision():
    anchors = AnchorConfig.single_grid(4)
    rng = np.random.default_rng(13)
    y_true, y_pred = random_batch(rng, [2, 0, 5], anchors, num_classes=4)
    per_image = SSDLoss(anchors, 4, reduction=None)(y_true, y_pred).numpy()
    assert per_image.shape == (3,)
    np.testing.assert_allclose(SSDLoss(anchors, 4)(y_true, y_pred), per_image.mean(), rtol=1e-6)
    # reduction="sum" is the lesson's sum over the batch.
    np.testing.assert_allclose(SSDLoss(anchors, 4, reduction="sum")(y_true, y_pred), per_image.sum(), rtol=1e-6)
    half = SSDLoss(anchors, 4)(y_true, tf.constant(y_pred, tf.float16))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half, per_image.mean(), rtol=1e-2)


# --- Keras integration ---------------------------------------------------------------------------


def test_serialisation_round_trip():
    anchors = AnchorConfig(grids=(2, 1), zooms=(1.0, 1.5))
    loss = SSDLoss(anchors, 4, pos_threshold=0.5, focal=(0.3, 2.0), loc_weight=7.0, name="det")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SSDLoss) and restored.loc_weight == 7.0
    assert restored.anchors == anchors and restored.focal == (0.3, 2.0)
    assert restored.pos_threshold == 0.5 and restored.name == "det"
    rng = np.random.default_rng(14)
    y_true, y_pred = random_batch(rng, [3, 1], anchors, num_classes=4)
    assert float(restored(y_true, y_pred)) == float(loss(y_true, y_pred))
    metric = keras.metrics.deserialize(keras.metrics.serialize(loss.metrics()[1]))
    assert isinstance(metric, SSDLossPart) and metric.name == "clas"


def test_metrics_and_fit(tmp_path):
    anchors, c = AnchorConfig.single_grid(4), 3
    loss = SSDLoss(anchors, c)
    loc, clas = loss.metrics()
    assert (loc.name, clas.name) == ("loc", "clas")
    rng = np.random.default_rng(15)
    y_true, y_pred = random_batch(rng, [2, 1, 0, 4], anchors, num_classes=c)
    loc.update_state(y_true, y_pred)
    clas.update_state(y_true, y_pred)
    parts = loss.components(y_true, y_pred)
    np.testing.assert_allclose(loc.result(), parts["loc"].numpy().mean(), rtol=1e-6)
    np.testing.assert_allclose(clas.result(), parts["clas"].numpy().mean(), rtol=1e-6)

    # A tiny model: fit logs loss, loc and clas, and loss = loc + clas.
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = np.concatenate([y_true, y_true])
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16 * (4 + c + 1)), keras.layers.Reshape((16, 4 + c + 1))]
    )
    model.compile("adam", loss=loss, metrics=loss.metrics())
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert {"loss", "loc", "clas"} <= set(hist)
    np.testing.assert_allclose(hist["loss"][0], hist["loc"][0] + hist["clas"][0], rtol=1e-5)
    # The compiled loss and metrics survive a .keras round trip.
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(restored.loss, SSDLoss) and restored.loss.anchors == anchors
    want = model.evaluate(x, y, verbose=0, return_dict=True)
    got = restored.evaluate(x, y, verbose=0, return_dict=True)
    for key in ("loss", "loc", "clas"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


# --- bad input -----------------------------------------------------------------------------------

GOOD = np.array([[[0.1, 0.1, 0.5, 0.5, 1], [0, 0, 0, 0, -1]]], np.float32)


@pytest.mark.parametrize(
    "row, match",
    [
        ([0.5, 0.1, 0.2, 0.5, 1], r"ymax <= ymin or xmax <= xmin"),
        ([0.1, 0.5, 0.5, 0.5, 1], r"ymax <= ymin or xmax <= xmin"),
        ([0.1, 0.1, 1.5, 0.5, 1], r"outside \[0, 1\] \(relative yxyx"),
        ([10, 20, 100, 200, 1], r"outside \[0, 1\] \(relative yxyx"),
        ([np.nan, 0.1, 0.5, 0.5, 1], r"NaN or infinite"),
        ([0.1, 0.1, np.inf, 0.5, 1], r"NaN or infinite"),
        ([-np.inf, 0.1, 0.5, 0.5, 1], r"NaN or infinite"),
        ([0.1, 0.1, 0.5, np.nan, 1], r"NaN or infinite"),
        ([-0.1, 0.1, 0.5, 0.5, 1], r"outside \[0, 1\] \(relative yxyx"),
        ([0.1, 0.1, 0.5, 1.01, 1], r"outside \[0, 1\] \(relative yxyx"),
        ([0.2, 0.1, 0.2, 0.5, 1], r"ymax <= ymin or xmax <= xmin"),
        ([0.1, 0.1, 0.5, 0.5, 3], r"class ids must be integers in \[0, 3\) or -1"),
        ([0.1, 0.1, 0.5, 0.5, 1.5], r"class ids must be integers"),
        ([0.1, 0.1, 0.5, 0.5, -2], r"class ids must be integers"),
        ([0.1, 0.1, 0.5, 0.5, np.nan], r"class ids must be integers"),
        ([0.1, 0.1, 0.5, 0.5, np.inf], r"class ids must be integers"),
    ],
)
def test_bad_y_true(row, match):
    y_true = GOOD.copy()
    y_true[0, 1] = row
    loss = SSDLoss(AnchorConfig.single_grid(4), 3)
    y_pred = np.zeros((1, 16, 8), np.float32)
    loss(GOOD, y_pred)  # fine
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        loss(y_true, y_pred)


def test_bad_y_true_in_graph():
    """The checks also fire inside tf.function (one trace, data-dependent failure)."""
    loss = SSDLoss(AnchorConfig.single_grid(4), 3)
    fn = tf.function(loss.__call__)
    y_pred = np.zeros((1, 16, 8), np.float32)
    fn(tf.constant(GOOD), y_pred)
    bad = GOOD.copy()
    bad[0, 0, 4] = 7
    with pytest.raises(tf.errors.InvalidArgumentError, match="class ids must be integers"):
        fn(tf.constant(bad), y_pred)
    bad = GOOD.copy()
    bad[0, 0, 2] = 0.05
    with pytest.raises(tf.errors.InvalidArgumentError, match="ymax <= ymin"):
        fn(tf.constant(bad), y_pred)


def test_padding_rows_may_hold_anything():
    anchors = AnchorConfig.single_grid(4)
    y_true = GOOD.copy()
    y_true[0, 1, :4] = [np.nan, 7, -3, np.inf]
    y_pred = np.random.default_rng(16).normal(size=(1, 16, 8)).astype(np.float32)
    np.testing.assert_allclose(SSDLoss(anchors, 3)(y_true, y_pred), SSDLoss(anchors, 3)(GOOD, y_pred))


@pytest.mark.parametrize(
    "y_true_shape, y_pred_shape, match",
    [
        ((1, 2, 5), (1, 16, 7), r"4 \+ num_classes \+ 1 = 8"),
        ((1, 2, 5), (1, 189, 8), r"189 anchors but anchors.num_anchors is 16"),
        ((1, 2, 5), (16, 8), r"y_pred must be \[batch, num_anchors"),
        ((1, 2, 4), (1, 16, 8), r"y_true must be \[batch, max_boxes, 5\]"),
    ],
)
def test_bad_shapes(y_true_shape, y_pred_shape, match):
    loss = SSDLoss(AnchorConfig.single_grid(4), 3)
    with pytest.raises(ValueError, match=match):
        loss(np.zeros(y_true_shape, np.float32), np.zeros(y_pred_shape, np.float32))
    # At trace time as well (unknown batch size, known anchors and channels).
    fn = tf.function(
        loss.__call__,
        input_signature=[tf.TensorSpec((None,) + y_true_shape[1:]), tf.TensorSpec((None,) + y_pred_shape[1:])],
    )
    with pytest.raises(ValueError, match=match):
        fn.get_concrete_function()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(num_classes=2.5), "num_classes must be a positive integer"),
        (dict(focal=(0.25,)), r"focal must be None, True"),
        (dict(focal=(1.5, 1.0)), r"0 <= alpha <= 1"),
        (dict(anchors=[4, 2, 1]), "anchors must be an AnchorConfig"),
        (dict(loc_weight=0), "loc_weight must be a finite number > 0"),
        (dict(loc_weight=float("nan")), "loc_weight must be a finite number > 0"),
        (dict(loc_weight="20"), "loc_weight must be a finite number > 0"),
        (dict(pos_threshold=float("nan")), r"pos_threshold must be in \[0, 1\]"),
        (dict(pos_threshold=-1.0), r"pos_threshold must be in \[0, 1\]"),
        (dict(pos_threshold=2.0), r"pos_threshold must be in \[0, 1\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(anchors=None, num_classes=3)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        SSDLoss(**args)


def test_num_classes_is_a_whole_number():
    # int(x) == x took True as 1 class (and NaN raised int()'s own error, naming nothing).
    for bad in (True, np.True_, 2.5, float("nan"), "3", 0):
        with pytest.raises(ValueError, match=rf"SSDLoss: num_classes must be a positive integer, got {bad!r}"):
            SSDLoss(None, bad)
    for whole in (3.0, np.int64(3)):
        loss = SSDLoss(None, whole)
        assert loss.num_classes == 3 and type(loss.num_classes) is int


def test_y_true_for_another_number_of_images_is_refused():
    """One image's targets must not broadcast over a batch of predictions."""
    loss = SSDLoss(AnchorConfig.single_grid(4), 3)
    y_pred = np.zeros((2, 16, 8), np.float32)
    with pytest.raises(ValueError, match="y_true has 1 images but y_pred 2"):
        loss(GOOD, y_pred)
    graph = tf.function(loss.__call__, input_signature=[tf.TensorSpec([None, None, 5]), tf.TensorSpec([None, 16, 8])])
    graph(tf.constant(np.repeat(GOOD, 2, axis=0)), y_pred)  # fine
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_true and y_pred hold different numbers of images"):
        graph(tf.constant(GOOD), y_pred)
