"""A procedural compositional text-to-image benchmark: scenes, captions, a rule-based evaluator, a base model.

What is here (issue 7):

- ``vocabulary``: the closed world — shapes, a fixed colour palette, counts, spatial relations and the
  six GenEval categories (single object, two objects, counting, colours, position, colour attribution).
- ``captions``: the caption grammar (templates), its parser, every caption of the world and the
  train / held-out split (held-out captions are unseen combinations of seen words).
- ``scenes``: a scene (1-4 solid-colour shapes at positions, sizes varying) for a caption, drawn from a
  seed, and a vectorised anti-aliased renderer (torch, any device).
- ``evaluator``: the rule-based scorer used as the RL reward (``geneval_rules`` and
  ``geneval_rules_strict`` in ``workers.rewards.REWARDS``): palette segmentation, connected components,
  template-matching shape classification, counts and relative positions.
- ``validation``: :func:`validate_evaluator`, the evaluator's own accuracy on rendered ground truth
  and on mismatched caption/image pairs.
- ``model``: the small SD3-class text-to-image model pretrained on the dataset (real diffusers and
  transformers classes, saved in diffusers layout so the RL loop loads it like any checkpoint), its
  pixel-space VAE fit, the flow-matching loss and the EMA.

Why a package of its own and not ``workers/aux/common``: the evaluator is a reward of the RL loop
(``workers/rewards`` imports it) and the pretrained model is the RL benchmark's base checkpoint, so
both belong to the core path; ``workers/aux/`` holds the auxiliary methods and what they share, and
the core must not depend on it. Nothing here imports ``orchestration`` or Ray.
"""
