"""Helper for tests/test_distribute.py: trains the same tiny SSD problem under a
tf.distribute strategy in a fresh process (logical devices and TF_CONFIG must be set before
TensorFlow initialises) and writes the losses and final weights to an .npz.

    python tests/_distribute_worker.py mirrored OUT.npz      # 2 logical CPU devices
    python tests/_distribute_worker.py multiworker OUT.npz   # TF_CONFIG names this worker

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
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(c, 3, strides=2, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Reshape((4, c))(x))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def train(strategy=None):
    """fit_one_cycle for one epoch (2 steps, global batch 8, SGD), validated on the same data
    (so `evaluate` runs distributed too) → (history, weights, model)."""
    import tensorflow as tf

    from ssd_keras import AnchorConfig, SSDLoss
    from ssd_keras.training import fit_one_cycle

    strategy = strategy or tf.distribute.get_strategy()
    images, y_true = make_problem()
    ds = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    with strategy.scope():
        model = build_model()
    hist = fit_one_cycle(model, ds, 1, 0.5, div=2, cut_div=2, val_ds=ds, optimizer="sgd",
                         loss=SSDLoss(AnchorConfig.single_grid(2), NUM_CLASSES), verbose=0)
    return hist.history, [np.array(w) for w in model.get_weights()], model


def main(mode, out):
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()

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
    main(sys.argv[1], sys.argv[2])
