"""ssd_keras.presets: each preset complete on its own, copies handed out, unknown names named.
(Building a detector from each preset: tests/test_detector.py.)"""

import pytest

from ssd_keras import SSDDetector
from ssd_keras.presets import DEMO_ANCHORS, LESSON_ANCHORS, PRESETS, get_preset


def test_every_preset_is_complete():
    for name, preset in PRESETS.items():
        assert set(preset) == {"description", "detector", "recipe"}, name
        assert {"class_names", "anchors", "backbone", "image_size", "focal"} <= set(preset["detector"]), name
        assert preset["description"].strip(), name


def test_the_lessons_anchors_and_the_demos():
    # The lesson: 4x4, 2x2, 1x1 grids, zooms 0.7 / 1 / 1.3 and three ratios (k = 9, 189 anchors).
    assert LESSON_ANCHORS == {"grids": [4, 2, 1], "zooms": [0.7, 1.0, 1.3],
                              "ratios": [[1.0, 1.0], [1.0, 0.5], [0.5, 1.0]]}
    assert PRESETS["lesson_resnet34_224"]["detector"]["anchors"] == LESSON_ANCHORS
    assert list(PRESETS["lesson_resnet34_224"]["detector"]["focal"]) == [0.25, 1.0]
    # The demo adds tiny8's 8x8 map and drops the 0.7 zoom; the ratios stay the lesson's.
    assert DEMO_ANCHORS == dict(LESSON_ANCHORS, grids=[8, 4, 2, 1], zooms=[1.0, 1.3])
    assert PRESETS["demo_tiny64"]["detector"]["anchors"] == DEMO_ANCHORS


def test_get_preset_hands_out_a_copy():
    preset = get_preset("demo_tiny64")
    preset["detector"]["anchors"]["grids"].append(99)
    preset["recipe"]["shapes"]["min_size"] = 0.9
    assert get_preset("demo_tiny64") == PRESETS["demo_tiny64"]
    assert 99 not in PRESETS["demo_tiny64"]["detector"]["anchors"]["grids"]


def test_an_unknown_preset_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'yolo'; choose one of \['demo_tiny64', 'lesson_resnet34_224'\]"):
        get_preset("yolo")
    with pytest.raises(ValueError, match="unknown preset 'yolo'"):
        SSDDetector.from_preset("yolo")
