"""The rule-based evaluator: GenEval's detector-based checks with a palette segmenter as the detector.

Legend: B images, H/W pixels, C palette colours.

Detection (:func:`detect_objects`), per image:
1. **Segmentation.** Each pixel is unmixed into background and the palette colour that explains it best
   (:func:`segment_palette`); it belongs to that colour if it covers at least half of the pixel, to the
   background otherwise, and stays unassigned if no mix is within ``COLOUR_TOLERANCE`` (RGB L2).
2. **Components.** Connected components (8-connected) of each colour's pixels; components smaller than
   ``MIN_AREA_FRACTION`` of the image are noise and dropped.
3. **Shape.** The component's coverage map (its pixels' alpha, holes filled, plus the partial coverage of
   its anti-aliased rim) is compared with every shape's template (the renderer's own inside test) placed
   with the same area and centroid (:func:`classify_shape`); the best soft intersection-over-union wins
   if it is at least ``MIN_TEMPLATE_IOU``, else the shape is unknown (the component counts for no
   mention). Centroids are coverage-weighted.

Checks (:func:`evaluate`), per caption (see ``captions`` for the grammar):
- an **object check** per mention passes iff the number of detections of its shape (and of its colour,
  when the mention names one) equals the mention's count: colour, shape and count must all be right;
- a **relation check** (position captions) passes iff some detection of the first mention and some of
  the second lie in the relation: the unit vector from A's centroid to B's has a component > 0.5 along
  the relation's axis (within 60 degrees; "A left of B" means B is to the right of A).

An image is **correct** iff every check passes (GenEval's per-image score); the category accuracies'
mean is the overall score (GenEval's). For RL there is also a partial-credit **score** in [0, 1]: the
mean over checks, where an object check earns closeness(found, wanted) = min/max of the two counts,
averaged over "shape only" and "shape and colour" counts, and the relation check 0 or 1. The score is
1 exactly when the image is correct. Rewards: ``geneval_rules`` (score) and ``geneval_rules_strict``
(correct as 0/1).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from workers.compositional.captions import Caption, Mention, parse_caption
from workers.compositional.scenes import shape_mask
from workers.compositional.vocabulary import (
    BACKGROUND,
    CATEGORIES,
    COLOUR_TOLERANCE,
    COLOURS,
    PALETTE,
    SHAPES,
)

MIN_AREA_FRACTION = 0.006  # components below this share of the image are noise (small GT shapes: ~0.016)
MIN_TEMPLATE_IOU = 0.7
_TEMPLATE_SUPERSAMPLE = 4
# Share of its bounding square a shape covers, and its centroid's offset below the square's centre (in sides).
_AREA_FRACTION = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}
_CENTROID_OFFSET = {"circle": 0.0, "square": 0.0, "triangle": 1 / 6, "diamond": 0.0, "cross": 0.0}
RELATION_COSINE = 0.5

_PALETTE_C3 = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
# In-plane 8-connectivity only: components never cross from one (image, colour) slice to the next.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True
_AXES = {"left of": (1.0, 0.0), "right of": (-1.0, 0.0), "above": (0.0, 1.0), "below": (0.0, -1.0)}


class EvaluatorInputError(ValueError):
    """Images or prompts the evaluator cannot score."""


@dataclass(frozen=True)
class Detection:
    """One detected object: its colour, its shape (None = unknown), centroid (x, y fractions of the side,
    y down), area (fraction of the image) and the best template IoU."""

    colour: str
    shape: str | None
    cx: float
    cy: float
    area: float
    iou: float


@dataclass(frozen=True)
class ImageResult:
    """What the evaluator found for one (image, caption): per-check outcomes and the two scores."""

    caption: str
    category: str
    correct: bool
    score: float
    checks: dict[str, bool] = field(default_factory=dict)
    detections: tuple[Detection, ...] = ()


# ---- detection ----------------------------------------------------------------------------------------
def _check_inputs(images_B3HW: torch.Tensor, prompts: Sequence[str]) -> None:
    if not isinstance(images_B3HW, torch.Tensor) or images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3:
        shape = tuple(images_B3HW.shape) if isinstance(images_B3HW, torch.Tensor) else type(images_B3HW).__name__
        raise EvaluatorInputError(f"images must be a [B, 3, H, W] tensor in [0, 1], got {shape}")
    if len(prompts) != images_B3HW.shape[0]:
        raise EvaluatorInputError(f"got {len(prompts)} prompts for {images_B3HW.shape[0]} images")


@dataclass(frozen=True)
class Segmentation:
    """Per-pixel unmixing of a batch: ``labels`` [B, H, W] int8 (palette index 0..C-1 where the colour covers at
    least half of the pixel, C for background, -1 unassigned), ``colour`` [B, H, W] int8 (the best-explaining
    palette colour, -1 if none is within tolerance) and ``alpha`` [B, H, W] float32 (that colour's coverage)."""

    labels: np.ndarray
    colour: np.ndarray
    alpha: np.ndarray


def segment_palette(images_B3HW: torch.Tensor) -> Segmentation:
    """Unmix every pixel against every palette colour (see :class:`Segmentation`).

    A pixel is projected onto the segment from the background to each colour, p ~ bg + alpha (colour - bg)
    with alpha in [0, 1]. The colour with the smallest residual explains it if the residual is within
    ``COLOUR_TOLERANCE``; the pixel is labelled with it when alpha >= 0.5 (the shape covers at least half of
    it) and as background otherwise. So anti-aliased edges split at half coverage, like the renderer's
    shapes, and off-palette pixels stay unassigned.
    """
    device = images_B3HW.device
    colours = torch.as_tensor(_PALETTE_C3, device=device)
    background = torch.as_tensor(BACKGROUND, device=device, dtype=torch.float32)
    direction_C3 = colours - background
    pixels = images_B3HW.detach().float().clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 3) - background
    along = pixels @ direction_C3.T  # N C
    length2 = direction_C3.pow(2).sum(dim=1)
    alpha = (along / length2).clamp(0, 1)
    # |p - alpha d|^2 = |p|^2 - 2 alpha p.d + alpha^2 |d|^2, without materialising N x C x 3.
    residual2 = pixels.pow(2).sum(dim=1, keepdim=True) - 2 * alpha * along + alpha.pow(2) * length2
    best_residual2, best = residual2.min(dim=1)
    best_alpha = alpha.gather(1, best.unsqueeze(1)).squeeze(1)
    explained = best_residual2 <= COLOUR_TOLERANCE**2
    unassigned = torch.full_like(best, -1)
    labels = torch.where(best_alpha >= 0.5, best, torch.full_like(best, len(COLOURS)))
    b, _, h, w = images_B3HW.shape

    def grid(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
        return x.reshape(b, h, w).to(dtype).cpu().numpy()

    return Segmentation(
        labels=grid(torch.where(explained, labels, unassigned), torch.int8),
        colour=grid(torch.where(explained, best, unassigned), torch.int8),
        alpha=grid(torch.where(explained, best_alpha, torch.zeros_like(best_alpha)), torch.float32),
    )


def _template_coverage(shape: str, cx: float, cy: float, side: float, rows: np.ndarray, cols: np.ndarray
                       ) -> np.ndarray:
    """Coverage in [0, 1] of each pixel (rows x cols, pixel units) by ``shape`` of side ``side`` centred at
    (cx, cy), from ``_TEMPLATE_SUPERSAMPLE``^2 sub-pixel samples."""
    k = _TEMPLATE_SUPERSAMPLE
    offsets = (np.arange(k, dtype=np.float32) + 0.5) / k
    ys = (rows[:, None] + offsets[None, :]).reshape(-1)
    xs = (cols[:, None] + offsets[None, :]).reshape(-1)
    half = side / 2
    inside = shape_mask(shape, ((xs - cx) / half)[None, :], ((ys - cy) / half)[:, None])
    return inside.reshape(len(rows), k, len(cols), k).mean(axis=(1, 3))


def classify_shape(soft_hw: np.ndarray) -> tuple[str | None, float]:
    """Best shape for a component's coverage map (pixels of one object, values in [0, 1], zero elsewhere).

    Each shape's template is placed to match the component: same covered area (which fixes the side) and
    same centroid (the triangle's centroid sits a sixth of the side below its box centre); the template with
    the highest soft IoU (sum of minima over sum of maxima of the two coverage maps) wins if that IoU is at
    least ``MIN_TEMPLATE_IOU``. Matching areas rather than bounding boxes keeps small shapes (10 pixels)
    apart, whose boxes are off by a pixel.
    """
    area = float(soft_hw.sum())
    if area <= 0:
        return None, 0.0
    rows = np.arange(soft_hw.shape[0], dtype=np.float32)
    cols = np.arange(soft_hw.shape[1], dtype=np.float32)
    cy = float((soft_hw.sum(axis=1) * (rows + 0.5)).sum() / area)
    cx = float((soft_hw.sum(axis=0) * (cols + 0.5)).sum() / area)
    best, best_iou = None, 0.0
    for shape in SHAPES:
        side = (area / _AREA_FRACTION[shape]) ** 0.5
        template = _template_coverage(shape, cx, cy - _CENTROID_OFFSET[shape] * side, side, rows, cols)
        iou = float(np.minimum(soft_hw, template).sum() / np.maximum(soft_hw, template).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return (best, best_iou) if best_iou >= MIN_TEMPLATE_IOU else (None, best_iou)


# ---- parallel detection: the per-component work is Python and scipy on the CPU ----------------------
PARALLEL_MIN_IMAGES = 64  # below this a pool's transfer costs more than it saves
_pool: ProcessPoolExecutor | None = None


def evaluator_workers() -> int:
    """Processes for the per-image detection: ``SOLRL_EVALUATOR_WORKERS`` if set, else half the cores up to 8
    on machines with more than 4 (GPU hosts), else 0 (in-process, e.g. CI's 2 cores). Cores = those this process
    may run on (a run pinned to a slice of a shared host sizes its pool to the slice)."""
    if "SOLRL_EVALUATOR_WORKERS" in os.environ:
        return max(0, int(os.environ["SOLRL_EVALUATOR_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores // 2) if cores > 4 else 0


def _detection_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != workers:  # noqa: SLF001 - resize on a changed setting
        if _pool is not None:
            _pool.shutdown(cancel_futures=True)
        # spawn, not fork: the parent may hold CUDA state, which a forked child must not touch
        _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_pool.shutdown, cancel_futures=True)
    return _pool


def detect_objects(images_B3HW: torch.Tensor) -> list[list[Detection]]:
    """The detections of every image (see the module docstring); large batches are split over
    :func:`evaluator_workers` processes (same results as in-process: the work is per image)."""
    seg = segment_palette(images_B3HW)
    b = seg.labels.shape[0]
    workers = evaluator_workers()
    if workers < 2 or b < PARALLEL_MIN_IMAGES:
        return detect_segmented(seg)
    bounds = np.linspace(0, b, workers + 1).astype(int)
    parts = [Segmentation(seg.labels[lo:hi], seg.colour[lo:hi], seg.alpha[lo:hi])
             for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    return [d for part in _detection_pool(workers).map(detect_segmented, parts) for d in part]


def detect_segmented(seg: Segmentation) -> list[list[Detection]]:
    """Connected components per palette colour, shape classification and centroids of a segmented batch."""
    b, h, w = seg.labels.shape
    c = len(COLOURS)
    volume = seg.labels[:, None, :, :] == np.arange(c, dtype=np.int8)[None, :, None, None]  # B C H W
    components, _ = ndimage.label(volume.reshape(b * c, h, w), structure=_STRUCTURE)
    areas = np.bincount(components.ravel())
    min_area = MIN_AREA_FRACTION * h * w
    out: list[list[Detection]] = [[] for _ in range(b)]
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or areas[index] < min_area:
            continue
        plane, rows, cols = box
        image, colour = divmod(plane.start, c)
        # The component's pixels plus a 2-pixel rim of its colour's partial (edge) coverage.
        r0, r1 = max(rows.start - 2, 0), min(rows.stop + 2, h)
        c0, c1 = max(cols.start - 2, 0), min(cols.stop + 2, w)
        own = components[plane.start, r0:r1, c0:c1] == index
        other = (components[plane.start, r0:r1, c0:c1] > 0) & ~own
        rim = (seg.colour[image, r0:r1, c0:c1] == colour) & (seg.labels[image, r0:r1, c0:c1] == c)
        rim &= ndimage.binary_dilation(own, iterations=2) & ~other
        alpha = seg.alpha[image, r0:r1, c0:c1]
        holes = ndimage.binary_fill_holes(own) & ~own  # e.g. unassigned specks inside a generated shape
        soft = np.where(own, alpha, 0.0) + np.where(holes, 1.0, 0.0) + np.where(rim & ~holes, alpha, 0.0)
        soft = soft.astype(np.float32)
        shape, iou = classify_shape(soft)
        mass = soft.sum()
        out[image].append(Detection(
            colour=COLOURS[colour], shape=shape,
            cx=float((soft.sum(axis=0) * (np.arange(c1 - c0) + c0 + 0.5)).sum() / mass / w),
            cy=float((soft.sum(axis=1) * (np.arange(r1 - r0) + r0 + 0.5)).sum() / mass / h),
            area=float(mass / (h * w)), iou=iou,
        ))
    return out


# ---- checks -------------------------------------------------------------------------------------------
def _matches(detections: Sequence[Detection], mention: Mention, with_colour: bool = True) -> list[Detection]:
    return [d for d in detections if d.shape == mention.shape
            and (not with_colour or mention.colour is None or d.colour == mention.colour)]


def _closeness(found: int, wanted: int) -> float:
    return min(found, wanted) / max(found, wanted) if found else 0.0


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """True iff "a <relation> b": the direction a -> b is within 60 degrees of the relation's axis."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    norm = (dx * dx + dy * dy) ** 0.5
    if norm == 0.0:
        return False
    ax, ay = _AXES[relation]
    return (dx * ax + dy * ay) / norm > RELATION_COSINE


def check_caption(caption: Caption, detections: Sequence[Detection]) -> ImageResult:
    """Score one caption against one image's detections."""
    checks: dict[str, bool] = {}
    partial: list[float] = []
    for mention in caption.mentions:
        by_shape = len(_matches(detections, mention, with_colour=False))
        exact = len(_matches(detections, mention))
        checks[mention.text()] = exact == mention.count
        partial.append((_closeness(by_shape, mention.count) + _closeness(exact, mention.count)) / 2)
    if caption.relation is not None:
        first, second = (_matches(detections, m) for m in caption.mentions)
        holds = any(relation_holds(a, b, caption.relation) for a in first for b in second)
        checks[caption.relation] = holds
        partial.append(float(holds))
    correct = all(checks.values())
    return ImageResult(caption.text(), caption.category, correct, 1.0 if correct else float(np.mean(partial)),
                       checks, tuple(detections))


# The reward stack calls geneval_rules and geneval_rules_strict on the same batch: keep the last
# evaluation, keyed by the very tensor (alive, unmodified) and the prompts, so the work runs once.
_last: tuple[weakref.ref, int, tuple[str, ...], list[ImageResult]] | None = None


def evaluate(images_B3HW: torch.Tensor, prompts: Sequence[str]) -> list[ImageResult]:
    """One :class:`ImageResult` per (image, prompt); raises ``CaptionError`` for a prompt outside the grammar."""
    global _last
    _check_inputs(images_B3HW, prompts)
    key = tuple(prompts)
    if _last is not None and _last[0]() is images_B3HW and _last[1] == images_B3HW._version and _last[2] == key:
        return list(_last[3])
    captions = [parse_caption(p) for p in prompts]  # fail before any work on a bad prompt
    results = [check_caption(c, d) for c, d in zip(captions, detect_objects(images_B3HW), strict=True)]
    _last = (weakref.ref(images_B3HW), images_B3HW._version, key, results)
    return list(results)


def summarize(results: Sequence[ImageResult]) -> dict[str, float | int | dict]:
    """GenEval-style summary: accuracy (and mean partial score) per category, and ``overall`` = the mean of the
    category accuracies over the categories present (GenEval's overall score)."""
    by_category: dict[str, list[ImageResult]] = {}
    for r in results:
        by_category.setdefault(r.category, []).append(r)
    accuracy = {c: float(np.mean([r.correct for r in rs])) for c in CATEGORIES if (rs := by_category.get(c))}
    score = {c: float(np.mean([r.score for r in rs])) for c in CATEGORIES if (rs := by_category.get(c))}
    return {
        "overall": float(np.mean(list(accuracy.values()))) if accuracy else float("nan"),
        "image_accuracy": float(np.mean([r.correct for r in results])) if results else float("nan"),
        "score_mean": float(np.mean([r.score for r in results])) if results else float("nan"),
        "accuracy_by_category": accuracy,
        "score_by_category": score,
        "images_by_category": {c: len(by_category[c]) for c in CATEGORIES if c in by_category},
        "num_images": len(results),
    }


# ---- rewards (registered in workers.rewards.registry.REWARDS) ----------------------------------------
def geneval_rules(images_B3HW: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Partial-credit score in [0, 1] per image (1 iff every check passes), float32 [B] on the images' device."""
    results = evaluate(images_B3HW, prompts)
    return torch.tensor([r.score for r in results], dtype=torch.float32, device=images_B3HW.device)


def geneval_rules_strict(images_B3HW: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """GenEval's per-image correctness: 1.0 iff colour, shape and count of every object (and the relation) are
    right, else 0.0; float32 [B] on the images' device."""
    results = evaluate(images_B3HW, prompts)
    return torch.tensor([float(r.correct) for r in results], dtype=torch.float32, device=images_B3HW.device)
