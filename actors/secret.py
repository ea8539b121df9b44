"""Which shared secret signs a node's frames: the one rule every edge,
client and link uses.

An edge, a client or a worker link is given two settings, ``secret`` (the
secret's text) and ``secret_file`` (where to read it). ``frame_secret``
turns them into the bytes a ``Framer`` takes:

=====================  =====================  ====================================
``secret``             ``secret_file``        frames are signed with
=====================  =====================  ====================================
set                    empty or ``"auto"``    ``secret``
empty                  a path                 the file's stripped text
empty                  ``"auto"``             this user's per-host secret (below)
empty                  empty or ``"none"``    nothing: unsigned frames
set                    a path or ``"none"``   (refused: choose one)
=====================  =====================  ====================================

Where mutual TLS authenticates the peers (``mutual_tls``), ``"auto"``
signs nothing: the certificates do that job, across hosts.

The per-host secret lives at ``$XDG_STATE_HOME/fastworker/secret`` (default
``~/.local/state/fastworker/secret``), one per user on a host, so every node
and client of that user on that host agrees without configuration. A node
that serves (``create=True``) makes it on first start: random, mode 0600 in a
0700 directory, written under a temporary name and linked into place, so two
nodes starting at once agree on one secret and nobody reads half a file. A
client or a worker link makes it too when its control plane is on this host
(it may start first); one that talks to another host only reads it
(``create=False``), and a missing file is an error naming the path, not a
silent wait for answers that never come.
A file that other users can read, or that another user owns, is refused.

The auto secret protects one host. It does not count as a shared secret for
listening beyond loopback (``shared_secret``): other hosts would need a
copy, so that takes a secret set on purpose. This module reads and writes
one small file at start-up and never touches a frame.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from actors.errors import ConfigError
from actors.nng import is_local_address
from actors.tls import TlsOptions

__all__ = [
    "AUTO",
    "NONE",
    "auto_secret_path",
    "check_secret_choice",
    "dialer_secret",
    "ensure_secret_file",
    "frame_secret",
    "read_secret_file",
    "shared_secret",
    "signs",
]

#: ``secret_file = "auto"``: this user's per-host secret, made if missing.
AUTO: Final = "auto"
#: ``secret_file = "none"``: unsigned frames, said on purpose.
NONE: Final = "none"
#: The per-host secret's place under the user's state directory.
AUTO_SECRET_NAME: Final = "fastworker/secret"
#: Random bytes in a new per-host secret (as URL-safe base64 text).
_SECRET_BYTES: Final = 32


def auto_secret_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where this user's per-host secret lives:
    ``$XDG_STATE_HOME/fastworker/secret``, by default
    ``~/.local/state/fastworker/secret``.

    Raises:
        ConfigError: neither ``XDG_STATE_HOME`` nor a home directory is known.
    """
    environ = os.environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return Path(state) / AUTO_SECRET_NAME
    try:
        home = Path.home()
    except RuntimeError:
        raise ConfigError(
            "secret_file auto: no home directory to keep the per-host secret in; set "
            "XDG_STATE_HOME, or FASTWORKER_SECRET / FASTWORKER_SECRET_FILE"
        ) from None
    return home / ".local" / "state" / AUTO_SECRET_NAME


def check_secret_choice(secret: str, secret_file: str) -> None:
    """Refuse a ``secret`` together with an explicit ``secret_file``.

    ``"auto"`` is a default, not a choice, so a ``secret`` overrides it.

    Raises:
        ValueError: both a secret and a file (or ``"none"``) are set.
    """
    if secret and secret_file and secret_file != AUTO:
        raise ValueError("set either secret or secret_file, not both")


def signs(secret: str, secret_file: str) -> bool:
    """Whether the settings sign frames at all (without reading any file)."""
    return bool(secret) or secret_file not in ("", NONE)


def shared_secret(secret: str, secret_file: str) -> bool:
    """Whether the settings name a secret set on purpose, which other hosts
    can share: ``secret``, or a file other than ``"auto"`` / ``"none"``.
    Only such a secret (or TLS) allows listening beyond loopback."""
    return bool(secret) or secret_file not in ("", AUTO, NONE)


def frame_secret(
    secret: str, secret_file: str, *, create: bool, mutual_tls: bool = False,
    missing_ok: bool = False,
) -> bytes | None:
    """The bytes that sign frames, by the rule in the module docstring.

    Args:
        secret: the secret's text; empty: not set.
        secret_file: a path, ``"auto"``, ``"none"``, or empty (not set).
        create: make the per-host secret if it is missing (a node that
            serves, or a client or link of a control plane on this host);
            otherwise a missing one is an error (one of another host).
        mutual_tls: mutual TLS authenticates this end's peers (a listener
            that demands certificates, a dialer that shows one); then
            ``"auto"`` signs nothing, as a peer on another host has no
            per-host secret to sign with. A secret set on purpose still signs.
        missing_ok: a reader (``create=False``) with TLS settings to fall
            back on signs nothing when the per-host secret is missing,
            rather than failing: its control plane may authenticate by
            mutual TLS, and a TLS refusal says more than a missing file.

    Raises:
        ConfigError: the choice is contradictory, or the file cannot be
            used; the message names the path and the fix.
    """
    try:
        check_secret_choice(secret, secret_file)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if secret:
        return secret.encode()
    if not secret_file or secret_file == NONE:
        return None
    if secret_file == AUTO:
        if mutual_tls:
            return None
        path = auto_secret_path()
        if create:
            return ensure_secret_file(path)
        if missing_ok and not os.path.lexists(path):
            return None
        return read_secret_file(path, auto=True)
    return read_secret_file(Path(secret_file), auto=False)


def dialer_secret(secret: str, secret_file: str, *, address: str,
                  tls: TlsOptions | None) -> bytes | None:
    """The bytes a client or worker link signs with, talking to the control
    plane at ``address``: ``frame_secret``, making the per-host secret if
    missing when ``address`` is on this host (its control plane may start
    after it), only reading it for another host's. With a certificate to
    show (mutual TLS) the per-host secret signs nothing; with other TLS
    settings, a missing one is none.

    Raises:
        ConfigError: the settings cannot be used (the message says why).
    """
    tls = tls if tls is not None and tls.configured else None
    return frame_secret(secret, secret_file, create=is_local_address(address),
                        mutual_tls=tls is not None and tls.mutual, missing_ok=tls is not None)


def read_secret_file(path: Path, *, auto: bool) -> bytes:
    """The stripped text of a secret file.

    Args:
        path: the file.
        auto: it is the per-host secret: it must exist, belong to this
            user and be readable by nobody else, and a missing one says who
            makes it.

    Raises:
        ConfigError: the file is missing, unreadable, empty, or (``auto``)
            open to other users.
    """
    what = "the per-host secret" if auto else "secret_file"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        if auto and isinstance(error, FileNotFoundError):
            raise ConfigError(
                f"no per-host secret at {path}: it is made on this host by this user's "
                "control planes, and by their clients and subworkers here; for a control "
                "plane on another host, set FASTWORKER_SECRET / FASTWORKER_SECRET_FILE to "
                "its secret"
            ) from None
        raise ConfigError(f"{what} {path}: cannot read: {error.strerror}") from None
    try:
        if auto:
            _check_private(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as file:
            text = file.read().strip()
    except OSError as error:
        raise ConfigError(f"{what} {path}: cannot read: {error.strerror}") from None
    finally:
        os.close(fd)
    if not text:
        raise ConfigError(f"{what} {path}: the file is empty")
    return text


def ensure_secret_file(path: Path) -> bytes:
    """This user's per-host secret at ``path``, made first if missing.

    The directory is made with mode 0700. A new secret is written to a
    temporary file (mode 0600) and linked to ``path``, which fails if another
    node linked its own first: then that one is read, so every node agrees.

    Raises:
        ConfigError: the directory or file cannot be made or used.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.stat()
    except OSError as error:
        raise ConfigError(
            f"the per-host secret's directory {directory}: cannot make it: {error.strerror}"
        ) from None
    if status.st_mode & 0o022 or status.st_uid != os.geteuid():
        raise ConfigError(
            f"the per-host secret's directory {directory} is open to other users "
            f"(mode {stat.S_IMODE(status.st_mode):04o}, owner uid {status.st_uid}): others "
            f"could replace the secret; run chmod 700 {directory}"
        )
    if not path.exists():
        _create(path)
    return read_secret_file(path, auto=True)


def _create(path: Path) -> None:
    """Write a new secret to a temporary file and link it to ``path``,
    unless another node got there first."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    text = secrets.token_urlsafe(_SECRET_BYTES).encode() + b"\n"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another node made it first: everyone reads that one
    except OSError as error:
        raise ConfigError(f"the per-host secret {path}: cannot make it: {error.strerror}") from None
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def _check_private(path: Path, status: os.stat_result) -> None:
    """Refuse a per-host secret that other users could read or another owns."""
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid != os.geteuid():
        raise ConfigError(
            f"the per-host secret {path} belongs to uid {status.st_uid}, not to this user "
            f"(uid {os.geteuid()}): remove it, or set FASTWORKER_SECRET_FILE to a file of yours"
        )
    if mode & 0o077:
        raise ConfigError(
            f"the per-host secret {path} is open to other users (mode {mode:04o}); "
            f"run chmod 600 {path}, or remove it to have a new one made"
        )
