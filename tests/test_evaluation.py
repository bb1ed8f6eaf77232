"""Evaluation on hand-built cases with known AP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark import evaluation
from benchmark.evaluation import (
    METRIC_KEYS,
    Evaluator,
    average_precision,
    evaluate_frame,
    overlap,
    parse_metric,
    patient_draws,
)

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


def test_detection_takes_best_gt_among_all_no_fall_back():
    """Two adjacent lesions: the VOC rule and the "best still unmatched" rule disagree."""
    gts = [[[0, 0, 10, 10], [6, 0, 16, 10]]]
    # both detections overlap lesion 0 best (IoBB 0.9 and 0.8); the second also covers
    # lesion 1 (IoBB 0.6) but lesion 0 is taken: a false positive, no fall-back to lesion 1
    dets = [[[1, 0, 11, 10], [2, 0, 12, 10]]]
    m = ev(gts, dets, [[0.9, 0.8]])
    assert m["IoBB50"] == pytest.approx(0.5)  # the fall-back rule would give 1.0
    assert m["IoBB30"] == pytest.approx(0.5)


def test_adjacent_lesions_voc_rule_differs_from_fall_back_rule():
    gts = [[[0, 0, 10, 10], [10, 0, 20, 10]], [[0, 0, 10, 10]]]
    # image 0: TP on lesion A, then a box over A (IoBB 0.6) and B (IoBB 0.4): FP by the VOC
    # rule, TP on B by the fall-back rule; image 1: one TP ranked last
    dets = [[[0, 0, 10, 10], [4, 0, 14, 10]], [[0, 0, 10, 10]]]
    m = ev(gts, dets, [[0.9, 0.8], [0.7]])
    # VOC: TP, FP, TP over 3 lesions -> 1/3 * 1 + 1/3 * 2/3
    assert m["IoBB30"] == pytest.approx(1 / 3 + 2 / 9)
    assert fall_back_ap(gts, dets, [[0.9, 0.8], [0.7]], "IoBB", 0.3) == pytest.approx(1.0)


def test_detections_on_images_without_ground_truth_change_nothing():
    rng = np.random.default_rng(4)
    gts, dets, scores = random_split(rng, 12)
    base = Evaluator(gts, dets, scores, groups=[f"p{i % 3}" for i in range(12)])
    extra = Evaluator(
        [*gts, np.zeros((0, 4)), np.zeros((0, 4))],
        [*dets, BOX, np.vstack([BOX, BOX + 3])],
        [*scores, [0.99], [0.95, 0.5]],
        groups=[*(f"p{i % 3}" for i in range(12)), "p0", "p9"],
    )
    a, b = base.metrics(bootstrap=50, seed=1), extra.metrics(bootstrap=50, seed=1)
    assert a == b
    assert extra.n_ignored == base.n_ignored + 3


def test_matches_the_authors_loop_on_random_splits():
    rng = np.random.default_rng(0)
    for _ in range(100):
        gts, dets, scores = random_split(rng, int(rng.integers(1, 6)))
        if sum(len(g) for g in gts) == 0:
            continue
        m = ev(gts, dets, scores)
        for key in METRIC_KEYS:
            assert m[key] == pytest.approx(voc_loop_ap(gts, dets, scores, *parse_metric(key)))


def test_cost_layouts_agree_with_the_loop():
    """Many detections on few images (the layout that used to be slow) give the loop's AP."""
    rng = np.random.default_rng(2)
    gts, dets, scores = random_split(rng, 3, max_gt=6, max_det=400)
    m = ev(gts, dets, scores)
    for key in ("IoU50", "IoBB70"):
        assert m[key] == pytest.approx(voc_loop_ap(gts, dets, scores, *parse_metric(key)))


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
    assert a["n_patients"] == 10


@pytest.mark.parametrize("dense_limit", [1 << 22, 0])
def test_replicates_equal_weighted_reference_ap(dense_limit, monkeypatch):
    monkeypatch.setattr(evaluation, "_DENSE_LIMIT", dense_limit)
    rng = np.random.default_rng(5)
    gts, dets, scores = random_split(rng, 30, max_gt=3, max_det=12)
    groups = [f"p{i % 7}" for i in range(30)]
    e = Evaluator(gts, dets, scores, groups=groups)
    draws = patient_draws(len(e.group_names), 40, 9)
    draws[0] = 1.0  # the unweighted split: the point estimate
    reps = e.replicates(METRIC_KEYS, draws)
    point = e.metrics()
    for key in METRIC_KEYS:
        tp = e.match(*parse_metric(key))
        expect = [average_precision(tp, w @ e.gt_per_group, w[e.det_group]) for w in draws]
        np.testing.assert_allclose(reps[key], expect, rtol=1e-12, atol=1e-12)
        assert reps[key][0] == pytest.approx(point[key])


def test_replicates_pair_by_patient_id():
    rng = np.random.default_rng(6)
    gts, dets, scores = random_split(rng, 8, max_gt=2, max_det=4)
    e = Evaluator(gts, dets, scores, groups=[f"p{i % 4}" for i in range(8)])
    draws = patient_draws(5, 30, 1)
    # columns in another order and one extra patient: the weights follow the ids
    shuffled = e.replicates(["IoU30"], draws, ["p3", "x", "p1", "p0", "p2"])["IoU30"]
    ordered = e.replicates(["IoU30"], draws[:, [3, 2, 4, 0]], ["p0", "p1", "p2", "p3"])["IoU30"]
    np.testing.assert_array_equal(shuffled, ordered)
    with pytest.raises(ValueError, match="lack p3"):
        e.replicates(["IoU30"], draws[:, :3], ["p0", "p1", "p2"])


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


def test_frame_errors_name_the_problem():
    df = pd.DataFrame(
        [("p1", 3, "gt", 0, 0, 10, 10.0, np.nan), ("p1", 3, "box", 0, 0, 10, 10.0, 0.5)],
        columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"],
    )
    with pytest.raises(ValueError, match="unknown kind 'box'"):
        evaluate_frame(df)
    with pytest.raises(ValueError, match="lacks columns"):
        evaluate_frame(df.drop(columns="score"))
    df.loc[1, "kind"] = "det"
    df.loc[1, "y1"] = np.inf
    with pytest.raises(ValueError, match="finite"):
        evaluate_frame(df)


# ----------------------------------------------------------------------------- references


def random_split(rng, n_images, max_gt=4, max_det=8):
    """Random boxes on a 50 px field: adjacent and overlapping lesions are common."""
    gts, dets, scores = [], [], []
    for _ in range(n_images):
        for out, most in ((gts, max_gt), (dets, max_det)):
            k = int(rng.integers(0, most))
            corner = rng.uniform(0, 40, (k, 2))
            out.append(np.hstack([corner, corner + rng.uniform(5, 15, (k, 2))]))
        scores.append(rng.uniform(0, 1, len(dets[-1])))
    return gts, dets, scores


def _ranked(dets, scores):
    items = [
        (s, i, b) for i, (d, sc) in enumerate(zip(dets, scores, strict=True))
        for b, s in zip(np.asarray(d, float).reshape(-1, 4), sc, strict=True) if s > 0.2
    ]  # fmt: skip
    return sorted(items, key=lambda item: -item[0])


def _ap(tp, fp, n_gt):
    """VOC2010+ AP written out as in the authors' ``voc_ap`` (sentinels, envelope, recall steps)."""
    tp, fp = np.cumsum(np.asarray(tp, float)), np.cumsum(np.asarray(fp, float))
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_loop_ap(gts, dets, scores, criterion, threshold):
    """The authors' per-detection loop: best GT among all; taken -> FP; no GT -> ignored."""
    used = [np.zeros(len(g), bool) for g in gts]
    tp, fp = [], []
    for _, i, box in _ranked(dets, scores):
        if len(gts[i]) == 0:
            continue
        ov = overlap(box[None], np.asarray(gts[i], float), criterion)
        j = int(np.argmax(ov))
        hit = ov[j] > threshold and not used[i][j]
        used[i][j] |= hit
        tp.append(hit)
        fp.append(not hit)
    return _ap(tp, fp, sum(len(g) for g in gts))


def fall_back_ap(gts, dets, scores, criterion, threshold):
    """The rule this suite used before: best STILL UNMATCHED ground truth of the image."""
    used = [np.zeros(len(g), bool) for g in gts]
    tp, fp = [], []
    for _, i, box in _ranked(dets, scores):
        ov = np.where(
            used[i], -1.0, overlap(box[None], np.asarray(gts[i], float).reshape(-1, 4), criterion)
        )
        j = int(np.argmax(ov)) if len(ov) else 0
        hit = len(ov) > 0 and ov[j] > threshold
        if hit:
            used[i][j] = True
        tp.append(hit)
        fp.append(not hit)
    return _ap(tp, fp, sum(len(g) for g in gts))
