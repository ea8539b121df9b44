"""The deployment files in ``deploy/`` and ``docs/deploy.md`` say only what
the code does.

Each check reads the files and compares them with the code: the real
command-line parser, the environment variables the shipped topologies and
the code read, ``fastworker run ROLE --check`` under each role's
environment, the port offsets and shutdown deadlines of the shipped
topologies. None needs Docker, Kubernetes or systemd. Where ``docker
compose`` or ``systemd-analyze`` is installed, they check the files too.

PyYAML comes with litestar, a runtime dependency.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fastworker import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes" / "fastworker.yaml"
SYSTEMD = DEPLOY / "systemd"
GUIDE = ROOT / "docs" / "deploy.md"
VARIABLE = re.compile(r"FASTWORKER_[A-Z0-9_]*[A-Z0-9]")
REFERENCE = re.compile(r"\$\{(FASTWORKER_[A-Z0-9_]+)(?::-([^}]*))?\}")


# The code's side: what the shipped topologies and the code read.


def shipped_text(role: str) -> str:
    return cli.shipped_path(role).read_text()


def shipped(role: str) -> dict[str, Any]:
    return tomllib.loads(shipped_text(role))


def topology_variables(role: str) -> set[str]:
    """The variables a shipped topology reads (``${NAME}`` or ``${NAME:-default}``)."""
    return {name for name, _ in REFERENCE.findall(shipped_text(role))}


def code_variables(*places: str) -> set[str]:
    """The ``FASTWORKER_*`` names the code in ``places`` (folders or files)
    holds as whole string constants (``os.environ.get("FASTWORKER_ADDRESS")``
    and the like)."""
    found = set()
    for place in places:
        paths = [ROOT / place] if place.endswith(".py") else (ROOT / place).rglob("*.py")
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and VARIABLE.fullmatch(node.value):
                    found.add(node.value)
    return found


def role_variables(role: str) -> set[str]:
    """What a node of ``role`` reads: its topology, and the ``fastworker`` command."""
    return topology_variables(role) | code_variables("fastworker/cli.py")


def default(name: str) -> str:
    """The default the control plane's topology gives ``name``."""
    for found, value in REFERENCE.findall(shipped_text("control")):
        if found == name and value:
            return value
    raise AssertionError(f"control.toml gives {name} no default")


def serving_offsets() -> list[int]:
    """The port offsets of the control plane's serving edges (base+0 to base+5)."""
    actors = shipped("control")["actors"]
    return sorted(actor.get("port_offset", 0) for actor in actors.values()
                  if actor["kind"] == "actors.ServeEdge")


def deadline(role: str) -> float:
    return float(shipped(role)["node"]["shutdown_deadline"])


def port_of(address: str) -> int:
    """The port of ``tcp://host:port`` or ``host:port``."""
    port = urlsplit(address if "://" in address else f"//{address}").port
    assert port is not None, f"{address}: no port"
    return port


def host_of(address: str) -> str:
    host = urlsplit(address).hostname
    assert host is not None, f"{address}: no host"
    return host


def control_ports(environ: Mapping[str, str]) -> set[int]:
    """The TCP ports a control plane with ``environ`` listens on."""
    base = port_of(environ.get("FASTWORKER_ADDRESS", default("FASTWORKER_ADDRESS")))
    dashboard = environ.get("FASTWORKER_DASHBOARD", default("FASTWORKER_DASHBOARD"))
    ports = {base + offset for offset in serving_offsets()}
    return ports if dashboard == "off" else ports | {port_of(dashboard)}


def parse(argv: list[str]) -> Any:
    """``argv`` parsed by the ``fastworker`` command's own parser."""
    try:
        return cli._parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a refusal (code 2)
        assert stop.code == 0, f"`fastworker {shlex.join(argv)}` does not parse"
        return None


# The files' side.


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, as (INSTRUCTION, rest), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.partition(" ") for line in lines if line and not line.startswith("#"))]


def docker_values(instruction: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == instruction]


def image_environment() -> dict[str, str]:
    environ = {}
    for rest in docker_values("ENV"):
        environ.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return environ


def image_workdir() -> str:
    return docker_values("WORKDIR")[-1]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def kubernetes() -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(KUBERNETES.read_text()) if document]


def kubernetes_object(kind: str) -> dict[str, Any]:
    (found,) = [item for item in kubernetes() if item["kind"] == kind]
    return found


def pod(kind: str) -> dict[str, Any]:
    return kubernetes_object(kind)["spec"]["template"]["spec"]


def container_environment(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment; values from a Secret stand in as text."""
    return {item["name"]: item.get("value", "from-a-secret") for item in container.get("env", [])}


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit's ``Key=value`` lines, by ``Section.Key``."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def env_file(name: str) -> dict[str, str]:
    lines = (line.strip() for line in (SYSTEMD / name).read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def unit_role(name: str) -> str:
    return name.removeprefix("fastworker-").removesuffix(".service")


UNITS = sorted(path.name for path in SYSTEMD.glob("*.service"))


def unit_environment(name: str) -> dict[str, str]:
    """What a unit's node sees: its EnvironmentFile, as shipped in deploy/systemd."""
    environ: dict[str, str] = {}
    for path in unit(name).get("Service.EnvironmentFile", []):
        environ.update(env_file(PurePosixPath(path.lstrip("-")).name))
    return environ


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """What a service sets; ``${NAME:?...}`` stands in as text."""
    return {name: re.sub(r"\$\{[^}]*\}", "set-by-the-user", str(value))
            for name, value in service.get("environment", {}).items()}


def role_of(argv: list[str]) -> str:
    args = parse(argv)
    assert args is not None and args.command == "run", argv
    return str(args.file)


def environments() -> Iterator[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(where, role, what the file sets, what the node inherits) of every
    node the files run: containers inherit the image's environment."""
    for name, service in compose()["services"].items():
        yield (f"compose {name}", role_of(service["command"]), compose_environment(service),
               image_environment())
    for kind in ("StatefulSet", "Deployment"):
        for container in pod(kind)["containers"]:
            yield (f"kubernetes {kind} {container['name']}", role_of(container["args"]),
                   container_environment(container), image_environment())
    for name in UNITS:
        yield f"systemd {name}", unit_role(name), unit_environment(name), {}


ENVIRONMENTS = list(environments())
ENVIRONMENT_IDS = [where.replace(" ", "-") for where, *_ in ENVIRONMENTS]


def code_spans(markdown: str) -> Iterator[str]:
    """Each line of the page's code blocks, and each inline code span."""
    fenced = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for block in fenced.findall(markdown):
        yield from block.replace("\\\n", " ").splitlines()
    yield from re.findall(r"`([^`\n]+)`", fenced.sub("", markdown))


def command_lines(text: str) -> Iterator[list[str]]:
    """The arguments of each ``fastworker COMMAND ...`` in ``text``: a word
    ``fastworker`` (or a path ending in it) followed by a lowercase word."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        assert "fastworker" not in text, f"cannot split {text!r}"
        return
    for at, word in enumerate(words):
        if word == "fastworker" or word.endswith("/fastworker"):
            rest = words[at + 1:]
            for stop, token in enumerate(rest):
                if token in ("&&", "||", "|", ";", ")"):
                    rest = rest[:stop]
                    break
            if rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
                yield rest


def every_command_line() -> Iterator[tuple[str, list[str]]]:
    """(where, arguments) of every ``fastworker`` command the files run or show."""
    assert json.loads(docker_values("ENTRYPOINT")[-1]) == ["fastworker"]
    yield "Dockerfile CMD", json.loads(docker_values("CMD")[-1])
    for name, service in compose()["services"].items():
        yield f"compose {name}", service["command"]
    for kind in ("StatefulSet", "Deployment"):
        for container in pod(kind)["containers"]:
            assert "command" not in container, "the image's entrypoint is fastworker"
            yield f"kubernetes {kind}", container["args"]
    for name in UNITS:
        (start,) = unit(name)["Service.ExecStart"]
        (argv,) = command_lines(start)
        yield f"systemd {name}", argv
    for span in code_spans(GUIDE.read_text()):
        for argv in command_lines(span):
            yield "docs/deploy.md", argv


#: What a reader makes beside the files, following docs/deploy.md.
MADE_BY_THE_READER = {"secret", ".env"}
DEPLOY_FILES = sorted(path for path in DEPLOY.rglob("*")
                      if path.is_file() and path.name not in MADE_BY_THE_READER)


# Command lines and variables.


def test_every_command_line_parses_and_runs_a_shipped_topology() -> None:
    """Every fastworker command line parses with the real parser, and
    each `run` names a shipped topology."""
    lines = list(every_command_line())
    assert sum(where == "docs/deploy.md" for where, _ in lines) >= 5, lines
    for where, argv in lines:
        args = parse(argv)
        if args is not None and args.command == "run":
            assert args.file in cli.SHIPPED, f"{where}: {argv}: not a shipped topology"


def test_each_file_runs_the_role_it_says() -> None:
    """The control plane's service, StatefulSet and unit run `control`; the others `sub`."""
    roles = {where: role for where, role, *_ in ENVIRONMENTS}
    assert roles == {
        "compose control": "control", "compose sub": "sub",
        "kubernetes StatefulSet control": "control", "kubernetes Deployment sub": "sub",
        "systemd fastworker-control.service": "control", "systemd fastworker-sub.service": "sub",
    }


@pytest.mark.parametrize("path", DEPLOY_FILES + [GUIDE], ids=lambda path: path.name)
def test_every_variable_named_is_read(path: Path) -> None:
    """Every FASTWORKER_* name in the files is one a shipped topology or the code reads."""
    known = topology_variables("control") | topology_variables("sub") \
        | code_variables("actors", "fastworker", "dashboard")
    named = set(VARIABLE.findall(path.read_text()))
    assert named <= known, f"{path.name}: not read anywhere: {sorted(named - known)}"


@pytest.mark.parametrize(("where", "role", "given", "inherited"), ENVIRONMENTS,
                         ids=ENVIRONMENT_IDS)
def test_each_node_is_given_only_what_its_role_reads(
        where: str, role: str, given: dict[str, str], inherited: dict[str, str]) -> None:
    """A variable a file sets for a node is one its topology or the
    fastworker command reads. (The image sets the journal's place for both
    roles; a subworker ignores it.)"""
    unread = {name for name in given if name.startswith("FASTWORKER_")} - role_variables(role)
    assert not unread, f"{where}: {sorted(unread)}"


@pytest.mark.parametrize(("where", "role", "given", "inherited"), ENVIRONMENTS,
                         ids=ENVIRONMENT_IDS)
def test_each_node_passes_check_in_its_environment(
        where: str, role: str, given: dict[str, str], inherited: dict[str, str]) -> None:
    """`fastworker run ROLE --check` passes with the node's environment: an
    address off loopback has a secret, a published dashboard a token. (A
    process of its own: the node's environment and nothing else of ours.)"""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("FASTWORKER_")}
    environ.update({**inherited, **given})
    environ["FASTWORKER_TASKS"] = ""  # myapp.tasks is the reader's own
    checked = subprocess.run([sys.executable, "-m", "fastworker", "run", role, "--check"],
                             env=environ, cwd=ROOT, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, f"{where}: {checked.stderr}"


# The image.


def test_the_image_installs_the_source_tree_without_the_test_extra() -> None:
    """The Dockerfile copies what pyproject.toml builds from and runs `pip install .`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {PurePosixPath(source).name for rest in docker_values("COPY")
              if not rest.startswith("--") for source in rest.split()[:-1]}
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", project["project"]["readme"]} | {
        name.removesuffix(".*") for name in packages}
    assert needed <= copied, sorted(needed - copied)
    kept = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {name for name in needed if f"!{name}" in kept or f"!{name}/" in kept} == needed
    installs = [rest for rest in docker_values("RUN") if "pip install" in rest]
    assert len(installs) == 1 and re.search(r"pip install \.(\s|$)", installs[0]), installs
    assert "[" not in installs[0] and " -e " not in installs[0], installs[0]


def test_the_image_runs_fastworker_as_a_numeric_non_root_user() -> None:
    """USER is a numeric uid other than 0, which Kubernetes' runAsNonRoot can check."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "fastworker" in project["project"]["scripts"]
    uid, _, gid = docker_values("USER")[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit())
    for kind in ("StatefulSet", "Deployment"):
        assert pod(kind)["securityContext"]["runAsUser"] == int(uid)


def test_the_image_python_meets_requires_python() -> None:
    """The image's default Python is one the project supports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = tuple(int(part) for part in
                    project["project"]["requires-python"].removeprefix(">=").split("."))
    (argument,) = [rest for rest in docker_values("ARG") if rest.startswith("PYTHON_VERSION=")]
    version = tuple(int(part) for part in argument.partition("=")[2].split("."))
    assert version >= minimum


def test_the_image_exposes_the_control_planes_default_ports() -> None:
    """EXPOSE lists base+0 to base+5 of the default address, and the dashboard's port."""
    exposed: set[int] = set()
    for rest in docker_values("EXPOSE"):
        for item in rest.split():
            first, _, last = item.partition("/")[0].partition("-")
            exposed |= set(range(int(first), int(last or first) + 1))
    assert exposed == control_ports({})


# Compose.


def published(service: Mapping[str, Any]) -> dict[int, int]:
    """A service's published ports, container port to host port."""
    found = {}
    for item in service.get("ports", []):
        assert isinstance(item, str) and not item.endswith("/udp"), item
        *_, host, target = item.split(":")
        host_range = [int(part) for part in host.split("-")]
        target_range = [int(part) for part in target.split("-")]
        for offset in range(target_range[-1] - target_range[0] + 1):
            found[target_range[0] + offset] = host_range[0] + offset
    return found


def duration(text: str) -> float:
    """Seconds of a compose duration such as ``45s`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_runs_one_control_plane_and_two_subworkers() -> None:
    """One service runs the control plane; the subworkers' replicas add up to two."""
    services = compose()["services"]
    roles = {name: role_of(service["command"]) for name, service in services.items()}
    assert list(roles.values()).count("control") == 1
    assert sum(service.get("deploy", {}).get("replicas", 1)
               for name, service in services.items() if roles[name] == "sub") == 2


def test_compose_keeps_the_journal_on_a_named_volume() -> None:
    """The control plane's journal lies in a named volume of the file."""
    document = compose()
    (control,) = [service for service in document["services"].values()
                  if role_of(service["command"]) == "control"]
    journal = PurePosixPath({**image_environment(), **compose_environment(control)}
                            ["FASTWORKER_JOURNAL"])
    mounts = {item.split(":")[1]: item.split(":")[0] for item in control["volumes"]}
    volume = mounts.get(str(journal.parent))
    assert volume in document["volumes"], f"{journal.parent}: no named volume there"


def test_compose_builds_the_image_from_the_source_tree() -> None:
    """Every service builds deploy/Dockerfile with the clone's root as context."""
    for service in compose()["services"].values():
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context == ROOT and (context / service["build"]["dockerfile"]) == DOCKERFILE


def test_compose_mounts_the_task_modules_in_the_working_directory() -> None:
    """The --tasks module's package is mounted into the image's working
    directory, from a folder of the clone that holds the module."""
    for service in compose()["services"].values():
        args = parse(service["command"])
        for module in args.tasks.split(","):
            package, _, name = module.rpartition(".")
            target = f"{image_workdir()}/{package.replace('.', '/')}"
            (source,) = [item.split(":")[0] for item in service["volumes"]
                         if item.split(":")[1] == target]
            assert (DEPLOY / source / f"{name}.py").is_file(), module


def test_compose_waits_longer_than_the_shutdown_deadline() -> None:
    """Each service's stop_grace_period outlasts its topology's shutdown_deadline."""
    for name, service in compose()["services"].items():
        role = role_of(service["command"])
        assert duration(service["stop_grace_period"]) > deadline(role), name


def test_compose_gives_every_node_the_secret_as_a_file() -> None:
    """FASTWORKER_SECRET_FILE names a compose secret the service mounts."""
    document = compose()
    for name, service in document["services"].items():
        path = PurePosixPath(compose_environment(service)["FASTWORKER_SECRET_FILE"])
        assert path.parent == PurePosixPath("/run/secrets"), name
        assert path.name in service["secrets"] and path.name in document["secrets"], name


def test_compose_publishes_the_client_ports_and_the_dashboard() -> None:
    """Published ports are the control plane's own, on the same numbers:
    its client ports (base+0 to base+4) and its dashboard."""
    services = compose()["services"]
    (control,) = [service for service in services.values()
                  if role_of(service["command"]) == "control"]
    environ = compose_environment(control)
    ports = published(control)
    base = port_of(environ["FASTWORKER_ADDRESS"])
    assert set(ports) <= control_ports(environ)
    assert {base + offset for offset in range(5)} | {port_of(environ["FASTWORKER_DASHBOARD"])} \
        <= set(ports)
    assert all(host == target for target, host in ports.items())
    for service in services.values():
        if service is not control:
            assert "ports" not in service, "nothing connects to a subworker"


def test_compose_subworkers_dial_the_control_plane_by_its_service_name() -> None:
    """A subworker's FASTWORKER_ADDRESS is the control plane's service and base port."""
    services = compose()["services"]
    (name,) = [name for name, service in services.items()
               if role_of(service["command"]) == "control"]
    control = services[name]
    base = port_of(compose_environment(control)["FASTWORKER_ADDRESS"])
    for service in services.values():
        if service is not control:
            address = compose_environment(service)["FASTWORKER_ADDRESS"]
            assert (host_of(address), port_of(address)) == (name, base)
            assert service["depends_on"][name]["condition"] == "service_healthy"


def test_the_compose_file_follows_the_compose_specification() -> None:
    """The compose file is valid against the Compose Specification's schema
    (as ``docker compose config`` checks it), by check-jsonschema's copy."""
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# Kubernetes.


def test_kubernetes_runs_exactly_one_control_plane_with_its_journal_on_a_claim() -> None:
    """The StatefulSet has one replica and mounts a claim where the journal is."""
    statefulset = kubernetes_object("StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    (container,) = pod("StatefulSet")["containers"]
    journal = PurePosixPath(container_environment(container)["FASTWORKER_JOURNAL"])
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts.get(str(journal.parent)) in claims


def test_kubernetes_service_carries_the_control_planes_ports() -> None:
    """The Service selects the control plane's pod and maps each of its
    ports (base+0 to base+5, the dashboard) to the same number."""
    service = kubernetes_object("Service")
    template = kubernetes_object("StatefulSet")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert kubernetes_object("StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
    (container,) = template["spec"]["containers"]
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert set(named.values()) == control_ports(container_environment(container))
    targets = {port["port"]: named.get(port["targetPort"], port["targetPort"])
               for port in service["spec"]["ports"]}
    assert targets == {number: number for number in named.values()}


def test_kubernetes_subworkers_dial_the_service() -> None:
    """A subworker's FASTWORKER_ADDRESS is the Service's name and the base port."""
    service = kubernetes_object("Service")
    (control,) = pod("StatefulSet")["containers"]
    base = port_of(container_environment(control)["FASTWORKER_ADDRESS"])
    for container in pod("Deployment")["containers"]:
        address = container_environment(container)["FASTWORKER_ADDRESS"]
        assert (host_of(address), port_of(address)) == (service["metadata"]["name"], base)


def test_kubernetes_takes_the_secret_from_the_secret_object() -> None:
    """The secret file is the Secret's key mounted where FASTWORKER_SECRET_FILE
    points, and the dashboard's token comes from the same Secret."""
    secret = kubernetes_object("Secret")
    name, keys = secret["metadata"]["name"], set(secret.get("stringData", secret.get("data", {})))
    for kind in ("StatefulSet", "Deployment"):
        spec = pod(kind)
        volumes = {volume["name"]: volume["secret"] for volume in spec["volumes"]
                   if "secret" in volume}
        for container in spec["containers"]:
            path = container_environment(container)["FASTWORKER_SECRET_FILE"]
            files = {f"{mount['mountPath']}/{item['path']}": (volumes[mount["name"]], item["key"])
                     for mount in container["volumeMounts"] if mount["name"] in volumes
                     for item in volumes[mount["name"]]["items"]}
            source, key = files[path]
            assert source["secretName"] == name and key in keys, kind
            for item in container.get("env", []):
                if "valueFrom" in item:
                    reference = item["valueFrom"]["secretKeyRef"]
                    assert reference["name"] == name and reference["key"] in keys


def test_kubernetes_waits_longer_than_the_shutdown_deadline() -> None:
    """Each pod's terminationGracePeriodSeconds outlasts its topology's shutdown_deadline."""
    for kind in ("StatefulSet", "Deployment"):
        spec = pod(kind)
        for container in spec["containers"]:
            assert spec["terminationGracePeriodSeconds"] > deadline(role_of(container["args"]))


def test_kubernetes_probes_name_the_control_planes_ports() -> None:
    """The control plane's probes ask a port it has, by name."""
    (container,) = pod("StatefulSet")["containers"]
    names = {port["name"] for port in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe].get("httpGet") or container[probe]["tcpSocket"]
        assert check["port"] in names, probe


# systemd.


@pytest.mark.parametrize("name", UNITS)
def test_a_unit_signals_the_node_only_and_waits_past_its_deadline(name: str) -> None:
    """KillMode=mixed leaves the pool processes to the node (a SIGTERM to
    them fails the sync tasks they run); TimeoutStopSec outlasts the deadline."""
    service = unit(name)
    assert service["Service.KillMode"] == ["mixed"]
    assert duration(service["Service.TimeoutStopSec"][-1]) > deadline(unit_role(name))
    assert service["Service.RestartPreventExitStatus"] == ["2"]


@pytest.mark.parametrize("name", UNITS)
def test_a_unit_reads_an_environment_file_shipped_beside_it(name: str) -> None:
    """Each EnvironmentFile= is one of deploy/systemd, installed in /etc/fastworker."""
    files = unit(name)["Service.EnvironmentFile"]
    assert files and all(PurePosixPath(path).parent == PurePosixPath("/etc/fastworker")
                         and (SYSTEMD / PurePosixPath(path).name).is_file() for path in files)


def test_the_control_planes_unit_keeps_the_journal_in_its_state_directory() -> None:
    """FASTWORKER_JOURNAL lies in the directory systemd makes for the unit."""
    (state,) = unit("fastworker-control.service")["Service.StateDirectory"]
    journal = PurePosixPath(unit_environment("fastworker-control.service")["FASTWORKER_JOURNAL"])
    assert journal.parent == PurePosixPath("/var/lib") / state


def test_the_subworkers_unit_dials_the_control_planes_base_port() -> None:
    """sub.env's address has the control plane's base port, not base+5."""
    control = unit_environment("fastworker-control.service")["FASTWORKER_ADDRESS"]
    sub = unit_environment("fastworker-sub.service")["FASTWORKER_ADDRESS"]
    assert port_of(sub) == port_of(control)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing wrong, with ExecStart pointed
    at this environment's fastworker (verify wants the file to exist)."""
    executable = Path(sys.executable).parent / "fastworker"
    assert executable.is_file()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        text = text.replace("/opt/fastworker/bin/fastworker", str(executable))
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# The guide.


def test_the_guide_names_every_deploy_file_and_is_linked() -> None:
    """docs/deploy.md names each file of deploy/, and docs/index.md and
    README.md link to it."""
    guide = GUIDE.read_text()
    for path in DEPLOY_FILES:
        assert f"`{path.relative_to(ROOT).as_posix()}`" in guide, path
    assert "(deploy.md)" in (ROOT / "docs" / "index.md").read_text()
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()
