"""Building and checking a Submit: priorities, time limits, schedules, ids.

The messages a user reads are asserted exactly. Wall time is frozen where
a test turns an ``eta`` or ``expires`` into seconds.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from fastworker import InvalidSubmission
from fastworker.limits import (
    MAX_FAIR_KEY_LENGTH,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_TASK_NAME_LENGTH,
)
from fastworker.messages import CODEC, Submit
from fastworker.payload import pack_call, unpack_call
from fastworker.submission import (
    TaskIds,
    build_submit,
    check_submit,
    new_task_id,
    priority_level,
    priority_name,
    time_limit,
)
from fastworker.tasks import Task, task

#: The frozen wall clock, in Unix seconds.
NOW = 1_800_000_000.0


def _nothing() -> None:
    return None


def make_task(**options: Any) -> Task[Any, Any]:
    return Task(name="tests.submission.nothing", fn=_nothing, **options)


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """``time.time()`` stands still at ``NOW``; returns it as an aware datetime."""
    monkeypatch.setattr(time, "time", lambda: NOW)
    return datetime.fromtimestamp(NOW, tz=timezone.utc)


def build(**options: Any) -> Submit:
    return build_submit("tests.add", (1, 2), id="t-1", **options)


class TestPriority:
    @pytest.mark.parametrize(
        ("name", "level"), [("critical", 0), ("high", 1), ("normal", 2), ("low", 3)]
    )
    def test_names_and_levels_map_both_ways(self, name: str, level: int) -> None:
        """Each priority name has its level (the submission port's offset), and back."""
        assert priority_level(name) == level
        assert priority_name(level) == name

    @pytest.mark.parametrize("priority", ["urgent", "", "Normal", 2, None])
    def test_an_unknown_name_is_refused_with_the_names(self, priority: Any) -> None:
        """A priority that is not a name says which names there are."""
        with pytest.raises(InvalidSubmission) as raised:
            priority_level(priority)
        assert str(raised.value) == (
            f"priority must be one of critical, high, normal, low, got {priority!r}"
        )

    def test_build_refuses_an_unknown_priority_the_same_way(self) -> None:
        """build_submit words a bad priority as priority_level does."""
        with pytest.raises(InvalidSubmission) as raised:
            build(priority="urgent")
        assert str(raised.value) == (
            "priority must be one of critical, high, normal, low, got 'urgent'"
        )

    def test_a_name_submits_at_normal(self) -> None:
        """A task given by name, with no priority, goes at normal."""
        assert build().priority == 2

    def test_the_task_default_applies_and_the_call_wins(self) -> None:
        """A task object brings its priority; the call's own overrides it."""
        urgent = make_task(priority="critical")
        assert build_submit(urgent, id="a").priority == 0
        assert build_submit(urgent, id="b", priority="low").priority == 3


class TestTimeLimit:
    def test_the_call_wins_over_the_task_and_the_default(self) -> None:
        """The call's limit applies first."""
        assert time_limit(1.0, make_task(timeout=5.0), 9.0) == 1.0

    def test_the_task_applies_when_the_call_names_none(self) -> None:
        """With no limit in the call, the task's applies."""
        assert time_limit(None, make_task(timeout=5.0), 9.0) == 5.0

    @pytest.mark.parametrize("task", [None, make_task()], ids=["no_task", "task_without_limit"])
    def test_the_default_applies_last(self, task: Task[Any, Any] | None) -> None:
        """Neither the call nor the task has one: the default (or none)."""
        assert time_limit(None, task, 9.0) == 9.0
        assert time_limit(None, task) is None

    def test_build_applies_the_same_order(self) -> None:
        """build_submit takes the call's limit, else the task's."""
        slow = make_task(timeout=5.0)
        assert build_submit(slow, id="a").timeout == 5.0
        assert build_submit(slow, id="b", timeout=1.5).timeout == 1.5
        assert build(timeout=None).timeout is None

    @pytest.mark.parametrize(
        ("timeout", "complaint"),
        [
            (0, "timeout 0 is not a number of seconds > 0"),
            (-1.0, "timeout -1.0 is not a number of seconds > 0"),
            (math.nan, "timeout nan is not a number of seconds > 0"),
            (math.inf, "timeout inf is not a number of seconds > 0"),
            ("5", "timeout '5' is not a number of seconds > 0"),
        ],
    )
    def test_a_bad_limit_is_refused(self, timeout: Any, complaint: str) -> None:
        """A limit that is not a positive number of seconds is refused."""
        with pytest.raises(InvalidSubmission) as raised:
            build(timeout=timeout)
        assert str(raised.value) == complaint


class TestSchedule:
    def test_no_schedule_means_now_and_no_deadline(self) -> None:
        """A plain call is queued at once and never expires."""
        submit = build()
        assert (submit.delay, submit.expires_in) == (0.0, None)

    @pytest.mark.parametrize(("countdown", "delay"), [(30, 30.0), (2.5, 2.5), (0, 0.0),
                                                       (-4, 0.0)])
    def test_a_countdown_is_the_delay(self, countdown: float, delay: float) -> None:
        """A countdown is seconds from now; a negative one means now."""
        assert build(countdown=countdown).delay == delay

    def test_an_eta_becomes_seconds_from_now(self, frozen_now: datetime) -> None:
        """An aware datetime or Unix seconds turn into a relative delay, so the
        two machines' clocks need not agree."""
        assert build(eta=frozen_now + timedelta(seconds=90)).delay == 90.0
        assert build(eta=NOW + 12.5).delay == 12.5

    def test_an_eta_in_another_zone_is_the_same_moment(self, frozen_now: datetime) -> None:
        """An eta's zone does not matter, only the moment it names."""
        paris = timezone(timedelta(hours=1))
        assert build(eta=(frozen_now + timedelta(seconds=60)).astimezone(paris)).delay == 60.0

    def test_an_eta_in_the_past_means_now(self, frozen_now: datetime) -> None:
        """An eta already passed queues the task at once."""
        assert build(eta=frozen_now - timedelta(hours=1)).delay == 0.0

    def test_expires_is_seconds_from_now(self, frozen_now: datetime) -> None:
        """A deadline in seconds stays relative; a datetime or Unix seconds
        turn into seconds from now."""
        assert build(expires=60).expires_in == 60.0
        assert build(expires=frozen_now + timedelta(minutes=5)).expires_in == 300.0

    def test_countdown_and_expires_go_together(self, frozen_now: datetime) -> None:
        """A delayed task may carry a deadline too."""
        submit = build(countdown=10, expires=frozen_now + timedelta(seconds=40))
        assert (submit.delay, submit.expires_in) == (10.0, 40.0)

    @pytest.mark.parametrize(
        ("options", "complaint"),
        [
            ({"countdown": 1, "eta": NOW}, "give countdown or eta, not both"),
            ({"countdown": math.inf}, "countdown must be a number of seconds, got inf"),
            ({"countdown": math.nan}, "countdown must be a number of seconds, got nan"),
            ({"countdown": "5"}, "countdown must be a number of seconds, got '5'"),
            ({"eta": datetime(2030, 1, 1)}, "eta must be an aware datetime (with a tzinfo)"),
            ({"eta": "tomorrow"}, "eta must be a datetime or Unix seconds, got 'tomorrow'"),
            ({"eta": math.nan}, "eta must be a datetime or Unix seconds, got nan"),
            ({"eta": math.inf}, "eta must be a datetime or Unix seconds, got inf"),
            ({"countdown": math.inf}, "countdown must be a number of seconds, got inf"),
            ({"expires": datetime(2030, 1, 1)},
             "expires must be an aware datetime (with a tzinfo)"),
            ({"expires": "soon"}, "expires must be seconds or a datetime, got 'soon'"),
            ({"expires": math.nan}, "expires must be seconds or a datetime, got nan"),
            ({"expires": True}, "expires must be seconds or a datetime, got True"),
            ({"expires": -5}, "expires is already past (-5.000 s)"),
            ({"expires": 0}, "expires is already past (0.000 s)"),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    def test_bad_schedule_options_are_refused(
        self, frozen_now: datetime, options: dict[str, Any], complaint: str
    ) -> None:
        """Each bad schedule option is refused, saying what was expected."""
        with pytest.raises(InvalidSubmission) as raised:
            build(**options)
        assert str(raised.value) == complaint

    def test_a_deadline_already_past_is_refused(self, frozen_now: datetime) -> None:
        """A datetime deadline in the past is refused with how long ago it was."""
        with pytest.raises(InvalidSubmission) as raised:
            build(expires=frozen_now - timedelta(seconds=2))
        assert str(raised.value) == "expires is already past (-2.000 s)"


class TestKeyAndRetries:
    def test_a_key_and_retries_are_carried(self) -> None:
        """An idempotency key and a retry count travel as given."""
        submit = build(key="report:7", retries=3)
        assert (submit.key, submit.retries) == ("report:7", 3)

    def test_none_means_no_key_and_the_task_retries(self) -> None:
        """Without them, no key and the task's own retries."""
        submit = build()
        assert (submit.key, submit.retries) == ("", None)

    def test_zero_retries_overrides_the_task(self) -> None:
        """0 is a choice (never retry), not the absence of one."""
        assert build(retries=0).retries == 0

    @pytest.mark.parametrize("key", ["", 7, b"k"])
    def test_a_key_must_be_a_non_empty_string(self, key: Any) -> None:
        with pytest.raises(InvalidSubmission) as raised:
            build(key=key)
        assert str(raised.value) == f"key must be a non-empty string, got {key!r}"

    @pytest.mark.parametrize("retries", [-1, 1.5, True, "3"])
    def test_retries_must_be_a_whole_number(self, retries: Any) -> None:
        with pytest.raises(InvalidSubmission) as raised:
            build(retries=retries)
        assert str(raised.value) == f"retries must be a whole number >= 0, got {retries!r}"


class TestBuild:
    def test_a_plain_call_makes_the_whole_submit(self) -> None:
        """Every field of a plain call's Submit, defaults included."""
        submit = build_submit("tests.add", [1, 2], {"z": 3}, id="t-9", queue_wait=5.0)
        assert submit == Submit(
            id="t-9", task="tests.add", payload=pack_call((1, 2), {"z": 3}), priority=2,
            timeout=None, queue_wait=5.0, retry_of="", delay=0.0, expires_in=None, key="",
            retries=None,
        )
        assert unpack_call(submit.payload) == ((1, 2), {"z": 3})

    def test_a_task_object_submits_under_its_name(self) -> None:
        assert build_submit(make_task(), id="a").task == "tests.submission.nothing"

    def test_a_packed_payload_is_sent_as_it_is(self) -> None:
        """A retry of a stored task reuses its packed arguments."""
        packed = pack_call(("x",), {})
        submit = build_submit("tests.add", id="r-1", payload=packed, retry_of="t-1")
        assert (submit.payload, submit.retry_of) == (packed, "t-1")

    @pytest.mark.parametrize(
        ("queue_wait", "complaint"),
        [
            (-1.0, "queue_wait -1.0 is not a number of seconds >= 0"),
            (math.nan, "queue_wait nan is not a number of seconds >= 0"),
            (None, "queue_wait None is not a number of seconds >= 0"),
        ],
    )
    def test_a_bad_queue_wait_is_refused(self, queue_wait: Any, complaint: str) -> None:
        with pytest.raises(InvalidSubmission) as raised:
            build(queue_wait=queue_wait)
        assert str(raised.value) == complaint

    def test_whole_seconds_are_fine(self) -> None:
        """Ints are seconds too, not only floats."""
        submit = build(queue_wait=0, timeout=3, countdown=1, expires=10)
        assert (submit.queue_wait, submit.timeout, submit.delay, submit.expires_in) == (
            0, 3, 1.0, 10.0)

    def test_unpicklable_arguments_are_refused(self) -> None:
        import threading

        with pytest.raises(InvalidSubmission, match="cannot send the arguments: TypeError"):
            build_submit("tests.add", (threading.Lock(),), id="a")


#: A Submit that passes every check.
GOOD = Submit(id="t-1", task="tests.add", payload=b"", priority=2, timeout=1.0,
              queue_wait=5.0, delay=0.0, expires_in=60.0, retries=2)


class TestCheckSubmit:
    def test_a_good_submit_passes(self) -> None:
        assert check_submit(GOOD) is None
        assert check_submit(attrs.evolve(GOOD, timeout=None, expires_in=None,
                                         retries=None)) is None

    def test_what_build_makes_passes(self) -> None:
        """The inbox's check accepts every Submit build_submit makes."""
        assert check_submit(build(countdown=5, expires=9, key="k", retries=0)) is None

    @pytest.mark.parametrize(
        ("field", "value", "complaint"),
        [
            ("priority", 7, "priority 7 is out of range; expected 0 (critical) to 3 (low)"),
            ("priority", -1, "priority -1 is out of range; expected 0 (critical) to 3 (low)"),
            ("priority", "high",
             "priority 'high' is out of range; expected 0 (critical) to 3 (low)"),
            ("queue_wait", -0.5, "queue_wait -0.5 is not a number of seconds >= 0"),
            ("queue_wait", math.inf, "queue_wait inf is not a number of seconds >= 0"),
            ("queue_wait", True, "queue_wait True is not a number of seconds >= 0"),
            ("delay", -1.0, "delay -1.0 is not a number of seconds >= 0"),
            ("delay", math.nan, "delay nan is not a number of seconds >= 0"),
            ("timeout", 0.0, "timeout 0.0 is not a number of seconds > 0"),
            ("timeout", -3, "timeout -3 is not a number of seconds > 0"),
            ("timeout", math.nan, "timeout nan is not a number of seconds > 0"),
            ("expires_in", 0, "expires_in 0 is not a number of seconds > 0"),
            ("expires_in", math.inf, "expires_in inf is not a number of seconds > 0"),
            ("retries", -1, "retries -1 is not a whole number >= 0"),
            ("retries", 2.0, "retries 2.0 is not a whole number >= 0"),
            ("retries", False, "retries False is not a whole number >= 0"),
        ],
        ids=lambda value: None if isinstance(value, str) and " " in value else str(value),
    )
    def test_each_bad_field_is_named(self, field: str, value: Any, complaint: str) -> None:
        """A bad field is reported with its value and what was expected."""
        assert check_submit(attrs.evolve(GOOD, **{field: value})) == complaint

    def test_zero_waits_are_fine(self) -> None:
        """No wait for room and no delay are allowed, unlike a zero time limit."""
        assert check_submit(attrs.evolve(GOOD, queue_wait=0, delay=0.0)) is None


class TestTaskIds:
    def test_ids_of_one_submitter_never_repeat(self) -> None:
        """Ids are 16 hex digits, all different."""
        ids = TaskIds()
        made = [ids.next() for _ in range(10_000)]
        assert len(set(made)) == len(made)
        assert all(len(i) == 16 and int(i, 16) >= 0 for i in made)

    def test_ids_wrap_around_at_64_bits(self) -> None:
        """A submitter that starts near the top of the space wraps to zero."""
        ids = TaskIds()
        ids._last = (1 << 64) - 2
        assert [ids.next(), ids.next()] == ["ffffffffffffffff", "0000000000000000"]

    def test_two_submitters_never_share_an_id(self) -> None:
        """Each submitter counts from its own random start, so their runs of
        ids do not meet."""
        first, second = TaskIds(), TaskIds()
        one = {first.next() for _ in range(1000)}
        other = {second.next() for _ in range(1000)}
        assert one.isdisjoint(other)

    def test_new_task_id_never_repeats(self) -> None:
        assert len({new_task_id() for _ in range(1000)}) == 1000


class TestSizes:
    """Ids, names and keys over their limits (``fastworker.limits``) are
    refused on both sides, naming the field and the limit."""

    @pytest.mark.parametrize(
        ("options", "complaint"),
        [
            ({"id": "x" * 1_000_000}, "id is 1000000 characters; the limit is 256"),
            ({"id": ""}, "id must not be empty"),
            ({"id": 42}, "id must be a string, got int"),
            ({"task": "t" * 513}, "task name is 513 characters; the limit is 512"),
            ({"key": "k" * 257}, "key is 257 characters; the limit is 256"),
            ({"retry_of": "r" * 257}, "retry_of is 257 characters; the limit is 256"),
            ({"retries": 10**30}, f"retries is {10**30}; the limit is 1000000"),
        ],
        ids=["huge_id", "empty_id", "int_id", "long_name", "long_key", "long_retry_of",
             "many_retries"],
    )
    def test_the_client_refuses_a_value_over_its_limit(
        self, options: dict[str, Any], complaint: str
    ) -> None:
        arguments = {"task": "tests.add", "id": "t-1", **options}
        with pytest.raises(InvalidSubmission) as raised:
            build_submit(arguments.pop("task"), (1, 2), **arguments)
        assert str(raised.value) == complaint

    @pytest.mark.parametrize(
        ("field", "value", "complaint"),
        [
            ("id", "x" * 1_000_000, "id is 1000000 characters; the limit is 256"),
            ("id", "", "id must not be empty"),
            ("task", "t" * 513, "task name is 513 characters; the limit is 512"),
            ("key", "k" * 257, "key is 257 characters; the limit is 256"),
            ("retry_of", "r" * 257, "retry_of is 257 characters; the limit is 256"),
            ("retries", 1_000_001, "retries is 1000001; the limit is 1000000"),
            ("payload", b"p" * (8 * 1024 * 1024 + 1),
             "the arguments are 8388609 bytes; the limit is 8388608"),
        ],
        ids=["huge_id", "empty_id", "long_name", "long_key", "long_retry_of", "many_retries",
             "big_payload"],
    )
    def test_the_inbox_check_refuses_a_value_over_its_limit(
        self, field: str, value: str | bytes, complaint: str
    ) -> None:
        assert check_submit(attrs.evolve(GOOD, **{field: value})) == complaint

    def test_huge_whole_seconds_travel_as_floats(self) -> None:
        """An int of seconds too large for the wire is sent as a float, so it
        cannot fail the frame of submissions it travels with."""
        submit = build(queue_wait=10**30, timeout=10**30)
        assert (submit.queue_wait, submit.timeout) == (1e30, 1e30)
        assert CODEC.decode(CODEC.encode([submit])) == [submit]

    def test_values_at_their_limits_pass_both_sides(self) -> None:
        submit = build_submit("t" * MAX_TASK_NAME_LENGTH, id="i" * MAX_ID_LENGTH,
                              key="k" * MAX_KEY_LENGTH, retry_of="r" * MAX_ID_LENGTH)
        assert check_submit(submit) is None


class TestFairKey:
    def test_a_call_carries_its_fairness_key(self) -> None:
        submit = build_submit("t", id="a", fair_key="tenant-42")
        assert submit.fair_key == "tenant-42" and check_submit(submit) is None
        assert build_submit("t", id="b").fair_key == ""
        assert CODEC.decode(CODEC.encode([submit])) == [submit]

    def test_a_key_too_long_is_refused_naming_the_limit_on_both_sides(self) -> None:
        with pytest.raises(InvalidSubmission) as raised:
            build_submit("t", id="a", fair_key="k" * (MAX_FAIR_KEY_LENGTH + 1))
        assert str(raised.value) == (
            f"fair_key is {MAX_FAIR_KEY_LENGTH + 1} characters; the limit is {MAX_FAIR_KEY_LENGTH}")
        hand_made = Submit(id="a", task="t", payload=b"", fair_key="k" * (MAX_FAIR_KEY_LENGTH + 1))
        assert check_submit(hand_made) == (
            f"fair_key is {MAX_FAIR_KEY_LENGTH + 1} characters; the limit is {MAX_FAIR_KEY_LENGTH}")
        assert check_submit(attrs.evolve(hand_made, fair_key="k" * MAX_FAIR_KEY_LENGTH)) is None

    def test_a_key_that_is_not_a_string_is_refused(self) -> None:
        with pytest.raises(InvalidSubmission, match="fair_key must be a string, got 42"):
            build_submit("t", id="a", fair_key=42)  # type: ignore[arg-type]

    def test_the_task_gives_the_key_of_the_arguments_and_the_call_overrides_it(self) -> None:
        found = make_task(fair_key=lambda tenant, *rest, **kw: tenant)
        assert build_submit(found, ("t-7", 1), id="a").fair_key == "t-7"
        assert build_submit(found, ("t-7", 1), id="b", fair_key="other").fair_key == "other"
        none = make_task(fair_key=lambda *args: None)
        assert build_submit(none, (1,), id="c").fair_key == ""
        # Packed arguments (a retry of a stored task) are not unpacked for it.
        packed = build_submit(found, id="d", payload=pack_call(("t-7", 1), {}))
        assert packed.fair_key == ""

    def test_a_task_key_function_that_fails_is_reported(self) -> None:
        found = Task(name="tenants.bill", fn=_nothing, fair_key=lambda tenant: tenant["id"])
        with pytest.raises(InvalidSubmission) as raised:
            build_submit(found, ({},), id="a")
        assert str(raised.value) == "the fair_key of task tenants.bill raised KeyError: 'id'"
        bad = Task(name="tenants.bill", fn=_nothing,
                   fair_key=lambda tenant: 7)  # type: ignore[arg-type,return-value]
        with pytest.raises(InvalidSubmission) as raised:
            build_submit(bad, ("x",), id="a")
        assert str(raised.value) == "the fair_key of task tenants.bill must return a string, got 7"

    def test_the_task_option_must_be_a_function(self) -> None:
        with pytest.raises(TypeError, match="task fair_key must be a function"):
            task(fair_key="tenant")  # type: ignore[call-overload]
