"""The one shape rule both sides of the doctor's process boundary apply: the parent to an .npz file's header
before TensorFlow starts, the check process (bnexp.toolkit.diagnose) to the loaded arrays. Plain Python."""

from __future__ import annotations


def shape_fits(want, got) -> bool:
    """Does a sample of shape `got` fit a model input of shape `want` (None: any size)?"""
    return len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got))
