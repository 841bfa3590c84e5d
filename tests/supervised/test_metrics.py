"""Metric formulas against hand-computed matrices."""

import math

import pytest

from tau2.continual_learning.metrics import compute_cl_metrics

R = [
    [0.9, 0.1, 0.0],
    [0.7, 0.8, 0.2],
    [0.6, 0.5, 0.9],
]


def test_higher_is_better_hand_computed():
    m = compute_cl_metrics(R, baseline=[0.1, 0.05, 0.1])
    assert m["ACC"] == pytest.approx((0.6 + 0.5 + 0.9) / 3)
    # BWT = mean(0.6-0.9, 0.5-0.8) = -0.3
    assert m["BWT"] == pytest.approx(-0.3)
    # FWT = mean(R[0][1]-b1, R[1][2]-b2) = mean(0.05, 0.1)
    assert m["FWT"] == pytest.approx(0.075)
    # f_0 = max(0.9, 0.7) - 0.6 = 0.3 ; f_1 = max(0.1, 0.8) - 0.5 = 0.3
    assert m["forgetting_per_task"] == pytest.approx([0.3, 0.3])
    assert m["forgetting"] == pytest.approx(0.3)
    assert m["num_tasks"] == 3


def test_lower_is_better_signs_are_consistent():
    mse = [
        [0.10, 0.90, 0.80],
        [0.30, 0.20, 0.70],
        [0.40, 0.25, 0.15],
    ]
    m = compute_cl_metrics(mse, baseline=[1.0, 1.0, 1.0], higher_is_better=False)
    assert m["ACC"] == pytest.approx((0.40 + 0.25 + 0.15) / 3)
    # got worse on both old tasks -> BWT negative, forgetting positive
    assert m["BWT"] == pytest.approx(-((0.40 - 0.10) + (0.25 - 0.20)) / 2)
    assert m["forgetting_per_task"] == pytest.approx([0.40 - 0.10, 0.25 - 0.20])
    # better than the untrained model before training -> FWT positive
    assert m["FWT"] == pytest.approx(((1.0 - 0.90) + (1.0 - 0.70)) / 2)


def test_partial_matrix_uses_complete_rows_only():
    lower_triangular = [[0.9], [0.7, 0.8]]
    m = compute_cl_metrics(lower_triangular)
    assert m["num_tasks"] == 2
    assert m["ACC"] == pytest.approx(0.75)
    assert m["BWT"] == pytest.approx(-0.2)
    assert m["FWT"] is None
    in_progress = [*R[:2], [0.6, None, None]]
    assert compute_cl_metrics(in_progress)["num_tasks"] == 2
    single = compute_cl_metrics([[0.5, None]])
    assert single["BWT"] is None and single["forgetting"] is None and single["ACC"] == 0.5


@pytest.mark.parametrize(
    ("matrix", "baseline", "message"),
    [
        ([[0.1, math.nan], [0.2, 0.3]], None, r"matrix\[0\]\[1\] must be finite"),
        ([[0.1], [0.2], [0.3]], None, "3 rows but at most 1 columns"),
        ([[0.1, 0.2], [0.2, 0.3]], [0.1], "baseline has 1 entries"),
        ([[None, 0.2], [0.2, 0.3]], None, "row 0 lacks scores"),
        ([], None, "empty"),
        ([[0.1, "x"]], None, r"matrix\[0\]\[1\] must be a number"),
    ],
)
def test_bad_input_is_rejected_clearly(matrix, baseline, message):
    with pytest.raises(ValueError, match=message):
        compute_cl_metrics(matrix, baseline=baseline)
