"""Detection evaluation as the paper's authors did it: AP at IoU / IoBB thresholds, FROC, bootstrap.

The rule (paper sec. V-A where it is explicit; where it is silent, the authors' evaluation code,
``test_ap_iobb.py`` of github.com/L0SG/grouped-ssd-pytorch, run with ``--use_07_metric False
--confidence_threshold 0.2`` as their README shows; it produced every published AP):

* only detections with score strictly above :data:`SCORE_THRESHOLD` (0.2) count;
* the detections of the whole split are sorted by confidence (ties: image order, then the
  order the detector returned them);
* PASCAL VOC matching: each detection takes the ground truth of its image with the highest
  overlap among ALL of that image's ground truths (the first one on ties). It is a true
  positive when that overlap is strictly above the threshold and that ground truth is not yet
  matched by a higher-scoring detection; otherwise it is a false positive. There is no
  fall-back to the second-best ground truth, so a detection between two adjacent lesions whose
  best lesion is already found counts as a false positive even when it overlaps the other one;
* a detection on an image without any ground truth is ignored (neither TP nor FP), as in the
  authors' code; such images do not count for FROC either;
* every ground truth counts, also on images without any detection (the authors' code skipped
  such images before counting their ground truth; we do not);
* AP is the all-point interpolated area under the precision envelope (VOC2010+);
* overlaps: IoU, and IoBB = intersection over the area of the DETECTED box.

Because a detection's best ground truth does not depend on the order, matching needs no loop:
the first detection in score order to claim a ground truth with overlap above the threshold is
its true positive, every later claimant a false positive. Best ground truths are found per
image segment (no dense detections x ground truths matrix over the split), so the cost is
linear in the detection-ground-truth pairs of each image, however detections spread over images.

Beyond the paper: FROC (sensitivity at 1/8 ... 8 false positives per image) and 95% bootstrap
intervals that resample patients (:meth:`Evaluator.replicates` gives the AP of each resample,
for intervals of derived numbers such as the paper's sensitivity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from benchmark.vocabulary import CRITERIA, METRIC_KEYS

SCORE_THRESHOLD = 0.2
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FROC_CRITERION = "IoU30"
PREDICTION_COLUMNS = ("patient", "slice", "kind", "x0", "y0", "x1", "y1", "score")
CI_LEVEL = 0.95
_CHUNK = 256  # bootstrap resamples evaluated together (memory: a few [256, T] arrays)
_DENSE_LIMIT = 1 << 22  # true positives x patients up to which running counts are kept dense


def overlap(det: np.ndarray, gt: np.ndarray, criterion: str) -> np.ndarray:
    """Overlap of boxes ``det [..., 4]`` with ``gt [..., 4]`` (broadcast), IoU or IoBB."""
    ix = np.clip(np.minimum(det[..., 2], gt[..., 2]) - np.maximum(det[..., 0], gt[..., 0]), 0, None)
    iy = np.clip(np.minimum(det[..., 3], gt[..., 3]) - np.maximum(det[..., 1], gt[..., 1]), 0, None)
    inter = ix * iy
    area_det = (det[..., 2] - det[..., 0]) * (det[..., 3] - det[..., 1])
    if criterion == "IoBB":
        denom = area_det
    elif criterion == "IoU":
        area_gt = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
        denom = area_det + area_gt - inter
    else:
        raise ValueError(f"unknown overlap criterion {criterion!r}; use one of {CRITERIA}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / denom, 0.0)


def parse_metric(key: str) -> tuple[str, float]:
    """``"IoBB50"`` -> ``("IoBB", 0.5)``."""
    for criterion in CRITERIA:
        rest = key[len(criterion) :]
        if key.startswith(criterion) and rest.isdigit():
            return criterion, int(rest) / 100
    raise ValueError(f"unknown metric {key!r}; use e.g. {', '.join(METRIC_KEYS)}")


def patient_draws(n_patients: int, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
    """``[n_boot, n_patients]`` counts: how often each patient is drawn in each resample.

    Each resample draws ``n_patients`` patients with replacement; ``seed`` (an int or a list of
    non-negative ints) makes the draws reproducible.
    """
    rng = np.random.default_rng(seed)
    if n_patients == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot).astype(
        float
    )


def percentile_ci(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when there are none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


class Evaluator:
    """Ground truth and detections of one split, flattened once, evaluated under any criterion.

    ``gt_boxes[i]`` ``[G_i, 4]``, ``det_boxes[i]`` ``[D_i, 4]`` and ``det_scores[i]`` ``[D_i]``
    belong to image ``i`` of patient ``groups[i]`` (default: every image its own patient);
    boxes are ``x0, y0, x1, y1`` pixels. :meth:`from_frame` reads a predictions table.
    """

    def __init__(
        self,
        gt_boxes: Sequence[np.ndarray],
        det_boxes: Sequence[np.ndarray],
        det_scores: Sequence[np.ndarray],
        groups: Sequence[str] | None = None,
        score_threshold: float = SCORE_THRESHOLD,
    ):
        n = len(gt_boxes)
        if not (len(det_boxes) == len(det_scores) == n):
            raise ValueError("gt_boxes, det_boxes and det_scores need one entry per image")
        groups = list(groups) if groups is not None else [str(i) for i in range(n)]
        if len(groups) != n:
            raise ValueError("groups needs one patient id per image")
        gts = [np.asarray(g, np.float64).reshape(-1, 4) for g in gt_boxes]
        dets = [np.asarray(b, np.float64).reshape(-1, 4) for b in det_boxes]
        scores = [np.asarray(s, np.float64).reshape(-1) for s in det_scores]
        if any(len(b) != len(s) for b, s in zip(dets, scores, strict=True)):
            raise ValueError("every detection needs one box and one score")
        images = np.arange(n)
        self._setup(
            np.repeat(images, [len(g) for g in gts]),
            _stack(gts),
            np.repeat(images, [len(s) for s in scores]),
            _stack(dets),
            np.concatenate(scores) if scores else np.zeros(0),
            np.asarray(groups, dtype=str),
            score_threshold,
        )

    @classmethod
    def from_frame(
        cls, predictions: pd.DataFrame, score_threshold: float = SCORE_THRESHOLD
    ) -> Evaluator:
        """The split of a predictions table (the ``predictions_<split>.csv`` layout).

        One row per box: ``patient, slice, kind`` (``gt`` or ``det``), ``x0, y0, x1, y1, score``.
        Images are ``(patient, slice)`` pairs; an image appears when it has any row.
        """
        missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
        if missing:
            raise ValueError(f"predictions table lacks columns {sorted(missing)}")
        kind = predictions["kind"].astype(str).to_numpy()
        unknown = sorted(set(np.unique(kind)) - {"gt", "det"})
        if unknown:
            raise ValueError(
                f"predictions table: unknown kind {', '.join(map(repr, unknown))} (use gt or det)"
            )
        patient = predictions["patient"].astype(str).to_numpy()
        keys = pd.MultiIndex.from_arrays([patient, predictions["slice"].to_numpy()])
        image, uniques = pd.factorize(keys, sort=True)
        image_patient = np.asarray(uniques.get_level_values(0), dtype=str)
        boxes = predictions[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
        is_gt = kind == "gt"
        scores = predictions["score"].to_numpy(np.float64)[~is_gt]
        if np.isnan(scores).any():
            raise ValueError("predictions table: a det row has no score")
        ev = cls.__new__(cls)
        ev._setup(
            image[is_gt],
            boxes[is_gt],
            image[~is_gt],
            boxes[~is_gt],
            scores,
            image_patient,
            score_threshold,
        )
        return ev

    def _setup(
        self,
        gt_image: np.ndarray,
        gt_boxes: np.ndarray,
        det_image: np.ndarray,
        det_boxes: np.ndarray,
        det_scores: np.ndarray,
        image_group: np.ndarray,
        score_threshold: float,
    ) -> None:
        if not (np.isfinite(gt_boxes).all() and np.isfinite(det_boxes).all()):
            raise ValueError("box coordinates must be finite numbers")
        n = len(image_group)
        # ground truth ordered by image; image i owns gt[start[i] : start[i] + count[i]]
        order = np.argsort(gt_image, kind="stable")
        self.gt_boxes = gt_boxes[order]
        self.gt_count = np.bincount(gt_image, minlength=n)
        self.gt_start = np.cumsum(self.gt_count) - self.gt_count
        self.n_gt = int(self.gt_count.sum())
        # the patients that take part: those with ground truth (the bootstrap resamples them)
        self.group_names = np.unique(image_group[self.gt_count > 0])
        group_index = np.searchsorted(self.group_names, image_group)
        has_gt = self.gt_count > 0
        self.gt_per_group = np.bincount(
            group_index[has_gt], weights=self.gt_count[has_gt], minlength=len(self.group_names)
        )
        self.n_images = int(has_gt.sum())  # images that take part (FROC's count)
        # detections above the threshold; those on images without ground truth are ignored
        above = det_scores > score_threshold
        keep = above & (self.gt_count[det_image] > 0)
        self.n_ignored = int(above.sum() - keep.sum())
        image, boxes, scores = det_image[keep], det_boxes[keep], det_scores[keep]
        order = np.lexsort((np.arange(len(scores)), image, -scores))
        self.det_image, self.det_boxes, self.det_scores = image[order], boxes[order], scores[order]
        self.det_group = group_index[self.det_image]
        self._best: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_det(self) -> int:
        """Detections that take part (score above the threshold, on an image with ground truth)."""
        return len(self.det_scores)

    def best_match(self, criterion: str) -> tuple[np.ndarray, np.ndarray]:
        """Per detection (score order): index of its image's best ground truth, and the overlap.

        Computed once per criterion on the detection-ground-truth pairs of each image.
        """
        if criterion not in self._best:
            count = self.gt_count[self.det_image]
            first_pair = np.cumsum(count) - count
            pair_det = np.repeat(np.arange(self.n_det), count)
            pair_gt = np.repeat(self.gt_start[self.det_image] - first_pair, count) + np.arange(
                len(pair_det)
            )
            ov = overlap(self.det_boxes[pair_det], self.gt_boxes[pair_gt], criterion)
            if self.n_det:
                best = np.maximum.reduceat(ov, first_pair)
                hits = np.flatnonzero(ov == best[pair_det])
                first = hits[np.r_[True, pair_det[hits[1:]] != pair_det[hits[:-1]]]]
                self._best[criterion] = (pair_gt[first], best)
            else:
                self._best[criterion] = (np.zeros(0, np.int64), np.zeros(0))
        return self._best[criterion]

    def match(self, criterion: str, threshold: float) -> np.ndarray:
        """True positive flag per detection in score order, by the VOC rule (module docstring)."""
        best_gt, best_ov = self.best_match(criterion)
        claims = np.flatnonzero(best_ov > threshold)
        _, first = np.unique(best_gt[claims], return_index=True)
        tp = np.zeros(self.n_det, dtype=bool)
        tp[claims[first]] = True
        return tp

    def average_precisions(self, keys: Sequence[str] = METRIC_KEYS) -> dict[str, float]:
        """AP (fraction) per metric key; NaN when the split has no ground truth."""
        return {key: average_precision(self.match(*parse_metric(key)), self.n_gt) for key in keys}

    def metrics(
        self,
        keys: Sequence[str] = METRIC_KEYS,
        *,
        bootstrap: int = 0,
        seed: int = 0,
        froc_criterion: str = FROC_CRITERION,
    ) -> dict:
        """AP per metric key, FROC and (when ``bootstrap > 0``) 95% CIs resampling patients."""
        if self.n_gt == 0:
            raise ValueError("cannot evaluate: the split has no ground-truth lesion boxes")
        out: dict = self.average_precisions(keys)
        froc_tp = self.match(*parse_metric(froc_criterion))
        out["froc"] = {
            "criterion": froc_criterion,
            "fp_per_image": list(FROC_RATES),
            "sensitivity": froc(froc_tp, self.n_gt, self.n_images).tolist(),
        }
        if bootstrap > 0:
            draws = patient_draws(len(self.group_names), bootstrap, seed)
            reps = self.replicates(keys, draws)
            out["ci"] = {key: list(percentile_ci(reps[key])) for key in keys}
        out["n_images"] = self.n_images
        out["n_gt"] = self.n_gt
        out["n_det"] = self.n_det
        out["n_patients"] = len(self.group_names)
        return out

    def replicates(
        self, keys: Sequence[str], draws: np.ndarray, patients: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """AP (fraction) of each bootstrap resample, per metric key.

        ``draws`` ``[B, P]``: how often each patient is drawn per resample (see
        :func:`patient_draws`), one column per id of ``patients`` (default: this split's
        patients, sorted). Matching is per image, so a resample only re-weights detections and
        ground truth by how often their patient was drawn. Give the same ``draws`` and
        ``patients`` to two evaluators of the same patients to pair them. NaN where a resample
        holds no ground truth.
        """
        draws = np.atleast_2d(np.asarray(draws, float))
        if patients is not None:
            column = {str(p): i for i, p in enumerate(patients)}
            absent = [g for g in self.group_names if g not in column]
            if absent:
                raise ValueError(f"bootstrap patients lack {', '.join(absent[:5])}")
            draws = draws[:, [column[g] for g in self.group_names]]
        if draws.shape[1] != len(self.group_names):
            raise ValueError(
                f"draws have {draws.shape[1]} patient columns, the split has "
                f"{len(self.group_names)} patients"
            )
        return {
            key: _replicate_ap(
                self.match(*parse_metric(key)), self.det_group, self.gt_per_group, draws
            )
            for key in keys
        }


def average_precision(tp: np.ndarray, n_gt: float, weights: np.ndarray | None = None) -> float:
    """All-point interpolated AP of detections in descending score order (VOC2010+).

    ``weights``: optional weight per detection (a bootstrap resample's patient counts).
    """
    w = np.ones(len(tp)) if weights is None else weights
    tps = np.cumsum(w * tp)
    fps = np.cumsum(w * ~tp)
    if n_gt <= 0:
        return float("nan")
    recall = np.concatenate([[0.0], tps / n_gt])
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
    envelope = np.concatenate([np.maximum.accumulate(precision[::-1])[::-1], [0.0]])
    return float(np.sum(np.diff(recall) * envelope[:-1]))


def _replicate_ap(
    tp: np.ndarray, det_group: np.ndarray, gt_per_group: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """:func:`average_precision` for every row of patient weights ``draws [B, P]`` at once.

    Recall only rises at true positives and precision only falls between them, so the precision
    envelope is needed at the T true positives alone. The weighted count of detections up to
    each true positive is a product of the weights with per-patient running counts ``[T, P]``
    (dense when small, else a sparse per-segment count and a running sum).
    """
    n_gt = draws @ gt_per_group
    tp_at = np.flatnonzero(tp)
    out = np.full(len(draws), np.nan)
    if len(tp_at) == 0:
        out[n_gt > 0] = 0.0
        return out
    n_tp, n_groups = len(tp_at), len(gt_per_group)
    tp_group = det_group[tp_at]
    # detections per (segment ending at a true positive, patient); later detections drop out
    segment = np.searchsorted(tp_at, np.arange(len(tp)), side="left")
    inside = segment < n_tp
    counts = sparse.csr_matrix(
        (np.ones(int(inside.sum())), (segment[inside], det_group[inside])),
        shape=(n_tp, n_groups),
    )
    dense = n_tp * n_groups <= _DENSE_LIMIT
    if dense:
        seen_by_group = np.cumsum(counts.toarray(), axis=0).T  # [P, T]
        found_by_group = np.zeros((n_groups, n_tp))
        found_by_group[tp_group, np.arange(n_tp)] = 1.0
        found_by_group = np.cumsum(found_by_group, axis=1)
    for lo in range(0, len(draws), _CHUNK):
        w = draws[lo : lo + _CHUNK]
        n = n_gt[lo : lo + _CHUNK]
        if dense:  # [b, T]: weighted detections and true positives up to each true positive
            seen, found_so_far = w @ seen_by_group, w @ found_by_group
        else:
            seen = np.cumsum(np.ascontiguousarray((counts @ w.T).T), axis=1)
            found_so_far = np.cumsum(w[:, tp_group], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(seen > 0, found_so_far / seen, 0.0)
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            ap = np.einsum("bt,bt->b", w[:, tp_group], envelope) / n
        out[lo : lo + _CHUNK] = np.where(n > 0, ap, np.nan)
    return out


def froc(
    tp: np.ndarray, n_gt: int, n_images: int, rates: Sequence[float] = FROC_RATES
) -> np.ndarray:
    """Best sensitivity reachable with at most ``rate * n_images`` false positives, per rate."""
    sens = np.cumsum(tp) / n_gt
    fps = np.cumsum(~tp)
    out = np.zeros(len(rates))
    for i, rate in enumerate(rates):
        ok = fps <= rate * n_images
        out[i] = sens[ok].max(initial=0.0)
    return out


def evaluate_frame(
    predictions: pd.DataFrame,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    score_threshold: float = SCORE_THRESHOLD,
) -> dict:
    """Evaluate a predictions table (the ``predictions_<split>.csv`` layout), see :meth:`Evaluator.metrics`."""
    ev = Evaluator.from_frame(predictions, score_threshold=score_threshold)
    return ev.metrics(bootstrap=bootstrap, seed=seed)


def _stack(boxes: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(boxes) if boxes else np.zeros((0, 4))
