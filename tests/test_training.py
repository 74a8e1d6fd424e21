"""ssd_keras.training: fit_one_cycle (schedule, logged loss parts, resume) and lr_find."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.training import fit_one_cycle, lr_find

from test_optimizers import _dense_model, _xy
from test_schedules import fastai_circular_lr


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


def test_fit_one_cycle_on_a_detector_logs_loc_and_clas_from_its_own_loss():
    """A detector needs no loss= (its default SSDLoss) and logs loc/clas without SSDLossPart
    metrics; loss = loc_weight * loc + clas per batch, so the epoch means agree too."""
    from ssd_keras import SSDDetector
    from ssd_keras.data import make_shapes

    data = make_shapes(16, image_size=64, min_size=0.2, max_size=0.6, max_objects=4)
    ds = data.dataset(image_size=64, batch_size=8)
    detector = SSDDetector.from_preset("demo_tiny64")
    hist = fit_one_cycle(detector, ds, 1, 1e-3, val_ds=ds, verbose=0)
    assert {"loss", "loc", "clas", "val_loss", "val_loc", "val_clas"} <= set(hist.history)
    weight = detector.loss_settings["loc_weight"]  # 4 in the demo preset
    np.testing.assert_allclose(hist.history["val_loss"],
                               np.add(weight * np.asarray(hist.history["val_loc"]), hist.history["val_clas"]),
                               rtol=1e-5)
    assert not any(isinstance(m, __import__("ssd_keras").SSDLossPart) for m in detector.metrics)


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
