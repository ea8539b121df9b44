"""TLS settings for NNG wires, and the one rule for which of them applies.

``TlsOptions`` is what an edge's ``tls`` table, a subworker's link and a
client hold: paths of PEM files and a server name, each of which may come
from an environment variable (``TLS_VARIABLES``; an empty value means
unset, as an unset ``${FASTWORKER_TLS_CA:-}`` arrives). ``resolve_tls``
decides, for one address and one end (listen or dial), whether TLS applies
and whether the settings are complete, and names what is wrong in words a
user can act on: the option, its variable and the file. ``tls_from_environ``
reads the variables for a program that has no config file (the client).

A listener with ``ca_file`` demands a certificate that CA signed from every
dialer (mutual TLS): that authenticates peers the way a shared secret does.
Without it, TLS encrypts but lets any client in.

This module decides only; reading and parsing the PEM files is
``actors.nng``'s, when the socket opens. It must not import pynng.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, final

import attrs

from actors.errors import ConfigError

__all__ = ["TLS_VARIABLES", "TlsOptions", "resolve_tls", "tls_from_environ", "tls_problems"]

#: The environment variable of each setting, read by the client and by the
#: shipped topologies (``config/control.toml``, ``config/sub.toml``).
TLS_VARIABLES: Final = {
    "ca_file": "FASTWORKER_TLS_CA",
    "cert_file": "FASTWORKER_TLS_CERT",
    "key_file": "FASTWORKER_TLS_KEY",
    "server_name": "FASTWORKER_TLS_SERVER_NAME",
}


def _unset_if_empty(value: str | None) -> str | None:
    return value or None


@final
@attrs.frozen(kw_only=True)
class TlsOptions:
    """TLS for a ``tls+tcp://`` wire: PEM file paths, mapped onto ``pynng.TLSConfig``.

    A listener needs ``cert_file`` and ``key_file``; given ``ca_file`` too, it
    demands from every dialer a certificate that CA signed (mutual TLS). A
    dialer needs ``ca_file`` to verify the listener, whose certificate must
    name ``server_name`` (default: the host of the address, a DNS name or an
    IP address in the certificate's subjectAltName); its own certificate and
    key are what a mutual-TLS listener checks. An empty string is unset.
    """

    cert_file: str | None = attrs.field(default=None, converter=_unset_if_empty)
    key_file: str | None = attrs.field(default=None, converter=_unset_if_empty)
    ca_file: str | None = attrs.field(default=None, converter=_unset_if_empty)
    server_name: str | None = attrs.field(default=None, converter=_unset_if_empty)

    @property
    def configured(self) -> bool:
        """Whether any setting is given (all unset means no TLS)."""
        return any((self.cert_file, self.key_file, self.ca_file, self.server_name))

    @property
    def mutual(self) -> bool:
        """Whether a listener with these settings demands client certificates."""
        return self.ca_file is not None and self.cert_file is not None


def tls_from_environ(environ: Mapping[str, str] | None = None) -> TlsOptions | None:
    """The TLS settings of ``TLS_VARIABLES`` in ``environ`` (``os.environ``
    by default); ``None`` when none is set."""
    environ = os.environ if environ is None else environ
    tls = TlsOptions(**{name: environ.get(variable) for name, variable in TLS_VARIABLES.items()})
    return tls if tls.configured else None


def tls_problems(address: str, tls: TlsOptions | None, mode: str) -> list[str]:
    """What stops ``tls`` from securing a wire that listens on or dials
    ``address`` (``mode``), one readable line each; empty if nothing does."""
    wants_tls = address.startswith("tls+")
    if tls is None or not tls.configured:
        if not wants_tls:
            return []
        if mode == "listen":
            return [
                "a tls+tcp:// listener needs TLS settings: cert_file and key_file "
                f"({_names('cert_file', 'key_file')}), and ca_file ({_names('ca_file')}) to "
                "demand client certificates"
            ]
        return [
            "the address uses TLS but no TLS settings are given: set ca_file "
            f"({_names('ca_file')}) to the CA that signed the listener's certificate, and "
            f"cert_file and key_file ({_names('cert_file', 'key_file')}) if it demands one"
        ]
    if not wants_tls:
        if mode == "listen":
            return ["TLS settings are given but the address is not tls+tcp://: listen on a "
                    "tls+tcp:// address, or unset them"]
        return ["TLS settings are given but the address is not tls+tcp://: refusing to dial "
                "without TLS (use the tls+tcp:// address, or unset the TLS settings)"]
    problems = []
    for name in ("cert_file", "key_file"):
        other = "key_file" if name == "cert_file" else "cert_file"
        if getattr(tls, name) is not None and getattr(tls, other) is None:
            problems.append(
                f"TLS {name} ({_names(name)}) is set without {other} ({_names(other)}): "
                "they go together")
    if mode == "listen" and tls.cert_file is None and tls.key_file is None:
        problems.append(
            f"a TLS listener needs cert_file and key_file ({_names('cert_file', 'key_file')})")
    if mode == "dial" and tls.ca_file is None:
        problems.append(
            f"a TLS dialer needs ca_file ({_names('ca_file')}) to verify the listener")
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not os.path.exists(path):
            problems.append(f"TLS {name} ({_names(name)}) {path}: no such file")
    return problems


def resolve_tls(address: str, tls: TlsOptions | None, mode: str) -> TlsOptions | None:
    """The TLS a wire that listens on or dials ``address`` uses: ``tls`` for
    a ``tls+tcp://`` address, ``None`` for any other.

    Args:
        address: the NNG address.
        tls: the settings given (from options or the environment), or ``None``.
        mode: ``listen`` or ``dial``.

    Raises:
        ConfigError: one line per problem (``tls_problems``): TLS settings
            with a plain address (a dialer refuses to fall back to plain
            TCP), a ``tls+tcp://`` address without them, a key without its
            certificate, a dialer without a CA, a file that does not exist.
    """
    problems = tls_problems(address, tls, mode)
    if problems:
        raise ConfigError(f"{address}: {problem}" for problem in problems)
    return tls if tls is not None and tls.configured else None


def _names(*settings: str) -> str:
    return ", ".join(TLS_VARIABLES[setting] for setting in settings)
