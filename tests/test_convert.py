"""convert_lesson_model: the lesson's PyTorch SSD (module, .pth, .safetensors, fastai key
layout) → a Keras model whose outputs equal the torch model's; .safetensors without torch;
errors naming the key; the module imports without torch."""

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from ssd_keras import AnchorConfig
from ssd_keras.convert import convert_lesson_model

torch = pytest.importorskip("torch", reason="the lesson's model is the PyTorch reference (requirements-test.txt)")
from ssd_keras.reference import lesson_model as L  # noqa: E402
from test_reference_lesson_model import _randomise_batchnorm  # noqa: E402


def _lesson_model(multi, num_classes=3, seed=0):
    """A LessonSSD in eval mode with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    k = 9 if multi else 1
    model = L.LessonSSD(num_classes=num_classes, k=k, multi=multi)
    return _randomise_batchnorm(model, seed).eval()


def _numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def multi():
    return _lesson_model(multi=True)


@pytest.fixture(scope="module")
def multi_keras(multi):
    return convert_lesson_model(multi, num_classes=3, anchors=AnchorConfig())


def _assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("is_multi", [True, False], ids=["multi_k9", "single_k1"])
def test_outputs_equal_the_torch_models(is_multi, multi, multi_keras):
    tm = multi if is_multi else _lesson_model(multi=False)
    km = multi_keras if is_multi else convert_lesson_model(tm)  # num_classes, anchors read/defaulted
    x = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    y_keras = np.asarray(km(x, training=False))
    with torch.no_grad():
        y_torch = L.to_y_pred(tm(L.normalize_images(x))).numpy()
    num_anchors = 189 if is_multi else 16
    assert y_keras.shape == y_torch.shape == (2, num_anchors, 4 + 3 + 1)
    assert np.abs(y_torch).max() > 1.0  # not trivially small outputs
    # Within 1e-4 of the output scale: random weights give outputs up to ~200, where float32
    # rounding over ResNet34 + head alone is ~6e-4 (torch float32 vs float64 differs by that
    # much; the Keras model is closer to float64), so an absolute 1e-4 would test rounding.
    np.testing.assert_allclose(y_keras, y_torch, rtol=1e-4, atol=1e-4 * np.abs(y_torch).max())
    head = km.get_layer("head")
    assert head.dropout == tm.head.drop.p and head.filters == 256
    # The StdConvs' dropout too: the lesson's SSD_Head keeps 0.1 there, SSD_MultiHead its drop.
    assert head.conv_dropout == tm.head.sconv0.drop.p == (0.4 if is_multi else 0.1)


def test_a_modules_dropout_rates_are_carried_over():
    tm = _lesson_model(multi=False)
    tm.head.drop.p = 0.0
    for conv in (tm.head.sconv0, tm.head.sconv2):
        conv.drop.p = 0.0
    head = convert_lesson_model(tm).get_layer("head")
    assert (head.dropout, head.conv_dropout) == (0.0, 0.0)
    convs = [layer for name, layer in head.lesson_layers().items() if name.startswith("sconv")]
    assert len(convs) == 2 and {c.drop.rate for c in convs} == {0.0}


def test_files_and_fastai_layout_give_the_same_model(multi, multi_keras, tmp_path):
    pth = str(tmp_path / "lesson.pth")
    torch.save(multi.state_dict(), pth)
    _assert_same_weights(convert_lesson_model(pth, 3), multi_keras)
    # fastai 0.7's ConvnetBuilder: Sequential(conv1, bn1, relu, maxpool, layer1..4, head).
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    fastai = {}
    for key, value in _numpy_state(multi).items():
        top, rest = key.split(".", 1)
        if top == "body":
            first, rest = rest.split(".", 1)
            fastai[f"{index[first]}.{rest}"] = value
        else:
            fastai[f"8.{rest}"] = value
    _assert_same_weights(convert_lesson_model(fastai, 3), multi_keras)


def test_safetensors_file_needs_no_torch(multi, multi_keras, tmp_path, monkeypatch):
    path = str(tmp_path / "lesson.safetensors")
    save_file(_numpy_state(multi), path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    converted = convert_lesson_model(path, 3)
    _assert_same_weights(converted, multi_keras)
    (tmp_path / "lesson.pth").write_bytes(b"a pickle")
    with pytest.raises(ImportError, match=r"lesson\.pth.*pip install torch"):
        convert_lesson_model(str(tmp_path / "lesson.pth"), 3)


def test_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import ssd_keras.convert; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_mismatches_are_errors_naming_the_key(multi):
    state = _numpy_state(multi)
    with pytest.raises(ValueError, match=r"num_classes=5.*head\.out1\.oconv1\.weight.*3 classes"):
        convert_lesson_model(state, num_classes=5)
    with pytest.raises(ValueError, match=r"anchors\.k=1.*head\.out1\.oconv2\.weight.*k=9"):
        convert_lesson_model(state, anchors=AnchorConfig(zooms=(1.0,), ratios=((1.0, 1.0),)))
    with pytest.raises(ValueError, match=r"missing keys \['body\.layer3\.0\.bn1\.running_var'\]"):
        convert_lesson_model({k: v for k, v in state.items() if k != "body.layer3.0.bn1.running_var"})
    with pytest.raises(ValueError, match=r"unexpected keys \['head\.out4\.oconv1\.bias'"):
        convert_lesson_model(dict(state, **{"head.out4.oconv1.bias": state["head.out3.oconv1.bias"]}))
    with pytest.raises(ValueError, match=r"'head\.sconv2\.bn\.weight' has shape \(3,\)"):
        convert_lesson_model(dict(state, **{"head.sconv2.bn.weight": np.ones(3, np.float32)}))
    body_only = {k: v for k, v in state.items() if k.startswith("body.")}
    with pytest.raises(ValueError, match=r"not the lesson's SSD.*head\.out1\.oconv1\.weight"):
        convert_lesson_model(body_only)
    with pytest.raises(TypeError, match="LessonSSD module, a state dict or"):
        convert_lesson_model(3)
