"""SSD MultiBox loss (matching, hard negative mining 3:1) and detection post-processing.

Matching (SSD / the authors' code): every prior takes the ground-truth box it overlaps most;
it is positive when that IoU is >= 0.5; in addition every ground-truth box claims its best prior
(so no lesion is left without a positive). Loss: smooth-L1 on the encoded offsets of positive
priors + softmax cross-entropy on positives and the ``neg_pos_ratio`` x as many hardest
negatives per image, both summed and divided by the number of positives in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, nms

from models.box_coder import decode, encode, point_form


def match(gt_boxes: Tensor, priors: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Regression targets ``[P, 4]`` and labels ``[P]`` (0 = background, 1 = lesion).

    ``gt_boxes`` are point-form ``[N, 4]`` relative to the input (may be empty).
    """
    num_priors = priors.shape[0]
    if gt_boxes.numel() == 0:
        return priors.new_zeros((num_priors, 4)), torch.zeros(
            num_priors, dtype=torch.long, device=priors.device
        )
    overlaps = box_iou(gt_boxes, point_form(priors))  # [N, P]
    best_prior = overlaps.argmax(1)  # [N]
    best_gt_overlap, best_gt = overlaps.max(0)  # [P]
    best_gt_overlap.index_fill_(0, best_prior, 2.0)
    best_gt[best_prior] = torch.arange(gt_boxes.shape[0], device=gt_boxes.device)
    labels = (best_gt_overlap >= threshold).long()
    return encode(gt_boxes[best_gt], priors), labels


def multibox_loss(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    targets: list[dict[str, Tensor]],
    input_size: int,
    threshold: float = 0.5,
    neg_pos_ratio: int = 3,
) -> dict[str, Tensor]:
    """``loc [B, P, 4]``, ``conf [B, P, 2]`` -> ``{"loss_loc", "loss_conf"}``.

    ``targets[i]["boxes"]`` are point-form pixel boxes of image ``i``.
    """
    loc_t, conf_t = zip(
        *(match(t["boxes"].to(priors) / input_size, priors, threshold) for t in targets),
        strict=True,
    )
    loc_t, conf_t = torch.stack(loc_t), torch.stack(conf_t)
    pos = conf_t > 0
    num_pos = pos.sum()
    loss_loc = F.smooth_l1_loss(loc[pos].float(), loc_t[pos], reduction="sum")

    ce = F.cross_entropy(conf.float().flatten(0, 1), conf_t.flatten(), reduction="none")
    ce = ce.view_as(conf_t)
    mining = ce.detach().masked_fill(pos, 0.0)
    rank = mining.argsort(1, descending=True).argsort(1)
    num_neg = (neg_pos_ratio * pos.sum(1, keepdim=True)).clamp(max=pos.shape[1] - 1)
    neg = rank < num_neg
    loss_conf = ce[pos | neg].sum()
    denom = num_pos.clamp(min=1).float()
    return {"loss_loc": loss_loc / denom, "loss_conf": loss_conf / denom}


@torch.no_grad()
def detect(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    input_size: int,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
) -> list[dict[str, Tensor]]:
    """Decode, keep lesion scores > ``conf_threshold``, NMS, keep ``top_k``, scale to pixels.

    Returns per image ``{"boxes": [K, 4] (x0, y0, x1, y1) pixels clipped to the input,
    "scores": [K]}`` sorted by descending score.
    """
    scores = F.softmax(conf.float(), dim=-1)[..., 1]
    boxes = decode(loc.float(), priors).clamp(0, 1) * input_size
    out = []
    for b, s in zip(boxes, scores, strict=True):
        keep = s > conf_threshold
        b, s = b[keep], s[keep]
        keep = nms(b, s, nms_iou)[:top_k]
        out.append({"boxes": b[keep], "scores": s[keep]})
    return out
