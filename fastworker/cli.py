"""The ``fastworker`` command.

``fastworker run control`` (or ``sub``, or ``FILE.toml``) runs a topology
until SIGINT or SIGTERM: ``control`` and ``sub`` are the shipped ones,
found inside the installed package (``SHIPPED``); ``--tasks MODULE`` is the
flag form of ``FASTWORKER_TASKS``; ``--check`` only validates it. A user
mistake is reported as readable lines, never a traceback:

- exit 0: stopped gracefully (or ``--check`` found nothing wrong);
- exit 1: the node failed (an actor could not start, or crashed past its
  restart limit);
- exit 2: the topology file is wrong (one line per problem);
- 128 + N: a second signal N stopped it at once.

``fastworker journal check PATH`` checks a journal (exit 0 sound, 1 not, or
in use, or missing); ``fastworker journal salvage PATH`` moves a damaged
one aside and keeps its readable rows in a new one (exit 0 done, 1 not).

``fastworker --version`` prints the version.

``fastworker secret`` makes this user's per-host secret if it is missing
and prints its path, never the secret (exit 0; 1 with one line on stderr
if the file cannot be made or is open to other users).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import trio

from actors.errors import ConfigError, Escalation, StartError
from actors.log import FORMATS as LOG_FORMATS
from actors.log import configure as configure_logging
from actors.node import run_node
from actors.supervisor import unwrap
from actors.topology import Topology
from fastworker import commands as operator_commands
from fastworker.version import VERSION

log = logging.getLogger("fastworker")

#: The topologies that ship inside the package, by the name ``run`` takes.
SHIPPED = {"control": "control.toml", "sub": "sub.toml"}


def shipped_path(name: str) -> Path:
    """Where the shipped topology ``name`` (``control``, ``sub``) is."""
    return Path(str(resources.files("fastworker") / "config" / SHIPPED[name]))


def topology_path(given: str) -> str:
    """The file ``run`` loads: a shipped topology by its bare name (``control``,
    ``sub``: a file of that name in the working directory is ``./control``),
    else the path given."""
    if given in SHIPPED:
        return str(shipped_path(given))
    return given


def _not_found(given: str) -> str | None:
    """For a bare name that is no file (a mistyped ``control``, say), a
    line naming the shipped topologies; a path is left to the loader."""
    if Path(given).exists() or os.sep in given or given.endswith(".toml"):
        return None
    return (f"{given}: no such topology file; the shipped topologies are "
            f"{' and '.join(SHIPPED)} (fastworker run control), anything else is a path")

#: Allocations (less deallocations) of tracked objects between two young
#: collections of the garbage collector in a node process: CPython's 700
#: made the control plane collect every few tasks, each time walking the
#: messages and records still in flight, and promoting them to be walked
#: again; with 20,000 most of them are gone before a collection. The older
#: generations keep their thresholds (see docs/performance.md).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Set the collector for a long-running node (``GC_YOUNG_THRESHOLD``)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


#: Blocks of at least this many bytes get memory of their own from the
#: system (glibc's mmap threshold), returned to it when freed. glibc starts
#: at 128 KiB but raises the threshold after each such block is freed, up
#: to 32 MiB; frames and results of a few MiB then come from the heap, and
#: a burst of them (clients that do not read their replies, say) left the
#: control plane's RSS hundreds of MB up for good after it had freed them.
#: Fixed at 1 MiB, a freed frame goes back to the system at once; smaller
#: blocks, every small task's, are not affected.
MMAP_THRESHOLD = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` in a node process.

    Returns whether it was set (False where the C library is not glibc).
    """
    name = ctypes.util.find_library("c")
    if name is None or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: leave them be
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastworker", description="A brokerless task queue for Python.",
        epilog="commands that talk to a control plane: "
        + operator_commands.exit_codes_help())
    parser.add_argument("--version", action="version", version=f"fastworker {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the control plane (control), a subworker (sub), or a topology file",
        description="Run a topology until SIGINT or SIGTERM: `control` (the control plane) "
        "and `sub` (a subworker) are the ones shipped with fastworker; any other "
        "argument is a topology file (TOML).")
    run.add_argument("file", metavar="control|sub|FILE",
                     help="a shipped topology (control, sub) or a topology file (TOML)")
    run.add_argument(
        "--tasks", metavar="MODULE[,MODULE...]",
        help="the task modules to import (sets FASTWORKER_TASKS, which the shipped "
        "topologies read)")
    run.add_argument("--check", action="store_true", help="validate the file and exit")
    run.add_argument(
        "--log-level",
        default=os.environ.get("FASTWORKER_LOG_LEVEL", "INFO"),
        help="log verbosity (default INFO, or $FASTWORKER_LOG_LEVEL)",
    )
    run.add_argument(
        "--log-format",
        default=os.environ.get("FASTWORKER_LOG_FORMAT", "text"),
        help="text (default) or json: one object per line with time, level, logger and "
        "message (or $FASTWORKER_LOG_FORMAT)",
    )
    journal = commands.add_parser("journal", help="check or salvage a journal file")
    actions = journal.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="check a journal's integrity and count its rows")
    check.add_argument("path", help="the journal file (journal = ... in the control plane's config)")
    salvage = actions.add_parser(
        "salvage", help="move a damaged journal aside and keep its readable rows in a new one")
    salvage.add_argument("path", help="the journal file")
    commands.add_parser(
        "secret", help="make this user's per-host secret if missing; print its path")
    operator_commands.add_commands(commands)
    return parser


def _secret() -> int:
    """``fastworker secret``: the per-host secret's path on stdout (made
    first if missing, as a control plane's first start would), a refusal
    as one line on stderr."""
    from actors.secret import auto_secret_path, ensure_secret_file

    try:
        path = auto_secret_path()
        ensure_secret_file(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(path)
    return 0


def _journal(action: str, path: str) -> int:
    """``fastworker journal check|salvage PATH``: report lines on stdout,
    a refusal as one line on stderr."""
    from fastworker.journal.errors import JournalError
    from fastworker.journal.salvage import check, salvage

    try:
        report = check(path) if action == "check" else salvage(path)
    except JournalError as error:
        print(error, file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0 if getattr(report, "ok", True) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastworker`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "journal":
        return _journal(args.action, args.path)
    if args.command == "secret":
        return _secret()
    if args.command in operator_commands.COMMANDS:
        return operator_commands.run_command(args)
    args.log_level = args.log_level.upper()
    if args.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(
            f"log level must be DEBUG, INFO, WARNING or ERROR (from --log-level or "
            f"FASTWORKER_LOG_LEVEL), got {args.log_level!r}"
        )
    args.log_format = args.log_format.lower()
    if args.log_format not in LOG_FORMATS:
        parser.error(
            f"log format must be text or json (from --log-format or FASTWORKER_LOG_FORMAT), "
            f"got {args.log_format!r}")
    # Kinds and codecs named "module:attr" resolve from the working
    # directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.tasks is not None:
        os.environ["FASTWORKER_TASKS"] = args.tasks
    path = topology_path(args.file)
    missing = None if path != args.file else _not_found(path)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    try:
        topology = Topology.from_toml(path)
        resolved = topology.resolve()
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    if args.check:
        names = ", ".join(item.spec.name for item in resolved)
        print(f"{args.file}: ok ({len(resolved)} actors: {names})")
        return 0
    configure_logging(args.log_level, args.log_format)
    if path != args.file and not topology.node.modules():
        log.warning(
            "%s: no task modules (--tasks MODULE or FASTWORKER_TASKS): this node knows "
            "only the tasks %s", args.file,
            "subworkers bring when they register" if args.file == "control"
            else "of no module, and can run none")
    tune_gc()
    tune_malloc()
    try:
        return trio.run(run_node, topology)
    except BaseException as raised:  # noqa: BLE001 - turned into an exit code below
        failure = unwrap(raised)
        if isinstance(failure, ConfigError):
            for problem in failure.problems:
                print(problem, file=sys.stderr)
            return 2
        if isinstance(failure, (StartError, Escalation)):
            log.error("%s", failure)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
