"""The rule-based evaluator: accuracy on rendered ground truth, and per-check behaviour on hand-made scenes."""

from __future__ import annotations

import pytest
import torch

from workers.compositional.captions import CaptionError
from workers.compositional.evaluator import (
    EvaluatorInputError,
    detect_objects,
    evaluate,
    geneval_rules,
    geneval_rules_strict,
    summarize,
)
from workers.compositional.scenes import Scene, SceneObject, render_scenes
from workers.compositional.validation import validate_evaluator
from workers.rewards import REWARDS, combine_rewards


@pytest.fixture(scope="module")
def validation() -> dict:
    return validate_evaluator(300, seed=0)


def test_ground_truth_is_scored_correct(validation):
    print(f"evaluator: ground truth {validation['ground_truth_accuracy']:.4f}, shuffled "
          f"{validation['shuffled_accuracy']:.4f}, perturbed {validation['perturbed_accuracy']:.4f}")
    assert validation["ground_truth_accuracy"] >= 0.99, validation["ground_truth_failures"]
    assert min(validation["ground_truth_by_category"].values()) >= 0.95


def test_mismatched_captions_score_low(validation):
    assert validation["shuffled_accuracy"] <= 0.15  # a shuffled caption is sometimes true by chance
    assert validation["perturbed_accuracy"] <= 0.01  # false by construction
    assert validation["shuffled_score_mean"] < 0.35


def test_ground_truth_at_128_pixels():
    assert validate_evaluator(60, seed=1, size=128)["ground_truth_accuracy"] == 1.0


def _image(*objects: tuple[str, str, float, float], size: float = 0.24) -> torch.Tensor:
    scene = Scene("x", tuple(SceneObject(shape, colour, x, y, size) for shape, colour, x, y in objects))
    return render_scenes([scene], 64)


def _one(image: torch.Tensor, caption: str):
    return evaluate(image, [caption])[0]


def test_detections_report_shape_colour_and_centroid():
    (found,) = detect_objects(_image(("triangle", "green", 0.3, 0.7)))
    (d,) = found
    assert (d.shape, d.colour) == ("triangle", "green")
    assert d.cx == pytest.approx(0.3, abs=0.02)
    assert d.cy == pytest.approx(0.7 + 0.24 / 6, abs=0.02)  # a triangle's centroid sits below its box centre
    assert d.iou > 0.9


def test_wrong_count():
    image = _image(("circle", "red", 0.25, 0.25), ("circle", "blue", 0.75, 0.75))
    assert _one(image, "two circles").correct
    wrong = _one(image, "three circles")
    assert not wrong.correct and wrong.checks == {"three circles": False}
    assert wrong.score == pytest.approx(2 / 3)  # partial credit: two of three found
    assert not _one(image, "a circle").correct


def test_wrong_colour():
    image = _image(("square", "red", 0.5, 0.5))
    assert _one(image, "a red square").correct and _one(image, "a square").correct
    wrong = _one(image, "a blue square")
    assert not wrong.correct
    assert wrong.score == pytest.approx(0.5)  # the shape and count are right, the colour is not


def test_colour_attribution_must_bind():
    image = _image(("circle", "red", 0.25, 0.5), ("square", "blue", 0.75, 0.5))
    assert _one(image, "a red circle and a blue square").correct
    swapped = _one(image, "a blue circle and a red square")
    assert not swapped.correct and not any(swapped.checks.values())


def test_swapped_position():
    image = _image(("circle", "red", 0.25, 0.5), ("square", "blue", 0.75, 0.5))
    assert _one(image, "a circle left of a square").correct
    assert _one(image, "a square right of a circle").correct
    swapped = _one(image, "a circle right of a square")
    assert not swapped.correct
    assert swapped.checks == {"a circle": True, "a square": True, "right of": False}
    assert swapped.score == pytest.approx(2 / 3)
    above = _image(("diamond", "black", 0.5, 0.2), ("cross", "yellow", 0.5, 0.8))
    assert _one(above, "a diamond above a cross").correct and not _one(above, "a diamond below a cross").correct


def test_wrong_shape_and_empty_image():
    image = _image(("diamond", "purple", 0.5, 0.5))
    assert not _one(image, "a purple square").correct
    empty = torch.ones(1, 3, 64, 64)
    result = _one(empty, "a circle")
    assert not result.correct and result.score == 0.0 and result.detections == ()


def test_off_palette_noise_is_not_an_object():
    generator = torch.Generator().manual_seed(0)
    image = _image(("circle", "red", 0.5, 0.5))
    noisy = (image + 0.08 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    assert _one(noisy, "a red circle").correct
    assert detect_objects(torch.rand(2, 3, 64, 64, generator=generator)) == [[], []]


def test_rewards_are_registered_and_batched():
    images = torch.cat([_image(("circle", "red", 0.5, 0.5)), _image(("square", "blue", 0.5, 0.5))])
    prompts = ["a red circle", "a red circle"]
    assert REWARDS["geneval_rules"] is geneval_rules and REWARDS["geneval_rules_strict"] is geneval_rules_strict
    torch.testing.assert_close(geneval_rules(images, prompts), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(geneval_rules_strict(images, prompts), torch.tensor([1.0, 0.0]))
    out = combine_rewards({"geneval_rules": 1.0, "geneval_rules_strict": 0.0})(images, prompts)
    assert set(out.components) == {"geneval_rules", "geneval_rules_strict"} and out.total.dtype == torch.float32


def test_bad_inputs_are_named():
    with pytest.raises(CaptionError, match="cat"):
        geneval_rules(torch.ones(1, 3, 64, 64), ["a cat"])
    with pytest.raises(EvaluatorInputError, match="prompts"):
        geneval_rules(torch.ones(2, 3, 64, 64), ["a circle"])
    with pytest.raises(EvaluatorInputError, match=r"\[B, 3, H, W\]"):
        geneval_rules(torch.ones(3, 64, 64), ["a circle"])


def test_summary_is_geneval_style():
    images = torch.cat([_image(("circle", "red", 0.5, 0.5)), _image(("square", "blue", 0.5, 0.5)),
                        _image(("square", "blue", 0.5, 0.5))])
    summary = summarize(evaluate(images, ["a circle", "a red square", "a blue square"]))
    assert summary["accuracy_by_category"] == {"single_object": 1.0, "colors": 0.5}
    assert summary["overall"] == pytest.approx(0.75)  # mean over categories, not over images
    assert summary["image_accuracy"] == pytest.approx(2 / 3)


def test_parallel_detection_equals_in_process(monkeypatch):
    """A batch split over worker processes gives exactly the in-process results (the work is per image)."""
    from workers.compositional import evaluator
    from workers.compositional.captions import split_captions
    from workers.compositional.dataset import SceneStream

    captions, images = SceneStream(split_captions(0).train, image_size=32, seed=3, supersample=2).batch(0, 70)
    noisy = (images + 0.08 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    monkeypatch.setenv("SOLRL_EVALUATOR_WORKERS", "0")
    serial = evaluator.detect_objects(noisy)
    monkeypatch.setenv("SOLRL_EVALUATOR_WORKERS", "2")
    assert len(noisy) >= evaluator.PARALLEL_MIN_IMAGES
    assert evaluator.detect_objects(noisy) == serial
    assert any(serial) and sum(map(len, serial)) > len(captions) // 2


def test_evaluation_is_reused_for_the_same_batch_only():
    from workers.compositional import evaluator

    image = _image(("circle", "red", 0.5, 0.5))
    first = evaluator.evaluate(image, ["a red circle"])
    assert evaluator.evaluate(image, ["a red circle"]) == first  # served from the one-entry cache
    assert evaluator._last is not None and evaluator._last[0]() is image
    image.mul_(0.0).add_(1.0)  # in place: a white image; the version counter moves, so it is re-evaluated
    assert evaluator.evaluate(image, ["a red circle"])[0].score < first[0].score
