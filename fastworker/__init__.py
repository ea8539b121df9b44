"""fastworker: a brokerless task queue for Python.

    from fastworker import task, Client

    @task
    async def add(x: int, y: int) -> int:
        return x + y

    async with Client() as client:
        print(await client.submit(add, 1, 2))

Run the control plane with ``fastworker run config/control.toml``.
"""

from actors.tls import TlsOptions as TlsOptions
from fastworker.client import Client as Client
from fastworker.client import Completed as Completed
from fastworker.client import SyncClient as SyncClient
from fastworker.errors import AnswerTooLarge as AnswerTooLarge
from fastworker.errors import ConnectionLost as ConnectionLost
from fastworker.errors import DiscoveryTimeout as DiscoveryTimeout
from fastworker.errors import FastworkerError as FastworkerError
from fastworker.errors import InvalidSubmission as InvalidSubmission
from fastworker.errors import NoControlPlane as NoControlPlane
from fastworker.errors import QueueFull as QueueFull
from fastworker.errors import ResultUnknown as ResultUnknown
from fastworker.errors import SubmissionsRefused as SubmissionsRefused
from fastworker.errors import TaskCancelled as TaskCancelled
from fastworker.errors import TaskError as TaskError
from fastworker.errors import TaskExpired as TaskExpired
from fastworker.errors import TaskTimeout as TaskTimeout
from fastworker.errors import Unavailable as Unavailable
from fastworker.errors import UnknownTask as UnknownTask
from fastworker.messages import TaskRecord as TaskRecord
from fastworker.tasks import Backoff as Backoff
from fastworker.tasks import Task as Task
from fastworker.tasks import task as task
from fastworker.version import VERSION

__version__ = VERSION

__all__ = [
    "AnswerTooLarge",
    "Backoff",
    "Client",
    "Completed",
    "ConnectionLost",
    "DiscoveryTimeout",
    "FastworkerError",
    "InvalidSubmission",
    "NoControlPlane",
    "QueueFull",
    "ResultUnknown",
    "SubmissionsRefused",
    "SyncClient",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskExpired",
    "TaskRecord",
    "TaskTimeout",
    "TlsOptions",
    "Unavailable",
    "UnknownTask",
    "task",
]
