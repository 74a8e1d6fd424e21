"""The head layers against the lesson's PyTorch head (ssd_keras.reference.lesson_model), shapes,
bias init, serialisation and error messages."""

import keras
import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig
from ssd_keras.layers import (GridsUnreachableError, OutConv, SSDHead, SSDMultiHead, StdConv, flatten_conv,
                              plan_head)

torch = pytest.importorskip("torch", reason="torch (requirements-test.txt) is the lesson reference")
from ssd_keras.reference import lesson_model as L  # noqa: E402

RNG = np.random.RandomState(0)


def _t(a):
    return torch.as_tensor(np.ascontiguousarray(a))


def _nchw(x):
    return _t(x.transpose(0, 3, 1, 2))


def _randomise_torch(module, seed=0):
    """Random weights and BatchNorm statistics, so parity covers every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            v = torch.randn(t.shape, generator=g) * 0.2
            if name.endswith("running_var"):
                v = v.abs() + 0.5
            t.copy_(v)
    return module.eval()


def _copy_conv(tconv, kconv):
    kconv.set_weights([tconv.weight.detach().numpy().transpose(2, 3, 1, 0), tconv.bias.detach().numpy()])


def _copy_stdconv(t, k):
    _copy_conv(t.conv, k.conv)
    bn = t.bn
    k.bn.set_weights([p.detach().numpy() for p in (bn.weight, bn.bias, bn.running_mean, bn.running_var)])


def _copy_outconv(t, k):
    _copy_conv(t.oconv1, k.oconv1)
    _copy_conv(t.oconv2, k.oconv2)


def _copy_head(t, k):
    for name, layer in k.lesson_layers().items():
        (_copy_stdconv if isinstance(layer, StdConv) else _copy_outconv)(getattr(t, name), layer)


def test_flatten_conv_order_matches_lesson():
    k, n = 3, 5
    x = RNG.randn(2, 4, 3, k * n).astype("float32")  # non-square to catch an H/W mix-up
    ours = keras.ops.convert_to_numpy(flatten_conv(x, k))
    lesson = L.flatten_conv(_nchw(x), k).numpy()
    assert ours.shape == (2, 4 * 3 * k, n)
    np.testing.assert_array_equal(ours, lesson)
    # Hand check: anchor index = (row * W + col) * k + j.
    np.testing.assert_array_equal(ours[1, (2 * 3 + 1) * k + 2], x[1, 2, 1, 2 * n : 3 * n])


def test_flatten_conv_rejects_channels_not_multiple_of_k():
    with pytest.raises(ValueError, match="multiple of k"):
        flatten_conv(np.zeros((1, 2, 2, 10), "float32"), 3)


@pytest.mark.parametrize("size,stride", [(7, 2), (4, 2), (8, 2), (7, 1)])
def test_stdconv_equals_lesson_stdconv(size, stride):
    # Stride 2 on an even size is where Keras "same" padding would differ from torch's pad=1.
    tconv = _randomise_torch(L.StdConv(6, 8, stride=stride))
    kconv = StdConv(8, strides=stride)
    x = RNG.randn(2, size, size, 6).astype("float32")
    kconv.build(x.shape)
    _copy_stdconv(tconv, kconv)
    with torch.no_grad():
        expected = tconv(_nchw(x)).numpy().transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(kconv(x, training=False))
    assert got.shape == expected.shape == (2, -(-size // stride), -(-size // stride), 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_stdconv_batchnorm_settings_are_pytorchs():
    conv = StdConv(4)
    assert conv.bn.epsilon == 1e-5 and conv.bn.momentum == 0.9  # torch momentum 0.1
    conv2 = StdConv.from_config(StdConv(16, strides=1, dropout=0.3).get_config())
    assert (conv2.filters, conv2.strides, conv2.dropout) == (16, 1, 0.3)


def test_outconv_bias_init_and_layout():
    out = OutConv(k=3, num_classes=4, bias=-3.0)
    x = RNG.randn(2, 2, 2, 8).astype("float32")
    y = keras.ops.convert_to_numpy(out(x))
    assert y.shape == (2, 2 * 2 * 3, 4 + 4 + 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out.oconv1.bias), np.full(15, -3.0, "float32"))
    assert keras.ops.convert_to_numpy(out.oconv2.bias).std() > 0  # torch's default, not -3
    # Zero input: outputs are the biases, so every class logit is exactly -3.
    y0 = keras.ops.convert_to_numpy(out(np.zeros_like(x)))
    np.testing.assert_array_equal(y0[..., 4:], -3.0)


def test_outconv_equals_lesson_outconv_boxes_first():
    tout = _randomise_torch(L.OutConv(k=9, nin=8, bias=-4.0, num_classes=3))
    kout = OutConv(9, 3, -4.0)
    x = RNG.randn(2, 4, 4, 8).astype("float32")
    kout.build(x.shape)
    _copy_outconv(tout, kout)
    with torch.no_grad():
        expected = L.to_y_pred(tout(_nchw(x))).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kout(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("multi", [False, True])
def test_heads_equal_lesson_heads(multi):
    c = 3
    if multi:
        anchors, thead = AnchorConfig(), L.SSD_MultiHead(9, -4.0, c)
        khead = SSDMultiHead(c, anchors)
    else:
        anchors, thead = AnchorConfig.single_grid(4), L.SSD_Head(1, -3.0, c)
        khead = SSDHead(c, anchors)
    _randomise_torch(thead)
    x = RNG.randn(2, 7, 7, 512).astype("float32")
    khead.build(x.shape)
    _copy_head(thead, khead)
    with torch.no_grad():
        expected = L.to_y_pred(thead(_nchw(x))).numpy()
    got = keras.ops.convert_to_numpy(khead(x, training=False))
    assert got.shape == (2, anchors.num_anchors, 4 + c + 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_head_layer_names_are_the_lessons():
    single = SSDHead(2)
    single.build((None, 7, 7, 16))
    assert list(single.lesson_layers()) == ["sconv0", "sconv2", "out"]
    multi = SSDMultiHead(2)
    multi.build((None, 7, 7, 16))
    assert list(multi.lesson_layers()) == ["sconv0", "sconv1", "sconv2", "sconv3", "out1", "out2", "out3"]
    assert multi.sconv0.dropout == 0.4 and single.sconv0.dropout == 0.1  # lesson's drop values


@pytest.mark.parametrize(
    "anchors,feature,expected",
    [
        (AnchorConfig.single_grid(4), 7, 16),
        (AnchorConfig.single_grid(4), 4, 16),  # the map is already 4x4: no stride-2 conv
        (AnchorConfig(), 7, 189),
        (AnchorConfig(grids=(8, 4, 2, 1), zooms=(1.0,), ratios=((1.0, 1.0),)), 16, 85),
        (AnchorConfig(grids=(2, 1)), 4, 45),
    ],
)
def test_head_output_anchor_count(anchors, feature, expected):
    head = (SSDHead if len(anchors.grids) == 1 else SSDMultiHead)(5, anchors)
    y = head(np.zeros((1, feature, feature, 16), "float32"))
    assert y.shape == (1, expected, 10) and expected == anchors.num_anchors


def test_plan_head_halving():
    assert plan_head(7, (4, 2, 1)) == [1, 1, 1]
    assert plan_head(14, (4, 2, 1)) == [2, 1, 1]  # 14 -> 7 -> 4
    assert plan_head(4, (4, 1)) == [0, 2]


def test_head_errors_name_the_sizes():
    with pytest.raises(ValueError, match=r"5x5 feature map .*grids=\(4, 2, 1\)"):
        SSDMultiHead(3)(np.zeros((1, 5, 5, 8), "float32"))
    with pytest.raises(GridsUnreachableError, match=r"3x3 feature map .*image_size=96"):
        plan_head(3, (4, 2, 1), image_size=96)
    # The grids the map can reach, to choose from: 5 -> 3 -> 2 -> 1.
    with pytest.raises(GridsUnreachableError, match=r"This map reaches the grids \(5, 3, 2, 1\): choose grids"):
        plan_head(5, (4, 2, 1))
    assert issubclass(GridsUnreachableError, ValueError)
    with pytest.raises(ValueError, match="one grid"):
        SSDHead(3, AnchorConfig())
    with pytest.raises(ValueError, match="square"):
        SSDMultiHead(3)(np.zeros((1, 7, 8, 8), "float32"))
    with pytest.raises(ValueError, match="must be known"):
        SSDMultiHead(3).build((None, None, None, 8))


def test_head_config_round_trip():
    head = SSDMultiHead(7, AnchorConfig(grids=(2, 1)), bias=-2.0, dropout=0.1, name="h")
    clone = SSDMultiHead.from_config(head.get_config())
    assert clone.anchors == head.anchors and (clone.num_classes, clone.bias, clone.dropout) == (7, -2.0, 0.1)
    single = SSDHead.from_config(SSDHead(2, conv_dropout=0.2).get_config())
    assert single.conv_dropout == 0.2 and single.anchors == AnchorConfig.single_grid(4)
