"""deploy/: the Dockerfile and the docker-compose stack, checked without a Docker engine: the files
parse, every command names a binary the workspace builds and flags it accepts, ports and
environment match the services' configuration, and the mounted configs exist and agree."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from efdeploy import (
    CHART,
    DEPLOY,
    REPO,
    OPTIONAL_SERVICES,
    SERVICES,
    binary_help,
    help_envs,
    help_flags,
    workspace_binaries,
)

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
BIN_DIR = "/usr/local/bin"


@pytest.fixture(scope="module")
def compose() -> dict:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "compose file has no services"
    return doc


def command_list(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def parse_flags(args: list[str]) -> dict[str, str]:
    """--flag=value and --flag value pairs."""
    flags, i = {}, 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"unexpected positional argument {arg!r}"
        if "=" in arg:
            name, value = arg.split("=", 1)
        else:
            name, value = arg, args[i + 1]
            i += 1
        flags[name] = value
        i += 1
    return flags


def env_dict(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> dict[int, int]:
    """container port -> host port, from short-syntax port mappings."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) >= 2, f"port {spec} is not published on a fixed host port"
        out[int(parts[-1].split("/")[0])] = int(parts[-2])
    return out


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------------ compose

def test_compose_has_the_whole_stack(compose):
    services = compose["services"]
    assert set(SERVICES) | {"redis", "prometheus", "grafana"} <= set(services)
    assert {"otel-collector", "jaeger"} & set(services), "no trace backend (OTel Collector or Jaeger)"
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
        image = svc.get("image", "")
        if image and not image.startswith("eventflow:"):
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_compose_redis_runs_with_aof(compose):
    redis = compose["services"]["redis"]
    cmd = command_list(redis)
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--appendfsync") + 1] == "everysec"
    assert cmd[cmd.index("--lazyfree-lazy-expire") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "AOF directory is not on a volume"
    assert redis.get("healthcheck"), "services wait for Redis through its healthcheck"


# Every service the image and compose run: the default ones and those that need more than Redis.
EVERY_SERVICE = {**SERVICES, **OPTIONAL_SERVICES}


@pytest.mark.parametrize("component", sorted(EVERY_SERVICE))
def test_compose_service_runs_a_real_binary(compose, component):
    spec = EVERY_SERVICE[component]
    svc = compose["services"][component]
    cmd = command_list(svc)
    assert cmd[0] == f"{BIN_DIR}/{spec['binary']}", f"{component} runs {cmd[0]}"
    assert spec["binary"] in dockerfile_binaries(), f"the image does not contain {spec['binary']}"
    built = workspace_binaries()
    if spec["binary"] not in built:
        if component == "dlq" and not (REPO / "services" / "dlq").exists():
            pytest.skip("services/dlq is not in the workspace yet: eventflow-dlq cannot be built")
        pytest.fail(f"no crate in the workspace builds {spec['binary']} (builds {sorted(built)})")


@pytest.mark.parametrize("component", sorted(EVERY_SERVICE))
def test_compose_service_ports_and_env_match_its_config(compose, component):
    spec = EVERY_SERVICE[component]
    svc = compose["services"][component]
    flags = parse_flags(command_list(svc)[1:])
    env = env_dict(svc)
    grpc = flags.get("--grpc-addr", env.get("EVENTFLOW_GRPC_ADDR"))
    metrics = flags.get("--metrics-addr", env.get("EVENTFLOW_METRICS_ADDR"))
    assert grpc and port_of(grpc) == spec["grpc_port"] and grpc.startswith("0.0.0.0:"), grpc
    assert metrics and port_of(metrics) == spec["metrics_port"] and metrics.startswith("0.0.0.0:"), metrics
    assert published(svc) == {spec["grpc_port"]: spec["grpc_port"], spec["metrics_port"]: spec["metrics_port"]}

    redis_url = urlsplit(flags.get("--redis-url", env.get("EVENTFLOW_REDIS_URL", "")))
    assert redis_url.scheme == "redis" and redis_url.hostname == "redis" and (redis_url.port or 6379) == 6379
    otel = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert otel.hostname in compose["services"], f"OTLP endpoint {otel.hostname} is not a compose service"
    assert otel.port == 4317
    assert env["OTEL_SERVICE_NAME"] == spec["binary"]
    deps = svc.get("depends_on", {})
    assert deps.get("redis", {}).get("condition") == "service_healthy"
    assert svc.get("read_only") is True
    user = str(svc.get("user", "65532")).split(":")[0]
    assert user not in ("0", "root")
    if component == "publisher":
        assert "--max-event-bytes" in flags or "EVENTFLOW_MAX_EVENT_BYTES" in env


@pytest.mark.parametrize("component", sorted(EVERY_SERVICE))
def test_compose_flags_and_env_are_accepted_by_the_binary(compose, component):
    svc = compose["services"][component]
    flags = parse_flags(command_list(svc)[1:])
    help_text = binary_help(EVERY_SERVICE[component]["binary"])
    unknown = set(flags) - help_flags(help_text)
    assert not unknown, f"{component}: {sorted(unknown)} not in `{EVERY_SERVICE[component]['binary']} --help`"
    envs = {k for k in env_dict(svc) if k.startswith("EVENTFLOW_")}
    unknown_env = envs - help_envs(help_text)
    assert not unknown_env, f"{component}: environment {sorted(unknown_env)} not read by the binary"


def test_compose_mounted_configs_exist(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        build = svc.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
            assert context == REPO


def test_prometheus_scrapes_every_service_and_loads_the_alerts(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for component, spec in EVERY_SERVICE.items():
        assert f"{component}:{spec['metrics_port']}" in targets
    mounts = dict(str(v).split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    for rule_file in config["rule_files"]:
        assert rule_file in mounts.values(), f"rule file {rule_file} is not mounted"
    assert mounts["./prometheus/alerts.yml"] in config["rule_files"]


def test_grafana_provisions_prometheus_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/datasources.yaml").read_text())
    prom = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert prom and urlsplit(prom[0]["url"]).hostname == "prometheus"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (DEPLOY / "grafana/dashboards/eventflow.json").is_file()


def test_otel_collector_receives_otlp_and_exports_traces(compose):
    config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    assert port_of(config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == 4317
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    for exporter in pipeline["exporters"]:
        assert exporter in config["exporters"]
        endpoint = config["exporters"][exporter].get("endpoint")
        if endpoint:
            host = endpoint.split("://")[-1].rsplit(":", 1)[0]
            assert host in compose["services"], f"exporter {exporter} points at unknown host {host}"
    for processor in pipeline.get("processors", []):
        assert processor in config["processors"]


# ---------------------------------------------------------------------------------- Dockerfile

def dockerfile_stages() -> list[dict]:
    """[{from, name, lines}] per build stage (continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            stages.append({"from": m.group(1), "name": m.group(2), "lines": []})
        elif stages:
            stages[-1]["lines"].append(line)
    return stages


def dockerfile_binaries() -> set[str]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    m = re.search(r"for bin in ([\w\s-]+?);", text)
    assert m, "the Dockerfile no longer lists its binaries in a `for bin in ...;` loop"
    return set(m.group(1).split())


def test_dockerfile_is_multistage_with_a_small_non_root_runtime():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    build, runtime = stages[0], stages[-1]
    assert build["from"].startswith("rust:")
    rust_version = re.search(r'rust-version\s*=\s*"([\d.]+)"', (REPO / "Cargo.toml").read_text()).group(1)
    arg = re.search(r"ARG RUST_VERSION=([\d.]+)", (DEPLOY / "Dockerfile").read_text()).group(1)
    assert tuple(map(int, arg.split("."))) >= tuple(map(int, rust_version.split("."))), "builder older than rust-version"
    assert "distroless" in runtime["from"] or "slim" in runtime["from"] or "alpine" in runtime["from"]
    users = [l.split()[1] for l in runtime["lines"] if l.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runtime stage must run as non-root"
    assert not any(l.upper().startswith("ENTRYPOINT") for l in runtime["lines"]), (
        "one image for all services: the binary is chosen per Deployment with `command`")
    copies = [l for l in runtime["lines"] if l.upper().startswith("COPY")]
    assert any(f"--from={build['name']}" in l and l.rstrip("/").endswith(BIN_DIR) for l in copies)
    assert any("cargo build --release --locked --bins" in l for l in build["lines"])


def test_dockerfile_ships_every_service_binary():
    assert {s["binary"] for s in EVERY_SERVICE.values()} <= dockerfile_binaries()


def test_chart_and_compose_use_the_image_binary_paths(compose):
    """The chart's `command` paths and compose's point into the image's /usr/local/bin."""
    templates = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"- {BIN_DIR}/{{{{ $meta.binary }}}}" in templates
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for component, spec in EVERY_SERVICE.items():
        assert f"binary: {spec['binary']}" in helpers
        assert f"grpcService: {spec['health']}" in helpers
        assert command_list(compose["services"][component])[0] == f"{BIN_DIR}/{spec['binary']}"


def test_dockerignore_keeps_the_context_small():
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for entry in ("target", ".git", ".venv"):
        assert entry in ignored


def test_requirements_list_what_the_tests_import():
    reqs = (Path(__file__).parent / "requirements.txt").read_text().lower()
    for package in ("helm-python-sdk", "kubernetes-validate", "pyyaml", "pytest"):
        assert package in reqs
