"""The queue between the settle rule and the journal: a batch is due at `batch_max` files or once
the first has waited `batch_wait`; taking one leaves the rest, oldest first."""

from __future__ import annotations

from pathlib import Path

from batch.watch.arrivals import Arrivals
from batch.watch.entry import NewFile


def _new(name: str) -> NewFile:
    return NewFile(Path("/inbox") / name, name, (1, 2, 3), "move")


def test_a_full_batch_is_due_at_once_and_taken_oldest_first() -> None:
    arrivals = Arrivals(batch_max=2, batch_wait=3600.0)
    assert not arrivals.due() and arrivals.time_left() is None
    arrivals.add(_new("a.png"))
    assert not arrivals.due() and Path("/inbox/a.png") in arrivals
    arrivals.add(_new("b.png"))
    arrivals.add(_new("c.png"))
    assert arrivals.due() and len(arrivals) == 3
    assert [n.rel for n in arrivals.take()] == ["a.png", "b.png"]
    assert not arrivals.due() and [n.rel for n in arrivals.take()] == ["c.png"]
    assert len(arrivals) == 0 and arrivals.time_left() is None


def test_a_partial_batch_is_due_once_its_wait_is_over() -> None:
    waiting = Arrivals(batch_max=64, batch_wait=3600.0)
    waiting.add(_new("a.png"))
    left = waiting.time_left()
    assert left is not None and 3500 < left <= 3600 and not waiting.due()
    impatient = Arrivals(batch_max=64, batch_wait=0.0)
    impatient.add(_new("a.png"))
    assert impatient.due()
    impatient.clear()
    assert not impatient.due() and Path("/inbox/a.png") not in impatient
