"""Field metrics of EIT reconstructions (invprob.solvers.eit.metrics) on hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from invprob.solvers.eit.metrics import (
    BACKGROUND,
    CONDUCTIVE,
    RESISTIVE,
    dice_scores,
    field_metrics,
    otsu_threshold,
    relative_lp_error,
    segment_three_class,
)

AREAS = np.array([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("p", [1, 2])
def test_relative_lp_error_of_a_constant_offset_is_closed_form(p):
    truth = np.array([1.0, 2.0, 0.5, 1.0])
    c = 0.3
    # sum a |c|^p / sum a |t|^p, to the power 1/p
    expected = (AREAS.sum() * c**p / (AREAS * truth**p).sum()) ** (1 / p)
    assert relative_lp_error(truth + c, truth, AREAS, p) == pytest.approx(expected, rel=1e-14)
    # p = 1 by hand: 10 * 0.3 / (1 + 4 + 1.5 + 4) = 3 / 10.5
    if p == 1:
        assert relative_lp_error(truth + c, truth, AREAS, 1) == pytest.approx(3 / 10.5, rel=1e-14)
    # constant truth: |c| / t whatever the weights
    assert relative_lp_error(np.full(4, 2.5), np.full(4, 2.0), AREAS, p) == pytest.approx(0.25, rel=1e-14)


def test_relative_lp_error_weighting_and_log():
    e, t = np.array([2.0, 1.0]), np.array([1.0, 1.0])
    assert relative_lp_error(e, t, None, 1) == pytest.approx(0.5)
    assert relative_lp_error(e, t, [3.0, 1.0], 1) == pytest.approx(0.75)  # 3 * 1 / (3 + 1)
    assert relative_lp_error(e, t, [3.0, 1.0], 2) == pytest.approx(math.sqrt(0.75))
    # log sigma: a factor 2 everywhere is a constant offset log 2 on log t = log 4
    assert relative_lp_error(np.full(3, 8.0), np.full(3, 4.0), None, 1, log=True) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        relative_lp_error([-1.0, 1.0], [1.0, 1.0], None, 1, log=True)
    with pytest.raises(ValueError, match="p must"):
        relative_lp_error(e, t, None, 0.5)
    with pytest.raises(ValueError, match="areas"):
        relative_lp_error(e, t, [1.0, -1.0], 1)


def test_segment_three_class_rule():
    sigma = np.array([1.0, 1.19, 1.21, 0.84, 0.83, 5.0, 0.01])
    seg = segment_three_class(sigma, 1.0)  # 20 %: above 1.2, below 1/1.2 = 0.8333
    assert seg.tolist() == [BACKGROUND, BACKGROUND, CONDUCTIVE, BACKGROUND, RESISTIVE, CONDUCTIVE, RESISTIVE]
    assert segment_three_class(2 * sigma, 2.0).tolist() == seg.tolist()  # relative to the background
    assert segment_three_class(sigma, 1.0, threshold=1.0).tolist() == [0, 0, 0, 0, 0, 2, 1]
    # Otsu on |log contrast|: two clusters, {0, ~0.03} and {log 4}: the split falls between them
    s = np.array([1.0, 1.03, 1.0 / 1.03, 4.0, 0.25])
    assert segment_three_class(s, 1.0, threshold="otsu").tolist() == [0, 0, 0, 2, 1]
    with pytest.raises(ValueError, match="threshold"):
        segment_three_class(s, 1.0, threshold="median")
    with pytest.raises(ValueError, match="threshold"):
        segment_three_class(s, 1.0, threshold=-0.1)


def test_otsu_threshold_weighted_by_hand():
    # values 0, 1, 3 with weights 1, 1, 2: splits {0}|{1,3}: w0 w1 (m0-m1)^2 = 1*3*(0-7/3)^2 = 16.33,
    # {0,1}|{3}: 2*2*(0.5-3)^2 = 25 -> the second, threshold (1 + 3) / 2
    assert otsu_threshold([3.0, 0.0, 1.0], [2.0, 1.0, 1.0]) == pytest.approx(2.0)
    assert otsu_threshold([3.0, 0.0, 1.0], [1.0, 10.0, 1.0]) == pytest.approx(2.0)
    assert otsu_threshold([0.7, 0.7]) == 0.7


def test_dice_scores_perfect_disjoint_and_area_weighted():
    seg = np.array([0, 0, 1, 2])
    d = dice_scores(seg, seg, AREAS)
    assert d == {"background": 1.0, "resistive": 1.0, "conductive": 1.0, "mean": 1.0}
    d = dice_scores(np.array([1, 1, 2, 2]), np.array([0, 0, 0, 0]), AREAS)  # no class in common
    assert d["background"] == 0.0 and d["resistive"] == 0.0 and d["conductive"] == 0.0 and d["mean"] == 0.0
    # one misplaced cell of area 1 vs of area 4: background {0,1,3} vs {0,1}
    a, b = np.array([0, 0, 2, 0]), np.array([0, 0, 2, 2])
    w = dice_scores(a, b, AREAS)
    assert w["background"] == pytest.approx(2 * 3 / (7 + 3))  # areas: |A| = 1 + 2 + 4, |B| = 3, |A n B| = 3
    assert w["conductive"] == pytest.approx(2 * 3 / (3 + 7))  # |A| = 3, |B| = 3 + 4
    assert w["resistive"] == 1.0  # absent from both
    u = dice_scores(a, b)  # unweighted: 2*2/(3+2) = 0.8, 2*1/(1+2)
    assert u["background"] == pytest.approx(0.8) and u["conductive"] == pytest.approx(2 / 3)
    assert w["mean"] == pytest.approx((0.6 + 0.6 + 1.0) / 3)
    with pytest.raises(ValueError, match="shape"):
        dice_scores(a, b[:3])


def test_field_metrics_keys():
    truth = np.array([1.0, 1.0, 2.0, 0.5])
    m = field_metrics(truth * 1.1, truth, AREAS, 1.0)
    assert m["rel_l1"] == pytest.approx(0.1) and m["rel_l2"] == pytest.approx(0.1)
    assert {"rel_l1_log", "rel_l2_log", "dice_background", "dice_resistive", "dice_conductive", "dice_mean"} <= set(m)
    assert "rel_l1_log" not in field_metrics(np.ones(4), np.ones(4), AREAS, 1.0)  # log truth 0: undefined
