"""actors.freshness: the replay window of a serving end and a requester's stamps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.freshness import WINDOW, ReplayWindow, Stamper

EPOCH = 0xE


def window(**options: int) -> ReplayWindow:
    return ReplayWindow(epoch=EPOCH, **options)


class TestReplayWindow:
    def test_a_fresh_sequence_is_accepted_once(self) -> None:
        """The first copy of a stamp is fresh; a second copy is refused."""
        seen = window()
        assert seen.check((EPOCH, 1, 1)) is None
        assert seen.check((EPOCH, 1, 1)) == "sequence already seen"
        assert seen.check((EPOCH, 1, 2)) is None

    def test_senders_are_counted_apart(self) -> None:
        """Two senders may use the same sequence numbers."""
        seen = window()
        assert seen.check((EPOCH, 1, 5)) is None
        assert seen.check((EPOCH, 2, 5)) is None
        assert len(seen) == 2

    def test_reordered_sequences_within_the_window_are_each_accepted_once(self) -> None:
        """Frames overtaking each other (contexts in flight) are accepted in
        any order, each once, as long as they are within the window."""
        seen = window()
        order = [10, 3, 7, WINDOW + 2, 9, 4, 8]
        assert [seen.check((EPOCH, 1, n)) for n in order] == [None] * len(order)
        assert [seen.check((EPOCH, 1, n)) for n in order] == ["sequence already seen"] * len(order)

    def test_a_sequence_older_than_the_window_is_refused(self) -> None:
        """Once a sender is WINDOW past a sequence, that sequence is refused
        even if it was never seen."""
        seen = window()
        assert seen.check((EPOCH, 1, WINDOW + 1)) is None
        assert seen.check((EPOCH, 1, 2)) is None  # just inside
        assert seen.check((EPOCH, 1, 1)) == f"sequence older than the window of {WINDOW}"

    def test_a_jump_past_the_window_forgets_the_older_bits(self) -> None:
        """A sequence far ahead starts a clean bitmap: only it is seen."""
        seen = window()
        assert seen.check((EPOCH, 1, 5)) is None
        assert seen.check((EPOCH, 1, 5 + 3 * WINDOW)) is None
        assert seen.check((EPOCH, 1, 5 + 3 * WINDOW - 1)) is None
        assert seen.check((EPOCH, 1, 5 + 3 * WINDOW)) == "sequence already seen"

    def test_another_epoch_is_refused(self) -> None:
        """A stamp for another epoch (an earlier start) or for none is refused."""
        seen = window()
        assert seen.check((EPOCH + 1, 1, 1)) == "stamped for another epoch"
        assert seen.check((0, 1, 1)) == "no epoch learnt yet"
        assert len(seen) == 0

    def test_a_full_table_starts_a_new_epoch(self) -> None:
        """One sender more than max_senders starts a new epoch and forgets
        all: every frame of the old epoch, seen or not, is refused after."""
        seen = window(max_senders=2)
        assert seen.check((EPOCH, 1, 1)) is None
        assert seen.check((EPOCH, 2, 1)) is None
        assert seen.check((EPOCH, 3, 1)) == "table of 2 senders full: new epoch"
        assert seen.epoch not in (EPOCH, 0) and seen.rotations == 1 and len(seen) == 0
        assert seen.check((EPOCH, 1, 2)) == "stamped for another epoch"
        assert seen.check((seen.epoch, 3, 1)) is None

    def test_epochs_are_random_per_window(self) -> None:
        """Each window (each start of a process) picks its own non-zero epoch."""
        epochs = {ReplayWindow().epoch for _ in range(50)}
        assert len(epochs) == 50 and 0 not in epochs

    @given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 40) | st.integers(1, 3 * WINDOW)),
                    max_size=300))
    def test_the_window_agrees_with_a_model_of_everything_seen(
        self, stamps: list[tuple[int, int]]
    ) -> None:
        """Whatever the order, a stamp is accepted exactly when it was never
        seen and is within WINDOW of its sender's highest sequence so far."""
        seen_window = window()
        seen: set[tuple[int, int]] = set()
        highest: dict[int, int] = {}
        for sender, seq in stamps:
            top = highest.get(sender, 0)
            fresh = (sender, seq) not in seen and seq > top - WINDOW
            assert (seen_window.check((EPOCH, sender, seq)) is None) == fresh
            if fresh:
                seen.add((sender, seq))
                highest[sender] = max(top, seq)

    def test_max_senders_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_senders must be at least 1, got 0"):
            ReplayWindow(max_senders=0)


class TestStamper:
    def test_stamps_grow_and_carry_the_epoch_learnt(self) -> None:
        """Sequences only grow; the epoch is 0 until learnt."""
        stamper = Stamper()
        first = stamper.next()
        stamper.learn(EPOCH)
        assert first == (0, stamper.sender, 1)
        assert stamper.next() == (EPOCH, stamper.sender, 2)

    def test_senders_are_random(self) -> None:
        assert len({Stamper().sender for _ in range(50)}) == 50
