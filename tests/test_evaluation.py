"""Evaluation on hand-built cases with known AP."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import Evaluator, average_precision, evaluate_frame, overlap

BOX = np.array([[0.0, 0.0, 10.0, 10.0]])


def ev(gts, dets, scores, groups=None):
    return Evaluator(
        [np.asarray(g, float).reshape(-1, 4) for g in gts],
        [np.asarray(d, float).reshape(-1, 4) for d in dets],
        [np.asarray(s, float) for s in scores],
        groups=groups,
    ).metrics()


def test_perfect_detection_scores_one_everywhere():
    m = ev([BOX], [BOX], [[0.9]])
    for key in ("IoU30", "IoU50", "IoU70", "IoBB30", "IoBB50", "IoBB70"):
        assert m[key] == pytest.approx(1.0)


def test_iobb_uses_detected_box_area():
    inner = [[0.0, 0.0, 5.0, 10.0]]  # half of the GT: IoU 0.5 (not > 0.5), IoBB 1.0
    m = ev([BOX], [inner], [[0.9]])
    assert m["IoU30"] == 1.0 and m["IoU50"] == 0.0 and m["IoU70"] == 0.0
    assert m["IoBB30"] == m["IoBB50"] == m["IoBB70"] == 1.0
    big = [[0.0, 0.0, 20.0, 10.0]]  # twice the GT: IoU 0.5, IoBB 0.5
    m = ev([BOX], [big], [[0.9]])
    assert m["IoBB30"] == 1.0 and m["IoBB50"] == 0.0
    assert overlap(np.array(big[0]), BOX[0], "IoBB") == pytest.approx(0.5)


def test_score_filter_is_strictly_above_0_2():
    assert ev([BOX], [BOX], [[0.2]])["IoU50"] == 0.0
    assert ev([BOX], [BOX], [[0.2001]])["IoU50"] == 1.0


def test_ground_truth_on_image_without_detections_counts():
    m = ev([BOX, BOX], [BOX, np.zeros((0, 4))], [[0.9], []])
    assert m["IoU50"] == pytest.approx(0.5)
    assert m["n_gt"] == 2


def test_duplicates_are_false_positives():
    # image A: TP (0.9) then duplicate (0.8); image B: TP (0.7) -> TP, FP, TP
    m = ev([BOX, BOX], [np.vstack([BOX, BOX]), BOX], [[0.9, 0.8], [0.7]])
    assert m["IoU50"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


def test_greedy_match_takes_unmatched_gt_of_highest_overlap():
    gts = [[[0, 0, 10, 10], [6, 0, 16, 10]]]
    # first detection overlaps both, best with GT 0; second then goes to GT 1 (overlap 0.6 IoBB)
    dets = [[[1, 0, 11, 10], [2, 0, 12, 10]]]
    m = ev(gts, dets, [[0.9, 0.8]])
    assert m["IoBB50"] == pytest.approx(1.0)
    assert m["IoBB70"] == pytest.approx(0.5)  # second detection: 0.6 with GT 1 -> FP


def test_all_point_interpolation():
    tp = np.array([True, False, True, False, True])
    # recall steps at ranks 1,3,5 with precisions 1, 2/3, 3/5 over 4 GT
    assert average_precision(tp, 4) == pytest.approx(0.25 * (1 + 2 / 3 + 3 / 5))


def test_froc_sensitivity_per_false_positive_rate():
    gts = [BOX, BOX, BOX, BOX]
    far = [[50.0, 50.0, 60.0, 60.0]]
    dets = [BOX, far, BOX, far]
    m = ev(gts, dets, [[0.9], [0.8], [0.7], [0.6]])
    sens = dict(zip(m["froc"]["fp_per_image"], m["froc"]["sensitivity"], strict=True))
    assert sens[0.25] == pytest.approx(0.5)  # one FP allowed over 4 images: TP, FP, TP -> 2/4
    assert sens[0.125] == pytest.approx(0.25)  # no FP allowed -> only the first TP


def test_no_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="no ground-truth"):
        ev([np.zeros((0, 4))], [BOX], [[0.9]])


def test_bootstrap_ci_is_seeded_and_brackets_ap():
    rng = np.random.default_rng(1)
    gts = [BOX + rng.integers(0, 5) for _ in range(40)]
    dets = [g + rng.normal(0, 2, (1, 4)) for g in gts]
    scores = [rng.uniform(0.3, 1, 1) for _ in gts]
    groups = [str(i // 4) for i in range(40)]
    build = Evaluator(gts, dets, scores, groups=groups)
    a = build.metrics(bootstrap=200, seed=3)
    b = build.metrics(bootstrap=200, seed=3)
    assert a["ci"] == b["ci"]
    lo, hi = a["ci"]["IoU50"]
    assert lo <= a["IoU50"] <= hi and lo < hi


def test_frame_round_trip_matches_direct_evaluation():
    rows = [
        ("p1", 3, "gt", 0, 0, 10, 10, np.nan),
        ("p1", 3, "det", 0, 0, 10, 10, 0.9),
        ("p1", 4, "gt", 0, 0, 10, 10, np.nan),
        ("p2", 5, "gt", 0, 0, 10, 10, np.nan),
        ("p2", 5, "det", 30, 30, 40, 40, 0.8),
    ]
    df = pd.DataFrame(rows, columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"])
    m = evaluate_frame(df)
    assert m["IoU50"] == pytest.approx(1 / 3)
    assert m["n_images"] == 3


def test_hundred_thousand_detections_under_a_second():
    rng = np.random.default_rng(0)
    n = 1000
    gts = [
        rng.uniform(0, 200, (2, 2)).repeat(2, axis=1)[:, [0, 1, 2, 3]] + [0, 0, 30, 30]
        for _ in range(n)
    ]
    corners = [rng.uniform(0, 200, (100, 2)) for _ in range(n)]
    dets = [np.hstack([c, c + 30]) for c in corners]
    scores = [rng.uniform(0, 1, 100) for _ in range(n)]
    start = time.perf_counter()
    Evaluator(gts, dets, scores).metrics()
    assert time.perf_counter() - start < 1.0
