"""The plain-PyTorch lesson model: torchvision-compatible names, the lesson's shapes, Keras parity."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (requirements-test.txt) is needed for the lesson model")

from ssd_keras.reference import lesson_model as L  # noqa: E402


def test_body_state_dict_keys_are_torchvision_resnet34():
    body = L.resnet34_body()
    keys = list(body.state_dict())
    expected = L.resnet34_state_dict_keys()
    assert keys == expected
    # Spot checks written from torchvision's resnet.py, independent of the helper above.
    assert "layer1.0.conv1.weight" in keys
    assert "layer2.0.downsample.0.weight" in keys and "layer2.0.downsample.1.running_var" in keys
    assert "layer1.0.downsample.0.weight" not in keys  # 64 -> 64, stride 1: identity shortcut
    assert "layer4.2.bn2.num_batches_tracked" in keys and "layer4.3.conv1.weight" not in keys
    assert sum(k.endswith("conv1.weight") or k.endswith("conv2.weight") for k in keys) == 1 + 2 * 16
    # torchvision resnet34 has 21,797,672 parameters; the fc layer (512*1000 + 1000) is cut off.
    assert sum(p.numel() for p in body.parameters()) == 21_797_672 - 513_000


def test_torchvision_style_state_dict_loads_with_only_fc_left_over():
    sd = L.resnet34_body().state_dict()
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in sd.items()}
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    body = L.resnet34_body()
    missing, unexpected = body.load_state_dict(sd, strict=False)
    assert missing == [] and sorted(unexpected) == ["fc.bias", "fc.weight"]
    assert torch.equal(body.layer3[5].conv2.weight, sd["layer3.5.conv2.weight"])


def test_body_output_is_7x7_at_224():
    body = L.resnet34_body().eval()
    with torch.no_grad():
        out = body(torch.zeros(1, 3, 224, 224))
    assert tuple(out.shape) == (1, 512, 7, 7)


@pytest.mark.parametrize("multi,k,anchors", [(True, 9, 189), (False, 1, 16)])
def test_lesson_ssd_shapes_and_bias(multi, k, anchors):
    model = L.LessonSSD(num_classes=20, k=k, multi=multi).eval()
    with torch.no_grad():
        clas, bbox = model(torch.randn(2, 3, 224, 224))
    assert tuple(clas.shape) == (2, anchors, 21) and tuple(bbox.shape) == (2, anchors, 4)
    y_pred = L.to_y_pred([clas, bbox])
    assert tuple(y_pred.shape) == (2, anchors, 25)
    assert torch.equal(y_pred[..., :4], bbox) and torch.equal(y_pred[..., 4:], clas)
    out = model.head.out1 if multi else model.head.out
    assert torch.all(out.oconv1.bias == (-4.0 if multi else -3.0))
    assert out.oconv1.out_channels == 21 * k and out.oconv2.out_channels == 4 * k


def test_multihead_keeps_the_lessons_unused_out0():
    head = L.LessonSSD(num_classes=3, k=9).head
    assert isinstance(head.out0, L.OutConv)
    head.eval()
    x = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        before = head(x)
        head.out0.oconv1.weight.add_(1.0)  # unused in forward: no effect
        after = head(x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_flatten_conv_order_is_cells_row_major_then_k():
    # [B=1, k*n = 2*3, H=2, W=2]; channel c at cell (i, j) = 100*c + 10*i + j.
    c, i, j = np.meshgrid(np.arange(6), np.arange(2), np.arange(2), indexing="ij")
    x = torch.tensor(100 * c + 10 * i + j, dtype=torch.float32)[None]
    out = L.flatten_conv(x, k=2)
    assert tuple(out.shape) == (1, 8, 3)
    # Row 0: cell (0,0), scale 0 -> channels 0..2; row 1: cell (0,0), scale 1 -> 3..5;
    # row 2: cell (0,1), scale 0.
    assert out[0, 0].tolist() == [0, 100, 200]
    assert out[0, 1].tolist() == [300, 400, 500]
    assert out[0, 2].tolist() == [1, 101, 201]
    assert out[0, 7].tolist() == [311, 411, 511]


def test_stdconv_is_relu_then_batchnorm():
    m = L.StdConv(2, 2, stride=1, drop=0.0).eval()
    with torch.no_grad():
        m.conv.weight.zero_()
        m.conv.bias.copy_(torch.tensor([-1.0, 2.0]))
        m.bn.running_mean.copy_(torch.tensor([0.5, 0.5]))
        m.bn.running_var.fill_(1.0 - m.bn.eps)
        out = m(torch.zeros(1, 2, 3, 3))
    # ReLU first: channel 0 -> 0 -> (0 - 0.5); channel 1 -> 2 -> (2 - 0.5).
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-0.5, 1.5]))


def test_count_flops_matches_hand_count():
    flops = L.count_flops(num_classes=20, k=9, multi=True, image_size=224)["forward_flops_per_image"]
    # resnet34 body: conv1 + 16 BasicBlocks (3x3 convs) + 3 downsample 1x1 convs, multiply-adds.
    macs = 112 * 112 * 64 * 3 * 49
    for ch, hw, n in ((64, 56, 3), (128, 28, 4), (256, 14, 6), (512, 7, 3)):
        cin_first = ch if ch == 64 else ch // 2
        macs += hw * hw * ch * 9 * (cin_first + ch)  # first block: conv1 (maybe strided) + conv2
        macs += (n - 1) * 2 * hw * hw * ch * ch * 9
        if ch != 64:
            macs += hw * hw * ch * cin_first  # downsample 1x1
    # head: sconv0 7x7 512->256, sconv1 4x4, sconv2 2x2, sconv3 1x1 (256->256), OutConvs (21*9 + 4*9 = 225).
    macs += 49 * 256 * 512 * 9 + (16 + 4 + 1) * 256 * 256 * 9 + (16 + 4 + 1) * 225 * 256 * 9
    assert flops == 2 * macs


def test_normalize_images():
    img = np.full((1, 2, 2, 3), 255.0, np.float32)
    x = L.normalize_images(img)
    assert tuple(x.shape) == (1, 3, 2, 2)
    assert np.allclose(x[0, :, 0, 0].numpy(), (1 - np.array(L.IMAGENET_MEAN)) / np.array(L.IMAGENET_STD))


def _bench_train_step():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "train_step.py"
    spec = importlib.util.spec_from_file_location("bench_train_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- weight transfer to the Keras model (build_ssd) ---------------------------------------------


def _randomise_batchnorm(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so that copying them matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model


@pytest.mark.parametrize("multi", [True, False], ids=["multi_k9", "single_k1"])
def test_keras_model_with_copied_weights_matches_torch(multi):
    from ssd_keras import AnchorConfig
    from ssd_keras.model import build_ssd

    torch.manual_seed(0)
    k = 9 if multi else 1
    tm = _randomise_batchnorm(L.LessonSSD(num_classes=3, k=k, multi=multi)).eval()
    anchors = AnchorConfig() if multi else AnchorConfig.single_grid(4)
    # 224: the lesson's size; the torch head assumes the 7x7 body map.
    km = build_ssd(3, anchors, backbone="resnet34", weights=None, image_size=224)
    assert L.copy_weights_to_keras(tm, km) is km
    x = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    y_keras = np.asarray(km(x, training=False))
    with torch.no_grad():
        y_torch = L.to_y_pred(tm(L.normalize_images(x))).numpy()
    assert y_keras.shape == y_torch.shape == (2, anchors.num_anchors, 4 + 3 + 1)
    assert np.abs(y_torch).max() > 1.0  # not trivially small outputs
    np.testing.assert_allclose(y_keras, y_torch, rtol=1e-4, atol=5e-4)
    if multi:
        # The benchmark's FLOP count, read from the traced Keras graph, agrees with the torch one
        # (the unused out0 never runs, so neither counts it).
        flops = _bench_train_step().keras_conv_flops(km)
        assert flops == L.count_flops(num_classes=3, k=9, multi=True, image_size=224)["forward_flops_per_image"]

    # The wrong head type is refused with the layer names, not a shape error deep inside.
    other = L.LessonSSD(num_classes=3, k=k, multi=not multi)
    with pytest.raises(ValueError, match="head layers differ"):
        L.copy_weights_to_keras(other, km)
    with pytest.raises(ValueError, match="head.out|head layers differ"):
        L.copy_weights_to_keras(L.LessonSSD(num_classes=4, k=k, multi=multi), km)
