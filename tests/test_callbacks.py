"""ssd_keras.callbacks: the val_map callback (the same number as evaluate_model), NaNGuard."""

import numpy as np
import pytest

from ssd_keras.callbacks import MeanAveragePrecisionCallback, NaNGuard
from ssd_keras.evaluation import evaluate_model

from test_optimizers import _dense_model, _xy


def test_map_callback_logs_the_map_evaluate_model_gives_and_only_every_n_epochs():
    from ssd_keras import SSDDetector
    from ssd_keras.data import make_shapes

    data = make_shapes(8, image_size=64, min_size=0.2, max_size=0.6, max_objects=4)
    ds = data.dataset(image_size=64, batch_size=4)
    detector = SSDDetector.from_preset("demo_tiny64")
    detector.compile(optimizer="adam")
    cb = MeanAveragePrecisionCallback(ds, every=2)
    hist = detector.fit(ds, epochs=2, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 2 and len(hist.history["val_map"]) == 1  # epoch 2 only
    assert [e for e, _ in cb.history] == [1]
    want = evaluate_model(detector, ds)["map"]  # same weights as at the end of epoch 2
    assert hist.history["val_map"][0] == pytest.approx(want, nan_ok=True)


def test_map_callback_checks_every():
    with pytest.raises(ValueError, match="every must be >= 1"):
        MeanAveragePrecisionCallback([], every=0)


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


