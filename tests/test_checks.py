"""`ssd_keras._checks.is_whole`: which values count as integers for sizes and counts."""

import math

import numpy as np
import pytest

from ssd_keras._checks import is_whole


@pytest.mark.parametrize("value", [4, 4.0, np.int64(4), np.int32(0), np.float32(7.0), -3, np.array(64)])
def test_integers_however_typed(value):
    assert is_whole(value)


@pytest.mark.parametrize("value", [4.7, 2.5, True, False, np.bool_(True), math.nan, math.inf, "4", None, [4], np.array(2.5), np.array([4])])
def test_fractions_bools_and_non_numbers_are_not(value):
    assert not is_whole(value)
