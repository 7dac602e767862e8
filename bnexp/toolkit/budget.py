"""Training budgets given in epochs: the number of optimizer steps that shows `epochs` passes over the
training set at a batch size (a practitioner compares batch sizes at a fixed number of epochs)."""

from __future__ import annotations

from bnexp.errors import UserError


def epoch_steps(epochs: float, train_samples: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` epochs of `train_samples` samples in batches of `batch_size`."""
    if not epochs or float(epochs) <= 0:
        raise UserError(f"train.epochs must be a positive number, got {epochs!r}")
    if batch_size > train_samples:
        raise UserError(f"train.batch_size={batch_size} exceeds the {train_samples} training samples "
                        f"(raise data.train_size or lower train.batch_size)")
    return max(1, round(float(epochs) * train_samples / batch_size))
