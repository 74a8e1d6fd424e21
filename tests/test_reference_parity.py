"""Trained-pipeline parity: the lesson's PyTorch SSD and its Keras conversion, trained side by
side (same initial weights, batches, optimizer), give the same loss curve and weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the lesson's model is the PyTorch reference (requirements-test.txt)")
import keras  # noqa: E402

from ssd_keras.backbones import layer_groups  # noqa: E402
from ssd_keras.reference import parity  # noqa: E402


@pytest.fixture(scope="module")
def single():
    """The lesson's 4x4 SSD (SSD_Head), first stage (body frozen), SGD + momentum, 6 steps."""
    return parity.train_side_by_side(steps=6, batch_size=2, num_batches=2)


def test_loss_curves_and_weights_agree(single):
    torch_loss, keras_loss = single["torch_loss"], single["keras_loss"]
    assert single["settings"]["head"] == "single" and single["settings"]["batch_size"] == 2
    assert torch_loss.shape == keras_loss.shape == (6,)
    # Training happens: each of the two batches' loss falls by more than 10 % (the steps
    # alternate between them), and the weights move by a good fraction of their size.
    for first in (0, 1):
        assert torch_loss[first + 4] < 0.9 * torch_loss[first], torch_loss
    assert single["weight_change"] > 0.1
    # Measured on 2 CPU cores: <= 3.2e-6 relative over these 6 steps (7e-5 at steps 6-7 of 8); the
    # tolerance leaves room for other CPUs' kernels (see ssd_keras/reference/parity.py).
    assert single["loss_rel_diff"][0] < 1e-5, single["loss_rel_diff"]
    assert single["loss_rel_diff"].max() < 1e-3, single["loss_rel_diff"]
    # Trained weights: measured 7e-4 of each tensor's scale, 0.4 % of how far it moved.
    assert single["weight_rel_diff"] < 2e-2, single["worst_weight"]
    assert single["update_rel_diff"] < 0.1
    assert single["moving_mean_rel_diff"] < 2e-2
    # Keras averages the biased batch variance, PyTorch the unbiased one: ~1 % apart here.
    assert single["moving_variance_rel_diff"] < 0.1


def test_a_learning_rate_two_percent_off_fails_those_bounds(monkeypatch):
    """The bounds above are tight enough to catch a small mismatch in the training itself."""
    sgd = keras.optimizers.SGD
    monkeypatch.setattr(keras.optimizers, "SGD", lambda lr, momentum: sgd(lr * 1.02, momentum=momentum))
    result = parity.train_side_by_side(steps=6, batch_size=2, num_batches=2)
    assert result["loss_rel_diff"].max() > 1e-3 and result["weight_rel_diff"] > 2e-2  # measured 6e-3, 0.3


def test_same_layers_train_on_both_sides(single):
    keras_model, torch_model = single["keras_model"], single["torch_model"]
    trained = [n for n, p in torch_model.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith("head.") for n in trained)
    assert single["settings"]["trained_tensors"] == len(trained) == len(keras_model.trainable_weights)
    # The same fastai groups: parameter tensors per group (BN running statistics left out).
    keras_counts = [sum(1 for layer in group for w in layer.weights if "moving" not in w.path)
                    for group in layer_groups(keras_model)]
    torch_counts = [sum(1 for m in group for _ in m.parameters()) for group in parity.torch_layer_groups(torch_model)]
    assert keras_counts == torch_counts


def test_multi_head_first_step_agrees():
    """SSD_MultiHead (189 anchors): the first loss and the first update agree. Later steps are
    not compared: BatchNorm on the 1x1 map at batch 2 makes them sensitive to float32 rounding
    (notebook 07 shows the curves next to PyTorch's own float64 run)."""
    result = parity.train_side_by_side(steps=1, head="multi", batch_size=2, num_batches=1)
    assert result["settings"]["trained_tensors"] == 4 * 4 + 3 * 4  # sconv0-3, out1-3 (out0 is never called)
    assert result["loss_rel_diff"][0] < 1e-5, result["loss_rel_diff"]
    assert result["weight_change"] > 0.1
    # Measured 0.6 % of the update (PyTorch float32 vs float64: 0.4 %).
    assert result["update_rel_diff"] < 0.05, result["worst_weight"]


def _adam_steps(grads, eps, torch_eps):
    """Keras Adam and torch Adam (with `torch_eps(step)`) on the same gradients."""
    kv = keras.Variable(np.ones(3, np.float32))
    k_opt = keras.optimizers.Adam(0.1, epsilon=eps)
    tv = torch.nn.Parameter(torch.ones(3))
    t_opt = torch.optim.Adam([tv], lr=0.1, eps=eps)
    for step, g in enumerate(grads, 1):
        k_opt.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
        tv.grad = torch.tensor(g)
        t_opt.param_groups[0]["eps"] = torch_eps(step)
        t_opt.step()
    return np.asarray(kv.numpy()), tv.detach().numpy()


def test_adam_epsilon_is_matched_per_step():
    # Gradients near epsilon, where its placement matters.
    grads = [np.array([1e-7, -3e-7, 2e-6], np.float32) * (i + 1) for i in range(5)]
    k, t = _adam_steps(grads, 1e-7, lambda step: parity.matched_torch_adam_eps(1e-7, 0.999, step))
    # float32 rounding: Keras forms 1 - beta_2^t in float32 (1e-4 relative at t = 1), torch in float64.
    np.testing.assert_allclose(k, t, rtol=0, atol=2e-5)
    k, t = _adam_steps(grads, 1e-7, lambda step: 1e-7)  # torch's fixed eps: another update
    assert np.abs(k - t).max() > 1e-2


def test_sgd_momentum_is_the_same_update():
    rng = np.random.default_rng(0)
    kv, tv = keras.Variable(np.ones(4, np.float32)), torch.nn.Parameter(torch.ones(4))
    k_opt, t_opt = keras.optimizers.SGD(0.05, momentum=0.9), torch.optim.SGD([tv], lr=0.05, momentum=0.9)
    for _ in range(5):
        g = rng.normal(size=4).astype(np.float32)
        k_opt.apply_gradients([(keras.ops.convert_to_tensor(g), kv)])
        tv.grad = torch.tensor(g)
        t_opt.step()
    np.testing.assert_allclose(np.asarray(kv.numpy()), tv.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"head": "double"}, "head must be"),
    ({"freeze_to": 3}, "freeze_to must be"),
    ({"optimizer": "rmsprop"}, "optimizer must be"),
    ({"batches": [(np.zeros((1, 224, 224, 3)), np.full((1, 1, 5), -1.0))]}, "without objects"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parity.train_side_by_side(**kwargs)
