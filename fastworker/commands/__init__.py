"""The ``fastworker`` commands that talk to a running control plane.

Tasks one by one (``tasks``, ``task``, ``submit``, ``cancel``:
``fastworker.commands.tasks``), workflows (``workflow``:
``fastworker.commands.workflows``) and the cluster (``status``,
``workers``, ``watch``, ``purge``, ``retry``, ``drain``:
``fastworker.commands.cluster``).
Each is a ``Client`` call, so it works wherever a client does (the
authenticated protocol on the query and submission ports, never the
dashboard's HTTP), with the client's environment (``FASTWORKER_ADDRESS``,
``FASTWORKER_SECRET``, ``FASTWORKER_SECRET_FILE``, ``FASTWORKER_TLS_*``)
or ``--address`` and ``--secret-file``.

Exit codes (``EXIT``): 0 done; 1 the answer is "no" (an unknown task id,
worker or workflow, a failed task, a submission refused, a task or
workflow that could not be cancelled or retried); 2 a usage error; 3 no
answer from the control plane.

Every command prints text for people, or with ``--json`` JSON for scripts
(one object, or one per line). docs/cli.md is the user's page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from actors.errors import ConfigError
from fastworker.client import Client
from fastworker.commands import cluster, tasks, workflows
from fastworker.commands.common import EXIT, Usage
from fastworker.errors import ConnectionLost, FastworkerError

__all__ = ["add_commands", "common_options", "exit_codes_help", "run_command"]

#: Seconds a command waits for an answer (a bulk action may take a while).
ACTION_WAIT = 75.0

#: Every command here, by name.
COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Awaitable[int]]] = {
    **tasks.COMMANDS, **workflows.COMMANDS, **cluster.COMMANDS}


def add_commands(commands: Any) -> None:
    """Add every command here to the ``fastworker`` parser's subcommands."""
    common = common_options()
    tasks.add_parsers(commands, common)
    workflows.add_parsers(commands, common)
    cluster.add_parsers(commands, common)


def common_options() -> argparse.ArgumentParser:
    """The options every command that talks to a control plane takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="the control plane's base address (default "
                        "$FASTWORKER_ADDRESS, else tcp://127.0.0.1:5555)")
    common.add_argument("--secret-file", help="a file holding the shared secret (default "
                        "$FASTWORKER_SECRET / $FASTWORKER_SECRET_FILE, else the per-host secret)")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return common


def run_command(args: argparse.Namespace) -> int:
    """Run the command ``args.command``; return the exit code."""
    secret = None
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text().strip()
        except OSError as error:
            print(f"--secret-file {args.secret_file}: cannot read: {error.strerror}",
                  file=sys.stderr)
            return EXIT["usage"]
    command = COMMANDS[args.command]

    async def main() -> int:
        # Longer than the Admin's action_timeout (60 s): a purge or retry
        # the Admin is still carrying out is waited for, not called lost.
        async with Client(args.address, secret, request_timeout=ACTION_WAIT) as client:
            return int(await command(client, args))

    try:
        return trio.run(main)
    except KeyboardInterrupt:  # how watch ends; any other command was interrupted
        return EXIT["ok"] if args.command == "watch" else 130
    except ConnectionLost as error:  # before OSError: it is a ConnectionError
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["unreachable"]
    except (ConfigError, OSError) as error:  # an address NNG cannot dial, say
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["usage"]
    except Usage as error:
        print(f"fastworker {args.command}: {error}", file=sys.stderr)
        return EXIT["usage"]
    except FastworkerError as error:  # refused: a bad submission, say
        print(f"fastworker {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT["no"]


def exit_codes_help() -> str:
    """The exit codes, for ``--help``."""
    return ("exit codes: 0 done; 1 the answer is no (unknown id or worker, failed task, "
            "refused submission, not cancelled or retried); 2 usage error; 3 no control "
            "plane answered")
