"""ssd_keras.optimizers: layer-group learning rates (the lesson's lrs), the momentum schedule inside
the optimizer, freezing with fastai's freeze_to semantics (negative n included)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.optimizers import (
    DiscriminativeAdam,
    DiscriminativeSGD,
    discriminative_optimizer,
    freeze_to,
    group_lr_multipliers,
    unfreeze,
)
from ssd_keras.schedules import MomentumCycle, OneCycleSchedule
from ssd_keras.training import fit_one_cycle


def _dense_model(bn=False):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="g0")(inputs)
    if bn:
        x = keras.layers.BatchNormalization(name="g0_bn")(x)
    x = keras.layers.Dense(5, name="g1")(x)
    out = keras.layers.Dense(2, name="g2")(x)
    model = keras.Model(inputs, out)
    groups = [[model.get_layer("g0")] + ([model.get_layer("g0_bn")] if bn else []),
              [model.get_layer("g1")], [model.get_layer("g2")]]
    return model, groups


def _xy(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def test_group_multipliers_scale_sgd_updates():
    x, y = _xy()
    model, groups = _dense_model()
    w0 = [w.copy() for w in model.get_weights()]
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.train_on_batch(x, y)
    plain = [w1 - w for w1, w in zip(model.get_weights(), w0)]

    model.set_weights(w0)
    opt = discriminative_optimizer(keras.optimizers.SGD(0.1), groups=groups,
                                   group_multipliers=[0.0, 0.1, 1.0])
    assert isinstance(opt, DiscriminativeSGD) and opt.get_config()["learning_rate"] == pytest.approx(0.1)
    model.compile(opt, "mse")
    model.train_on_batch(x, y)
    delta = [w1 - w for w1, w in zip(model.get_weights(), w0)]
    mult = [0.0, 0.0, 0.1, 0.1, 1.0, 1.0]  # kernel, bias per Dense
    for d, p, m in zip(delta, plain, mult):
        np.testing.assert_allclose(d, m * p, rtol=1e-4, atol=1e-7)  # float32 w1 - w0
    assert np.abs(plain[2]).max() > 1e-3  # the case is not trivial


def test_group_multipliers_error_messages():
    _, groups = _dense_model()
    with pytest.raises(ValueError, match="2 values for 3 layer groups"):
        group_lr_multipliers(groups, [0.1, 1])
    with pytest.raises(TypeError, match="not supported"):
        discriminative_optimizer(keras.optimizers.Adagrad())
    with pytest.raises(ValueError, match="beta_1"):
        DiscriminativeSGD(0.1, momentum_schedule=MomentumCycle(10))


def test_momentum_schedule_matches_manual_adam():
    # loss = sum(w * c) → constant gradient c; Keras Adam's update with beta_1 from the
    # schedule at each iteration (bias correction with that step's beta_1, as torch's Adam).
    c = np.array([0.5, -2.0, 1e-3], np.float32)
    w = keras.Variable(np.zeros(3, np.float32))
    sched = MomentumCycle(4, moms=(0.95, 0.85), cut_div=2)
    opt = DiscriminativeAdam(learning_rate=0.1, momentum_schedule=sched)
    m = v = np.zeros(3)
    ref = np.zeros(3)
    for t in range(1, 6):
        opt.apply([tf.constant(c)], [w])
        b1, b2 = float(sched(t - 1)), 0.999
        m = m + (c - m) * (1 - b1)
        v = v + (c * c - v) * (1 - b2)
        alpha = 0.1 * np.sqrt(1 - b2**t) / (1 - b1**t)
        ref = ref - alpha * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5)
    assert opt.beta_1 == 0.9  # the float is back after the step
    np.testing.assert_allclose([float(sched(i)) for i in range(4)], [0.95, 0.9, 0.85, 0.9])


def test_optimizer_and_schedules_survive_keras_save(tmp_path):
    x, y = _xy()
    model, groups = _dense_model()
    opt = discriminative_optimizer(
        "adam", learning_rate=OneCycleSchedule(1e-2, 10), groups=groups,
        group_multipliers=[0.01, 0.1, 1], momentum_schedule=MomentumCycle(10))
    model.compile(opt, "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is DiscriminativeAdam
    assert loaded.optimizer.lr_multipliers == opt.lr_multipliers
    assert loaded.optimizer.lr_multipliers["g0/kernel"] == 0.01
    assert isinstance(loaded.optimizer.momentum_schedule, MomentumCycle)
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, opt.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_freeze_to_changes_trainable_weights_and_frozen_group_does_not_move():
    x, y = _xy(32)
    model, groups = _dense_model(bn=True)
    n_all = len(model.trainable_weights)
    freeze_to(model, 2, groups)
    assert len(model.trainable_weights) == 2  # head kernel + bias
    freeze_to(model, 1, groups)
    assert len(model.trainable_weights) == 4
    assert not model.get_layer("g0_bn").trainable
    before = {w.path: np.array(w) for w in model.weights}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    fit_one_cycle(model, ds, 1, 1e-2, loss="mse", verbose=0)
    after = {w.path: np.array(w) for w in model.weights}
    for path in before:
        moved = not np.array_equal(before[path], after[path])
        # group 0 (Dense + BN incl. moving statistics: inference mode when frozen) is fixed
        assert moved == (not path.startswith("g0")), path
    unfreeze(model, groups)
    assert len(model.trainable_weights) == n_all
    with pytest.raises(ValueError, match="n must be in"):
        freeze_to(model, 4, groups)


def test_freeze_to_default_groups_on_build_ssd():
    from ssd_keras import AnchorConfig, build_ssd

    model = build_ssd(2, AnchorConfig.single_grid(4), backbone="tiny", image_size=64)
    groups = freeze_to(model, 2)
    head_vars = {id(v) for layer in groups[2] for v in layer.trainable_weights}
    assert {id(v) for v in model.trainable_weights} == head_vars
    assert len(head_vars) > 0
    unfreeze(model)
    assert len(model.trainable_weights) > len(head_vars)
    # the lesson's [lr/100, lr/10, lr] reaches every trainable variable, by its path
    mult = group_lr_multipliers(groups, (0.01, 0.1, 1.0))
    assert {v.path for v in model.trainable_weights} <= set(mult)
    assert sorted(set(mult.values())) == [0.01, 0.1, 1.0]
