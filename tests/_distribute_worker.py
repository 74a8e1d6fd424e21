"""Helper for tests/test_distribute.py: trains the same tiny SSD problem under a
tf.distribute strategy in a fresh process (logical devices and TF_CONFIG must be set before
TensorFlow initialises) and writes the losses and final weights to an .npz.

    python tests/_distribute_worker.py mirrored OUT.npz      # 2 logical CPU devices
    python tests/_distribute_worker.py multiworker OUT.npz   # TF_CONFIG names this worker
    python tests/_distribute_worker.py restart OUT.npz OUT_DIR [STOP_STEP]
        # TF_CONFIG names this worker; the two-stage `fit_lesson_recipe` (resume=True) writing
        # to OUT_DIR; with STOP_STEP the process ends abruptly (os._exit, no clean-up, as if
        # killed) after that many training steps

Both run `fit_one_cycle` (`model.fit`); under MultiWorkerMirroredStrategy it applies
`ssd_keras.training.prepare_for_multi_worker` (see tests/test_distribute.py's docstring).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

GLOBAL_BATCH = 8
NUM_IMAGES = 16  # two steps of one global batch
NUM_CLASSES = 3


def make_problem():
    """Fixed images and targets for `AnchorConfig.single_grid(2)` (relative yxyx boxes)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (NUM_IMAGES, 16, 16, 3)).astype("float32")
    y_true = np.full((NUM_IMAGES, 3, 5), -1, np.float32)
    for i in range(NUM_IMAGES):
        for j in range(rng.integers(0, 4)):  # 0-3 objects per image
            yx = rng.uniform(0, 0.6, 2)
            hw = rng.uniform(0.1, 0.4, 2)
            y_true[i, j] = [*yx, *(yx + hw), rng.integers(0, NUM_CLASSES)]
    return images, y_true


def build_model():
    """A tiny conv net → y_pred [batch, 4 anchors, 4 + C + 1], weights from a fixed RNG (so
    every process starts from the same point whatever the strategy's initialisation order)."""
    import keras

    c = 4 + NUM_CLASSES + 1
    # A nested model named "backbone", so `layer_groups` (freeze_to, the recipe) finds
    # [early: rescaling | late: the two convs | head].
    body_in = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(body_in)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    body = keras.Model(body_in, x, name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(c, 3, strides=2, padding="same")(body(inputs))
    model = keras.Model(inputs, keras.layers.Reshape((4, c))(x))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


STOPPED = 17  # the exit status of a worker stopped by `StopAt`


def problem_dataset():
    """`make_problem()` as a tf.data set of global batches, sharded by data across workers."""
    import tensorflow as tf

    images, y_true = make_problem()
    ds = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def train(strategy=None, epochs=1, callbacks=None):
    """fit_one_cycle for `epochs` epochs (2 steps each, global batch 8, SGD), validated on the
    same data (so `evaluate` runs distributed too) → (history, weights, model)."""
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.training import fit_one_cycle

    strategy = strategy or tf.distribute.get_strategy()
    ds = problem_dataset()
    with strategy.scope():
        model = build_model()
    hist = fit_one_cycle(model, ds, epochs, 0.5, div=2, cut_div=2, val_ds=ds, optimizer="sgd",
                         loss=SSDLoss(AnchorConfig.single_grid(2), NUM_CLASSES), verbose=0,
                         callbacks=callbacks)
    return hist.history, [np.array(w) for w in model.get_weights()], model


def recipe_stages():
    """The lesson's two stages in small: 1 epoch of the head alone (`freeze_to(-1)`), then 2
    epochs of everything with per-group rates: 6 steps in all."""
    from ssd_keras.recipes import Stage

    return [Stage("stage 1/2: head", 1, 0.05, freeze=-1),
            Stage("stage 2/2: all", 2, 0.02, freeze=None, group_multipliers=(0.1, 0.5, 1.0))]


def train_recipe(strategy=None, out_dir=None, callbacks=None):
    """`fit_lesson_recipe(recipe_stages())` with `resume=True` → (histories, weights)."""
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.recipes import fit_lesson_recipe

    strategy = strategy or tf.distribute.get_strategy()
    ds = problem_dataset()
    with strategy.scope():
        model = build_model()
        model.compile(loss=SSDLoss(AnchorConfig.single_grid(2), NUM_CLASSES))
    histories = fit_lesson_recipe(model, ds, recipe_stages(), out_dir=out_dir, resume=True,
                                  verbose=0, callbacks=callbacks, log=lambda *a: None)
    return [h.history for h in histories], [np.array(w) for w in model.get_weights()]


def stop_after(steps):
    """A callback that ends the process abruptly after `steps` training steps of this process
    (counted over all stages): no `on_train_end`, no clean-up, as a killed worker."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            StopAfter.seen += 1
            if StopAfter.seen >= steps:
                sys.stdout.flush()
                os._exit(STOPPED)

    return StopAfter()


def _patient_coordination_service(timeout_ms=300_000):
    """Give the coordination service a heartbeat timeout of `timeout_ms` instead of TF's 10 s:
    on a loaded 2-core CI machine a restarted worker missed heartbeats while the other was still
    starting up, and both aborted ("Task ... heartbeat timeout"). Only this test helper does this
    (MultiWorkerMirroredStrategy has no public setting for it)."""
    from tensorflow.python.eager import context

    ctx = context.context()
    configure = ctx.configure_coordination_service

    def patient(*args, **kwargs):
        kwargs["heartbeat_timeout_in_ms"] = kwargs.get("heartbeat_timeout_in_ms") or timeout_ms
        return configure(*args, **kwargs)

    ctx.configure_coordination_service = patient


def restart(out, out_dir, stop_step=None):
    """One worker of the restart test: the recipe under MultiWorkerMirroredStrategy, every worker
    with the same `out_dir`; with `stop_step` the process ends abruptly after that many steps."""
    import tensorflow as tf

    _patient_coordination_service()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    callbacks = None if stop_step is None else [stop_after(int(stop_step))]
    histories, weights = train_recipe(strategy, out_dir, callbacks)
    np.savez(out, replicas=strategy.num_replicas_in_sync, stages_run=len(histories),
             **{f"last_stage_{k}": np.asarray(v) for k, v in histories[-1].items()},
             **{f"w{i}": w for i, w in enumerate(weights)})


def main(mode, out, *rest):
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()

    if mode == "restart":
        return restart(out, *rest)

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise SystemExit(f"mode must be mirrored or multiworker, got {mode!r}")
    history, weights, model = train(strategy)
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             multi_worker_overrides=getattr(model, "_ssd_multi_worker", False),
             **{k: np.asarray(v) for k, v in history.items()},
             **{f"w{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main(*sys.argv[1:])
