"""Tests for ssd_keras.training: the fastai 0.7 schedule, layer-group LRs, freezing, lr_find,
NaN stop and resume."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.training import (
    DiscriminativeAdam,
    DiscriminativeSGD,
    MomentumCycle,
    NaNGuard,
    OneCycleSchedule,
    discriminative_optimizer,
    fit_one_cycle,
    freeze_to,
    group_lr_multipliers,
    lr_find,
    unfreeze,
)


def fastai_circular_lr(init_lr, nb, div, cut_div, n):
    """fastai 0.7 sgdr.CircularLR.calc_lr, transcribed: the LR of iterations 0..n-1."""
    out, cycle_iter = [], 0
    for _ in range(n):
        cut_pt = nb // cut_div
        if cycle_iter > cut_pt:
            pct = 1 - (cycle_iter - cut_pt) / (nb - cut_pt)
        else:
            pct = cycle_iter / cut_pt
        out.append(init_lr * (1 + pct * (div - 1)) / div)
        cycle_iter += 1
        if cycle_iter == nb:
            cycle_iter = 0
    return np.array(out)


def test_one_cycle_exact_values():
    s = OneCycleSchedule(1e-2, total_steps=100, div=20, cut_div=10)
    lr = lambda i: float(s(i))  # noqa: E731
    assert lr(0) == pytest.approx(1e-2 / 20)  # start: lr / div
    assert lr(5) == pytest.approx(1e-2 * (1 + 0.5 * 19) / 20)  # halfway up
    assert lr(10) == pytest.approx(1e-2)  # turning point (nb // cut_div) = peak
    assert lr(11) == pytest.approx(1e-2 * (1 + (1 - 1 / 90) * 19) / 20)
    assert lr(99) == pytest.approx(1e-2 * (1 + (1 / 90) * 19) / 20)  # end, one step above lr/div
    assert lr(100) == pytest.approx(1e-2 / 20)  # next cycle
    ref = fastai_circular_lr(1e-2, 100, 20, 10, 250)
    np.testing.assert_allclose([lr(i) for i in range(250)], ref, rtol=1e-6)
    # the lesson's "use_clr=(20, 10)" over an odd number of steps (integer cut point)
    s2 = OneCycleSchedule(3e-3, total_steps=37, div=20, cut_div=10)
    np.testing.assert_allclose([float(s2(i)) for i in range(37)],
                               fastai_circular_lr(3e-3, 37, 20, 10, 37), rtol=1e-6)
    assert keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(s)).get_config() == s.get_config()


def test_momentum_cycle_values():
    m = MomentumCycle(100, moms=(0.95, 0.85), cut_div=10)
    assert float(m(0)) == pytest.approx(0.95)
    assert float(m(10)) == pytest.approx(0.85)  # lowest at the LR peak
    assert float(m(55)) == pytest.approx(0.85 + 0.5 * 0.1)
    assert float(m(100)) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="moms"):
        MomentumCycle(10, moms=(0.95,))


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


def test_fit_one_cycle_follows_schedule_and_logs_loss_parts():
    from ssd_keras import AnchorConfig, SSDLoss

    anchors = AnchorConfig.single_grid(2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 16, 16, 3)).astype("float32")
    y_true = np.full((12, 2, 5), -1, np.float32)
    y_true[:, 0] = [0.1, 0.1, 0.5, 0.6, 1]
    ds = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(4)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, strides=8, padding="same")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Reshape((4, 4 + 2 + 1))(
        keras.layers.Conv2D(4 + 2 + 1, 1)(h)))

    seen = []

    class Rec(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate))

    hist = fit_one_cycle(model, ds, 2, 1e-2, div=10, cut_div=3, loss=SSDLoss(anchors, 2),
                         moms=(0.95, 0.85), callbacks=[Rec()], verbose=0)
    assert {"loss", "loc", "clas"} <= set(hist.history)
    np.testing.assert_allclose(hist.history["loss"],
                               np.add(hist.history["loc"], hist.history["clas"]), rtol=1e-5)
    np.testing.assert_allclose(seen, fastai_circular_lr(1e-2, 6, 10, 3, 6), rtol=1e-6)


def test_fit_one_cycle_needs_known_length():
    model, _ = _dense_model()
    ds = tf.data.Dataset.from_tensor_slices(_xy()).batch(4).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit_one_cycle(model, ds, 1, 1e-2, loss="mse")


def test_lr_find_restores_weights_and_optimizer_and_stops_on_explosion():
    x, y = _xy(64)
    model, _ = _dense_model(bn=True)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # optimizer built, momentum non-zero
    w0 = [w.copy() for w in model.get_weights()]
    opt0 = [np.array(v) for v in model.optimizer.variables]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    res = lr_find(model, ds, start_lr=1e-4, end_lr=1e4, num_steps=60)
    assert res.stopped_early and 11 < len(res.lrs) < 60  # SGD at lr >> 1 explodes
    assert res.lrs[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(res.lrs[1] / res.lrs[0], (1e8) ** (1 / 59), rtol=1e-9)
    for a, b in zip(model.get_weights(), w0):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, opt0):
        np.testing.assert_array_equal(np.array(a), b)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # still trains with its optimizer
    assert int(model.optimizer.iterations) == 8
    fig = res.plot(skip_start=0, skip_end=0)
    assert fig.axes[0].get_xscale() == "log"


def test_nan_guard_stops_with_advice():
    x, y = _xy()
    y[3] = np.nan
    model, _ = _dense_model()
    model.compile("sgd", "mse")
    guard = NaNGuard()
    with pytest.warns(RuntimeWarning, match="lower learning rate.*relative yxyx"):
        hist = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[guard])
    assert guard.stopped_at == (0, 0) and len(hist.history["loss"]) == 1
    with pytest.raises(RuntimeError, match="NaNGuard: loss became nan"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[NaNGuard(raise_error=True)])


def test_resume_after_kill_continues_from_the_right_epoch(tmp_path):
    x, y = _xy(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 4 steps per epoch

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated kill")

    class Rec(keras.callbacks.Callback):
        epochs, start_iter = [], []

        def on_train_begin(self, logs=None):
            Rec.start_iter.append(int(self.model.optimizer.iterations))

        def on_epoch_begin(self, epoch, logs=None):
            Rec.epochs.append(epoch)

    keras.utils.set_random_seed(1)
    model, _ = _dense_model()
    w0 = [w.copy() for w in model.get_weights()]
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit_one_cycle(model, ds, 4, 1e-2, loss="mse", out_dir=out, callbacks=[Kill()], verbose=0)
    assert (out / "backup").exists() and (out / "last.keras").exists()
    assert Rec.epochs == []
    # a fresh process would rebuild the model; its weights come from the backup
    keras.utils.set_random_seed(2)
    resumed, _ = _dense_model()
    hist = fit_one_cycle(resumed, ds, 4, 1e-2, loss="mse", out_dir=out, callbacks=[Rec()],
                         verbose=0)
    assert Rec.epochs == [2, 3] and Rec.start_iter == [8]  # LR schedule continues at step 8
    assert len(hist.history["loss"]) == 2
    assert not (out / "backup").exists()  # removed after a finished run
    # same end point as an uninterrupted run
    ref, _ = _dense_model()
    ref.set_weights(w0)
    fit_one_cycle(ref, ds, 4, 1e-2, loss="mse", verbose=0)
    for a, b in zip(resumed.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert os.path.exists(out / "best.keras") and os.listdir(out / "logs")


def test_prepare_for_multi_worker_leaves_single_worker_models_alone():
    # The two-worker behaviour is tested in tests/test_distribute.py (it needs two processes).
    from ssd_keras.training import prepare_for_multi_worker

    model, _ = _dense_model()
    assert prepare_for_multi_worker(model) is model
    assert prepare_for_multi_worker(model, tf.distribute.get_strategy()) is model
    for name in ("train_step", "test_step", "_maybe_symbolic_build"):
        assert name not in vars(model), name  # no per-instance override on one device
    with pytest.raises(TypeError, match="prepare_for_multi_worker: model must be a keras.Model"):
        prepare_for_multi_worker(keras.layers.Dense(2))
