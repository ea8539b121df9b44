"""Throw-away certificate authorities for TLS tests, made with ``openssl``.

``make_pki(directory)`` writes two CAs and three certificates, each with its
key, into ``directory`` (a test's ``tmp_path``; nothing here is ever
committed): a server certificate for ``localhost`` and ``127.0.0.1``, a
client certificate signed by the same CA, and a client certificate signed
by a second, unrelated CA. P-256 keys, valid for two days.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from actors.tls import TlsOptions

__all__ = ["Pki", "make_pki"]


@attrs.frozen(kw_only=True)
class Pki:
    """Paths of the PEM files ``make_pki`` wrote."""

    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    @property
    def server(self) -> TlsOptions:
        """A listener demanding client certificates from the first CA."""
        return TlsOptions(ca_file=self.path("ca.pem"), cert_file=self.path("server.pem"),
                          key_file=self.path("server.key"))

    @property
    def server_only(self) -> TlsOptions:
        """A listener that asks no client certificate."""
        return TlsOptions(cert_file=self.path("server.pem"), key_file=self.path("server.key"))

    @property
    def client(self) -> TlsOptions:
        """A dialer with a certificate from the first CA."""
        return TlsOptions(ca_file=self.path("ca.pem"), cert_file=self.path("client.pem"),
                          key_file=self.path("client.key"))

    @property
    def other_ca_client(self) -> TlsOptions:
        """A dialer trusting the right CA, with a certificate from the other one."""
        return TlsOptions(ca_file=self.path("ca.pem"), cert_file=self.path("stranger.pem"),
                          key_file=self.path("stranger.key"))

    @property
    def no_certificate_client(self) -> TlsOptions:
        """A dialer trusting the right CA, with no certificate of its own."""
        return TlsOptions(ca_file=self.path("ca.pem"))


def make_pki(directory: Path) -> Pki:
    """Write the CAs and certificates into ``directory`` and return their paths."""
    for ca in ("ca", "other-ca"):
        _openssl(directory, "req", "-x509", *_NEW_KEY, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=fastworker test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        _openssl(directory, "req", "-new", *_NEW_KEY, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
                 "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext")
    return Pki(directory=directory)


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(directory: Path, *arguments: str) -> None:
    subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True)
