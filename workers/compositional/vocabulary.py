"""The closed world of the compositional benchmark: shapes, palette, counts, relations, categories.

Colours are solid RGB values in [0, 1] on a white background. The palette is chosen so that a
segmentation by nearest palette colour within ``COLOUR_TOLERANCE`` is unambiguous, also on
anti-aliased edges: no blend of a palette colour with the background comes within the tolerance of
another palette colour (a unit test checks this).
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles",
                           "diamond": "diamonds", "cross": "crosses"}

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.20, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.10, 0.70),
    "black": (0.10, 0.10, 0.10),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[float, float, float] = (1.0, 1.0, 1.0)
COLOUR_TOLERANCE = 0.25  # max RGB (L2) distance of a pixel to its palette colour

COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three", 4: "four"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
MAX_OBJECTS = 4

# GenEval's six categories, in its order.
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# Object sizes (side of the shape's bounding square) as fractions of the image side; not captioned
# (GenEval has no size category), they vary the scenes.
SIZES: tuple[float, ...] = (0.18, 0.24, 0.30)
