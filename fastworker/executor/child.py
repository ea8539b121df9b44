"""A pool process: say it is ready, then load tasks and run jobs one at a
time, answering each, until the parent closes the socket.

``main`` is the ``multiprocessing`` target: a spawned process finds it by
module path, so it stays a module-level function here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import socket
from typing import Any

import attrs

from actors.log import configure as configure_logging
from fastworker.calls import Called, call_sync, remote_error
from fastworker.executor.pipe import READY, Spec, receive_blocking, send_blocking
from fastworker.messages import RemoteError
from fastworker.payload import unpack_value
from fastworker.tasks import Task


def main(sock: socket.socket, log_setup: tuple[int | str, str] | None = None) -> None:
    """Serve the parent on ``sock`` until it closes it, logging as the
    parent does (``log_setup``: its level and format, if it set them). Ctrl-C
    is the parent's to handle; the process leads its own process group, so
    a kill of the group reaches whatever a task starts."""
    if log_setup is not None:
        configure_logging(*log_setup)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgrp()
    loaded: dict[str, Task[Any, Any]] = {}
    send_blocking(sock, READY)
    while True:
        message = receive_blocking(sock)
        if message is None:
            return
        key, name, spec, payload = pickle.loads(message)
        answer = _call(loaded, key, name, spec, payload)
        send_blocking(sock, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _call(
    loaded: dict[str, Task[Any, Any]], key: str, name: str, spec: Spec | None, payload: bytes
) -> Called:
    """Load the task if it is new here, then call it."""
    found = loaded.get(key)
    if found is None:
        if spec is None:
            message = f"task {name} was never sent to worker process {os.getpid()}"
            return None, RemoteError(type="TaskLoadError", message=message), False
        try:
            found = loaded[key] = _load(spec)
        except Exception as error:
            failure = remote_error(error)
            message = (
                f"worker process {os.getpid()} cannot load task {name}: "
                f"{failure.type}: {failure.message}"
            )
            return None, attrs.evolve(failure, type="TaskLoadError", message=message), False
    return call_sync(found, payload)


def _load(spec: Spec) -> Task[Any, Any]:
    if spec[0] == "ref":
        found: Any = importlib.import_module(spec[1])
        for part in spec[2].split("."):
            found = getattr(found, part)
    else:
        found = unpack_value(spec[1])
    if not isinstance(found, Task):
        raise TypeError(f"expected a Task, got {type(found).__name__}")
    return found
