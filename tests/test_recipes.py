"""`ssd_keras.recipes`: the demo's settings come from its preset unless given.

(`fit_lesson_recipe` is tested through the command line in test_own_data.py and on several
workers in test_distribute.py.)"""

import json

from ssd_keras.presets import get_preset
from ssd_keras.recipes import run_demo


def test_run_demo_takes_unset_settings_from_the_preset(tmp_path):
    recipe = get_preset("demo_tiny64")["recipe"]
    done = run_demo(tmp_path, epochs=1, train_images=8, val_images=4, log=lambda *a: None, verbose=0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["batch_size"], metrics["lr"], metrics["augment"]) == (
        recipe["batch_size"], recipe["lr"], recipe["augment"])
    # The demo's shapes, not make_shapes' harder default (min_size 0.12, up to 8 objects).
    assert (metrics["min_size"], metrics["max_size"], metrics["max_objects"]) == (
        recipe["shapes"]["min_size"], recipe["shapes"]["max_size"], recipe["shapes"]["max_objects"])
    assert done["detector"].backbone_name == get_preset("demo_tiny64")["detector"]["backbone"] == "tiny8"
    # Given settings win over the preset's.
    run_demo(tmp_path / "b", epochs=1, train_images=8, val_images=4, batch_size=4, lr=1e-3,
             shapes={"max_objects": 2}, log=lambda *a: None, verbose=0)
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert (metrics["batch_size"], metrics["lr"], metrics["max_objects"], metrics["min_size"]) == (
        4, 1e-3, 2, recipe["shapes"]["min_size"])


def test_run_demo_takes_a_prebuilt_detector_but_not_also_overrides(tmp_path):
    import pytest

    from ssd_keras.detector import SSDDetector

    detector = SSDDetector.from_preset("demo_tiny64", anchors={"grids": [4, 2, 1]})
    with pytest.raises(ValueError, match="pass detector or detector_overrides, not both"):
        run_demo(tmp_path, detector=detector, detector_overrides={"dropout": 0.1})
    done = run_demo(tmp_path, epochs=1, train_images=8, val_images=4, detector=detector,
                    log=lambda *a: None, verbose=0)
    assert done["detector"] is detector
    assert json.loads((tmp_path / "metrics.json").read_text())["anchors"]["grids"] == [4, 2, 1]


def test_run_demo_trains_a_detector_built_after_the_seed_as_it_trains_its_own(tmp_path):
    # The CLI builds the detector itself (to report bad settings before any work) right after
    # keras.utils.set_random_seed(seed); the number it prints must be the one run_demo gives alone.
    import keras
    import numpy as np

    from ssd_keras.detector import SSDDetector

    settings = dict(epochs=1, train_images=8, val_images=4, seed=3, log=lambda *a: None, verbose=0)
    own = run_demo(tmp_path / "own", **settings)
    keras.utils.set_random_seed(3)
    given = run_demo(tmp_path / "given", detector=SSDDetector.from_preset("demo_tiny64"), **settings)
    own_weights, given_weights = own["detector"].get_weights(), given["detector"].get_weights()
    assert len(own_weights) == len(given_weights)
    for a, b in zip(own_weights, given_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["map"] == \
        json.loads((tmp_path / "given" / "metrics.json").read_text())["map"]
    # The comparison can fail: the seed decides the initial weights.
    initial = []
    for seed in (3, 4):
        keras.utils.set_random_seed(seed)
        initial.append(SSDDetector.from_preset("demo_tiny64").get_weights())
    assert not all(np.allclose(a, b) for a, b in zip(*initial))
