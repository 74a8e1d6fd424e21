"""`ssd_keras/__init__.py`: the public contract (../shared/DESIGN.md, docs/ARCHITECTURE.md) resolves; importing registers the
serialisable classes so plain `keras.saving.load_model` finds them."""

import keras
import numpy as np

import ssd_keras

DESIGN_CONTRACT = [
    "AnchorConfig", "jaccard", "activations_to_boxes", "map_to_ground_truth", "SSDLoss",
    "build_ssd", "decode_detections", "evaluate_detections", "SSDDetector",
]


def test_every_exported_name_resolves_and_the_contract_is_exported():
    assert set(DESIGN_CONTRACT) <= set(ssd_keras.__all__)
    for name in ssd_keras.__all__:
        assert getattr(ssd_keras, name) is not None, name


def test_plain_keras_load_model_after_import(tmp_path):
    anchors = ssd_keras.AnchorConfig()
    model = ssd_keras.build_ssd(3, anchors, backbone="tiny", image_size=64)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_ssd_detector_from_preset_is_the_contracts_task_model():
    assert callable(ssd_keras.SSDDetector.from_preset)
    assert {"lesson_resnet34_224", "demo_tiny64"} <= set(ssd_keras.PRESETS)
