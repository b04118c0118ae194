"""Scenes for captions, drawn from a seed, and their renderer.

Legend: B images, K object slots (``MAX_OBJECTS``), S supersampled side (size x supersample).

Coordinates are fractions of the image side, x to the right and y *down* (image rows), so "A above B"
means A's centre has the smaller y. A scene's objects never overlap: their bounding squares are at
least ``GAP`` apart, so each object is its own connected component in the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.compositional.captions import Caption, parse_caption
from workers.compositional.vocabulary import BACKGROUND, COLOURS, MAX_OBJECTS, PALETTE, SHAPES, SIZES

MARGIN = 0.03  # fraction of the side kept free at the image border
GAP = 0.05  # min distance between two objects' bounding squares, fraction of the side
POSITION_CONE_DEGREES = 25.0  # position scenes put B within this angle of A's relation axis
_MAX_TRIES = 400


@dataclass(frozen=True)
class SceneObject:
    """One solid shape: centre (cx, cy) and bounding-square side ``size``, all fractions of the image side."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    caption: str
    objects: tuple[SceneObject, ...]


def shape_mask(shape: str, dx, dy):
    """Inside test of ``shape`` in its own frame: dx, dy are offsets from the centre divided by half the side
    (so the bounding square is [-1, 1]^2, y down). Works on numpy arrays and torch tensors alike; returns a
    boolean array/tensor of the same shape."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return (abs(dx) <= 1.0) & (abs(dy) <= 1.0)
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return (abs(dx) <= (dy + 1.0) / 2.0) & (dy <= 1.0)
    if shape == "diamond":
        return abs(dx) + abs(dy) <= 1.0
    if shape == "cross":  # a plus sign, arms one third of the side wide
        return ((abs(dx) <= 1 / 3) & (abs(dy) <= 1.0)) | ((abs(dy) <= 1 / 3) & (abs(dx) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}; valid: {list(SHAPES)}")


# ---- scene sampling -------------------------------------------------------------------------------
def _separated(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    (ax, ay, asz), (bx, by, bsz) = a, b
    need = (asz + bsz) / 2 + GAP
    return abs(ax - bx) >= need or abs(ay - by) >= need


def _inside(x: float, y: float, size: float) -> bool:
    lo, hi = MARGIN + size / 2, 1 - MARGIN - size / 2
    return lo <= x <= hi and lo <= y <= hi


def _random_layout(sizes: list[float], rng: np.random.Generator) -> list[tuple[float, float]] | None:
    placed: list[tuple[float, float, float]] = []
    for size in sizes:
        lo, hi = MARGIN + size / 2, 1 - MARGIN - size / 2
        for _ in range(_MAX_TRIES):
            x, y = rng.uniform(lo, hi, size=2)
            if all(_separated((x, y, size), p) for p in placed):
                placed.append((float(x), float(y), size))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


_AXIS = {"left of": 0.0, "right of": math.pi, "above": math.pi / 2, "below": -math.pi / 2}


def _relation_layout(sizes: list[float], relation: str, rng: np.random.Generator) -> list[tuple[float, float]] | None:
    """A then B with the direction A -> B within the cone around the relation's axis (A left of B: B to the right)."""
    (sa, sb) = sizes
    for _ in range(_MAX_TRIES):
        angle = _AXIS[relation] + math.radians(rng.uniform(-POSITION_CONE_DEGREES, POSITION_CONE_DEGREES))
        dist = rng.uniform((sa + sb) / 2 + GAP, 0.75)
        lo, hi = MARGIN + sa / 2, 1 - MARGIN - sa / 2
        ax, ay = rng.uniform(lo, hi, size=2)
        bx, by = ax + dist * math.cos(angle), ay + dist * math.sin(angle)
        if _inside(bx, by, sb) and _separated((ax, ay, sa), (bx, by, sb)):
            return [(float(ax), float(ay)), (float(bx), float(by))]
    return None


def sample_scene(caption: str | Caption, rng: np.random.Generator) -> Scene:
    """A scene that makes ``caption`` true: exactly the mentioned objects (uncoloured mentions get random
    palette colours, one per object), random sizes from ``SIZES``, non-overlapping positions."""
    parsed = caption if isinstance(caption, Caption) else parse_caption(caption)
    kinds: list[tuple[str, str]] = []
    for mention in parsed.mentions:
        for _ in range(mention.count):
            colour = mention.colour or COLOURS[int(rng.integers(len(COLOURS)))]
            kinds.append((mention.shape, colour))
    if len(kinds) > MAX_OBJECTS:
        raise ValueError(f"caption {parsed.text()!r} has {len(kinds)} objects; at most {MAX_OBJECTS}")
    sizes = [float(SIZES[int(rng.integers(len(SIZES)))]) for _ in kinds]
    layout = None
    for cap in (max(SIZES), *sorted(SIZES, reverse=True)[1:]):  # shrink the objects if they do not fit
        sizes = [min(s, cap) for s in sizes]
        layout = _relation_layout(sizes, parsed.relation, rng) if parsed.relation else _random_layout(sizes, rng)
        if layout is not None:
            break
    if layout is None:  # pragma: no cover - the smallest size always fits four objects
        raise RuntimeError(f"could not place the objects of {parsed.text()!r}")
    objects = tuple(SceneObject(shape, colour, x, y, s)
                    for (shape, colour), (x, y), s in zip(kinds, layout, sizes, strict=True))
    return Scene(parsed.text(), objects)


def scenes_for(captions: Sequence[str], seed: int) -> list[Scene]:
    """One scene per caption; scene i is drawn from the generator seeded by (seed, i)."""
    return [sample_scene(c, np.random.default_rng([seed, i])) for i, c in enumerate(captions)]


# ---- rendering ------------------------------------------------------------------------------------
def render_scenes(scenes: Sequence[Scene], size: int, *, supersample: int = 4,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Images in [0, 1], float32 ``[B, 3, size, size]`` on ``device``.

    Each pixel's colour is the area-weighted mix of background and shape over a ``supersample`` x
    ``supersample`` grid of sub-pixel samples (anti-aliased edges; ``supersample=1`` gives hard edges).
    """
    if not scenes:
        raise ValueError("render_scenes needs at least one scene")
    b, k, s = len(scenes), MAX_OBJECTS, size * supersample
    params = torch.zeros(b, k, 4)  # cx, cy, half side, valid
    shape_ids = torch.full((b, k), -1, dtype=torch.long)
    colours = torch.zeros(b, k, 3)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            params[i, j] = torch.tensor([obj.cx, obj.cy, obj.size / 2, 1.0])
            shape_ids[i, j] = SHAPES.index(obj.shape)
            colours[i, j] = torch.tensor(PALETTE[obj.colour])
    params, shape_ids, colours = params.to(device), shape_ids.to(device), colours.to(device)
    grid = (torch.arange(s, device=device, dtype=torch.float32) + 0.5) / s
    background = torch.tensor(BACKGROUND, device=device).view(1, 3, 1, 1)
    coverage_total = torch.zeros(b, 1, size, size, device=device)
    paint = torch.zeros(b, 3, size, size, device=device)
    for j in range(k):
        cx, cy, half = (params[:, j, c].view(b, 1, 1) for c in range(3))
        dx = (grid.view(1, 1, s) - cx) / half.clamp_min(1e-6)
        dy = (grid.view(1, s, 1) - cy) / half.clamp_min(1e-6)
        inside_BSS = torch.zeros(b, s, s, dtype=torch.bool, device=device)
        for shape_index, shape in enumerate(SHAPES):
            rows = shape_ids[:, j] == shape_index
            if bool(rows.any()):
                inside_BSS[rows] = shape_mask(shape, dx[rows], dy[rows])
        coverage = torch.nn.functional.avg_pool2d(inside_BSS.float().unsqueeze(1), supersample)
        coverage = coverage * params[:, j, 3].view(b, 1, 1, 1)
        coverage_total += coverage
        paint += coverage * colours[:, j].view(b, 3, 1, 1)
    return (background * (1 - coverage_total) + paint).clamp(0, 1)
