"""The built wheel runs outside the clone, as a user installs it.

The wheel is built from a copy of the sources (``pip wheel``, no network),
installed into a directory of its own and put first on ``PYTHONPATH``;
every command then runs in a temporary directory, where nothing of the
clone is found: the shipped topologies, the dashboard's files and the
version come from the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from actors.pytest_plugin import free_tcp_ports
from fastworker import Client
from fastworker.version import VERSION
from tests.process.harness import ROOT, env, run_process  # noqa: F401 (fixture)

TASKS = '''
from fastworker import task


@task
async def double(x: int) -> int:
    return 2 * x
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed wheel, and nothing of the clone."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("actors", "fastworker", "dashboard"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(root / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (root / "dist").glob("fastworker-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target",
                    str(root / "site"), str(wheel)], check=True, timeout=300)
    return root / "site"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A user's project: one task module, outside the clone."""
    (tmp_path / "mytasks.py").write_text(TASKS)
    return tmp_path


def installed_env(base: dict[str, str], site: Path) -> dict[str, str]:
    environ = {**base, "PYTHONPATH": str(site)}
    environ.pop("FASTWORKER_TASKS", None)
    return environ


def fastworker(*args: str, site: Path, cwd: Path,
               env: dict[str, str]) -> subprocess.CompletedProcess[str]:  # noqa: F811 (fixture)
    return subprocess.run([sys.executable, "-m", "fastworker", *args], cwd=cwd,
                          env=installed_env(env, site), capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_installed_package_is_the_one_run(site: Path, app: Path,
                                              env: dict[str, str]) -> None:  # noqa: F811 (fixture)
    found = subprocess.run([sys.executable, "-c", "import fastworker; print(fastworker.__file__)"],
                           cwd=app, env=installed_env(env, site), capture_output=True,
                           text=True, check=True)
    assert Path(found.stdout.strip()).is_relative_to(site)
    version = fastworker("--version", site=site, cwd=app, env=env)
    assert (version.returncode, version.stdout.strip()) == (0, f"fastworker {VERSION}")


def test_the_shipped_topologies_are_found_by_name(site: Path, app: Path,
                                                  env: dict[str, str]) -> None:  # noqa: F811 (fixture)
    env["FASTWORKER_ADDRESS"] = "tcp://127.0.0.1:5555"  # the subworker's control plane
    for name, actors in (("control", 17), ("sub", 2)):
        checked = fastworker("run", name, "--check", "--tasks", "mytasks", site=site, cwd=app,
                             env=env)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"{name}: ok ({actors} actors"), checked.stdout


def test_an_unknown_task_module_is_named(site: Path, app: Path, env: dict[str, str]) -> None:  # noqa: F811 (fixture)
    checked = fastworker("run", "control", "--check", "--tasks", "nosuchmodule", site=site,
                         cwd=app, env=env)
    assert checked.returncode == 2
    assert "cannot import 'nosuchmodule'" in checked.stderr
    assert "Traceback" not in checked.stderr


async def test_the_control_plane_runs_a_users_tasks_and_serves_its_dashboard(
        site: Path, app: Path, env: dict[str, str]) -> None:  # noqa: F811 (fixture)
    address = f"tcp://127.0.0.1:{free_tcp_ports(6)}"
    dashboard = free_tcp_ports(1)
    environ = installed_env({**env, "FASTWORKER_ADDRESS": address,
                             "FASTWORKER_DASHBOARD": f"127.0.0.1:{dashboard}"}, site)
    args = [sys.executable, "-m", "fastworker", "run", "control", "--tasks", "mytasks"]
    async with run_process(args, environ, "fastworker run control", cwd=app) as node:
        await node.wait_for("node control ready")
        async with Client(address) as client:
            assert await client.submit("mytasks.double", 21) == 42
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{dashboard}") as http:
            page = await http.get("/")
            script = await http.get("/static/app.js")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert script.status_code == 200 and script.text
        assert await node.stop() == 0, node.tail
    assert not any("Traceback" in line for line in node.lines), node.tail


async def test_a_control_plane_without_task_modules_says_so(
        site: Path, app: Path, env: dict[str, str]) -> None:  # noqa: F811 (fixture)
    environ = installed_env({**env, "FASTWORKER_ADDRESS":
                             f"tcp://127.0.0.1:{free_tcp_ports(6)}"}, site)
    assert "FASTWORKER_TASKS" not in environ and os.environ.get("PYTHONPATH") != str(site)
    args = [sys.executable, "-m", "fastworker", "run", "control"]
    async with run_process(args, environ, "fastworker run control", cwd=app) as node:
        line = await node.wait_for("no task modules")
        assert "--tasks MODULE or FASTWORKER_TASKS" in line
        await node.wait_for("node control ready")
        assert await node.stop() == 0, node.tail
