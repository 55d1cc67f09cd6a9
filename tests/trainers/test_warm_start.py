"""Which pairs a warm-started reward model trains on (``trainers.run.warm_start_pairs``)."""

from __future__ import annotations

from tests.trainers.conftest import synthetic_pairs
from trainers.run import warm_start_pairs


def test_new_pairs_and_as_many_old_ones_then_old_ones_up_to_the_minimum():
    pairs = synthetic_pairs(40)  # created 2026-11-01 .. 2026-11-20, two a day
    until = "2026-11-18T00:00:00+00:00"
    new = [p for p in pairs if p.created_at > until]
    assert len(new) == 4
    chosen = warm_start_pairs(pairs, until)
    assert chosen[:4] == new and len(chosen) == 8  # the new ones, and as many older ones
    # a few new votes on a store that trained before still reach the method's minimum
    chosen = warm_start_pairs(pairs, until, minimum=16)
    assert chosen[:4] == new and len(chosen) == 16 and len({id(p) for p in chosen}) == 16
    assert warm_start_pairs(pairs, None, minimum=16) == pairs  # no record of where it stopped: all
