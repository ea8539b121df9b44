"""Answers (a request answered in parts, some later) and Requester (one
question over a request wire)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Answers, FrameError, Framer, Requester
from actors.mailbox import Reply
from tests.actors.helpers import Note, codec


class _Slot:
    """A reply slot that records what it was given."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.calls = 0

    def set(self, value: Any) -> None:
        self.value, self.calls = value, self.calls + 1

    def fail(self, error: BaseException) -> None:
        self.error, self.calls = error, self.calls + 1


def _answers(size: int, *, single: bool = False) -> tuple[Answers, _Slot]:
    answers, slot = Answers(size, single=single), _Slot()
    answers.reply = slot  # type: ignore[assignment]
    return answers, slot


class TestAnswers:
    def test_the_reply_goes_once_the_last_answer_is_filled(self) -> None:
        """Answers known now and answers filled later go out together, in order, once."""
        answers, slot = _answers(3)
        answers.values[0] = "now"
        answers.later()
        answers.later()
        assert answers.fill(2, "later") is False
        assert answers.send() is False and slot.calls == 0
        assert answers.fill(1, "last") is True
        assert answers.send() is True
        assert answers.send() is False
        assert (slot.value, slot.calls) == (["now", "last", "later"], 1)

    def test_a_single_answer_is_not_a_list(self) -> None:
        """A call that takes one answer gets that answer itself."""
        answers, slot = _answers(1, single=True)
        answers.later()
        answers.fill(0, "only")
        answers.send()
        assert slot.value == "only"

    def test_not_deferred_means_nothing_to_send(self) -> None:
        """Without a reply slot, send sends nothing (the caller returns the answers)."""
        answers = Answers(2)
        assert answers.send() is False
        assert answers.result == [None, None]

    def test_fail_fails_the_call_once(self) -> None:
        """A stopping actor fails its deferred call instead of leaving it hanging."""
        answers, slot = _answers(2)
        answers.later()
        error = RuntimeError("stopped")
        answers.fail(error)
        answers.fail(error)
        assert (slot.error, slot.calls) == (error, 1)


class _Wire:
    """A request wire that answers with a fixed frame, or never."""

    name = "dialing memory"

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.sent: list[bytes] = []

    async def request(self, frame: bytes, *, timeout: float | None = None) -> bytes:
        self.sent.append(frame)
        if self.reply is None:
            with trio.move_on_after(timeout or 0):
                await trio.sleep_forever()
            raise TimeoutError(f"{self.name}: no reply within {timeout:g} s")
        assert self.reply is not None
        return self.reply


class TestRequester:
    async def test_answers_come_back_in_order(self) -> None:
        """The messages go in one frame and their answers come back as a list."""
        framer = Framer(codec)
        wire = _Wire(framer.pack([Note(10), Note(20)]))
        requester = Requester(wire, framer)  # type: ignore[arg-type]
        assert await requester.ask([Note(1), Note(2)], timeout=1) == [Note(10), Note(20)]
        assert framer.unpack(wire.sent[0]) == [Note(1), Note(2)]
        assert requester.name == "dialing memory"

    async def test_a_short_answer_is_a_frame_error(self) -> None:
        """An answer frame that does not hold one answer per message is refused."""
        framer = Framer(codec)
        requester = Requester(_Wire(framer.pack([Note(10)])), framer)  # type: ignore[arg-type]
        with pytest.raises(FrameError, match=r"expected 2 answer\(s\) from dialing memory, got 1"):
            await requester.ask([Note(1), Note(2)], timeout=1)

    async def test_a_forged_answer_is_a_frame_error(self) -> None:
        """An answer signed with another secret is refused, not unpacked."""
        forged = Framer(codec, secret=b"other").pack([Note(10)])
        requester = Requester(_Wire(forged), Framer(codec, secret=b"ours"))  # type: ignore[arg-type]
        with pytest.raises(FrameError):
            await requester.ask([Note(1)], timeout=1)

    async def test_no_answer_is_a_timeout(self, autojump_clock: Any) -> None:
        """No answer in time raises TimeoutError for the caller to explain."""
        requester = Requester(_Wire(None), Framer(codec))  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            await requester.ask([Note(1)], timeout=2)
