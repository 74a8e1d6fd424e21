"""Backbones: ResNet34 equal to torchvision's structure (plain-torch transcription), weight
conversion, keras.applications bodies, the tiny body, layer groups, weights files, errors."""

import keras
import numpy as np
import pytest

from ssd_keras import backbones
from ssd_keras.backbones import ImagePreprocessing, get_backbone, layer_groups, load_torchvision_resnet34

torch = pytest.importorskip("torch", reason="torch (requirements-test.txt) is the torchvision reference")
from ssd_keras.reference import lesson_model as L  # noqa: E402


def _random_state_dict(seed=0):
    body = L.resnet34_body()
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, t in body.state_dict().items():
        if t.dtype.is_floating_point:
            t = torch.randn(t.shape, generator=g) * (0.05 if t.dim() == 4 else 0.2)
            if name.endswith("running_var"):
                t = t.abs() + 0.5
            elif name.endswith(".weight") and t.dim() == 1:  # BN gamma near 1
                t = t + 1
        sd[name] = t
    body.load_state_dict(sd)
    return body.eval(), sd


@pytest.fixture(scope="module")
def torch_body_and_file(tmp_path_factory):
    """torchvision-style resnet34 with random weights and BN statistics, saved as a .pth
    state dict with the `fc.*` keys a torchvision checkpoint has."""
    tbody, sd = _random_state_dict()
    path = str(tmp_path_factory.mktemp("w") / "resnet34.pth")
    torch.save(dict(sd, **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}), path)
    return tbody, sd, path


@pytest.fixture(scope="module")
def resnet34(torch_body_and_file):
    # Built once for the module, from the local torchvision file (the converter path).
    return get_backbone("resnet34", weights=torch_body_and_file[2], input_shape=(224, 224, 3))


def test_resnet34_equals_torchvision_structure_with_converted_weights(resnet34, torch_body_and_file):
    tbody = torch_body_and_file[0]
    images = np.random.RandomState(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        expected = tbody(L.normalize_images(images)).numpy().transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(resnet34(images, training=False))
    assert got.shape == (1, 7, 7, 512)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_resnet34_layers_are_torchvision_state_dict_keys(resnet34):
    prefixes = {k.rsplit(".", 1)[0].replace(".", "_") for k in L.resnet34_state_dict_keys()}
    weighted = {layer.name for layer in resnet34.layers if layer.weights}
    assert weighted == prefixes
    assert resnet34.name == "backbone"
    bn = resnet34.get_layer("layer3_2_bn1")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9
    # 21,797,672 params in torchvision's resnet34, minus fc; BN moving stats are Keras weights too.
    trainable = sum(int(np.prod(w.shape)) for w in resnet34.trainable_weights)
    assert trainable == 21_797_672 - 513_000


def test_converter_errors(resnet34, torch_body_and_file):
    sd = torch_body_and_file[1]
    bad = dict(sd)
    del bad["layer2.0.downsample.0.weight"]
    with pytest.raises(ValueError, match="missing layers.*layer2_0_downsample_0"):
        load_torchvision_resnet34(resnet34, bad)
    bad = dict(sd, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(ValueError, match="layer1_0_conv1"):
        load_torchvision_resnet34(resnet34, bad)
    # numpy arrays work as well as tensors
    load_torchvision_resnet34(resnet34, {k: v.numpy() for k, v in sd.items()})
    np.testing.assert_array_equal(
        resnet34.get_layer("layer4_2_conv2").kernel.numpy(),
        sd["layer4.2.conv2.weight"].numpy().transpose(2, 3, 1, 0),
    )


def test_local_weights_files(tmp_path):
    body = get_backbone("tiny", input_shape=(64, 64, 3))
    for w in body.weights:
        w.assign(np.random.RandomState(len(w.path)).randn(*w.shape).astype("float32") * 0.1 + (
            1 if "variance" in w.path else 0))
    path = str(tmp_path / "tiny.weights.h5")
    body.save_weights(path)
    x = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    loaded = get_backbone("tiny", weights=path, input_shape=(64, 64, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(body(x, training=False)))
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        get_backbone("tiny", weights=str(tmp_path / "nope.weights.h5"), input_shape=(64, 64, 3))
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="could not load .*corrupt.weights.h5.* into the 'tiny' body"):
        get_backbone("tiny", weights=str(corrupt), input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="expected a Keras '.weights.h5' file"):
        get_backbone("tiny", weights=__file__, input_shape=(64, 64, 3))


def test_imagenet_download_failure_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError, match="could not download .*resnet34.*pass weights=None or a local file"):
        get_backbone("resnet34", weights="imagenet", input_shape=(64, 64, 3))


@pytest.mark.parametrize(
    "name,mode,channels", [("resnet50", "caffe", 2048), ("mobilenetv2", "tf", 1280)]
)
def test_keras_applications_bodies(name, mode, channels):
    body = get_backbone(name, input_shape=(64, 64, 3))
    assert body.name == "backbone" and body.output.shape == (None, 2, 2, channels)
    # Normalisation inside, the application's own preprocess_input.
    pre = body.get_layer("preprocess")
    x = np.random.RandomState(0).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    reference = {"resnet50": keras.applications.resnet50, "mobilenetv2": keras.applications.mobilenet_v2}[name]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pre(x)), reference.preprocess_input(x.copy()), rtol=1e-6, atol=1e-4)
    assert pre.mode == mode
    early, late, head = layer_groups(body)
    first_late = {"resnet50": "conv4_block1_1_conv", "mobilenetv2": "block_6_depthwise"}[name]
    assert late[0].name == first_late and head == []
    assert len(early) + len(late) == len(body.layers)


def test_tiny_body_and_groups():
    body = get_backbone("tiny", input_shape=(128, 128, 3))
    assert body.output.shape == (None, 8, 8, 128)  # image / 16
    early, late, _ = layer_groups(body)
    assert {l.name.split("_")[0] for l in late if l.weights} == {"stage3", "stage4"}
    assert {l.name.split("_")[0] for l in early if l.weights} == {"stage1", "stage2"}


def test_resnet34_groups_are_the_lessons_split(resnet34):
    early, late, head = layer_groups(resnet34)
    early_w = {l.name.split("_")[0] for l in early if l.weights}
    late_w = {l.name.split("_")[0] for l in late if l.weights}
    assert early_w == {"conv1", "bn1", "layer1", "layer2"} and late_w == {"layer3", "layer4"}
    assert early[0].name == "images" and head == []


def test_torch_normalisation_matches_lesson():
    x = np.random.RandomState(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(ImagePreprocessing("torch")(x))
    np.testing.assert_allclose(got, L.normalize_images(x).numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        get_backbone("vgg16")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        get_backbone("tiny", weights="imagenet")
    with pytest.raises(ValueError, match="input_shape"):
        get_backbone("tiny", input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="mode"):
        ImagePreprocessing("bgr")
    with pytest.raises(ValueError, match="no layer named 'backbone'"):
        layer_groups(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="m"))
    assert backbones.BACKBONES == ("resnet34", "resnet50", "mobilenetv2", "tiny")
