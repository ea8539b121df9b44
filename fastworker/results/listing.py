"""Views of the records for people: a page of them, one task's detail, the
failed tasks an operator may retry.

A scan over what the store holds, newest first: for people, not for the
hot path (the store's bounds bound it). It only reads: a record listed is
not counted as used.
"""

from __future__ import annotations

import itertools

import attrs

from fastworker.internal import FailedToRetry, TaskDetail
from fastworker.messages import ListTasks, TaskPage, TaskRecord
from fastworker.results.records import RecordBook
from fastworker.results.stored import StoredTask

__all__ = ["failed_to_retry", "summaries", "task_detail", "task_page"]


def summaries(page: TaskPage) -> TaskPage:
    """``page`` without values, tracebacks and earlier attempts (a page for
    a client: a full record is one ``StatusQuery`` away), so that it fits
    one frame."""
    return attrs.evolve(page, records=tuple(
        attrs.evolve(record, value=None, attempts=(), error=None if record.error is None
                     else attrs.evolve(record.error, traceback=""))
        for record in page.records))


def task_page(records: RecordBook, query: ListTasks) -> TaskPage:
    """The page of records that ``query`` asks for (by state, task, part of
    the id), newest first, and how many match in all."""
    state, task, part = query.state, query.task, query.id
    # Clamped: islice refuses indexes past sys.maxsize (the dashboard's
    # query string and a client's frame are not trusted to stay below).
    offset = min(max(query.offset, 0), len(records))
    limit = min(max(query.limit, 0), len(records))
    page: list[TaskRecord] = []
    if state is None and task is None and not part:
        newest = itertools.islice(records.newest(), offset, offset + limit)
        page.extend(stored.record for stored in newest)
        return TaskPage(records=tuple(page), total=len(records))
    total = 0
    for stored in records.newest():
        record = stored.record
        if ((state is None or record.state == state) and (task is None or record.task == task)
                and (not part or part in record.id)):
            if offset <= total < offset + limit:
                page.append(record)
            total += 1
    return TaskPage(records=tuple(page), total=total)


def task_detail(records: RecordBook, id: str) -> TaskDetail | None:
    """Everything held about ``id``, for its page; ``None`` if nothing is."""
    stored = records.get(id)
    return None if stored is None else _detail(stored)


def _detail(stored: StoredTask) -> TaskDetail:
    return TaskDetail(record=stored.record, payload=stored.payload,
                      dispatched_at=stored.dispatched_at, dispatched_to=stored.dispatched_to,
                      retry_of=stored.retry_of, retried_as=stored.retried_as)


def failed_to_retry(records: RecordBook,
                    query: FailedToRetry) -> tuple[tuple[TaskDetail, ...], int]:
    """The failed tasks (of ``query.task``) not yet retried whose arguments
    are held, oldest first, at most ``query.limit``; and how many more match."""
    found: list[TaskDetail] = []
    more = 0
    for stored in records.oldest():
        record = stored.record
        if (record.state != "failed" or stored.retried_as or not stored.payload
                or record.queued_at >= query.before
                or (query.task is not None and record.task != query.task)):
            continue
        if len(found) < query.limit:
            found.append(_detail(stored))
        else:
            more += 1
    return tuple(found), more
