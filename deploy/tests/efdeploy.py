"""Shared helpers for the deployment tests (Helm chart, Dockerfile, docker-compose).

Everything here works offline and without a Docker engine or a cluster: the chart is rendered by
the Helm Go library bundled in `helm-python-sdk`, manifests are validated against the Kubernetes
JSON schemas bundled in `kubernetes-validate`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "eventflow"
DEPLOY = REPO / "deploy"

RELEASE = "ef"
NAMESPACE = "eventflow"

# The contract every deployment must honour: binary, default ports, gRPC health service name.
SERVICES = {
    "publisher": {
        "binary": "eventflow-publisher",
        "grpc_port": 50051,
        "metrics_port": 9091,
        "health": "eventflow.v1.PublisherService",
    },
    "subscriber": {
        "binary": "eventflow-subscriber",
        "grpc_port": 50052,
        "metrics_port": 9092,
        "health": "eventflow.v1.SubscriberService",
    },
    "admin": {
        "binary": "eventflow-admin",
        "grpc_port": 50053,
        "metrics_port": 9093,
        "health": "eventflow.v1.AdminService",
    },
    "dlq": {
        "binary": "eventflow-dlq",
        "grpc_port": 50054,
        "metrics_port": 9094,
        "health": "eventflow.v1.DeadLetterService",
    },
    "pusher": {
        "binary": "eventflow-pusher",
        "grpc_port": 50057,
        "metrics_port": 9097,
        "health": "eventflow-pusher",
    },
}

# Components the chart deploys only when enabled (they need more than Redis), with the same
# contract; not in SERVICES, whose members are on by default.
OPTIONAL_SERVICES = {
    "archive": {
        "binary": "eventflow-archive",
        "grpc_port": 50055,
        "metrics_port": 9095,
        "health": "eventflow.v1.ArchiveService",
    },
    "relay": {
        "binary": "eventflow-relay",
        "grpc_port": 50056,
        "metrics_port": 9096,
        "health": "eventflow-relay",
    },
}

# Metric names the dashboard and alerts may use (the services' metrics contract).
KNOWN_METRICS = {
    "eventflow_published_total",
    "eventflow_duplicates_total",
    "eventflow_delivered_total",
    "eventflow_acked_total",
    "eventflow_nacked_total",
    "eventflow_redelivered_total",
    "eventflow_dead_lettered_total",
    "eventflow_publish_duration_seconds",
    "eventflow_delivery_latency_seconds",
    "eventflow_subscription_lag",
    "eventflow_subscription_pending",
    "eventflow_dlq_depth",
    "eventflow_breaker_state",
    "eventflow_grpc_requests_total",
    "eventflow_grpc_request_duration_seconds",
    "eventflow_retention_dead_lettered_total",
    "eventflow_retention_dropped_total",
    "eventflow_dlq_overflow_total",
    "eventflow_push_requests_total",
    "eventflow_push_duration_seconds",
    "eventflow_archive_lag_seconds",
    "eventflow_archive_lag_entries",
    "eventflow_archive_rows_inserted_total",
    "eventflow_archive_insert_duration_seconds",
    "eventflow_archive_insert_failures_total",
    "eventflow_outbox_backlog_rows",
    "eventflow_outbox_oldest_unpublished_age_seconds",
    "eventflow_outbox_published_total",
    "eventflow_outbox_failed_total",
    "eventflow_outbox_deleted_total",
    "eventflow_relay_batch_duration_seconds",
    "eventflow_relay_errors_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(promql: str) -> set[str]:
    """eventflow_* metric names in a PromQL expression, histogram suffixes stripped."""
    names = set()
    for name in re.findall(r"\beventflow_[a-z_]+", promql):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in KNOWN_METRICS:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def find_binary(name: str) -> Path | None:
    """A built binary in the Cargo target dir (debug first: `make test` builds debug)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        path = target / profile / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


_help_cache: dict[str, str] = {}


def binary_help(name: str) -> str:
    """`<binary> --help`, or a pytest skip when the binary has not been built."""
    if name not in _help_cache:
        path = find_binary(name)
        if path is None:
            pytest.skip(f"{name} is not built (run `cargo build --bins`); flag checks need its --help")
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30, check=True)
        _help_cache[name] = out.stdout
    return _help_cache[name]


def help_flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))


def help_envs(help_text: str) -> set[str]:
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text))


def workspace_binaries() -> set[str]:
    """Binary names the Cargo workspace builds: [[bin]] names, and packages with src/main.rs."""
    names: set[str] = set()
    for manifest in REPO.glob("services/*/Cargo.toml"):
        text = manifest.read_text()
        for section, body in re.findall(r"^\[\[?([a-z.]+)\]\]?\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S):
            m = re.search(r'^name\s*=\s*"([^"]+)"', body, re.M)
            if not m:
                continue
            if section == "bin":
                names.add(m.group(1))
            elif section == "package" and (manifest.parent / "src" / "main.rs").exists():
                names.add(m.group(1))
    return names


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]
