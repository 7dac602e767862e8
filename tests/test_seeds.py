"""experiments.seeds: every named random stream has its own offset, and R1's is the toolkit's."""

from __future__ import annotations

import inspect

from bnexp.toolkit import protocol
from experiments import seeds


def test_every_named_stream_has_its_own_offset_and_none_is_the_first_streams():
    offsets = {name: value for name, value in vars(seeds).items() if name.isupper()}
    assert len(set(offsets.values())) == len(offsets) and 0 not in offsets.values()


def test_the_precise_bn_offset_is_the_one_protocol_precise_stats_draws_by_default():
    # batch_size and variance redraw R1's batch stream by this offset: they must stay the same stream
    default = inspect.signature(protocol.precise_stats).parameters["seed_offset"].default
    assert seeds.PRECISE == default


def test_corruption_seeds_differ_per_seed_severity_and_part():
    keys = {seeds.corruption(seed, severity, part) for seed in range(5) for severity in range(1, 6)
            for part in range(3)}
    assert len(keys) == 5 * 5 * 3
