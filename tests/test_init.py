"""`ssd_keras/__init__.py`: the public names of DESIGN.md resolve; importing is cheap."""

import subprocess
import sys

import ssd_keras

DESIGN_CONTRACT = [
    "AnchorConfig", "jaccard", "activations_to_boxes", "map_to_ground_truth", "SSDLoss",
    "build_ssd", "decode_detections", "evaluate_detections",
]


def test_every_exported_name_resolves_and_the_contract_is_exported():
    assert set(DESIGN_CONTRACT) <= set(ssd_keras.__all__)
    for name in ssd_keras.__all__:
        assert getattr(ssd_keras, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    try:
        ssd_keras.not_a_name  # noqa: B018
    except AttributeError as e:
        assert "not_a_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_import_and_help_do_not_import_tensorflow():
    code = ("import sys, ssd_keras, ssd_keras.cli; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
