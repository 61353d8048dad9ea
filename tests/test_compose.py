"""docker-compose.yml, the Dockerfile and .env.example: valid, and naming only what the project has.

No Docker engine is needed: the compose file is validated against the Compose Specification's
JSON Schema (tests/data/compose-spec.json, from compose-spec/compose-spec, schema/compose-spec.json,
commit 170098ba07d9, Apache-2.0); every command an app service runs is exactly its process's in
roadie.processes (what ``roadie up`` runs too), and is parsed by the real CLI it names without being run.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from roadie.jobs.types import QUEUES
from roadie.processes import POOLS, migrate_command, process_set
from roadie.settings import Settings
from tests.conftest import ROOT

APP_IMAGE = "roadie:local"
SETTING_NAMES = {f"ROADIE_{name.upper()}" for name in Settings.model_fields}
EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "ipfs",
    "solana",
    "migrate",
    "api",
    "relay",
    "beat",
    "flower",
    *(f"worker-{pool}" for pool in QUEUES),
}


def load_compose() -> dict[str, Any]:
    """The compose file as Compose sees it: YAML anchors and merge keys resolved."""
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = {name: service for name, service in SERVICES.items() if service.get("image") == APP_IMAGE}


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    errors = sorted(compose_validator().iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))

    assert errors == [], "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "bad_value"),
    [
        (["services", "api", "depends_on", "migrate", "condition"], "service_completed"),
        (["services", "api", "healthcheck", "test"], 42),
        (["services", "beat", "volumes"], "beatdata:/var/lib/roadie"),
        (["services", "relay", "restart_policy"], "always"),
    ],
)
def test_the_schema_catches_a_broken_compose_file(path: list[str], bad_value: object) -> None:
    broken = copy.deepcopy(COMPOSE)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad_value

    assert not compose_validator().is_valid(broken)


def test_the_stack_has_every_service_each_with_a_healthcheck_and_conditional_dependencies() -> None:
    assert set(SERVICES) == EXPECTED_SERVICES
    for name, service in SERVICES.items():
        assert "healthcheck" in service, name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            assert spec["condition"] in {"service_healthy", "service_completed_successfully"}, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert not SERVICES[dependency]["healthcheck"].get("disable"), (name, dependency)
    # The one service without a running healthcheck is the one-shot the app services wait for.
    assert [n for n, s in SERVICES.items() if s["healthcheck"].get("disable")] == ["migrate"]
    assert SERVICES["migrate"]["restart"] == "no"


def test_every_app_service_waits_for_the_migration() -> None:
    assert set(APP_SERVICES) == EXPECTED_SERVICES - {"postgres", "redis", "ipfs", "solana"}
    for name, service in APP_SERVICES.items():
        if name != "migrate":
            assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["worker-ipfs"]["depends_on"]["ipfs"]["condition"] == "service_healthy"
    assert SERVICES["worker-chain"]["depends_on"]["solana"]["condition"] == "service_healthy"


def test_volumes_keep_the_data_of_every_stateful_service() -> None:
    declared = set(COMPOSE["volumes"])
    for name, mount in [
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("ipfs", "/data/ipfs"),
        ("solana", "/ledger"),
        ("beat", "/var/lib/roadie"),
    ]:
        (volume,) = [v.split(":")[0] for v in SERVICES[name]["volumes"] if v.split(":")[1] == mount]
        assert volume in declared, name


def test_third_party_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if name not in APP_SERVICES:
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image), (name, image)
    assert SERVICES["ipfs"]["image"].startswith("ipfs/kubo:")
    assert SERVICES["solana"]["entrypoint"] == ["solana-test-validator"]


# --- the process set: roadie.processes, and nothing else --------------------------------------


def compose_settings() -> Settings:
    """The settings the compose services run with: .env.example's values."""
    _, values = env_example()
    return Settings(**{name.removeprefix("ROADIE_").lower(): value for name, value in values.items()})  # type: ignore[arg-type]


#: The module ``python -m`` runs for each console script the services run.
MODULES = {"celery": "celery", "roadie": "roadie.cli", "alembic": "alembic"}


def run_here(command: list[str]) -> list[str]:
    """A compose command as ``roadie up`` runs it: the console script's module, by this interpreter."""
    return [sys.executable, "-m", MODULES[command[0]], *command[1:]]


def test_each_console_script_is_the_module_run_in_its_place() -> None:
    for script, module in MODULES.items():
        (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name=script)
        assert f"{entry_point.module}.".startswith(f"{module}."), script


def disagreements(services: dict[str, dict[str, Any]]) -> list[str]:
    """Each app service whose command is not its process's in roadie.processes, and each process without a service."""
    expected = process_set(compose_settings()) | {"migrate": migrate_command()}
    app_services = {name: service for name, service in services.items() if service.get("image") == APP_IMAGE}
    found = [f"{name}: no such service" for name in sorted(set(expected) - set(app_services))]
    found += [f"{name}: not in roadie.processes" for name in sorted(set(app_services) - set(expected))]
    for name in sorted(set(expected) & set(app_services)):
        if run_here(app_services[name]["command"]) != expected[name]:
            found.append(f"{name}: runs {app_services[name]['command']}, the process set {expected[name]}")
    return found


def test_every_app_service_runs_exactly_its_command_of_the_process_set() -> None:
    assert disagreements(SERVICES) == []


def test_the_image_runs_the_api_by_default_as_the_api_service_does() -> None:
    (cmd,) = [line.removeprefix("CMD ") for line in dockerfile_stages()[-1] if line.startswith("CMD ")]

    assert json.loads(cmd) == SERVICES["api"]["command"]


@pytest.mark.parametrize(
    ("service", "old", "new"),
    [
        ("worker-ipfs", "4", "2"),  # a concurrency of its own
        ("worker-chain", "chain", "ledger"),  # another queue
        ("worker-media", "50", "500"),  # another child limit
        ("beat", "/var/lib/roadie/celerybeat-schedule", "/tmp/schedule"),
        ("api", "--no-access-log", "--access-log"),
    ],
)
def test_the_check_catches_a_service_that_runs_something_else(service: str, old: str, new: str) -> None:
    services = copy.deepcopy(SERVICES)
    command = services[service]["command"]
    command[command.index(old)] = new

    assert [line.split(":")[0] for line in disagreements(services)] == [service]


def test_the_check_catches_a_missing_or_extra_process() -> None:
    services = copy.deepcopy(SERVICES)
    services["worker-extra"] = services.pop("worker-ledger")

    assert disagreements(services) == ["worker-ledger: no such service", "worker-extra: not in roadie.processes"]


def test_there_is_one_pool_per_queue() -> None:
    assert sorted(POOLS) == sorted(QUEUES)
    assert all(pool.queue == name for name, pool in POOLS.items())


def test_each_worker_service_fits_its_pool_in_its_memory_limit_and_pings_its_own_node() -> None:
    for name, pool in POOLS.items():
        service = SERVICES[f"worker-{name}"]
        limit = parse_bytes(service["deploy"]["resources"]["limits"]["memory"])
        if not pool.threads:  # a thread pool is one process: no children to recycle
            assert pool.max_memory_per_child_kib is not None, name
            assert pool.concurrency * pool.max_memory_per_child_kib * 1024 < limit, name
        assert f"-d {name}@$$HOSTNAME" in service["healthcheck"]["test"][1]
    assert SERVICES["worker-indexer"]["deploy"]["replicas"] == 1
    assert SERVICES["beat"]["deploy"]["replicas"] == 1


def parse_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]?)", size.upper()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]


# --- every command is a real entry point --------------------------------------------------------


def check_uvicorn(args: list[str]) -> None:
    from uvicorn.importer import import_from_string
    from uvicorn.main import main as uvicorn_cli

    params = uvicorn_cli.make_context("uvicorn", list(args)).params
    assert callable(import_from_string(params["app"]))


def check_celery(args: list[str]) -> None:
    from celery import Celery
    from celery.app.utils import find_app
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    ctx = celery_cli.make_context("celery", list(args))
    app = find_app(ctx.params["app"])
    assert isinstance(app, Celery)
    ctx.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2 moves protected_args into args
        rest = [*ctx.protected_args, *ctx.args]
    subcommand = celery_cli.get_command(ctx, rest[0])
    assert subcommand is not None, f"celery has no subcommand {rest[0]!r}"
    subcommand.make_context(rest[0], rest[1:], parent=ctx)  # unknown options raise


def check_roadie(args: list[str]) -> None:
    from roadie.cli import main

    ctx = main.make_context("roadie", list(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rest = [*ctx.protected_args, *ctx.args]
    subcommand = main.get_command(ctx, rest[0])
    assert subcommand is not None, f"roadie has no subcommand {rest[0]!r}"
    subcommand.make_context(rest[0], rest[1:], parent=ctx)


def check_alembic(args: list[str]) -> None:
    from alembic.config import CommandLine, Config
    from alembic.script import ScriptDirectory

    assert args == ["upgrade", "head"]
    assert CommandLine().parser.parse_args(args).cmd[0].__name__ == "upgrade"
    assert len(ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_heads()) == 1


def check_python(args: list[str]) -> None:
    assert args[0] == "-c"
    compile(args[1], "<healthcheck>", "exec")


CHECKS = {
    "uvicorn": check_uvicorn,
    "celery": check_celery,
    "roadie": check_roadie,
    "alembic": check_alembic,
    "python": check_python,
}


def healthcheck_argv(test: list[str]) -> list[str]:
    if test[0] == "CMD":
        return test[1:]
    assert test[0] == "CMD-SHELL"
    argv = [arg.replace("$$HOSTNAME", "host") for arg in shlex.split(test[1])]
    return [arg for arg in argv if arg != ">/dev/null"]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_app_service_runs_a_real_entry_point_of_the_project(name: str) -> None:
    service = APP_SERVICES[name]
    argvs = [service["command"]]
    if not service["healthcheck"].get("disable"):
        argvs.append(healthcheck_argv(service["healthcheck"]["test"]))
    for program, *args in argvs:
        assert program in CHECKS, f"{name}: {program} is not one of the project's entry points"
        try:
            CHECKS[program](args)
        except click.UsageError as exc:
            pytest.fail(f"{name}: {program} {' '.join(args)}: {exc}")


def test_the_image_has_each_console_script_the_services_run() -> None:
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    used = {service["command"][0] for service in APP_SERVICES.values()}

    assert used <= scripts
    assert {"uvicorn", "celery", "roadie", "alembic"} <= scripts


# --- settings -----------------------------------------------------------------------------------


def env_example() -> tuple[list[str], dict[str, str | None]]:
    """Every ROADIE_ name in .env.example (commented or not), and the values of the uncommented ones."""
    path = ROOT / ".env.example"
    names = re.findall(r"^#?\s*(\w+)=", path.read_text(), flags=re.MULTILINE)
    return names, dotenv_values(path)


def test_env_example_lists_every_setting_once_and_nothing_else() -> None:
    names, _ = env_example()

    assert sorted(set(names)) == sorted(names), "listed twice"
    assert set(names) == SETTING_NAMES


def test_env_example_values_are_valid_settings() -> None:
    settings = compose_settings()

    assert settings.flower_basic_auth is None  # no default password to forget to change
    assert settings.sqlalchemy_url.endswith("@postgres:5432/roadie")
    assert settings.celery_broker_url == "redis://redis:6379/0"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_app_service_is_configured_only_with_roadie_settings(name: str) -> None:
    service = APP_SERVICES[name]
    env_files = [entry if isinstance(entry, str) else entry["path"] for entry in service["env_file"]]
    environment = service.get("environment", {})
    names = environment if isinstance(environment, dict) else [item.split("=", 1)[0] for item in environment]

    assert env_files == [".env"]
    assert set(names) <= SETTING_NAMES, set(names) - SETTING_NAMES


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    text = re.sub(r"\\\n", " ", (Path(ROOT) / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_the_dockerfile_is_multi_stage_non_root_and_has_ffmpeg() -> None:
    stages = dockerfile_stages()
    final = stages[-1]

    assert len(stages) >= 2
    assert any(line.startswith("COPY --from=build ") for line in final)
    assert any("apt-get install" in line and "ffmpeg" in line for line in final)
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user.split(":")[0] not in {"0", "root"}
    assert not any("ffmpeg" in line for line in stages[0])  # the build stage stays lean
