"""The workers' credit, and which worker takes each job.

Plain bookkeeping, no trio: the Dispatcher counts each worker's free
credit here and asks ``Placement.place`` where held jobs go. It sends
nothing, and knows nothing of Pulls or Reports (``remote.py``).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable
from typing import Literal

from fastworker.messages import ASYNC, Assign, HeldJob, Job, Outcome, Running, Slots

__all__ = ["Placement", "WorkerAccount", "assign_budget", "job_bytes", "job_limit"]

#: Bytes counted for a job besides its payload, id and task name (its other
#: fields and their msgpack keys, with room to spare).
JOB_OVERHEAD_BYTES = 256


def job_bytes(job: Job) -> int:
    """About the bytes ``job`` takes in a frame (more, rather than less)."""
    return len(job.payload) + len(job.id) + len(job.task) + JOB_OVERHEAD_BYTES


def assign_budget(max_frame_bytes: int) -> int:
    """About the most bytes of jobs one Assign carries in a frame of
    ``max_frame_bytes``: room is left for the rest of the frame."""
    return max_frame_bytes - min(64 * 1024, max_frame_bytes // 4)


def job_limit(max_frame_bytes: int) -> int:
    """The most bytes one job may take to go alone in a frame of
    ``max_frame_bytes`` (its header, tag and the Assign around it need
    less than the room left)."""
    return max_frame_bytes - 512


class WorkerAccount:
    """The Dispatcher's account of one worker: its credit per kind of slot,
    what it holds, and where a subworker's conversation stands (its parked
    Pull, if any, waits in ``remote.py``). The control plane's own executor
    has one too (``local``)."""

    __slots__ = ("name", "local", "tasks", "kinds", "by_kind", "at_most_once", "credit", "prefetch",
                 "health", "drained", "assigned_total", "held", "started", "outbox", "cancel",
                 "give_back", "pull_seq", "last_assign", "pull_seen", "report_seq",
                 "taken_back", "max_assign_bytes", "max_job_bytes", "holding", "adopted")

    def __init__(self, name: str, *, local: bool, kinds: dict[str, int],
                 at_most_once: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.local = local
        self.tasks: frozenset[str] = frozenset()
        self.kinds: dict[str, int] = {}  # task -> the kind of slot it needs here
        self.by_kind: tuple[frozenset[str], ...] = ()
        self.set_tasks(kinds)
        self.at_most_once = at_most_once
        #: Free credit per kind of slot (``KINDS``), and how much of each
        #: kind's credit is prefetch (jobs beyond its slots) rather than
        #: slots, as the worker last said.
        self.credit = [0, 0, 0]
        self.prefetch = [0, 0, 0]
        self.health: str = "alive"  # alive, suspect or draining
        self.drained = False  # by an operator: nothing new until resumed
        self.assigned_total = 0
        # A subworker's conversation (remote.py).
        self.held: dict[str, Job] = {}  # delivered and not yet reported finished
        self.started: set[str] = set()  # of those, the ones it reported started
        self.outbox: list[Job] = []  # placed, waiting for the worker's next Pull
        self.cancel: list[str] = []  # held jobs to stop, sent with the next Assign
        self.give_back = False  # ask it, with the next Assign, for what has not started
        self.pull_seq = 0  # the last Pull answered, and its answer
        self.last_assign = Assign(jobs=())
        self.pull_seen = 0  # the newest Pull seen (answered, or parked now)
        self.report_seq = 0  # the last Report taken
        # Jobs of an Assign it did not acknowledge in time, taken back (id:
        # attempt, kind of slot): if it runs one after all, the credit given
        # back for it is taken again (once; the copy queued again has the
        # next attempt).
        self.taken_back: dict[str, tuple[int, int]] = {}
        # The most bytes of jobs an answer to its Pull carries, and of one
        # job (from its own frame limit, when it said one smaller than the
        # workers port's; 0: the port's).
        self.max_assign_bytes = 0
        self.max_job_bytes = 0
        # Across a control plane's restart: the jobs it said it held when it
        # registered (not yet matched with what the journal brought back),
        # and the recovered tasks it holds (their copies wait in the inbox).
        self.holding: dict[str, HeldJob] = {}
        self.adopted: dict[str, None] = {}  # in the order adopted

    def set_tasks(self, kinds: dict[str, int]) -> None:
        """The tasks it runs and the kind of slot each needs."""
        self.kinds = kinds
        self.tasks = frozenset(kinds)
        self.by_kind = tuple(frozenset(t for t, k in kinds.items() if k == kind)
                             for kind in range(3))

    def kind(self, task: str) -> int:
        """The kind of slot a job of ``task`` takes here."""
        return self.kinds.get(task, ASYNC)

    def give(self, job: Job) -> None:
        """The slot ``job`` took is free again (it never went, or came back)."""
        self.credit[self.kinds.get(job.task, ASYNC)] += 1

    def set_prefetch(self, prefetch: tuple[int, ...]) -> None:
        """How much of each kind's credit is prefetch now (negative: none)."""
        self.prefetch = [max(n, 0) for n in prefetch[:3]]

    def add_credit(self, slots: Slots) -> None:
        """``slots`` more free credit per kind (a negative count adds none)."""
        credit = self.credit
        for kind, n in enumerate(slots[:3]):
            if n > 0:
                credit[kind] += n

    @property
    def free(self) -> int:
        """Free credit, all kinds together."""
        return sum(self.credit)

    @property
    def useful_credit(self) -> int:
        """Free credit of the kinds of slot that run some of its tasks (an
        executor grants process credit though none of its tasks needs it)."""
        return sum(n for n, tasks in zip(self.credit, self.by_kind, strict=True) if tasks)

    def take_outbox(self, budget: int, limit: int) -> tuple[list[Job], list[Job]]:
        """Take the first jobs of the outbox whose sizes fit ``budget``
        (always one at least); the rest wait for the next Pull. One frame
        carries an Assign: past its limit it could not be sent at all, and
        its jobs would wait for nobody. Returns the jobs taken, and those
        taken out that are alone larger than ``limit`` (they can never be
        sent)."""
        outbox, used = self.outbox, 0
        overhead = JOB_OVERHEAD_BYTES  # job_bytes, inline: this runs per job
        for index, job in enumerate(outbox):
            size = len(job.payload) + len(job.id) + len(job.task) + overhead
            if size > limit:
                return self._take_outbox_sorting(budget, limit)
            used += size
            if used > budget and index:
                self.outbox = outbox[index:]
                return outbox[:index], []
        self.outbox = []
        return outbox, []

    def _take_outbox_sorting(self, budget: int, limit: int) -> tuple[list[Job], list[Job]]:
        """``take_outbox`` when a job too large is among them (rare)."""
        outbox, used = self.outbox, 0
        taken: list[Job] = []
        too_large: list[Job] = []
        for index, job in enumerate(outbox):
            size = job_bytes(job)
            if size > limit:
                too_large.append(job)
                continue
            used += size
            if used > budget and taken:
                self.outbox = outbox[index:]
                return taken, too_large
            taken.append(job)
        self.outbox = []
        return taken, too_large

    def ran_after_all(self, running: Iterable[Running], finished: Iterable[Outcome]) -> None:
        """Of the runs it reported started or ended, the jobs taken back
        that it got after all: the credit given back for each is taken
        again, once, since it offers that slot again at the end."""
        taken_back = self.taken_back
        runs = [(o.id, o.attempt) for o in finished]
        for started in running:
            # No attempts listed (0): any run of the id counts.
            runs.extend(zip(started.ids, started.attempts or (0,) * len(started.ids),
                            strict=False))
        for task_id, attempt in runs:
            entry = taken_back.get(task_id)
            if entry is not None and attempt in (entry[0], 0):
                del taken_back[task_id]
                self.credit[entry[1]] -= 1

    @property
    def offers(self) -> bool:
        """Whether it counts as a subworker that can run its tasks."""
        return not self.local and self.health != "draining" and not self.drained


class Placement:
    """The workers by name, how many live subworkers have each task, and
    where held jobs go.

    Args:
        local: ``fallback``: subworkers first, the local executor a job
            only when no eligible subworker has credit left for it (so
            adding a subworker never leaves its slots idle); ``always``: it
            is one more worker, the one with the most free credit first;
            ``never``: it takes only tasks no live subworker has (the
            control plane coordinates).
    """

    def __init__(self, *, local: Literal["fallback", "always", "never"]) -> None:
        self.workers: dict[str, WorkerAccount] = {}
        #: Live subworkers per task (those that ``offers``).
        self.remote_tasks: Counter[str] = Counter()
        self._local = local

    # -- the fleet ----------------------------------------------------------------

    def add_local_credit(self, name: str, slots: Slots,
                         tasks: dict[str, int] | None = None,
                         prefetch: Slots | None = None) -> None:
        """The local executor ``name`` (known from its first ``Credit``) can
        take ``slots`` more jobs per kind; ``tasks``: what it runs now, and
        the kind of each (``None``: as before); ``prefetch``: of its credit
        per kind, how much is prefetch (``None``: as before)."""
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = WorkerAccount(name, local=True, kinds=tasks or {})
        elif tasks is not None:
            worker.set_tasks(tasks)
        if prefetch is not None:
            worker.set_prefetch(prefetch)
        worker.add_credit(slots)

    def add_subworker(self, name: str, kinds: dict[str, int],
                      at_most_once: frozenset[str], prefetch: Slots = (0, 0, 0)
                      ) -> WorkerAccount:
        """A subworker joined (one of the same name must be removed first)."""
        worker = self.workers[name] = WorkerAccount(
            name, local=False, kinds=kinds, at_most_once=at_most_once)
        worker.set_prefetch(prefetch)
        self.remote_tasks.update(worker.tasks)
        return worker

    def remove(self, name: str) -> WorkerAccount | None:
        """Forget a worker; its account, or ``None`` if there was none."""
        worker = self.workers.pop(name, None)
        if worker is not None and worker.offers:
            self.remote_tasks.subtract(worker.tasks)
        return worker

    def update(self, worker: WorkerAccount, *, health: str | None = None,
               drained: bool | None = None) -> None:
        """Change a worker's health or drained flag, keeping the count of
        live subworkers per task right."""
        offered = worker.offers
        if health is not None:
            worker.health = health
        if drained is not None:
            worker.drained = drained
        if offered and not worker.offers:
            self.remote_tasks.subtract(worker.tasks)
        elif worker.offers and not offered:
            self.remote_tasks.update(worker.tasks)

    # -- placing jobs ---------------------------------------------------------------

    def place(self, held: deque[Job]) -> tuple[dict[WorkerAccount, list[Job]], deque[Job]]:
        """Give held jobs, in order, each to an eligible worker with credit
        of the kind the job needs there, taking it. The order of choice:
        a worker with a free slot for it before one with only prefetch room
        left (with ``local = "fallback"``: subworkers' free slots, then the
        local executor, then subworkers' prefetch room); then the worker
        that runs the fewest other tasks with that kind of slot (so a
        worker that runs more keeps room for jobs only it can take); then
        the most free credit of that kind. Returns the jobs placed per
        worker, and those no worker can take now, in order."""
        placed: dict[WorkerAccount, list[Job]] = {}
        heaps: dict[str, list[tuple[int, int, int, int, WorkerAccount, int]]] = {}
        kept: deque[Job] = deque()
        tier = self._tier
        while held:
            job = held.popleft()
            heap = heaps.get(job.task)
            if heap is None:
                heap = heaps[job.task] = [
                    (tier(w, kind), len(w.by_kind[kind]), -w.credit[kind], index, w, kind)
                    for index, (w, kind) in enumerate(self._eligible(job.task))
                ]
                heapq.heapify(heap)
            while heap and -heap[0][2] != heap[0][4].credit[heap[0][5]]:
                # Stale: another task's jobs took some of this worker's credit.
                _, size, _, index, stale, kind = heap[0]
                if stale.credit[kind] > 0:
                    heapq.heapreplace(
                        heap, (tier(stale, kind), size, -stale.credit[kind], index, stale, kind))
                else:
                    heapq.heappop(heap)
            if not heap:
                kept.append(job)
                continue
            _, size, _, index, worker, kind = heap[0]
            credit = worker.credit
            credit[kind] -= 1
            if credit[kind]:
                heapq.heapreplace(
                    heap, (tier(worker, kind), size, -credit[kind], index, worker, kind))
            else:
                heapq.heappop(heap)
            placed.setdefault(worker, []).append(job)
        return placed, kept

    def _tier(self, worker: WorkerAccount, kind: int) -> int:
        """0: it has a free slot of that kind (its credit is more than its
        prefetch); 2: only prefetch room; the local executor is 1 with
        ``local = "fallback"``, taken before subworkers' prefetch room."""
        if worker.local and self._local == "fallback":
            return 1
        return 0 if worker.credit[kind] > worker.prefetch[kind] else 2

    def _eligible(self, task: str) -> list[tuple[WorkerAccount, int]]:
        """Live workers with free credit for ``task`` that may run it now,
        with the kind of slot it needs on each."""
        kept_off = self._local == "never" and self.remote_tasks[task] > 0
        eligible = []
        for w in self.workers.values():
            if w.health != "alive" or w.drained or (w.local and kept_off):
                continue
            kind = w.kinds.get(task)
            if kind is not None and w.credit[kind] > 0:
                eligible.append((w, kind))
        return eligible

    # -- what to ask the inbox for --------------------------------------------------

    def pools(self) -> dict[frozenset[str], int]:
        """The free credit of the live workers, as pools: per set of tasks
        that some worker's slots of one kind run, how many jobs of them it
        can take (workers with the same tasks share a pool)."""
        pools: dict[frozenset[str], int] = {}
        never = self._local == "never"
        for worker in self.workers.values():
            if worker.health != "alive" or worker.drained:
                continue
            for kind, free in enumerate(worker.credit):
                if free <= 0:
                    continue
                tasks = worker.by_kind[kind]
                if never and worker.local:
                    tasks = frozenset(t for t in tasks if self.remote_tasks[t] <= 0)
                if tasks:  # credit for nothing it may run is not asked for
                    pools[tasks] = pools.get(tasks, 0) + free
        return pools

    def free_slots(self) -> int:
        """The free credit of the live workers, of the kinds of slot that
        run some of their tasks."""
        return sum(w.useful_credit for w in self.workers.values()
                   if w.health == "alive" and not w.drained)
