"""Which secret signs frames (``actors.secret``): the per-host secret, made
once, private to its user, and what overrides it."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from actors.edge import Edge, EdgeOptions
from actors.errors import ConfigError
from actors.secret import (
    AUTO,
    NONE,
    auto_secret_path,
    ensure_secret_file,
    frame_secret,
    read_secret_file,
    shared_secret,
    signs,
)
from actors.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
CODEC = "tests.actors.helpers:codec"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestWhere:
    def test_the_state_directory_holds_it(self, state_home: Path) -> None:
        """``$XDG_STATE_HOME/fastworker/secret`` (the test's own state home)."""
        assert auto_secret_path() == state_home / "fastworker" / "secret"

    def test_by_default_under_the_home_directory(self) -> None:
        """Without XDG_STATE_HOME (or with a relative one, which the XDG rule
        ignores): ``~/.local/state/fastworker/secret``."""
        for environ in ({}, {"XDG_STATE_HOME": "relative/state"}):
            assert auto_secret_path(environ) == (
                Path.home() / ".local" / "state" / "fastworker" / "secret"
            )


class TestMade:
    def test_made_once_private_to_its_user(self, state_home: Path) -> None:
        """The first node makes a random secret, mode 0600 in a 0700
        directory; later ones read the same one."""
        path = auto_secret_path()
        first = frame_secret("", AUTO, create=True)
        assert first is not None and len(first) >= 43  # 32 random bytes, base64
        assert path.read_bytes().strip() == first
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        assert frame_secret("", AUTO, create=True) == first
        assert frame_secret("", AUTO, create=False) == first
        assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]

    def test_a_creator_that_loses_the_race_keeps_the_winners_secret(
        self, state_home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two nodes that both found no file: the second one's link fails,
        it reads the first one's secret and leaves no temporary file."""
        path = auto_secret_path()
        first = ensure_secret_file(path)
        # The second node saw no file, just before the first linked its own.
        monkeypatch.setattr(Path, "exists", lambda self: False)
        assert ensure_secret_file(path) == first
        monkeypatch.undo()
        assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]

    def test_nodes_starting_at_once_agree(self, state_home: Path) -> None:
        """Eight processes making the secret at the same moment all end up
        with one and the same."""
        code = (
            "import sys\n"
            "from actors.secret import auto_secret_path, ensure_secret_file\n"
            "sys.stdin.read()\n"  # start together: wait for the go
            "print(ensure_secret_file(auto_secret_path()).decode())\n"
        )
        environ = dict(os.environ, XDG_STATE_HOME=str(state_home))
        processes = [
            subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=environ, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(8)
        ]
        try:
            for process in processes:
                assert process.stdin is not None
                process.stdin.close()
            secrets = set()
            for process in processes:
                assert process.stdout is not None
                secrets.add(process.stdout.read().strip())
                assert process.wait(timeout=30) == 0
        finally:
            for process in processes:
                process.kill()
                process.wait()
                if process.stdout is not None:
                    process.stdout.close()
        assert secrets == {auto_secret_path().read_text().strip()}


class TestRefused:
    def test_a_file_open_to_others(self, state_home: Path) -> None:
        """A per-host secret other users can read is refused, naming the path,
        the mode and the fix."""
        path = auto_secret_path()
        ensure_secret_file(path)
        path.chmod(0o644)
        for create in (True, False):
            with pytest.raises(ConfigError) as raised:
                frame_secret("", AUTO, create=create)
            assert str(raised.value) == (
                f"the per-host secret {path} is open to other users (mode 0644); "
                f"run chmod 600 {path}, or remove it to have a new one made"
            )

    def test_a_file_of_another_user(
        self, state_home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A per-host secret this user does not own is refused."""
        path = auto_secret_path()
        ensure_secret_file(path)
        owner = path.stat().st_uid
        monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
        with pytest.raises(ConfigError) as raised:
            read_secret_file(path, auto=True)
        assert str(raised.value) == (
            f"the per-host secret {path} belongs to uid {owner}, not to this user "
            f"(uid {owner + 1}): remove it, or set FASTWORKER_SECRET_FILE to a file of yours"
        )

    def test_a_directory_others_can_write(self, state_home: Path) -> None:
        """Others could swap the secret in a directory they can write: refused."""
        path = auto_secret_path()
        path.parent.mkdir(parents=True)
        path.parent.chmod(0o777)
        with pytest.raises(ConfigError, match=(
            f"the per-host secret's directory {path.parent} is open to other users "
            r"\(mode 0777, owner uid \d+\): others could replace the secret; "
            f"run chmod 700 {path.parent}"
        )):
            frame_secret("", AUTO, create=True)
        assert not path.exists()

    def test_missing_for_a_reader(self, state_home: Path) -> None:
        """A client or link of another host's control plane
        (``create=False``) makes nothing: a missing secret is an error
        naming the path, who makes it, and what to set instead."""
        path = auto_secret_path()
        with pytest.raises(ConfigError) as raised:
            frame_secret("", AUTO, create=False)
        assert str(raised.value) == (
            f"no per-host secret at {path}: it is made on this host by this user's control "
            "planes, and by their clients and subworkers here; for a control plane on "
            "another host, set FASTWORKER_SECRET / FASTWORKER_SECRET_FILE to its secret"
        )
        assert not path.parent.exists()

    def test_an_empty_file(self, state_home: Path) -> None:
        path = auto_secret_path()
        ensure_secret_file(path)
        path.write_text("\n")
        with pytest.raises(ConfigError, match=f"the per-host secret {path}: the file is empty"):
            frame_secret("", AUTO, create=True)


class TestOverrides:
    def test_a_secret_overrides_auto_and_makes_no_file(self, state_home: Path) -> None:
        """``secret`` (FASTWORKER_SECRET) wins over the default ``auto``."""
        assert frame_secret("s3cret", AUTO, create=True) == b"s3cret"
        assert not auto_secret_path().exists()

    def test_a_file_overrides_auto(self, state_home: Path, tmp_path: Path) -> None:
        """``secret_file`` naming a path (FASTWORKER_SECRET_FILE) is read as is."""
        file = tmp_path / "mine"
        file.write_text("from a file\n")
        file.chmod(0o644)  # the operator's own file: its mode is theirs to choose
        assert frame_secret("", str(file), create=True) == b"from a file"
        assert not auto_secret_path().exists()

    @pytest.mark.parametrize("secret_file", [NONE, ""], ids=["none", "empty"])
    def test_none_is_unsigned(self, state_home: Path, secret_file: str) -> None:
        """``none`` (or nothing at all) signs nothing and makes no file."""
        assert frame_secret("", secret_file, create=True) is None
        assert not auto_secret_path().exists()

    @pytest.mark.parametrize("secret_file", ["/etc/fastworker/secret", NONE])
    def test_a_secret_and_a_file_are_refused(self, secret_file: str) -> None:
        with pytest.raises(ConfigError, match="set either secret or secret_file, not both"):
            frame_secret("s3cret", secret_file, create=True)

    def test_what_signs_and_what_may_leave_the_host(self) -> None:
        """The per-host secret signs, but only a secret set on purpose (or
        TLS) lets a node listen beyond loopback."""
        assert [signs("", f) for f in ("", NONE, AUTO, "/p")] == [False, False, True, True]
        assert [shared_secret("", f) for f in ("", NONE, AUTO, "/p")] == [
            False, False, False, True]
        assert shared_secret("s", AUTO)


class TestEdges:
    def test_an_edge_with_auto_signs_with_the_per_host_secret(self, state_home: Path) -> None:
        options = EdgeOptions(codec=CODEC, secret_file=AUTO)
        assert options.read_secret() == auto_secret_path().read_bytes().strip()

    def test_auto_is_not_enough_to_listen_beyond_loopback(self, state_home: Path) -> None:
        """Other hosts cannot share a secret nobody chose: listening on
        0.0.0.0 with the per-host secret is refused, as with none."""
        topology = Topology().add("edge", Edge, codec=CODEC, address="tcp://0.0.0.0:5555",
                                  secret_file=AUTO)
        with pytest.raises(ConfigError, match="refusing to listen on tcp://0.0.0.0:5555 "
                           "without a shared secret"):
            topology.resolve()
        assert not auto_secret_path().exists()


class TestMutualTls:
    """Where certificates authenticate the peers, the per-host secret
    gives way: a peer on another host has none to sign with."""

    def test_auto_signs_nothing_under_mutual_tls(self, state_home: Path) -> None:
        assert frame_secret("", AUTO, create=True, mutual_tls=True) is None
        assert not auto_secret_path().exists()
        assert frame_secret("s3cret", AUTO, create=True, mutual_tls=True) == b"s3cret"

    def test_a_reader_with_tls_settings_may_find_none(self, state_home: Path) -> None:
        """``missing_ok``: no per-host secret is no signing, not an error;
        one that exists is used."""
        assert frame_secret("", AUTO, create=False, missing_ok=True) is None
        made = ensure_secret_file(auto_secret_path())
        assert frame_secret("", AUTO, create=False, missing_ok=True) == made

    def test_a_listener_that_demands_certificates_leaves_auto_unsigned(
        self, state_home: Path, tmp_path: Path
    ) -> None:
        """An edge on tls+tcp:// with a client CA signs nothing by default;
        without the client CA (TLS that lets anyone in) it signs with the
        per-host secret."""
        from actors.tls import TlsOptions

        for name in ("ca.pem", "server.pem", "server.key"):
            (tmp_path / name).write_text("-")
        server_only = TlsOptions(cert_file=str(tmp_path / "server.pem"),
                                 key_file=str(tmp_path / "server.key"))
        mutual = attrs.evolve(server_only, ca_file=str(tmp_path / "ca.pem"))
        address = "tls+tcp://127.0.0.1:5555"
        assert EdgeOptions(codec=CODEC, address=address, secret_file=AUTO,
                           tls=mutual).read_secret() is None
        assert not auto_secret_path().exists()
        assert EdgeOptions(codec=CODEC, address=address, secret_file=AUTO,
                           tls=server_only).read_secret() == auto_secret_path().read_bytes().strip()



@pytest.mark.parametrize("secret_file", ["", AUTO], ids=["unsigned", "auto"])
async def test_a_listener_says_when_it_takes_unsigned_frames(
    state_home: Path, loopback_address: str, secret_file: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unsigned listening edge warns, once, that any process that can
    reach it may send it messages; one with the per-host secret does not."""
    from actors import open_node
    from tests.actors.helpers import Recorder

    topology = (
        Topology()
        .add("in", Edge, refs={"Note": "rec"}, codec=CODEC, address=loopback_address,
             secret_file=secret_file)
        .add("rec", Recorder, params={"seen": []})
    )
    with caplog.at_level(logging.WARNING, logger="actors.edge"):
        async with open_node(topology):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "actors.edge"]
    expected = [
        f"in: listening on {loopback_address} takes unsigned frames: any process that can "
        "reach it may send it messages; set secret_file = \"auto\" (or FASTWORKER_SECRET) "
        "to sign them"
    ]
    assert warnings == (expected if secret_file == "" else [])
