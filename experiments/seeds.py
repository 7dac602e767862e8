"""Seed offsets: every random stream a run draws is seeded with cfg.seed + one of these, so the streams of a run
are independent of each other and a scenario that needs the same stream again draws it with the same offset.

Offset 0 (cfg.seed itself) seeds the model's initial weights and the first training batches (protocol.train's
default). A new stream gets a new offset here; reusing one means "the same batches again", on purpose.
Changing a value changes the numbers (and the fingerprint of every scenario that imports this module).
"""

NEXT_STAGE = 1          # a run's second model or training stage: frozen_base's head and fine-tuning batches,
                        # trainable_after_compile's stage-2 batches, checkpoint's untrained prediction graph
THIRD_STAGE = 2         # frozen_base's stage 2 (the unfrozen base) batches
PRETRAIN = 500          # frozen_base's source-task pretraining batches (the cached base)
PRETRAIN_PRECISE = 501  # the precise-BN pass that ends the pretraining (transfer.base_stats=precise)
PRECISE = 10_000        # R1 (precise BN) batches: protocol.precise_stats' default, redrawn by batch_size and variance
POPULATION = 20_000     # population statistics independent of R1's: frozen_base's target population,
                        # variance's recompute at the training batch size


def corruption(seed: int, severity: int, part: int) -> int:
    """The seed of domain_shift's corruption of one data part (0 train, 1 test, ...) at one severity."""
    return seed * 1000 + severity * 10 + part
