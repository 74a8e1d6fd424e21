"""One round-trip harness for every serialisable ssd_keras class (keras-hub's
`run_model_saving_test` / `run_layer_test` idea): config → from_config → same behaviour, and for
anything with weights a `.keras` save / load with equal outputs.

`run_round_trip(obj, probe, tmp_path)`:
- `probe(obj)` returns numbers that characterise the object's behaviour (a layer's output, a
  loss value, a schedule's values, an optimizer's update);
- the config round trip must give an object whose probe is equal (weights copied first);
- for layers and models, a `.keras` file holding the object (a model wrapping a layer) must
  load back, with plain `keras.saving.load_model`, to the same probe.
"""

import keras
import numpy as np


def _assert_close(got, want, what):
    got, want = keras.tree.flatten(got), keras.tree.flatten(want)
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=what)


def config_round_trip(obj):
    """`from_config(get_config())` through Keras' own serialisation (registered names)."""
    serialized = keras.saving.serialize_keras_object(obj)
    return keras.saving.deserialize_keras_object(serialized)


def run_round_trip(obj, probe, tmp_path, inputs=None):
    want = probe(obj)
    clone = config_round_trip(obj)
    assert type(clone) is type(obj)
    if isinstance(obj, keras.layers.Layer):
        if not clone.built and inputs is not None:
            clone(inputs)
        clone.set_weights(obj.get_weights())
    _assert_close(probe(clone), want, f"{type(obj).__name__}: get_config/from_config")
    if isinstance(obj, keras.Model):
        path = tmp_path / f"{type(obj).__name__}.keras"
        obj.save(path)
        _assert_close(probe(keras.saving.load_model(path)), want, f"{type(obj).__name__}: .keras")
    elif isinstance(obj, keras.layers.Layer):
        x = keras.Input(inputs.shape[1:], dtype=inputs.dtype)
        wrapper = keras.Model(x, obj(x))
        path = tmp_path / f"{type(obj).__name__}.keras"
        wrapper.save(path)
        loaded = keras.saving.load_model(path)
        inner = [layer for layer in loaded.layers if type(layer) is type(obj)][0]
        _assert_close(probe(inner), want, f"{type(obj).__name__}: .keras")
    return clone
