"""ssd_keras.saving: one `.keras` file holds the detector (class names, anchors, settings,
metadata); clear errors for files that are not one."""

import keras
import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig
from ssd_keras.detector import SSDDetector
from ssd_keras.model import build_ssd
from ssd_keras.saving import load_model


def test_the_one_file_is_enough(tmp_path):
    anchors = AnchorConfig(grids=(4, 2), zooms=(1.0,), ratios=((1.0, 1.0), (1.0, 0.5)))
    detector = SSDDetector(["a", "b"], anchors, backbone="tiny", image_size=64, head_filters=32,
                           score_threshold=0.1, metadata={"data": "shapes", "note": [1, 2]})
    path = tmp_path / "m.keras"
    detector.save(path)
    # Nothing beside it: no side-car file is written or needed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    loaded = load_model(path)
    assert loaded.class_names == ["a", "b"] and loaded.anchors == anchors
    assert loaded.decoder_settings["score_threshold"] == 0.1
    assert loaded.metadata == {"data": "shapes", "note": [1, 2]}
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), detector(x), atol=1e-6)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "nope.keras")
    (tmp_path / "x.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="expected a .keras file"):
        load_model(tmp_path / "x.h5")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.keras: expected a .keras file"):
        load_model(tmp_path / "junk.keras")
    raw = build_ssd(2, backbone="tiny", image_size=64)
    raw.save(tmp_path / "raw.keras")
    with pytest.raises(ValueError, match="holds a Functional, not an SSDDetector"):
        load_model(tmp_path / "raw.keras")


def test_compile_true_keeps_the_optimizer_state_for_more_training(tmp_path):
    detector = SSDDetector(["a"], backbone="tiny", image_size=64, head_filters=16)
    detector.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    y = np.array([[[0.1, 0.1, 0.6, 0.5, 0]], [[0.2, 0.3, 0.9, 0.8, 0]]], np.float32)
    detector.fit(x, y, epochs=1, verbose=0)
    detector.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras", compile=True)
    assert int(loaded.optimizer.iterations) == 1
    assert set(loaded.evaluate(x, y, return_dict=True, verbose=0)) >= {"loss", "loc", "clas"}
