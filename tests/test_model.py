"""build_ssd: shapes, training with SSDLoss, `.keras` round trips, weights
files, mixed precision, layer groups, errors. Tiny body at 64 px to stay fast."""

import keras
import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig
from ssd_keras.backbones import layer_groups
from ssd_keras.layers import SSDHead, SSDMultiHead
from ssd_keras.losses import SSDLoss
from ssd_keras.model import build_ssd

SIZE, C = 64, 3


def _images(n=4, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _targets(n=4, seed=0):
    """y_true [n, 3, 5]: 1–3 random boxes per image, class -1 padding."""
    rng = np.random.RandomState(seed)
    y = np.zeros((n, 3, 5), "float32")
    y[..., 4] = -1
    for i in range(n):
        for j in range(1 + i % 3):
            tl = rng.uniform(0, 0.6, 2)
            y[i, j, :2], y[i, j, 2:4] = tl, tl + rng.uniform(0.15, 0.4, 2)
            y[i, j, 4] = rng.randint(C)
    return y


@pytest.fixture(scope="module")
def model():
    return build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE)


def test_output_shape_dtype_and_structure(model):
    y = model.predict(_images(2), verbose=0)
    assert y.shape == (2, 189, 4 + C + 1) and y.dtype == np.float32
    assert [l.name for l in model.layers] == ["images", "backbone", "head", "y_pred"]
    assert isinstance(model.get_layer("head"), SSDMultiHead)
    assert model.get_layer("head").bias == -4.0 and model.get_layer("head").dropout == 0.4


def test_single_grid_anchors_pick_the_single_head():
    m = build_ssd(C, AnchorConfig.single_grid(4), backbone="tiny", image_size=SIZE)
    head = m.get_layer("head")
    assert isinstance(head, SSDHead) and (head.bias, head.dropout, head.conv_dropout) == (-3.0, 0.25, 0.1)
    m = build_ssd(C, AnchorConfig.single_grid(4), backbone="tiny", image_size=SIZE, conv_dropout=0.0)
    assert m.get_layer("head").conv_dropout == 0.0 and m.get_layer("head").sconv0.drop.rate == 0.0
    with pytest.raises(ValueError, match="conv_dropout=0.2 applies to head='single' only"):
        build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE, conv_dropout=0.2)
    assert m.output.shape == (None, 16, 4 + C + 1)


def test_head_filters_sets_the_width_of_every_head_conv(tmp_path):
    m = build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE, head_filters=32)
    head = m.get_layer("head")
    assert head.filters == 32
    convs = [w for w in head.weights if w.path.endswith("conv/kernel")]
    assert convs and all(w.shape[-1] == 32 for w in convs)
    # Lesson's 256: sconv0 alone has 128*256*9 weights more than the 32-wide head in total.
    assert build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE).count_params() > m.count_params()
    m.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").get_layer("head").filters == 32


def test_fit_lowers_the_loss():
    # Fresh model, graph-mode fit (the users' path), the same batch every step.
    anchors = AnchorConfig()
    m = build_ssd(C, anchors, backbone="tiny", image_size=SIZE)
    m.compile(keras.optimizers.Adam(1e-3), loss=SSDLoss(anchors, C))
    x, y = _images(8), _targets(8)
    losses = m.fit(x, y, batch_size=8, epochs=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_keras_round_trip_same_predictions(model, tmp_path):
    x = _images(2, seed=1)
    path = str(tmp_path / "ssd.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # custom layers registered: no custom_objects
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))


def test_whole_model_weights_file(model, tmp_path):
    path = str(tmp_path / "ssd.weights.h5")
    model.save_weights(path)
    other = build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE, weights=path)
    x = _images(1, seed=2)
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(model(x)))


def test_mixed_precision_output_is_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        m = build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE)
        y = m(_images(1))
        assert m.get_layer("head").compute_dtype == "float16"
        assert y.dtype == "float32" and np.all(np.isfinite(np.asarray(y)))
    finally:
        keras.config.set_dtype_policy(policy)


def test_layer_groups_of_the_model(model):
    early, late, head = layer_groups(model)
    assert [l.name for l in head] == ["head", "y_pred"]
    assert early and late
    assert not set(map(id, early)) & set(map(id, late))


def test_custom_backbone_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    feats = keras.layers.Conv2D(8, 3, strides=16, padding="same", name="c")(inputs)
    body = keras.Model(inputs, feats, name="my_body")
    m = build_ssd(C, AnchorConfig(grids=(4, 2)), backbone=body, image_size=SIZE)
    assert m.output.shape == (None, 20 * 9, 4 + C + 1)
    early, late, head = layer_groups(m)
    assert m.get_layer("backbone").get_layer("c") is body.get_layer("c")
    with pytest.raises(ValueError, match=r"takes \(64, 64, 3\) images but image_size=128"):
        build_ssd(C, backbone=body, image_size=128)


def test_bad_sizes_and_arguments():
    with pytest.raises(ValueError, match=r"backbone='tiny'.*3x3 feature map \(image_size=48\).*grids=\(4, 2, 1\)"):
        build_ssd(C, AnchorConfig(), backbone="tiny", image_size=48)
    with pytest.raises(ValueError, match="head must be"):
        build_ssd(C, backbone="tiny", image_size=SIZE, head="double")
    with pytest.raises(ValueError, match="one grid"):
        build_ssd(C, AnchorConfig(), backbone="tiny", image_size=SIZE, head="single")
    # Sizes and counts are whole numbers: int() would cut 2.5 classes to 2 without a word.
    for kwargs, match in ((dict(num_classes=2.5), r"num_classes must be a positive integer, got 2.5"),
                          (dict(num_classes=True), r"num_classes must be a positive integer, got True"),
                          (dict(num_classes=0), r"num_classes must be a positive integer, got 0"),
                          (dict(image_size=64.5), r"image_size must be a positive integer, got 64.5"),
                          (dict(head_filters=8.5), r"head_filters must be a positive integer, got 8.5")):
        with pytest.raises(ValueError, match=rf"build_ssd: {match}"):
            build_ssd(**{"num_classes": C, "backbone": "tiny", "image_size": SIZE, **kwargs})


def test_whole_numbers_of_any_number_type_are_accepted():
    model = build_ssd(np.int64(C), backbone="tiny", image_size=float(SIZE), head_filters=np.int32(8))
    assert model.output_shape == (None, AnchorConfig().num_anchors, 4 + C + 1)
