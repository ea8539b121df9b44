"""The ``fastworker`` command.

``fastworker run FILE.toml`` runs a topology until SIGINT or SIGTERM;
``--check`` only validates it. A user mistake is reported as readable
lines, never a traceback:

- exit 0: stopped gracefully (or ``--check`` found nothing wrong);
- exit 1: the node failed (an actor could not start, or crashed past its
  restart limit);
- exit 2: the topology file is wrong (one line per problem);
- 128 + N: a second signal N stopped it at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from actors.errors import ConfigError, Escalation, StartError
from actors.log import configure as configure_logging
from actors.node import run_node
from actors.supervisor import unwrap
from actors.topology import Topology

log = logging.getLogger("fastworker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastworker", description="A brokerless task queue for Python."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run a topology file (config/control.toml, ...)")
    run.add_argument("file", help="the topology file (TOML)")
    run.add_argument("--check", action="store_true", help="validate the file and exit")
    run.add_argument(
        "--log-level",
        default=os.environ.get("FASTWORKER_LOG_LEVEL", "INFO"),
        help="log verbosity (default INFO, or $FASTWORKER_LOG_LEVEL)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastworker`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.log_level = args.log_level.upper()
    if args.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(
            f"log level must be DEBUG, INFO, WARNING or ERROR (from --log-level or "
            f"FASTWORKER_LOG_LEVEL), got {args.log_level!r}"
        )
    # Kinds and codecs named "module:attr" resolve from the working
    # directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        topology = Topology.from_toml(args.file)
        resolved = topology.resolve()
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    if args.check:
        names = ", ".join(item.spec.name for item in resolved)
        print(f"{args.file}: ok ({len(resolved)} actors: {names})")
        return 0
    configure_logging(args.log_level)
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
