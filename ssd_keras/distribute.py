"""`tf.distribute` support: `prepare_for_multi_worker` makes plain `model.fit` work under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585)."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["prepare_for_multi_worker", "worker_index"]


def _is_multi_worker(strategy):
    """True for a MultiWorkerMirroredStrategy that spans more than one worker (TF_CONFIG)."""
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def worker_index(strategy=None):
    """This process's task index under a multi-worker `MultiWorkerMirroredStrategy`, else None.

    Worker 0 is the chief (the cluster has no separate "chief" task in the set-ups we run).
    Keras 3's `BackupAndRestore` and `ModelCheckpoint` write the same file names from every
    worker (tf.keras gave non-chief workers temporary folders; Keras 3 does not), so callers
    give each worker its own backup folder and let only the chief write shared files.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if not _is_multi_worker(strategy):
        return None
    return int(strategy.cluster_resolver.task_id)


def _first_local_batch(iterator, strategy):
    """The first batch of Keras' epoch iterator, this worker's first replica's tensors."""
    import tensorflow as tf

    for _, _, it in iterator:
        batch = next(it)
        break
    return tf.nest.map_structure(
        lambda v: (strategy.experimental_local_results(v)[0]
                   if isinstance(v, tf.distribute.DistributedValues) else v),
        batch)


def prepare_for_multi_worker(model, strategy=None):
    """Make plain `model.fit` / `evaluate` work under `tf.distribute.MultiWorkerMirroredStrategy`
    (Keras 3 with TensorFlow; checked with Keras 3.15.1 and TF 2.21). Returns `model`.

    Keras 3's `fit` fails twice under a multi-worker MWMS (keras-team/keras#20585):

    1. `TensorFlowTrainer._maybe_symbolic_build` all-reduces the first input batch, a tuple
       of `PerReplica`, with `strategy.reduce("MEAN", batch, axis=None)`, only to learn its
       shapes; MWMS cannot reduce a nest ("Attempt to convert a value (PerReplica...) to a
       Tensor"). Building the model, optimizer and metrics beforehand does not avoid it: the
       reduce runs before Keras looks at what is built. Here the symbolic build gets this
       worker's own first batch instead (shapes and dtypes are all it needs).
    2. `reduce_per_replica` then reduces every log with `strategy.reduce("MEAN", v, axis=0)`,
       which a scalar lacks ("Invalid reduction dimension 0 for input with 0 dimensions").
       Here `train_step` / `test_step` return each log with a leading axis of length 1, so
       that reduction is the mean over the replicas and gives back the scalar.

    Both are overrides on this model instance only (no Keras module or class is patched);
    the model's config and saved files are unchanged. Anywhere else (one device,
    `MirroredStrategy`, a one-worker MWMS) this returns the model untouched, so it is safe
    to call unconditionally; calling it twice changes nothing more. `fit_one_cycle` calls it.

    Create the model, and compile it, under `strategy.scope()` as usual (metrics included:
    a metric built outside the scope is not aggregated across workers), and give `fit` the
    *global* batch (a data set batched by the global batch size; each worker reads its shard).
    Per-step logs are the mean over replicas of each replica's value, as Keras does under
    `MirroredStrategy`; epoch logs come from the summed metric variables. As under
    `MirroredStrategy`, a last partial batch that does not split evenly over the replicas
    weights its images unequally in the gradient (batch with `drop_remainder=True` for
    exact parity with one device), and `steps_per_execution > 1` fails inside Keras
    (keras-team/keras#19246, with or without this).

    Args:
        model: a `keras.Model` (TensorFlow backend).
        strategy: the strategy to check; default `model.distribute_strategy`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"prepare_for_multi_worker: model must be a keras.Model, got {type(model).__name__}")
    strategy = strategy or model.distribute_strategy
    if not _is_multi_worker(strategy) or getattr(model, "_ssd_multi_worker", False):
        return model
    build = getattr(model, "_maybe_symbolic_build", None)
    if build is not None:  # a later Keras without this private method has no failure 1

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None and data_batch is None:
                data_batch = _first_local_batch(iterator, strategy)
            return build(data_batch=data_batch)

        model._maybe_symbolic_build = maybe_symbolic_build

    train_step, test_step = model.train_step, model.test_step

    def with_replica_axis(logs):
        return keras.tree.map_structure(lambda v: ops.expand_dims(v, 0), logs)

    model.train_step = lambda data: with_replica_axis(train_step(data))
    model.test_step = lambda data: with_replica_axis(test_step(data))
    # Step functions traced before this point hold the old train_step.
    model.train_function = model.test_function = None
    model._ssd_multi_worker = True
    return model
