"""Typed errors raised by the sampling package.

Every check in ``workers.sampling`` raises :class:`SamplingInputError` (a ``ValueError``) naming the argument,
the value received and how to fix it, rather than using ``assert`` (which ``python -O`` strips).
"""

from __future__ import annotations


class SamplingInputError(ValueError):
    """An argument to a sampling function is out of range, mis-shaped or inconsistent with another one."""
