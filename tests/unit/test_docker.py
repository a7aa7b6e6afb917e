"""docker/: the compose stack and the images, checked against the code, with no Docker engine.

No engine is assumed here (STACK.md §7; scripts/compose_smoke.sh is the end-to-end check, with an engine,
outside `make test`), so `docker compose config` is not run. Instead the compose file is parsed and
interpolated with docker/.env.example, then every reference is checked against what really exists: Dockerfiles and their stages, the `iwsft` subcommands (its own argparse parser), the `prefect`,
`mlflow` and `dvc` commands and options (their installed CLI sources), each environment variable
(read in src/ or flows/, or a Prefect or MLflow setting), the GPU requests (docker-py turns the work
pool's into the same DeviceRequests as `docker run --gpus all`), ports, healthchecks, volumes and the
secrets file. hadolint lints the Dockerfiles (also `make lint-docker`); the file stays valid for Debian's
docker-compose 1.29 and the images for Docker's legacy builder (checked by `docker-compose config` where
that is installed).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from iwsft.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
WORK_POOL = DOCKER / "work-pool.json"
POOL_NAME = "iwsft-docker"
WORKDIR = "/workspace"
# read by third-party images / libraries rather than by Python code we can inspect here
EXTERNAL_ENV = {"POSTGRES_USER": "postgres image", "POSTGRES_PASSWORD": "postgres image", "PGPASSWORD": "libpq"}
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu", "Dockerfile.postgres"]
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def package_dir(name: str) -> Path:
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])


def env_example() -> dict[str, str]:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in (line.split("=", 1) for line in lines)}


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, strictly: an unset plain ${VAR} is an error."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        raise KeyError(f"${{{name}}} is not set by docker/.env.example" + (f" ({arg})" if arg else ""))

    return "$".join(VAR.sub(substitute, part) for part in value.split("$$"))


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, env_example())


@pytest.fixture(scope="module")
def pool() -> dict:
    return json.loads(WORK_POOL.read_text())


def pool_defaults(pool) -> dict:
    return {key: spec.get("default") for key, spec in pool["variables"]["properties"].items()}


def dockerfile(service: dict) -> Path:
    return (COMPOSE.parent / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")).resolve()


def stages(path: Path) -> list[str]:
    return re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", path.read_text(), re.MULTILINE | re.IGNORECASE)


def is_postgres(service: dict) -> bool:
    """The official postgres image, or docker/Dockerfile.postgres (that image, or Debian's package, by build arg)."""
    return service["image"].startswith("postgres:") or (
        "build" in service and dockerfile(service).name == "Dockerfile.postgres")


def gpu_image(compose) -> str:
    return next(s["image"] for s in compose["services"].values() if "build" in s and dockerfile(s).name == "Dockerfile")


# --- images ---------------------------------------------------------------------------------------------


def test_every_service_image_is_built_here_or_pinned(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            assert dockerfile(service).is_file(), f"{name}: {dockerfile(service)} does not exist"
            target = service["build"].get("target")
            assert target is None or target in stages(dockerfile(service)), f"{name}: no stage {target}"
            assert (dockerfile(service).parents[1] / ".dockerignore").is_file()
        else:
            image = service["image"]
            assert re.search(r":\d+(\.\d+)+", image) and not image.endswith(":latest"), f"{name}: pin {image}"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_image_layers_non_root_and_entrypoint(name):
    text = (DOCKER / name).read_text()
    torch_at = text.index("torch==${TORCH_VERSION}")
    deps_at = text.index("COPY pyproject.toml")
    code_at = text.index(f"COPY --chown=iwsft:iwsft . {WORKDIR}/")
    # torch is installed before anything from the repository is copied: code and pin changes keep that layer
    assert torch_at < deps_at < code_at
    assert "COPY --from=deps /opt/venv /opt/venv" in text
    final_user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)[-1]
    assert final_user.split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/iwsft-entrypoint"\]', text, re.MULTILINE)
    assert f"WORKDIR {WORKDIR}" in text


def test_torch_and_dependency_pins_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # `name==version` or `name[extras]==version`: the extras' own packages are in constraints.txt too
    pinned = dict(re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)$", dep).groups() for dep in project if "==" in dep)
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    lines = (DOCKER / "constraints.txt").read_text().splitlines()
    pins = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    constraints = {norm(name): version for name, version in pins}
    assert "torch" not in constraints, "each Dockerfile pins its own torch build"
    for name, version in pinned.items():
        if norm(name) == "torch":
            continue
        assert constraints.get(norm(name)) == version, (
            f"{name}: pyproject {version}, constraints {constraints.get(norm(name))}: run docker/update-constraints.sh")
    for line in (DOCKER / "requirements-stack.txt").read_text().splitlines():
        if line := line.split("#")[0].strip():
            name, version = line.split("==")
            assert constraints.get(norm(name)) == version, f"{name}: run docker/update-constraints.sh"
    torch = pinned["torch"]
    for name, build in (("Dockerfile", torch), ("Dockerfile.cpu", f"{torch}+cpu")):
        assert f"\nARG TORCH_VERSION={build}\n" in (DOCKER / name).read_text(), f"{name}: torch {build}, as pyproject"


def test_hadolint_passes_the_dockerfiles():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')"
    files = [str(DOCKER / name) for name in DOCKERFILES]
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", *files],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- commands -------------------------------------------------------------------------------------------


def passthrough_programs() -> set[str]:
    script = DOCKER / "entrypoint.sh"
    assert script.stat().st_mode & 0o111, "docker/entrypoint.sh must be executable (git keeps the mode)"
    case = re.search(r'^\s*([\w\s|]+)\)\s*exec "\$@"', script.read_text(), re.MULTILINE)
    return {word.strip() for word in case.group(1).split("|")}


def check_iwsft(args: list[str], where: str) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exit:
        raise AssertionError(f"{where}: `iwsft {' '.join(args)}` is not a valid iwsft command") from exit


def check_command(argv: list[str], where: str) -> None:
    program, *args = argv
    if program in ("sh", "bash"):
        assert args[0] == "-c", where
        for part in re.split(r"&&|\|\||;", args[1]):
            words = shlex.split(part)
            check_command(words[1:] if words[0] == "exec" else words, where)
    elif program == "iwsft":
        check_iwsft(args, where)
    elif program == "dvc":
        assert (package_dir("dvc") / "commands" / f"{args[0]}.py").is_file(), f"{where}: no `dvc {args[0]}`"
    elif program == "prefect":
        source = (package_dir("prefect") / "cli" / f"{args[0].replace('-', '_')}.py").read_text()
        assert f'name="{args[1]}"' in source or f"def {args[1]}(" in source, (
            f"{where}: no `prefect {args[0]} {args[1]}`")
        for option in (a for a in args if a.startswith("--")):
            assert f'"{option}"' in source, f"{where}: `prefect {args[0]} {args[1]}` has no {option}"
    elif program == "mlflow":
        base = package_dir("mlflow")
        source = "".join(p.read_text() for p in [*(base / "cli").glob("*.py"), base / "utils" / "cli_args.py"])
        assert f"def {args[0]}(" in source, f"{where}: no `mlflow {args[0]}`"
        for option in (a for a in args if a.startswith("--")):
            assert f'"{option}"' in source, f"{where}: `mlflow {args[0]}` has no {option}"
    else:
        assert program in ("python", "python3"), f"{where}: unknown program {program}"


def test_entrypoint_runs_iwsft_and_what_the_worker_and_services_start():
    from prefect.workers.base import BaseJobConfiguration

    programs = passthrough_programs()
    assert BaseJobConfiguration._base_flow_run_command().split()[0] in programs  # `prefect flow-run execute`
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    assert not programs & subcommands, "a program named like an iwsft subcommand would shadow it"


def test_every_command_exists(compose):
    programs = passthrough_programs()
    for name, service in compose["services"].items():
        command = service.get("command")
        if command is None or not service["image"].startswith("iwsft:"):
            continue
        argv = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
        check_command(argv if argv[0] in programs else ["iwsft", *argv], f"service {name}")


def test_readme_commands_exist():
    """`docker compose ... run --rm gpu|cpu ARGS` in docker/README.md: ARGS go through the entrypoint."""
    programs = passthrough_programs()
    readme = (DOCKER / "README.md").read_text()
    found = re.findall(r"compose -f docker/compose\.yaml run --rm (?:gpu|cpu) ([^\n#]*)", readme)
    assert found
    for args in found:
        argv = shlex.split(args)
        check_command(argv if argv[0] in programs else ["iwsft", *argv], f"docker/README.md: {args}")


# --- environment, secrets, ports ------------------------------------------------------------------------


def test_every_env_var_is_read_by_something_real(compose):
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    ours = "".join(p.read_text() for d in ("src", "flows") if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))
    mlflow = package_dir("mlflow")
    mlflow_source = (mlflow / "environment_variables.py").read_text() + (mlflow / "cli" / "__init__.py").read_text()
    prefect_settings = _get_valid_setting_names(Settings)
    for name, service in compose["services"].items():
        for var in service.get("environment", {}):
            if var in EXTERNAL_ENV:
                assert var == "PGPASSWORD" or is_postgres(service), f"{name}: {var}"
                continue
            assert (var in ours or var in prefect_settings or f'"{var}"' in mlflow_source), (
                f"service {name}: nothing reads {var} (not in src/ or flows/, not a Prefect or MLflow setting)")


def test_clients_reach_the_servers_by_service_name(compose, pool):
    services = compose["services"]
    mlflow_port = services["mlflow"]["command"][services["mlflow"]["command"].index("--port") + 1]
    prefect_port = services["prefect-server"]["command"][services["prefect-server"]["command"].index("--port") + 1]
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    envs = [("work pool", pool_defaults(pool)["env"])] + [(n, s.get("environment", {})) for n, s in services.items()]
    for where, env in envs:
        if uri := env.get("MLFLOW_TRACKING_URI"):
            assert uri == f"http://mlflow:{mlflow_port}", where
            host = uri.split("//")[1]  # the Host header MLflow's DNS-rebinding guard checks
            assert any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed), where
        if url := env.get("PREFECT_API_URL"):
            assert url == f"http://prefect-server:{prefect_port}/api", where


def test_secrets_come_from_an_uncommitted_env_file(raw, compose):
    example = env_example()
    text = COMPOSE.read_text()
    needed = {m.group(1) for m in VAR.finditer(text) if m.group(2) not in (":-", "-")}
    assert needed <= set(example), f"add {needed - set(example)} to docker/.env.example"
    assert all(f"${{{key}" in text for key in example if not key.startswith("COMPOSE_")), (
        "docker/.env.example has variables compose.yaml never uses")
    assert compose["services"]["postgres"]["env_file"] == ".env"
    for name, service in raw["services"].items():
        for var, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY", var):
                assert VAR.fullmatch(str(value)), f"{name}: {var} must come from docker/.env, not be written here"
    if shutil.which("git") and (ROOT / ".git").exists():
        assert subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT).returncode == 0, \
            "docker/.env must be git-ignored"
    assert ".env" in (ROOT / ".dockerignore").read_text()


def test_ports_are_published_on_localhost_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"


# --- health, order, volumes, GPUs -----------------------------------------------------------------------


def test_servers_have_healthchecks_and_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        if "profiles" not in service:  # what `up -d` starts and keeps running
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert services[dependency].get("healthcheck"), f"{name} waits for {dependency}, which has no healthcheck"
    for name in ("mlflow", "prefect-server"):  # the probe hits the port the server listens on
        port = services[name]["command"][services[name]["command"].index("--port") + 1]
        assert f"127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"])


def test_volumes_hold_the_pipeline_state(compose, pool):
    services, declared = compose["services"], compose["volumes"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(("/", ".")) or source in declared, f"{name}: undeclared volume {source}"
    targets = {v.split(":")[1]: v.split(":")[0] for v in services["gpu"]["volumes"]}
    hf_home = re.search(r"HF_HOME=(\S+)", (DOCKER / "Dockerfile").read_text()).group(1)
    for target in (f"{WORKDIR}/data", f"{WORKDIR}/models", f"{WORKDIR}/.dvc/cache", hf_home):
        assert target in targets, f"gpu: nothing persists {target}"
    assert services["cpu"]["volumes"] == services["gpu"]["volumes"]
    # the worker's job containers mount the same volumes, by their fixed names
    pool_volumes = {v.split(":")[1]: v.split(":")[0] for v in pool_defaults(pool)["volumes"]}
    assert pool_volumes == {t: declared[v]["name"] for t, v in targets.items()}
    command = services["mlflow"]["command"]
    artifacts = command[command.index("--artifacts-destination") + 1]
    assert any(v.endswith(f":{artifacts}") and v.split(":")[0] in declared for v in services["mlflow"]["volumes"])
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in services["postgres"]["volumes"])


def test_gpu_jobs_reserve_gpus(compose):
    image = gpu_image(compose)
    gpu_services = [n for n, s in compose["services"].items() if s["image"] == image]
    assert gpu_services
    for name in gpu_services:
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d["capabilities"] for d in devices), name


def test_worker_job_template_requests_gpus(compose, pool):
    import docker
    from docker.models.containers import _create_container_args

    assert "{{ container_create_kwargs }}" in pool["job_configuration"].values()
    defaults = pool_defaults(pool)
    assert defaults["image"] == gpu_image(compose)
    assert defaults["networks"] == [compose["networks"]["iwsft"]["name"]]
    worker = compose["services"]["prefect-worker"]
    script = worker["command"][-1]
    assert f"--pool {POOL_NAME} --type docker" in script and f"create {POOL_NAME} --type docker" in script
    mounted = next(v for v in worker["volumes"] if v.startswith("./work-pool.json:"))
    assert f"--base-job-template {mounted.split(':')[1]}" in script
    # what the worker hands docker-py, turned into the Docker API's HostConfig: as `docker run --gpus all`
    settings = {"image": defaults["image"], "volumes": defaults["volumes"], "version": "1.41",
                **defaults["container_create_kwargs"]}
    host_config = _create_container_args(settings)["host_config"]
    all_gpus = docker.types.DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])
    assert host_config["DeviceRequests"] == [all_gpus]


def test_readme_deployment_snippet_matches_the_pool(pool):
    text = (DOCKER / "README.md").read_text()
    snippet = yaml.safe_load(re.search(r"```yaml\n(deployments:\n.*?)```", text, re.DOTALL).group(1))
    deployment = snippet["deployments"][0]
    assert deployment["work_pool"]["name"] == POOL_NAME
    defaults = pool_defaults(pool)
    for key, value in deployment["work_pool"]["job_variables"].items():
        assert value == defaults[key], f"README's job_variables.{key} differs from docker/work-pool.json"
    assert deployment["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == WORKDIR


def test_prefect_yaml_gpu_deployments_fit_the_pool(compose):
    """prefect.yaml belongs to the flows; its deployments on this pool must keep the GPUs and the stack's
    network and volumes (a job variable replaces the pool's default as a whole). See docker/README.md."""
    path = ROOT / "prefect.yaml"
    if not path.exists():
        pytest.skip("no prefect.yaml yet")
    volume_names = {spec["name"] for spec in compose["volumes"].values()}
    for deployment in yaml.safe_load(path.read_text()).get("deployments") or []:
        if (deployment.get("work_pool") or {}).get("name") != POOL_NAME:
            continue
        name, variables = deployment["name"], deployment["work_pool"].get("job_variables") or {}
        assert variables.get("image", gpu_image(compose)) == gpu_image(compose), name
        if "container_create_kwargs" in variables:
            requests = variables["container_create_kwargs"].get("device_requests") or []
            assert any(["gpu"] in r.get("capabilities", []) for r in requests), f"{name} drops the GPU request"
        # the jobs reach mlflow / prefect-server on the compose network; Docker refuses host mode plus a network
        assert "network_mode" not in variables, f"{name}: network_mode conflicts with the pool's networks [iwsft]"
        for volume in variables.get("volumes", []):
            source = volume.split(":")[0]
            # templates like {{ $PWD }} resolve where `prefect deploy` runs (the worker container), not on the host
            assert source in volume_names or (source.startswith("/") and "{{" not in source), f"{name}: {volume}"


# --- builds without registries, docker-compose 1.29 ---------------------------------------------------


def test_images_build_with_the_legacy_builder():
    """Debian's docker.io 20.10 has no buildx and BuildKit would fetch a `# syntax=` frontend from Docker Hub:
    scripts/build_*_image.sh and docker-compose 1.29 build with the legacy builder. So: no BuildKit-only
    syntax, and every base image is a build argument (a local stand-in where registries are out of reach)."""
    for name in DOCKERFILES:
        text = (DOCKER / name).read_text()
        assert not re.search(r"^#\s*syntax=", text, re.MULTILINE), f"{name}: # syntax= needs a registry"
        assert not re.search(r"^RUN\s+--", text, re.MULTILINE), f"{name}: RUN --mount/--network need BuildKit"
        assert not re.search(r"^COPY\s+--link|<<", text, re.MULTILINE), f"{name}: BuildKit-only syntax"
        for base in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
            assert base.startswith("${") or base in stages(DOCKER / name), f"{name}: FROM {base} is not an ARG"
        for default in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, re.MULTILINE):
            assert re.search(r":\d+(\.\d+)+", default), f"{name}: pin the default base {default}"


def test_gpu_image_has_one_cuda_copy_and_asks_the_toolkit_for_compute():
    """torch's CUDA wheel brings the CUDA libraries; the base is plain Python (docker/README.md, sizes)."""
    text = (DOCKER / "Dockerfile").read_text()
    assert "nvidia/cuda" not in re.findall(r"^ARG BASE_IMAGE=(\S+)", text, re.MULTILINE)[0]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text and "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "--index-url \"${TORCH_INDEX_URL}\"" in text and "ARG TORCH_INDEX_URL=https://pypi.org/simple" in text


def test_postgres_image_chooses_its_base_by_build_argument(compose):
    service = compose["services"]["postgres"]
    assert is_postgres(service)
    arg = service["build"]["args"]["POSTGRES_IMAGE"]
    assert arg == env_example()["POSTGRES_IMAGE"] and arg.startswith("postgres:")
    text = (DOCKER / "Dockerfile.postgres").read_text()
    assert f"ARG POSTGRES_IMAGE={arg}" in text  # the same default: the official image
    script = DOCKER / "postgres-entrypoint.sh"
    assert script.stat().st_mode & 0o111 and "docker/postgres-entrypoint.sh" in text
    # the official entrypoint's contract that compose.yaml uses
    source = script.read_text()
    for needed in ("POSTGRES_USER", "POSTGRES_PASSWORD", "/docker-entrypoint-initdb.d/", "listen_addresses"):
        assert needed in source
    assert any(v.endswith("/docker-entrypoint-initdb.d/10-databases.sql:ro") for v in service["volumes"])


def test_compose_file_fits_docker_compose_1_29(raw, tmp_path):
    assert "name" not in raw, "docker-compose 1.29 rejects a top-level name: use COMPOSE_PROJECT_NAME in .env"
    assert "version" not in raw
    assert env_example().get("COMPOSE_PROJECT_NAME") == "iwsft"
    compose_v1 = shutil.which("docker-compose")
    if compose_v1 is None:
        pytest.skip("docker-compose (1.29) is not installed")
    # a copy of docker/ whose .env is .env.example (env_file: .env must exist); `..` is the build context
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns(".env"))
    shutil.copy(ENV_EXAMPLE, copy / ".env")
    done = subprocess.run([compose_v1, "-f", str(copy / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, cwd=copy)
    assert done.returncode == 0, done.stderr


def test_compose_smoke_script_is_outside_make_test():
    script = ROOT / "scripts" / "compose_smoke.sh"
    assert script.stat().st_mode & 0o111
    assert "compose_smoke" not in (ROOT / "Makefile").read_text().split("\ntest:")[-1].split("\n\n")[0]
    assert "scripts/compose_smoke.sh" in (DOCKER / "README.md").read_text()
