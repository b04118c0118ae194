"""The linear MLP head shared by the LAION aesthetic predictor v2 and ImageReward.

Shape legend:
    B: batch
    D: input feature width (768: CLIP ViT-L/14 image embedding for the aesthetic predictor, BLIP's BERT-base
       [CLS] state for ImageReward)

christophschuhmann/improved-aesthetic-predictor publishes an MLP D -> 1024 -> 128 -> 64 -> 16 -> 1 with dropout
0.2, 0.2, 0.1 after the first three layers and no activation functions (they are commented out upstream, so
the head is an affine map in eval mode, trained with MSE on ratings). ImageReward reuses the same definition
(its ``MLP``, on 768-d features). The ``nn.Sequential`` indices are kept so both published state dicts load
as they are: Linear layers at ``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["HIDDEN_WIDTHS", "LinearMLPHead"]

HIDDEN_WIDTHS = (1024, 128, 64, 16)


class LinearMLPHead(nn.Module):
    """features [B, D] -> scores [B, 1]; see the module docstring for the published structure."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, HIDDEN_WIDTHS[0]),
            nn.Dropout(0.2),
            nn.Linear(HIDDEN_WIDTHS[0], HIDDEN_WIDTHS[1]),
            nn.Dropout(0.2),
            nn.Linear(HIDDEN_WIDTHS[1], HIDDEN_WIDTHS[2]),
            nn.Dropout(0.1),
            nn.Linear(HIDDEN_WIDTHS[2], HIDDEN_WIDTHS[3]),
            nn.Linear(HIDDEN_WIDTHS[3], 1),
        )

    def forward(self, features_BD: Tensor) -> Tensor:
        return self.layers(features_BD)
