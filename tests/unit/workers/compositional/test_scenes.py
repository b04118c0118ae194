"""Scenes for captions and the renderer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from workers.compositional.captions import parse_caption
from workers.compositional.scenes import (
    GAP,
    MARGIN,
    Scene,
    SceneObject,
    render_scenes,
    sample_scene,
    scenes_for,
)
from workers.compositional.validation import balanced_captions
from workers.compositional.vocabulary import BACKGROUND, COLOUR_TOLERANCE, PALETTE, SHAPES


def test_scenes_are_a_pure_function_of_the_seed():
    captions = balanced_captions(24, 0)
    assert scenes_for(captions, 3) == scenes_for(captions, 3)
    assert scenes_for(captions, 3) != scenes_for(captions, 4)
    images = render_scenes(scenes_for(captions, 3), 32)
    assert torch.equal(images, render_scenes(scenes_for(captions, 3), 32))


def test_scenes_hold_exactly_the_caption_and_never_overlap():
    rng = np.random.default_rng(0)
    for text in balanced_captions(120, 1):
        caption = parse_caption(text)
        scene = sample_scene(text, rng)
        wanted = sorted((m.shape, m.colour) for m in caption.mentions for _ in range(m.count))
        got = sorted((o.shape, o.colour if any(m.colour for m in caption.mentions) else None) for o in scene.objects)
        assert got == wanted
        for o in scene.objects:
            assert MARGIN - 1e-9 <= o.cx - o.size / 2 and o.cx + o.size / 2 <= 1 - MARGIN + 1e-9
        for a, b in itertools.combinations(scene.objects, 2):
            need = (a.size + b.size) / 2 + GAP - 1e-9
            assert abs(a.cx - b.cx) >= need or abs(a.cy - b.cy) >= need


def test_position_scenes_put_b_in_the_relation_direction():
    rng = np.random.default_rng(0)
    for relation, (sx, sy) in {"left of": (1, 0), "right of": (-1, 0), "above": (0, 1), "below": (0, -1)}.items():
        for _ in range(20):
            a, b = sample_scene(f"a circle {relation} a square", rng).objects
            dx, dy = b.cx - a.cx, b.cy - a.cy
            assert (dx * sx + dy * sy) / np.hypot(dx, dy) > np.cos(np.radians(26))


@pytest.mark.parametrize("shape", SHAPES)
def test_renderer_paints_the_palette_colour_and_the_shape_area(shape):
    scene = Scene("x", (SceneObject(shape, "blue", 0.5, 0.5, 0.5),))
    image = render_scenes([scene], 64, supersample=4)[0]
    assert image.shape == (3, 64, 64)
    torch.testing.assert_close(image[:, 32, 32], torch.tensor(PALETTE["blue"]))
    torch.testing.assert_close(image[:, 1, 1], torch.tensor(BACKGROUND))
    blue, white = torch.tensor(PALETTE["blue"]).view(3, 1, 1), torch.tensor(BACKGROUND).view(3, 1, 1)
    coverage = ((image - white) / (blue - white))[2].sum() / (32 * 32)  # share of the 32 x 32 bounding square
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}[shape]
    assert float(coverage) == pytest.approx(expected, abs=0.02)


def test_palette_blends_with_the_background_stay_apart():
    """An anti-aliased edge (a blend of one colour with the background) never comes within the segmentation
    tolerance of another palette colour, so edges cannot be read as a second object."""
    background = np.array(BACKGROUND)
    for name, colour in PALETTE.items():
        blends = [background + a * (np.array(colour) - background) for a in np.linspace(0, 1, 101)]
        for other, other_colour in PALETTE.items():
            if other != name:
                assert min(np.linalg.norm(b - np.array(other_colour)) for b in blends) > COLOUR_TOLERANCE, (name, other)
