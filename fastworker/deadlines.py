"""Deadlines that cross a process: one clock decides each.

A job's ``expires_at`` is a wall-clock time of the control plane, where the
task was accepted. A subworker's clock may differ from it by any amount
(an hour, on a host whose clock was set by hand or never synchronised), so it
must never compare that time with its own. Instead the control plane stamps
each ``Assign`` it answers a subworker's ``Pull`` with, with its own wall
clock at that moment (``Assign.sent_at``: one clock reading per answer, no
work per job), and the subworker, on arrival, keeps the time that was left
(``expires_at - sent_at``) and counts it from then on its own wall clock.
Its executor then checks the deadline against that clock, as the control
plane's executor checks its jobs against the control plane's.

The time a job spends on the way (a fraction of a millisecond on a LAN) is
not counted: a job handed out with 10 ms left gets 10 ms on the subworker.
That is the price of not trusting the two clocks to agree.

This module only converts; it sends nothing and reads no clock itself (the
caller passes the time in, so that tests can fix it).
"""

from __future__ import annotations

import attrs

from fastworker.messages import Assign

__all__ = ["on_arrival"]


def on_arrival(assign: Assign, wall: float) -> Assign:
    """``assign`` with its deadlines moved onto this process's clock.

    Each job's ``expires_at`` (on the sender's clock) becomes ``wall`` plus
    the time that was left when the sender stamped the Assign
    (``expires_at - sent_at``; negative if it had already passed there).

    Args:
        assign: an Assign as it arrived from another process.
        wall: this process's wall clock (``time.time()``) at its arrival.

    Returns:
        ``assign`` itself when none of its jobs has a deadline or it carries
        no stamp (``sent_at`` 0: already on this process's clock); else a
        copy whose jobs with a deadline are copies too, with ``sent_at`` 0.
    """
    sent_at = assign.sent_at
    if not sent_at:
        return assign
    jobs = assign.jobs
    for job in jobs:
        if job.expires_at is not None:
            break
    else:
        return assign
    shift = wall - sent_at
    return attrs.evolve(
        assign, sent_at=0.0,
        jobs=tuple(job if job.expires_at is None else
                   attrs.evolve(job, expires_at=job.expires_at + shift) for job in jobs),
    )
