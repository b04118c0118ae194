"""The single index model ``y = f(A x* + e)`` and its linear estimator (paper Sec. 3).

``A`` is m x n with i.i.d. N(0, 1) entries. The link f is unknown to the estimators: it only
decides how ``y`` is made here, and nothing downstream reads it, so the 1-bit and the cubic model
run through the same code. Shapes: ``A_BMN`` one matrix per signal, ``x_BN`` flattened signals,
``y_BM`` measurements.
"""

from __future__ import annotations

from typing import Literal

import torch

Link = Literal["sign", "cubic"]


def gaussian_matrices(batch: int, m: int, n: int, generator: torch.Generator,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``batch`` independent m x n Gaussian sensing matrices with N(0, 1) entries: ``(B, m, n)``."""
    return torch.randn(batch, m, n, generator=generator, dtype=dtype)


def measure(x_BN: torch.Tensor, A_BMN: torch.Tensor, link: Link, noise_std: float,
            generator: torch.Generator) -> torch.Tensor:
    """Measurements as in the paper's experiments: 1-bit ``sign(A x + e)`` or cubic ``(A x)^3 + e``.

    ``e ~ N(0, noise_std^2 I)``; for the 1-bit model the noise sits inside the sign, for the cubic
    one outside the cube (paper Sec. 5).
    """
    z_BM = torch.einsum("bmn,bn->bm", A_BMN, x_BN)
    e_BM = noise_std * torch.randn(z_BM.shape, generator=generator, dtype=z_BM.dtype)
    if link == "sign":
        return torch.sign(z_BM + e_BM)
    if link == "cubic":
        return z_BM**3 + e_BM
    raise ValueError(f"link must be 'sign' or 'cubic', got {link!r}")


def back_projection(A_BMN: torch.Tensor, y_BM: torch.Tensor) -> torch.Tensor:
    """``A^T y / m``: by Lemma 2 within ``O(sqrt(log n / m))`` of ``mu x*`` (sup norm), ``mu = E[f(g) g]``."""
    return torch.einsum("bmn,bm->bn", A_BMN, y_BM) / A_BMN.shape[1]


def mu_of_link(link: Link, radius: float) -> float:
    """``E[f(r g) g]`` for ``g ~ N(0, 1)`` (noise-free): the scale of ``A^T y / m`` along ``x*/||x*||``.

    sign: ``sqrt(2/pi)``; cubic: ``3 r^3``. Used only in tests and docs to explain the C_s' grid,
    never by an estimator (that would be the link oracle the paper does not have).
    """
    if link == "sign":
        return (2 / torch.pi) ** 0.5
    if link == "cubic":
        return 3.0 * radius**3
    raise ValueError(f"link must be 'sign' or 'cubic', got {link!r}")
