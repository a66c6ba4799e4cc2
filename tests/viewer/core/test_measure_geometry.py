"""Angle and long/short axis geometry (`viewer.core.measure`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from viewer.core.measure import CrossAxes, angle_deg


def test_angle_at_the_vertex():
    assert angle_deg((10, 0), (0, 0), (0, 5)) == pytest.approx(90.0)
    assert angle_deg((1, 1), (0, 0), (1, 0)) == pytest.approx(45.0)
    assert angle_deg((3, 0, 0), (0, 0, 0), (-2, 0, 0)) == pytest.approx(180.0)
    assert math.isnan(angle_deg((0, 0), (0, 0), (1, 0)))


def test_short_axis_stays_perpendicular_when_either_axis_moves():
    axes = CrossAxes((0.0, 0.0), (40.0, 0.0), 0.5, 10.0, -6.0)
    s0, s1 = axes.short_ends
    assert s0 == pytest.approx((20.0, 10.0)) and s1 == pytest.approx((20.0, -6.0))
    assert axes.lengths == pytest.approx((40.0, 16.0))
    turned = axes.with_long((0.0, 0.0), (0.0, 40.0))  # the long axis turned 90 degrees
    s0, s1 = turned.short_ends
    assert np.dot(np.subtract(s0, s1), (0, 1)) == pytest.approx(0.0)  # still perpendicular
    assert turned.lengths == pytest.approx((40.0, 16.0))
    dragged = axes.with_short_end(0, (30.0, 14.0))  # the short axis slides to x = 30 and reaches 14 mm
    s0, s1 = dragged.short_ends
    assert s0 == pytest.approx((30.0, 14.0)) and s1 == pytest.approx((30.0, -6.0))
    assert dragged.lengths == pytest.approx((40.0, 20.0))
    assert axes.with_short_end(1, (60.0, -3.0)).t == 1.0  # never past the long axis' end
