"""Backbones: ResNet34 equal to torchvision's structure (plain-torch transcription), weight
files (torchvision state dicts as .safetensors without torch, .pth with torch, Keras
.weights.h5), the ImageNet download (monkeypatched: no network), keras.applications bodies,
the tiny body, layer groups, errors."""

import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from ssd_keras import backbones
from ssd_keras.backbones import ImagePreprocessing, get_backbone, layer_groups, load_torchvision_resnet34

# torch (requirements-test.txt) is the independent reference; without it the torch-only tests
# skip and the safetensors paths are still tested.
try:
    import torch

    from ssd_keras.reference import lesson_model as L
except ImportError:
    torch = L = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (requirements-test.txt)")

IMAGENET_URL = "https://huggingface.co/timm/resnet34.tv_in1k/resolve/main/model.safetensors"


def _torchvision_resnet34_shapes():
    """torchvision resnet34's state dict {key: shape}, written out from its architecture
    (BasicBlock, [3, 4, 6, 3]), `num_batches_tracked` and `fc.*` included."""

    def bn(p, c):
        return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,),
                f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()}

    shapes = {"conv1.weight": (64, 3, 7, 7), **bn("bn1", 64)}
    cin = 64
    for layer, (cout, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (cout, cin if b == 0 else cout, 3, 3)
            shapes.update(bn(f"{p}.bn1", cout))
            shapes[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            shapes.update(bn(f"{p}.bn2", cout))
            if b == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                shapes.update(bn(f"{p}.downsample.1", cout))
        cin = cout
    shapes.update({"fc.weight": (1000, 512), "fc.bias": (1000,)})
    return shapes


def _torchvision_state_dict(seed=0):
    """A state dict in exactly torchvision's format (float32 tensors, int64 scalar
    `num_batches_tracked`, `fc.*`), as numpy arrays with random weights and BN statistics."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in _torchvision_resnet34_shapes().items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(123, dtype=np.int64)
            continue
        v = rng.standard_normal(shape).astype(np.float32) * (0.05 if len(shape) == 4 else 0.2)
        if key.endswith("running_var"):
            v = np.abs(v) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # BN gamma near 1
            v = v + 1
        sd[key] = v
    return sd


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    """The same torchvision-format state dict as `.safetensors` (safetensors.numpy.save_file)
    and, with torch, as `.pth` (torch.save of tensors)."""
    sd = _torchvision_state_dict()
    folder = tmp_path_factory.mktemp("w")
    files = {"sd": sd, "safetensors": str(folder / "resnet34.safetensors")}
    save_file(sd, files["safetensors"])
    if torch is not None:
        files["pth"] = str(folder / "resnet34.pth")
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, files["pth"])
    return files


@pytest.fixture(scope="module")
def resnet34(torchvision_files):
    # Built once for the module, from the local safetensors file (no torch on this path).
    return get_backbone("resnet34", weights=torchvision_files["safetensors"], input_shape=(224, 224, 3))


def _features(body, seed=0, size=224):
    images = np.random.RandomState(seed).uniform(0, 255, (1, size, size, 3)).astype("float32")
    return images, keras.ops.convert_to_numpy(body(images, training=False))


@pytest.fixture
def no_torch(monkeypatch):
    """`import torch` fails, as on a machine without PyTorch."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_state_dict_format_is_torchvisions():
    # The hand-written format used by the files below is the reference body's state dict.
    shapes = _torchvision_resnet34_shapes()
    if L is not None:
        ref = {k: tuple(v.shape) for k, v in L.resnet34_body().state_dict().items()}
        assert ref == {k: s for k, s in shapes.items() if not k.startswith("fc.")}
        assert list(shapes) == L.resnet34_state_dict_keys(include_fc=True)
    assert sum(int(np.prod(s)) for k, s in shapes.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 21_797_672


@needs_torch
def test_safetensors_weights_give_the_torch_reference_features(resnet34, torchvision_files):
    sd = torchvision_files["sd"]
    tbody = L.resnet34_body()
    missing, unexpected = tbody.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=False)
    assert missing == [] and sorted(unexpected) == ["fc.bias", "fc.weight"]
    images, got = _features(resnet34)
    with torch.no_grad():
        expected = tbody.eval()(L.normalize_images(images)).numpy().transpose(0, 2, 3, 1)
    assert got.shape == (1, 7, 7, 512)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_safetensors_weights_land_in_the_right_layers(resnet34, torchvision_files):
    sd = torchvision_files["sd"]
    np.testing.assert_array_equal(
        resnet34.get_layer("layer4_2_conv2").kernel.numpy(), sd["layer4.2.conv2.weight"].transpose(2, 3, 1, 0)
    )
    bn = resnet34.get_layer("layer2_0_downsample_1")
    for w, key in zip(bn.weights, ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(w.numpy(), sd[f"layer2.0.downsample.1.{key}"])


@needs_torch
def test_pth_file_loads_the_same_weights(resnet34, torchvision_files):
    from_pth = get_backbone("resnet34", weights=torchvision_files["pth"], input_shape=(224, 224, 3))
    for a, b in zip(from_pth.weights, resnet34.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_pth_without_torch_says_what_to_install(tmp_path, no_torch):
    path = tmp_path / "resnet34-333f7ec4.pth"
    path.write_bytes(b"a pickle")
    with pytest.raises(ImportError, match=r"resnet34-333f7ec4\.pth.*pip install torch.*safetensors"):
        get_backbone("resnet34", weights=str(path), input_shape=(64, 64, 3))


def test_imagenet_downloads_safetensors_without_torch(monkeypatch, torchvision_files, resnet34, no_torch):
    calls = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        calls.append(dict(fname=fname, origin=origin, **kwargs))
        return torchvision_files["safetensors"]

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    from ssd_keras.model import build_ssd

    model = build_ssd(3, backbone="resnet34", weights="imagenet", image_size=224)
    assert calls == [dict(fname="resnet34.tv_in1k.safetensors", origin=IMAGENET_URL, cache_subdir="models")]
    for a, b in zip(model.get_layer("backbone").weights, resnet34.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_imagenet_download_failure_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError, match=r"could not download .*resnet34.*tv_in1k.*pass weights=None or a local file"):
        get_backbone("resnet34", weights="imagenet", input_shape=(64, 64, 3))


def test_state_dict_errors_name_the_key_and_leave_the_body_untouched(resnet34, torchvision_files, tmp_path):
    sd = torchvision_files["sd"]
    before = [w.numpy().copy() for w in resnet34.weights]

    def fails(bad, match):
        with pytest.raises(ValueError, match=match):
            load_torchvision_resnet34(resnet34, bad)

    fails({k: v for k, v in sd.items() if k != "layer2.0.downsample.0.weight"},
          r"missing keys \['layer2\.0\.downsample\.0\.weight'\]")
    fails({k: v for k, v in sd.items() if k != "bn1.running_var"}, r"missing keys \['bn1\.running_var'\]")
    fails(dict(sd, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), "float32")}),
          r"unexpected keys \['layer5\.0\.conv1\.weight'\]")
    fails(dict(sd, **{"layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), "float32")}),
          r"'layer1\.0\.conv1\.weight' has shape \(64, 64, 1, 1\).*layer1_0_conv1.*\(64, 64, 3, 3\)")
    fails(dict(sd, **{"layer3.1.bn2.bias": np.zeros(7, "float32")}), r"'layer3\.1\.bn2\.bias' has shape \(7,\)")
    fails(dict(sd, **{"conv1.weight": np.zeros(64, "float32")}), r"'conv1\.weight' has shape \(64,\).*\(64, 3, 7, 7\)")
    for w, b in zip(resnet34.weights, before):  # checked before anything is assigned
        np.testing.assert_array_equal(w.numpy(), b, err_msg=w.path)

    # Through a file, the error names the file too.
    path = str(tmp_path / "truncated.safetensors")
    save_file({k: v for k, v in sd.items() if not k.startswith("layer4.")}, path)
    with pytest.raises(ValueError, match=r"truncated\.safetensors.*missing keys \['layer4\.0\.bn1\.bias'"):
        get_backbone("resnet34", weights=path, input_shape=(64, 64, 3))


def test_weights_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        get_backbone("resnet34", weights=str(tmp_path / "nope.safetensors"), input_shape=(64, 64, 3))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(ValueError, match=r"could not read .*corrupt\.safetensors.* as safetensors"):
        get_backbone("resnet34", weights=str(corrupt), input_shape=(64, 64, 3))
    unknown = tmp_path / "resnet34.npz"
    unknown.write_bytes(b"")
    with pytest.raises(ValueError, match=r"resnet34\.npz.*expected a Keras '\.weights\.h5' file or a torchvision"):
        get_backbone("resnet34", weights=str(unknown), input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match=r"corrupt\.safetensors.*resnet34 only"):
        get_backbone("tiny", weights=str(corrupt), input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match=r"resnet34\.npz.*unknown format"):
        backbones.read_state_dict(unknown)


def test_resnet34_layers_are_torchvision_state_dict_keys(resnet34):
    prefixes = {k.rsplit(".", 1)[0].replace(".", "_") for k in _torchvision_resnet34_shapes() if not k.startswith("fc.")}
    weighted = {layer.name for layer in resnet34.layers if layer.weights}
    assert weighted == prefixes
    assert resnet34.name == "backbone"
    bn = resnet34.get_layer("layer3_2_bn1")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9
    # 21,797,672 params in torchvision's resnet34, minus fc; BN moving stats are Keras weights too.
    trainable = sum(int(np.prod(w.shape)) for w in resnet34.trainable_weights)
    assert trainable == 21_797_672 - 513_000


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


def test_tiny8_is_tinys_first_three_stages():
    body = get_backbone("tiny8", input_shape=(64, 64, 3))
    assert body.output.shape == (None, 8, 8, 96)  # image / 8
    tiny = get_backbone("tiny", input_shape=(64, 64, 3))
    kept = [l.name for l in tiny.layers if not l.name.startswith("stage4")]
    assert [l.name for l in body.layers] == kept
    # Its weights load into those layers of `tiny` and give tiny's stage-3 output.
    for layer in body.layers:
        tiny.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    stage3 = keras.Model(tiny.inputs, tiny.get_layer("stage3_b_relu").output)
    np.testing.assert_allclose(body.predict(x, verbose=0), stage3.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    early, late, _ = layer_groups(body)
    assert {l.name.split("_")[0] for l in early if l.weights} == {"stage1"}
    assert {l.name.split("_")[0] for l in late if l.weights} == {"stage2", "stage3"}
    with pytest.raises(ValueError, match="the 'tiny8' body has no ImageNet weights"):
        get_backbone("tiny8", weights="imagenet")


def test_resnet34_groups_are_the_lessons_split(resnet34):
    early, late, head = layer_groups(resnet34)
    early_w = {l.name.split("_")[0] for l in early if l.weights}
    late_w = {l.name.split("_")[0] for l in late if l.weights}
    assert early_w == {"conv1", "bn1", "layer1", "layer2"} and late_w == {"layer3", "layer4"}
    assert early[0].name == "images" and head == []


@needs_torch
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
    assert backbones.BACKBONES == ("resnet34", "resnet50", "mobilenetv2", "tiny", "tiny8")


# --- FusedBatchNorm: the same layer as keras.layers.BatchNormalization, one kernel ---------------


def _bn_pair(channels=6, seed=0, **kwargs):
    """A Keras BatchNormalization and a FusedBatchNorm with the same (random) weights."""
    rng = np.random.default_rng(seed)
    kw = dict(momentum=0.9, epsilon=1e-5, **kwargs)
    ref, fused = keras.layers.BatchNormalization(**kw), backbones.FusedBatchNorm(**kw)
    for layer in (ref, fused):
        layer.build((None, 5, 7, channels))
    values = [rng.normal(size=channels), rng.normal(size=channels), rng.normal(size=channels),
              rng.uniform(0.5, 2.0, channels)]
    for layer in (ref, fused):
        layer.set_weights([v.astype("float32") for v in values])
    return ref, fused


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_fused_batch_norm_equals_keras_in_training(mode):
    import tensorflow as tf

    ref, fused = _bn_pair()
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 5, 7, 6)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(4, 5, 7, 6)).astype("float32"))
    results = []
    for layer in (ref, fused):

        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                s = tf.reduce_sum(y * upstream)
            return y, tape.gradient(s, [x, layer.gamma, layer.beta])

        fn = tf.function(step) if mode == "function" else step
        y, grads = fn(x)
        y, grads = fn(x)  # twice: the moving statistics move twice
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in layer.weights]))
    (y0, g0, w0), (y1, g1, w1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0):  # dx, dgamma, dbeta
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    # Moving mean / variance: Keras 3's rule (momentum 0.9, biased batch variance).
    for a, b in zip(w1, w0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And by hand, from the batch: m <- 0.9 m + 0.1 batch (applied twice with the same batch).
    xm = x.numpy().reshape(-1, 6).astype(np.float64)
    _, fresh = _bn_pair()
    m0, v0 = fresh.moving_mean.numpy(), fresh.moving_variance.numpy()
    np.testing.assert_allclose(w1[2], 0.81 * m0 + 0.19 * xm.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w1[3], 0.81 * v0 + 0.19 * xm.var(0), rtol=1e-5, atol=1e-6)


def test_fused_batch_norm_inference_and_frozen_use_moving_stats():
    import tensorflow as tf

    ref, fused = _bn_pair()
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 5, 7, 6)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=False), ref(x, training=False), rtol=1e-6, atol=1e-6)
    before = [w.numpy() for w in fused.weights]
    fused.trainable = ref.trainable = False  # frozen: inference mode even when training
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), rtol=1e-6, atol=1e-6)
    for a, b in zip(fused.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)


def test_fused_batch_norm_other_ranks_fall_back():
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = backbones.FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    x = np.random.default_rng(3).normal(size=(8, 6)).astype("float32")
    np.testing.assert_allclose(fused(x, training=True), ref(x, training=True), rtol=1e-5, atol=1e-6)


def test_bodies_use_fused_batch_norm_and_files_interchange(tmp_path, monkeypatch):
    """Weights saved with Keras' BatchNormalization load into FusedBatchNorm bodies and back;
    a whole .keras model saved with either loads and predicts the same."""
    monkeypatch.setattr(backbones, "FUSED_BN", False)
    plain = get_backbone("tiny", input_shape=(32, 32, 3))
    monkeypatch.setattr(backbones, "FUSED_BN", True)
    fused = get_backbone("tiny", input_shape=(32, 32, 3))
    bns = [layer for layer in fused.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is backbones.FusedBatchNorm for layer in bns)
    assert not any(isinstance(layer, backbones.FusedBatchNorm) for layer in plain.layers)
    assert [w.path for w in plain.weights] == [w.path for w in fused.weights]
    rng = np.random.default_rng(4)
    plain.set_weights([rng.normal(size=w.shape).astype("float32") if "variance" not in w.path
                       else rng.uniform(0.5, 2, w.shape).astype("float32") for w in plain.weights])
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    plain.save_weights(tmp_path / "plain.weights.h5")
    fused.load_weights(tmp_path / "plain.weights.h5")
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-4, atol=1e-4)
    fused.save_weights(tmp_path / "fused.weights.h5")
    monkeypatch.setattr(backbones, "FUSED_BN", False)
    again = get_backbone("tiny", input_shape=(32, 32, 3))
    again.load_weights(tmp_path / "fused.weights.h5")
    for a, b in zip(again.weights, fused.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for model, name in ((plain, "plain.keras"), (fused, "fused.keras")):
        model.save(tmp_path / name)
        loaded = keras.saving.load_model(tmp_path / name)
        assert type(loaded.get_layer(bns[0].name)) is type(model.get_layer(bns[0].name))
        np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=1e-6, atol=1e-6)
