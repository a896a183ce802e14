"""The Helm chart helm/eventflow: lint, render every documented option, validate every manifest
against the Kubernetes schemas, and check the properties the services rely on (gRPC probes,
non-root pods, Redis wiring, monitoring objects, schema errors)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from efdeploy import (
    CHART,
    DEPLOY,
    KNOWN_METRICS,
    NAMESPACE,
    OPTIONAL_SERVICES,
    RELEASE,
    SERVICES,
    binary_help,
    help_envs,
    load_yaml_docs,
    metric_names,
)

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one; both are bundled
# with kubernetes-validate, so validation runs offline.
KUBE_VERSIONS = ("1.30.0", "1.34.0")
FULLNAME = f"{RELEASE}-eventflow"

# An authorization policy as operators write it (the chart renders it as JSON, whatever its shape).
POLICY = {"principals": [{"name": "orders-publisher", "token_sha256": "ab" * 32,
                          "grants": [{"services": ["publish"], "streams": ["orders.*"]}]}]}

EXTERNAL = {"redis": {"url": "redis://redis-master.data.svc:6379/0", "bundled": {"enabled": False}}}

# Every documented way of installing the chart (README.md "Examples").
SCENARIOS = {
    "defaults": {},
    # The archive on (it needs its PostgreSQL URL from a Secret).
    "archive": {"archive": {"enabled": True, "database": {"existingSecret": "archive-db"}, "streams": "orders,payments",
                            "retentionDays": 30}},
    # Push delivery on its own (the other services run elsewhere): a valid install.
    "pusher-only": {c: {"enabled": False} for c in ("publisher", "subscriber", "admin", "dlq")},
    "external-redis": EXTERNAL,
    # The outbox relay (off by default: it needs a database), its URL from a Secret.
    "relay": {"relay": {"enabled": True, "database": {"existingSecret": "outbox-db", "key": "dsn"}, "workers": 4}},
    "external-redis-password-secret": {
        "redis": {
            "url": "redis://redis-master.data.svc:6379/0",
            "existingSecret": "redis-auth",
            "existingSecretPasswordKey": "password",
            "bundled": {"enabled": False},
        }
    },
    "external-redis-acl-user": {
        "redis": {
            "url": "rediss://eventflow@redis.example.com:6380/2",
            "existingSecret": "redis-auth",
            "bundled": {"enabled": False},
        }
    },
    "external-redis-url-secret": {
        "redis": {"existingSecret": "redis-auth", "existingSecretUrlKey": "url", "bundled": {"enabled": False}}
    },
    "bundled-redis-password": {"redis": {"password": "s3cret-pw"}},
    "bundled-redis-no-persistence": {
        "redis": {"bundled": {"persistence": {"enabled": False}, "appendfsync": "always", "extraArgs": ["--maxmemory", "1gb"]}}
    },
    "only-publisher": {
        "subscriber": {"enabled": False}, "admin": {"enabled": False}, "dlq": {"enabled": False},
        "pusher": {"enabled": False},
    },
    "no-dlq-no-admin": {"admin": {"enabled": False}, "dlq": {"enabled": False}},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        },
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "eventflow"}},
    },
    "production-like": {
        **EXTERNAL,
        "image": {"repository": "registry.example.com/eventflow", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "keyPrefix": "prod",
        "logLevel": "info,eventflow_broker=debug",
        "otel": {
            "endpoint": "http://otel-collector.observability:4317",
            "sampler": "parentbased_traceidratio",
            "samplerArg": "0.1",
            "resourceAttributes": "deployment.environment=prod",
        },
        "auth": {"existingSecret": "eventflow-auth", "tokensKey": "tokens"},
        "extraEnv": [{"name": "EXAMPLE_SETTING", "valueFrom": {"secretKeyRef": {"name": "eventflow-extra", "key": "x"}}}],
        "extraEnvFrom": [{"secretRef": {"name": "eventflow-extra"}}],
        "serviceAccount": {"create": False, "name": "eventflow"},
        "topologySpreadConstraints": {"whenUnsatisfiable": "DoNotSchedule"},
        "publisher": {
            "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 20},
            "podDisruptionBudget": {"minAvailable": "50%"},
            "preStopSleepSeconds": 5,
            "maxEventBytes": 262144,
            "service": {"type": "LoadBalancer", "annotations": {"example.com/internal": "true"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "eventflow", "effect": "NoSchedule"}],
        },
        "subscriber": {"autoscaling": {"enabled": True}, "terminationGracePeriodSeconds": 60},
        "admin": {"podDisruptionBudget": {"enabled": False}},
    },
    "topology-spread-off": {"topologySpreadConstraints": {"enabled": False}},
    # Production security (README.md "Security").
    "tls-existing-secret": {"tls": {"enabled": True, "existingSecret": "eventflow-tls"}},
    "tls-cert-manager-mtls": {
        "tls": {
            "enabled": True,
            "certManager": {"enabled": True, "issuerRef": {"name": "eventflow-ca", "kind": "ClusterIssuer"},
                            "extraDnsNames": ["eventflow.example.com"]},
            "clientCA": {"enabled": True},
        }
    },
    "mtls-separate-client-ca": {
        "tls": {"enabled": True, "existingSecret": "eventflow-tls",
                "clientCA": {"enabled": True, "existingSecret": "client-ca", "key": "ca.pem"}},
    },
    "auth-policy-protected-metrics": {
        "auth": {"policy": POLICY},
        "metrics": {"protect": True, "serviceMonitor": {"enabled": True, "tokenSecret": {"name": "prom-token", "key": "token"}}},
    },
    "auth-policy-from-secret-with-tokens": {
        "auth": {"existingSecret": "eventflow-auth", "policyExistingSecret": "eventflow-policy", "policyKey": "p.json"},
        "metrics": {"protect": True, "serviceMonitor": {"enabled": True}},
    },
    "auth-off-no-network-policy": {"auth": {"enabled": False}, "networkPolicy": {"enabled": False}},
    "network-policy-clients-in-other-namespaces": {
        "networkPolicy": {
            # Helm merges maps with the defaults: null removes the default label.
            "clientLabel": {"eventflow-client": None, "app": "orders"},
            "clientNamespaceSelector": {"matchLabels": {"team": "orders"}},
            "metricsNamespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
            "extraIngress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "grpc"}]}],
        }
    },
    "bundled-redis-tls-client-cert": {
        "redis": {"tls": {"enabled": True, "existingSecret": "redis-tls", "clientCert": {"existingSecret": "redis-client"}},
                  "bundled": {"maxmemory": "2gb"}},
    },
    "external-redis-tls": {
        "redis": {"url": "rediss://redis.example.com:6380/0", "existingSecret": "redis-auth", "bundled": {"enabled": False},
                  "tls": {"enabled": True, "existingSecret": "redis-ca", "caKey": "ca.pem"}},
    },
    # Redis Cluster (README.md "Redis Cluster"): an existing cluster, no bundled Redis.
    "redis-cluster": {
        "redis": {"clusterNodes": ["redis://redis-cluster-0.redis-cluster-headless.data.svc:6379",
                                   "redis://redis-cluster-1.redis-cluster-headless.data.svc:6379"],
                  "bundled": {"enabled": False}},
    },
    "redis-cluster-password-secret": {
        "redis": {"clusterNodes": ["redis://10.0.0.1:7000", "redis://eventflow@10.0.0.2:7001", "redis://10.0.0.3:7002"],
                  "existingSecret": "redis-auth", "existingSecretPasswordKey": "password", "bundled": {"enabled": False}},
    },
    "redis-cluster-tls-password": {
        "redis": {"clusterNodes": ["rediss://redis-cluster.example.com:6380"], "password": "s3cret-pw",
                  "bundled": {"enabled": False}, "tls": {"enabled": True, "existingSecret": "redis-ca"}},
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, values: dict) -> list[dict]:
    """All rendered objects (NOTES.txt excluded), each tagged with its template under `_template`."""
    out = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    objects = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in load_yaml_docs(text):
            doc = dict(doc)
            doc["_template"] = template
            objects.append(doc)
    return objects


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "_template"}


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def by_name(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def enabled_components(values: dict) -> set[str]:
    return {c for c in SERVICES if values.get(c, {}).get("enabled", True)}


def container_env(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def pod_templates(objects):
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o, o["spec"]["template"]


# --------------------------------------------------------------------------------------- lint

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_is_clean(scenario):
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, f"helm lint --strict ({scenario}): {problems}"


# ------------------------------------------------------------------------------- render + validate

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_and_validates_against_kubernetes_schemas(chart, scenario):
    objects = render(chart, SCENARIOS[scenario])
    assert objects, "nothing rendered"
    seen = set()
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"duplicate object {key}"
        seen.add(key)
        assert len(obj["metadata"]["name"]) <= 63, f"name too long: {obj['metadata']['name']}"
        assert obj["metadata"].get("namespace"), f"{key} has no namespace"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_prometheus_operator_object(obj)
            continue
        if obj["apiVersion"].startswith("cert-manager.io/"):
            check_cert_manager_object(obj)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(strip(obj), version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{obj['_template']}: {obj['kind']}/{obj['metadata']['name']} invalid for "
                            f"Kubernetes {version} at {path}: {e.message}")


def check_prometheus_operator_object(obj):
    """CRDs have no bundled schema: check the fields prometheus-operator needs."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        for ep in spec["endpoints"]:
            assert ep["port"] == "metrics" and ep["path"] == "/metrics"
            assert re.fullmatch(r"\d+(ms|s|m|h)", ep["interval"])
    elif obj["kind"] == "PrometheusRule":
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
                assert rule["expr"]
    else:
        pytest.fail(f"unexpected prometheus-operator kind {obj['kind']}")


def check_cert_manager_object(obj):
    """No cert-manager schema is available offline (kubernetes-validate bundles only the
    Kubernetes API): check the fields cert-manager needs instead."""
    assert (obj["apiVersion"], obj["kind"]) == ("cert-manager.io/v1", "Certificate"), obj["kind"]
    spec = obj["spec"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", spec["secretName"])
    assert spec["dnsNames"] and all(isinstance(n, str) and n for n in spec["dnsNames"])
    assert spec["issuerRef"]["name"] and spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    assert set(spec["usages"]) <= {"server auth", "client auth", "digital signature", "key encipherment"}
    for field in ("duration", "renewBefore"):
        assert re.fullmatch(r"([0-9]+(\.[0-9]+)?(h|m|s))+", spec[field]), field
    assert set(spec) <= {"secretName", "secretTemplate", "duration", "renewBefore", "privateKey", "usages", "dnsNames",
                         "issuerRef", "commonName", "ipAddresses", "uris"}


# ------------------------------------------------------------------------------------ services

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_enabled_service_has_its_objects(chart, scenario):
    values = SCENARIOS[scenario]
    objects = render(chart, values)
    enabled = enabled_components(values)
    for component in SERVICES:
        name = f"{FULLNAME}-{component}"
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        if component in enabled:
            for kind in ("Deployment", "Service", "ConfigMap"):
                assert (kind, name) in names, f"{component}: no {kind}"
        else:
            assert not [n for n in names if n[1] == name], f"{component} is disabled but rendered {names}"
            assert not [o for o in objects if o["metadata"]["labels"].get("app.kubernetes.io/component") == component]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_probes_are_http_gets_on_the_metrics_port(chart, scenario):
    values = SCENARIOS[scenario]
    objects = render(chart, values)
    for component in enabled_components(values):
        spec = SERVICES[component]
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": spec["grpc_port"], "metrics": spec["metrics_port"]}
        # kubelet's gRPC probe cannot speak TLS: every probe is an httpGet on the plain-HTTP
        # metrics port, TLS or not. Readiness follows grpc.health (/readyz); startup and
        # liveness answer while the process runs (/healthz), so a Redis outage restarts nothing.
        expected = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            p = container[probe]
            assert set(p) & {"grpc", "tcpSocket", "exec"} == set(), f"{component} {probe} is not a pure httpGet probe"
            assert p["httpGet"] == {"path": path, "port": "metrics"}, f"{component} {probe}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_pods_run_as_non_root_with_read_only_root(chart, scenario):
    objects = render(chart, SCENARIOS[scenario])
    pods = list(pod_templates(objects))
    assert pods
    for owner, template in pods:
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        pod_sc = template["spec"].get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert pod_sc.get("runAsUser", 1) != 0, f"{where}: runAsUser 0"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", True) is True and sc.get("runAsUser", 1) != 0, f"{where}/{c['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}: root filesystem writable"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}: privilege escalation"
            assert sc.get("privileged", False) is False
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}/{c['name']}: capabilities"
            assert c.get("resources", {}).get("requests"), f"{where}/{c['name']}: no resource requests"


def test_deployment_runs_the_right_binary_with_matching_settings(chart):
    objects = render(chart, SCENARIOS["defaults"])
    for component, spec in SERVICES.items():
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["command"] == [f"/usr/local/bin/{spec['binary']}"]
        assert "args" not in container
        cm = by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")
        assert container["envFrom"][0] == {"configMapRef": {"name": cm["metadata"]["name"]}}
        data = cm["data"]
        assert data["EVENTFLOW_GRPC_ADDR"] == f"0.0.0.0:{spec['grpc_port']}"
        assert data["EVENTFLOW_METRICS_ADDR"] == f"0.0.0.0:{spec['metrics_port']}"
        assert data["EVENTFLOW_KEY_PREFIX"] == "ef"
        assert data["OTEL_SERVICE_NAME"] == spec["binary"]
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in data, "tracing must be off by default"
        assert ("EVENTFLOW_MAX_EVENT_BYTES" in data) == (component == "publisher")
        assert all(isinstance(v, str) for v in data.values())
        svc = by_name(objects, "Service", f"{FULLNAME}-{component}")
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
            "grpc": spec["grpc_port"], "metrics": spec["metrics_port"]}
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


@pytest.mark.parametrize("scenario", ["production-like", "tls-cert-manager-mtls", "auth-policy-protected-metrics",
                                      "bundled-redis-tls-client-cert", "redis-cluster-password-secret"])
@pytest.mark.parametrize("component", sorted(SERVICES))
def test_chart_sets_only_settings_the_binary_accepts(chart, component, scenario):
    """Every EVENTFLOW_* variable the chart sets is one the binary documents in --help."""
    objects = render(chart, SCENARIOS[scenario])
    dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    cm = by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")
    names = set(cm["data"]) | set(container_env(container))
    accepted = help_envs(binary_help(SERVICES[component]["binary"]))
    unknown = {n for n in names if n.startswith("EVENTFLOW_")} - accepted
    assert not unknown, f"{component}: the binary does not accept {sorted(unknown)} (accepts {sorted(accepted)})"


def test_otel_settings_reach_every_service(chart):
    objects = render(chart, SCENARIOS["production-like"])
    for component in SERVICES:
        cm = by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")
        assert cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert cm["data"]["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert cm["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
        assert cm["data"]["EVENTFLOW_KEY_PREFIX"] == "prod"
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        env = container_env(container)
        assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"].endswith(",deployment.environment=prod")
        assert env["EVENTFLOW_AUTH_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "eventflow-auth", "key": "tokens"}
        assert env["EXAMPLE_SETTING"]["valueFrom"]["secretKeyRef"]["name"] == "eventflow-extra"
        assert {"secretRef": {"name": "eventflow-extra"}} in container["envFrom"]
        assert container["image"] == "registry.example.com/eventflow:1.2.3"
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "eventflow"
    assert not of_kind(objects, "ServiceAccount")


# ---------------------------------------------------------------------------------------- Redis

def redis_env(objects, component="publisher"):
    dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    names = [e["name"] for e in container["env"]]
    if "REDIS_PASSWORD" in env:  # $(VAR) expansion needs the variable defined first
        target = "EVENTFLOW_REDIS_CLUSTER_NODES" if "EVENTFLOW_REDIS_CLUSTER_NODES" in env else "EVENTFLOW_REDIS_URL"
        assert names.index("REDIS_PASSWORD") < names.index(target)
    return env


def test_bundled_redis_is_a_statefulset_with_aof_and_a_pvc(chart):
    objects = render(chart, SCENARIOS["defaults"])
    sts = by_name(objects, "StatefulSet", f"{FULLNAME}-redis")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert args[args.index("--lazyfree-lazy-expire") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    svc = by_name(objects, "Service", f"{FULLNAME}-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    for component in SERVICES:
        env = redis_env(objects, component)
        assert env["EVENTFLOW_REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{FULLNAME}-redis.{NAMESPACE}.svc:6379/0"
    # Generated: the subscribers' ack key, the Redis password and a full-access token.
    assert sorted(s["metadata"]["name"] for s in of_kind(objects, "Secret")) == [
        f"{FULLNAME}-ack-key", f"{FULLNAME}-auth", f"{FULLNAME}-redis-auth"]


def redis_secrets(objects):
    """The Secrets the chart renders besides the generated ack key and auth token."""
    return [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] not in (f"{FULLNAME}-ack-key", f"{FULLNAME}-auth")]


def subscriber_ack_key(objects):
    """The subscriber container's ack-key env and the Secret name its ack-key volume mounts."""
    dep = by_name(objects, "Deployment", f"{FULLNAME}-subscriber")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {"name": "ack-key", "mountPath": "/etc/eventflow/ack-key", "readOnly": True} in c["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "ack-key"]
    env = {k: v["value"] for k, v in container_env(c).items() if k.startswith("EVENTFLOW_ACK_KEY")}
    return env, volume["secret"]["secretName"]


def test_subscribers_share_a_generated_ack_key(chart):
    objects = render(chart, SCENARIOS["defaults"])
    env, secret = subscriber_ack_key(objects)
    assert env == {"EVENTFLOW_ACK_KEY_FILE": "/etc/eventflow/ack-key/ack-key"}
    data = by_name(objects, "Secret", secret)["data"]
    assert len(base64.b64decode(data["ack-key"])) >= 32
    for component in set(SERVICES) - {"subscriber"}:
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        assert "volumes" not in dep["spec"]["template"]["spec"], component


def test_ack_key_from_an_existing_secret_with_a_previous_key(chart):
    values = {"subscriber": {"ackKey": {"existingSecret": "acks", "key": "new", "previousKey": "old"}}}
    objects = render(chart, values)
    env, secret = subscriber_ack_key(objects)
    assert secret == "acks"
    assert env == {
        "EVENTFLOW_ACK_KEY_FILE": "/etc/eventflow/ack-key/new",
        "EVENTFLOW_ACK_KEY_PREVIOUS_FILE": "/etc/eventflow/ack-key/old",
    }
    assert f"{FULLNAME}-ack-key" not in {s["metadata"]["name"] for s in of_kind(objects, "Secret")}


def test_bundled_redis_with_password_uses_a_secret_everywhere(chart):
    objects = render(chart, SCENARIOS["bundled-redis-password"])
    (secret,) = redis_secrets(objects)
    assert "s3cret-pw" not in json.dumps(of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet"))
    ref = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "redis-password"}}
    env = redis_env(objects)
    assert env["REDIS_PASSWORD"]["valueFrom"] == ref
    assert env["EVENTFLOW_REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{FULLNAME}-redis.{NAMESPACE}.svc:6379/0"
    sts = by_name(objects, "StatefulSet", f"{FULLNAME}-redis")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert container_env(c)["REDISCLI_AUTH"]["valueFrom"] == ref


def test_bundled_redis_without_persistence_uses_emptydir(chart):
    objects = render(chart, SCENARIOS["bundled-redis-no-persistence"])
    sts = by_name(objects, "StatefulSet", f"{FULLNAME}-redis")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "data", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--appendfsync") + 1] == "always"
    assert c["args"][-2:] == ["--maxmemory", "1gb"]


@pytest.mark.parametrize("scenario,url,password", [
    ("external-redis", "redis://redis-master.data.svc:6379/0", None),
    ("external-redis-password-secret", "redis://:$(REDIS_PASSWORD)@redis-master.data.svc:6379/0", ("redis-auth", "password")),
    ("external-redis-acl-user", "rediss://eventflow:$(REDIS_PASSWORD)@redis.example.com:6380/2", ("redis-auth", "redis-password")),
])
def test_external_redis_url_and_password(chart, scenario, url, password):
    objects = render(chart, SCENARIOS[scenario])
    assert not of_kind(objects, "StatefulSet"), "external Redis must not deploy the bundled one"
    assert not redis_secrets(objects), "an existing Secret must not be re-created"
    for component in SERVICES:
        env = redis_env(objects, component)
        assert env["EVENTFLOW_REDIS_URL"] == {"name": "EVENTFLOW_REDIS_URL", "value": url}
        if password:
            assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": password[0], "key": password[1]}}
        else:
            assert "REDIS_PASSWORD" not in env


def test_external_redis_url_from_secret(chart):
    objects = render(chart, SCENARIOS["external-redis-url-secret"])
    assert not of_kind(objects, "StatefulSet")
    env = redis_env(objects)
    assert env["EVENTFLOW_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "url"}}
    assert "REDIS_PASSWORD" not in env


@pytest.mark.parametrize("scenario,nodes,password", [
    ("redis-cluster",
     "redis://redis-cluster-0.redis-cluster-headless.data.svc:6379,redis://redis-cluster-1.redis-cluster-headless.data.svc:6379",
     None),
    ("redis-cluster-password-secret",
     "redis://:$(REDIS_PASSWORD)@10.0.0.1:7000,redis://eventflow:$(REDIS_PASSWORD)@10.0.0.2:7001,"
     "redis://:$(REDIS_PASSWORD)@10.0.0.3:7002",
     ("redis-auth", "password")),
    ("redis-cluster-tls-password", "rediss://:$(REDIS_PASSWORD)@redis-cluster.example.com:6380",
     (f"{FULLNAME}-redis-auth", "redis-password")),
])
def test_redis_cluster_nodes_replace_the_url_in_every_component(chart, scenario, nodes, password):
    """Cluster mode: every service gets EVENTFLOW_REDIS_CLUSTER_NODES with the password in every node
    URL, and no EVENTFLOW_REDIS_URL (the services refuse both, an environment value counting as given)."""
    values = SCENARIOS[scenario]
    objects = render(chart, values)
    assert not of_kind(objects, "StatefulSet"), "cluster mode must not deploy the bundled Redis"
    assert {d["metadata"]["name"] for d in of_kind(objects, "Deployment")} == {f"{FULLNAME}-{c}" for c in SERVICES}
    for component in SERVICES:
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        env = container_env(container)
        assert "EVENTFLOW_REDIS_URL" not in env, component
        cm = by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")
        assert not any(k.startswith("EVENTFLOW_REDIS_URL") or k == "EVENTFLOW_REDIS_CLUSTER_NODES" for k in cm["data"])
        assert env["EVENTFLOW_REDIS_CLUSTER_NODES"] == {"name": "EVENTFLOW_REDIS_CLUSTER_NODES", "value": nodes}, component
        if password:
            names = [e["name"] for e in container["env"]]
            # $(VAR) expansion needs the variable defined first.
            assert names.index("REDIS_PASSWORD") < names.index("EVENTFLOW_REDIS_CLUSTER_NODES"), component
            assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": password[0], "key": password[1]}}
            node_urls = env["EVENTFLOW_REDIS_CLUSTER_NODES"]["value"].split(",")
            assert len(node_urls) == len(values["redis"]["clusterNodes"])
            assert all(":$(REDIS_PASSWORD)@" in url for url in node_urls), node_urls
        else:
            assert "REDIS_PASSWORD" not in env, component


def test_redis_cluster_password_from_values_stays_in_its_secret(chart):
    objects = render(chart, SCENARIOS["redis-cluster-tls-password"])
    (secret,) = redis_secrets(objects)
    assert secret["metadata"]["name"] == f"{FULLNAME}-redis-auth"
    assert base64.b64decode(secret["data"]["redis-password"]).decode() == "s3cret-pw"
    everything_else = [strip(o) for o in objects if o is not secret]
    assert "s3cret-pw" not in json.dumps(everything_else), "the password leaked outside its Secret"
    # The Redis CA reaches every service like with one Redis.
    for component in SERVICES:
        assert env_file(objects, component, "EVENTFLOW_REDIS_CA_FILE") is not None, component


def test_readme_redis_cluster_example_renders_as_described(chart):
    """The values example in README.md "Redis Cluster" is valid and gives what the text says."""
    readme = (CHART / "README.md").read_text()
    section = readme.split("### Redis Cluster", 1)[1].split("\n### ", 1)[0]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    objects = render(chart, example)
    for component in SERVICES:
        env = redis_env(objects, component)
        assert "EVENTFLOW_REDIS_URL" not in env
        assert env["EVENTFLOW_REDIS_CLUSTER_NODES"]["value"] == ",".join(
            url.replace("redis://", "redis://:$(REDIS_PASSWORD)@") for url in example["redis"]["clusterNodes"])
        assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}


def test_redis_cluster_with_an_existing_secret_creates_no_secret(chart):
    objects = render(chart, SCENARIOS["redis-cluster-password-secret"])
    assert not redis_secrets(objects), "an existing Secret must not be re-created"


def statefulset_redis(objects):
    sts = by_name(objects, "StatefulSet", f"{FULLNAME}-redis")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return sts, c


def arg(args, flag):
    return args[args.index(flag) + 1]


def test_bundled_redis_gets_a_generated_password_that_only_its_secret_holds(chart):
    objects = render(chart, SCENARIOS["defaults"])
    (secret,) = redis_secrets(objects)
    assert secret["metadata"]["name"] == f"{FULLNAME}-redis-auth"
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) >= 32 and password.isalnum(), "random and URL-safe"
    everything_else = [strip(o) for o in objects if o is not secret]
    assert password not in json.dumps(everything_else), "the password leaked outside its Secret"
    ref = {"secretKeyRef": {"name": f"{FULLNAME}-redis-auth", "key": "redis-password"}}
    for component in SERVICES:
        env = redis_env(objects, component)
        assert env["REDIS_PASSWORD"]["valueFrom"] == ref
        assert env["EVENTFLOW_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
    _, c = statefulset_redis(objects)
    assert arg(c["args"], "--requirepass") == "$(REDIS_PASSWORD)"
    assert container_env(c)["REDIS_PASSWORD"]["valueFrom"] == ref
    # Another render (an upgrade where lookup sees no cluster) draws another password; with a
    # cluster, lookup keeps the installed one (templates/_helpers.tpl eventflow.generatedValue).
    assert "redis-password" in by_name(render(chart, {}), "Secret", f"{FULLNAME}-redis-auth")["data"]


def test_bundled_redis_has_maxmemory_with_noeviction(chart):
    _, c = statefulset_redis(render(chart, SCENARIOS["defaults"]))
    assert arg(c["args"], "--maxmemory-policy") == "noeviction"
    assert arg(c["args"], "--maxmemory") == "640mb"
    _, c = statefulset_redis(render(chart, {"redis": {"bundled": {"maxmemory": ""}}}))
    assert "--maxmemory" not in c["args"] and arg(c["args"], "--maxmemory-policy") == "noeviction"


def mounted_file(pod: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in `container`: a read-only directory mount
    (never subPath, so updated Secrets reach the running pod) of a Secret volume."""
    directory, name = path.rsplit("/", 1)
    (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    items = volume["secret"].get("items")
    key = name if items is None else next(i["key"] for i in items if i["path"] == name)
    return volume["secret"]["secretName"], key


def service_pod(objects, component):
    pod = by_name(objects, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container, container_env(container)


def env_file(objects, component, variable) -> tuple[str, str] | None:
    """(Secret, key) behind the file an EVENTFLOW_*_FILE variable names, or None when unset."""
    pod, container, env = service_pod(objects, component)
    if variable not in env:
        return None
    return mounted_file(pod, container, env[variable]["value"])


@pytest.mark.parametrize("scenario,secret,client_ca", [
    ("tls-existing-secret", "eventflow-tls", None),
    ("tls-cert-manager-mtls", f"{FULLNAME}-tls", (f"{FULLNAME}-tls", "ca.crt")),
    ("mtls-separate-client-ca", "eventflow-tls", ("client-ca", "ca.pem")),
])
def test_tls_certificate_is_mounted_for_reload(chart, scenario, secret, client_ca):
    objects = render(chart, SCENARIOS[scenario])
    for component in SERVICES:
        assert env_file(objects, component, "EVENTFLOW_TLS_CERT_FILE") == (secret, "tls.crt")
        assert env_file(objects, component, "EVENTFLOW_TLS_KEY_FILE") == (secret, "tls.key")
        assert env_file(objects, component, "EVENTFLOW_TLS_CLIENT_CA_FILE") == client_ca
    # TLS changes nothing about the probes (plain HTTP on the metrics port).
    _, container, _ = service_pod(objects, "publisher")
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    certificates = of_kind(objects, "Certificate")
    assert bool(certificates) == (scenario == "tls-cert-manager-mtls")


def test_tls_is_off_by_default(chart):
    objects = render(chart, SCENARIOS["defaults"])
    for component in SERVICES:
        _, _, env = service_pod(objects, component)
        assert not {n for n in env if n.startswith("EVENTFLOW_TLS_")}
    assert not of_kind(objects, "Certificate")


def test_cert_manager_certificate_names_every_service(chart):
    objects = render(chart, SCENARIOS["tls-cert-manager-mtls"])
    (cert,) = of_kind(objects, "Certificate")
    spec = cert["spec"]
    assert spec["secretName"] == f"{FULLNAME}-tls"
    assert spec["issuerRef"] == {"name": "eventflow-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "server auth" in spec["usages"]
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    for component in SERVICES:
        svc = by_name(objects, "Service", f"{FULLNAME}-{component}")["metadata"]["name"]
        for name in (svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"):
            assert name in spec["dnsNames"], name
    assert "eventflow.example.com" in spec["dnsNames"]
    only = render(chart, {**SCENARIOS["tls-cert-manager-mtls"], **SCENARIOS["only-publisher"]})
    (cert,) = of_kind(only, "Certificate")
    assert not [n for n in cert["spec"]["dnsNames"] if "subscriber" in n]


def test_network_policies_admit_labelled_clients_and_monitoring(chart):
    objects = render(chart, SCENARIOS["defaults"])
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"{FULLNAME}-{c}" for c in SERVICES} | {f"{FULLNAME}-redis"}
    instance = {"app.kubernetes.io/name": "eventflow", "app.kubernetes.io/instance": RELEASE}
    for component in SERVICES:
        policy = policies[f"{FULLNAME}-{component}"]["spec"]
        pod_labels = by_name(objects, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["policyTypes"] == ["Ingress"], "egress is not restricted"
        grpc, metrics = policy["ingress"]
        assert grpc["ports"] == [{"port": "grpc", "protocol": "TCP"}]
        assert grpc["from"] == [{"podSelector": {"matchLabels": {"eventflow-client": "true"}}},
                                {"podSelector": {"matchLabels": instance}}]
        assert instance.items() <= pod_labels.items(), "the chart's own pods match the second peer"
        assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    redis = policies[f"{FULLNAME}-redis"]["spec"]
    assert redis["ingress"] == [{"ports": [{"port": "redis", "protocol": "TCP"}],
                                 "from": [{"podSelector": {"matchLabels": instance}}]}]


def test_network_policy_options(chart):
    objects = render(chart, SCENARIOS["network-policy-clients-in-other-namespaces"])
    policy = by_name(objects, "NetworkPolicy", f"{FULLNAME}-publisher")["spec"]
    grpc, metrics, extra = policy["ingress"]
    assert grpc["from"][0] == {"podSelector": {"matchLabels": {"app": "orders"}},
                               "namespaceSelector": {"matchLabels": {"team": "orders"}}}
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    assert extra["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert not of_kind(render(chart, SCENARIOS["auth-off-no-network-policy"]), "NetworkPolicy")
    assert [p["metadata"]["name"] for p in of_kind(render(chart, EXTERNAL), "NetworkPolicy")] == [
        f"{FULLNAME}-{c}" for c in sorted(SERVICES)], "no Redis policy without the bundled Redis"


def test_bundled_redis_over_tls_with_client_certificates(chart):
    objects = render(chart, SCENARIOS["bundled-redis-tls-client-cert"])
    sts, c = statefulset_redis(objects)
    args = c["args"]
    assert arg(args, "--port") == "0", "the plain-text port is closed"
    assert arg(args, "--tls-port") == "6379"
    assert arg(args, "--tls-auth-clients") == "yes"
    assert arg(args, "--maxmemory") == "2gb"
    pod = sts["spec"]["template"]["spec"]
    for flag, key in (("--tls-cert-file", "tls.crt"), ("--tls-key-file", "tls.key"), ("--tls-ca-cert-file", "ca.crt")):
        assert mounted_file(pod, c, arg(args, flag)) == ("redis-tls", key)
    assert "--tls" in c["readinessProbe"]["exec"]["command"][-1]
    for component in SERVICES:
        env = redis_env(objects, component)
        assert env["EVENTFLOW_REDIS_URL"]["value"] == f"rediss://:$(REDIS_PASSWORD)@{FULLNAME}-redis.{NAMESPACE}.svc:6379/0"
        assert env_file(objects, component, "EVENTFLOW_REDIS_CA_FILE") == ("redis-tls", "ca.crt")
        assert env_file(objects, component, "EVENTFLOW_REDIS_CLIENT_CERT_FILE") == ("redis-client", "tls.crt")
        assert env_file(objects, component, "EVENTFLOW_REDIS_CLIENT_KEY_FILE") == ("redis-client", "tls.key")


def test_external_redis_over_tls(chart):
    objects = render(chart, SCENARIOS["external-redis-tls"])
    assert not of_kind(objects, "StatefulSet")
    for component in SERVICES:
        env = redis_env(objects, component)
        assert env["EVENTFLOW_REDIS_URL"]["value"] == "rediss://:$(REDIS_PASSWORD)@redis.example.com:6380/0"
        assert env_file(objects, component, "EVENTFLOW_REDIS_CA_FILE") == ("redis-ca", "ca.pem")
        assert env_file(objects, component, "EVENTFLOW_REDIS_CLIENT_CERT_FILE") is None


def test_auth_is_on_by_default_with_a_generated_token_that_rolls_the_pods(chart):
    objects = render(chart, SCENARIOS["defaults"])
    secret = by_name(objects, "Secret", f"{FULLNAME}-auth")
    token = base64.b64decode(secret["data"]["tokens"]).decode()
    assert len(token) >= 32 and token.isalnum()
    for component in SERVICES:
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        _, _, env = service_pod(objects, component)
        assert env["EVENTFLOW_AUTH_TOKENS"]["valueFrom"] == {"secretKeyRef": {"name": f"{FULLNAME}-auth", "key": "tokens"}}
        assert "EVENTFLOW_AUTH_FILE" not in env
        # Tokens are read at start: the checksum of the very token in the Secret rolls the pods
        # when it changes (the Secret and the Deployments are rendered from one generated value).
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/auth-tokens"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps([strip(o) for o in objects if o is not secret])


def test_auth_off(chart):
    objects = render(chart, SCENARIOS["auth-off-no-network-policy"])
    assert f"{FULLNAME}-auth" not in {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    for component in SERVICES:
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        _, _, env = service_pod(objects, component)
        assert not {n for n in env if n.startswith("EVENTFLOW_AUTH")}
        assert "checksum/auth-tokens" not in dep["spec"]["template"]["metadata"]["annotations"]
    notes = chart.render(SCENARIOS["auth-off-no-network-policy"], name=RELEASE, namespace=NAMESPACE)
    assert "WARNING: auth.enabled=false" in notes["eventflow/templates/NOTES.txt"]


def test_auth_policy_is_a_mounted_secret_file_and_metrics_can_be_protected(chart):
    objects = render(chart, SCENARIOS["auth-policy-protected-metrics"])
    secret = by_name(objects, "Secret", f"{FULLNAME}-auth-policy")
    assert json.loads(base64.b64decode(secret["data"]["policy.json"])) == POLICY
    assert f"{FULLNAME}-auth" not in {s["metadata"]["name"] for s in of_kind(objects, "Secret")}, (
        "a policy replaces the generated full-access token")
    for component in SERVICES:
        assert env_file(objects, component, "EVENTFLOW_AUTH_FILE") == (f"{FULLNAME}-auth-policy", "policy.json")
        _, _, env = service_pod(objects, component)
        assert "EVENTFLOW_AUTH_TOKENS" not in env
        assert by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")["data"]["EVENTFLOW_PROTECT_METRICS"] == "true"
        # The policy reloads in place: no checksum rolls the pods for it.
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        assert "checksum/auth-tokens" not in dep["spec"]["template"]["metadata"]["annotations"]
    for monitor in of_kind(objects, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}}
    defaults = render(chart, SCENARIOS["defaults"])
    assert "EVENTFLOW_PROTECT_METRICS" not in by_name(defaults, "ConfigMap", f"{FULLNAME}-publisher")["data"]


def test_auth_policy_and_tokens_from_existing_secrets(chart):
    objects = render(chart, SCENARIOS["auth-policy-from-secret-with-tokens"])
    assert not {s["metadata"]["name"] for s in of_kind(objects, "Secret")} & {f"{FULLNAME}-auth", f"{FULLNAME}-auth-policy"}
    for component in SERVICES:
        assert env_file(objects, component, "EVENTFLOW_AUTH_FILE") == ("eventflow-policy", "p.json")
        _, _, env = service_pod(objects, component)
        assert env["EVENTFLOW_AUTH_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "eventflow-auth", "key": "tokens"}
        # Offline, lookup sees no Secret; on an upgrade it hashes the tokens found in the cluster.
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/auth-tokens"] == hashlib.sha256(b"").hexdigest()
    for monitor in of_kind(objects, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["authorization"]["credentials"] == {"name": "eventflow-auth", "key": "tokens"}


# ------------------------------------------------------------------ availability and scaling

def test_autoscaling_pdb_and_topology_spread(chart):
    objects = render(chart, SCENARIOS["production-like"])
    hpas = {h["metadata"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert set(hpas) == {f"{FULLNAME}-publisher", f"{FULLNAME}-subscriber"}
    for name, hpa in hpas.items():
        dep = by_name(objects, "Deployment", name)
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert hpas[f"{FULLNAME}-publisher"]["spec"]["minReplicas"] == 3
    assert by_name(objects, "Deployment", f"{FULLNAME}-admin")["spec"]["replicas"] == 1

    pdbs = {p["metadata"]["name"]: p for p in of_kind(objects, "PodDisruptionBudget")}
    assert set(pdbs) == {f"{FULLNAME}-{c}" for c in ("publisher", "subscriber", "dlq", "pusher")}
    assert pdbs[f"{FULLNAME}-publisher"]["spec"] == {
        "minAvailable": "50%", "selector": pdbs[f"{FULLNAME}-publisher"]["spec"]["selector"]}
    assert pdbs[f"{FULLNAME}-subscriber"]["spec"]["maxUnavailable"] == 1

    for name, pdb in pdbs.items():
        pod_labels = by_name(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for component in SERVICES:
        dep = by_name(objects, "Deployment", f"{FULLNAME}-{component}")
        pod = dep["spec"]["template"]
        spread = pod["spec"]["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for s in spread:
            assert s["whenUnsatisfiable"] == "DoNotSchedule"
            assert s["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    publisher = by_name(objects, "Deployment", f"{FULLNAME}-publisher")["spec"]["template"]["spec"]
    assert publisher["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert publisher["imagePullSecrets"] == [{"name": "regcred"}]
    assert by_name(objects, "Service", f"{FULLNAME}-publisher")["spec"]["type"] == "LoadBalancer"


def test_topology_spread_can_be_turned_off(chart):
    objects = render(chart, SCENARIOS["topology-spread-off"])
    for dep in of_kind(objects, "Deployment"):
        assert "topologySpreadConstraints" not in dep["spec"]["template"]["spec"]


def test_config_change_rolls_only_that_service(chart):
    def checksums(values):
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in of_kind(render(chart, values), "Deployment")}
    base = checksums({})
    changed = checksums({"publisher": {"maxEventBytes": 4096}})
    assert base[f"{FULLNAME}-publisher"] != changed[f"{FULLNAME}-publisher"]
    assert base[f"{FULLNAME}-admin"] == changed[f"{FULLNAME}-admin"]
    assert checksums({"keyPrefix": "other"})[f"{FULLNAME}-admin"] != base[f"{FULLNAME}-admin"]


# ---------------------------------------------------------------------------------- monitoring

def test_monitoring_objects_are_off_by_default(chart):
    objects = render(chart, SCENARIOS["defaults"])
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [o for o in of_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]


def test_service_monitors_scrape_each_service(chart):
    objects = render(chart, SCENARIOS["monitoring"])
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    assert set(monitors) == {f"{FULLNAME}-{c}" for c in SERVICES}
    for name, mon in monitors.items():
        svc = by_name(objects, "Service", name)
        assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert mon["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}
    only = render(chart, {**SCENARIOS["only-publisher"], "metrics": {"serviceMonitor": {"enabled": True}}})
    assert [m["metadata"]["name"] for m in of_kind(only, "ServiceMonitor")] == [f"{FULLNAME}-publisher"]


def test_prometheus_rule_carries_the_alerts_file(chart):
    objects = render(chart, SCENARIOS["monitoring"])
    (rule,) = of_kind(objects, "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == alerts


def test_grafana_dashboard_configmap(chart):
    objects = render(chart, SCENARIOS["monitoring"])
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "eventflow"}
    shipped = json.loads((DEPLOY / "grafana" / "dashboards" / "eventflow.json").read_text())
    assert json.loads(cm["data"]["eventflow.json"]) == shipped


@pytest.mark.parametrize("copy_in_chart,original", [
    ("dashboards/eventflow.json", "grafana/dashboards/eventflow.json"),
    ("files/alerts.yml", "prometheus/alerts.yml"),
])
def test_chart_copies_match_deploy_files(copy_in_chart, original):
    """Helm cannot read outside the chart, so it ships copies; they must not drift."""
    assert (CHART / copy_in_chart).read_bytes() == (DEPLOY / original).read_bytes(), (
        f"helm/eventflow/{copy_in_chart} differs from deploy/{original}: "
        f"cp deploy/{original} helm/eventflow/{copy_in_chart}")


def test_dashboard_and_alerts_use_known_eventflow_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "eventflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"panel query without an eventflow metric: {expr}"
        used |= names
    assert used <= KNOWN_METRICS, f"unknown metrics {used - KNOWN_METRICS}"
    missing = KNOWN_METRICS - used - {"eventflow_duplicates_total"}
    assert not missing, f"dashboard does not show {missing}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]

    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules)
    for r in rules:
        assert metric_names(r["expr"]) <= KNOWN_METRICS, r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"]


# ---------------------------------------------------------------------------------- NOTES.txt

def test_notes_tell_how_to_reach_the_services(chart):
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)["eventflow/templates/NOTES.txt"]
    for component, spec in SERVICES.items():
        assert f"{FULLNAME}-{component}.{NAMESPACE}.svc:{spec['grpc_port']}" in notes
        assert spec["health"] in notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-publisher 50051:50051" in notes
    assert "appendfsync everysec" in notes
    assert f'TOKEN=$(kubectl -n {NAMESPACE} get secret {FULLNAME}-auth' in notes
    assert '-H "authorization: Bearer $TOKEN" localhost:50051 list' in notes
    assert f"need the labels eventflow-client=true (in namespace {NAMESPACE})" in notes
    only_admin = chart.render({"publisher": {"enabled": False}, "subscriber": {"enabled": False}, "dlq": {"enabled": False}},
                              name=RELEASE, namespace=NAMESPACE)["eventflow/templates/NOTES.txt"]
    assert f"port-forward svc/{FULLNAME}-admin 50053:50053" in only_admin
    assert "publisher" not in only_admin.split("Wait until")[0]


# ------------------------------------------------------------------------------ wrong values

@pytest.mark.parametrize("values,path,reason", [
    ({"publisher": {"grpcPort": "50051"}}, "/publisher/grpcPort", "want integer"),
    ({"publisher": {"grpcPort": 70000}}, "/publisher/grpcPort", "maximum"),
    ({"subscriber": {"replicas": 3}}, "/subscriber", "'replicas' not allowed"),
    ({"dlq": {"enabled": "yes"}}, "/dlq/enabled", "want boolean"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"),
    ({"redis": {"url": "http://redis:6379"}}, "/redis/url", "does not match pattern"),
    ({"redis": {"bundled": {"appendfsync": "no"}}}, "/redis/bundled/appendfsync", "'always', 'everysec'"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot", "must be true"),
    ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser", "minimum"),
    ({"otel": {"sampler": "sometimes"}}, "/otel/sampler", "must be one of"),
    ({"otel": {"samplerArg": "1.5"}}, "/otel/samplerArg", "does not match pattern"),
    ({"keyPrefix": "has space"}, "/keyPrefix", "does not match pattern"),
    ({"publisher": {"resources": {"limits": {"memory": "lots"}}}}, "/publisher/resources/limits/memory", "does not match pattern"),
    ({"metrics": {"serviceMonitor": {"interval": 30}}}, "/metrics/serviceMonitor/interval", "want string"),
    ({"probes": {"liveness": {"periodSeconds": 0}}}, "/probes/liveness/periodSeconds", "minimum"),
    ({"unknownTopLevel": 1}, "'unknownTopLevel' not allowed", ""),
    ({"tls": {"enabled": "yes"}}, "/tls/enabled", "want boolean"),
    ({"tls": {"certManager": {"duration": "90 days"}}}, "/tls/certManager/duration", "does not match pattern"),
    ({"networkPolicy": {"clientLabel": {"eventflow-client": None}}}, "/networkPolicy/clientLabel", "minProperties"),
    ({"redis": {"bundled": {"maxmemory": "lots"}}}, "/redis/bundled/maxmemory", "does not match pattern"),
    ({"auth": {"policy": "allow-all"}}, "/auth/policy", "want object"),
    ({"redis": {"clusterNodes": "redis://a:7000,redis://b:7001"}}, "/redis/clusterNodes", "want array"),
    ({"redis": {"clusterNodes": ["http://a:7000"]}}, "/redis/clusterNodes/0", "does not match pattern"),
    ({"redis": {"clusterNodes": ["redis://a:7000", "redis://b:7001,redis://c:7002"]}}, "/redis/clusterNodes/1",
     "does not match pattern"),
    ({"redis": {"clusterNodes": ["redis://a:7000/0"]}}, "/redis/clusterNodes/0", "does not match pattern"),
    ({"redis": {"clusterNodes": ["redis://a:7000", "redis://a:7000"]}}, "/redis/clusterNodes", "are equal"),
])
def test_schema_rejects_wrong_values_readably(chart, values, path, reason):
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    message = str(err.value)
    assert path in message and reason in message, message
    # One line per problem, naming the value's path: no Go stack traces or template dumps.
    assert len(message.splitlines()) <= 4, message
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize("values,expected", [
    ({"redis": {"url": "redis://r:6379"}}, "set redis.bundled.enabled=false"),
    ({"redis": {"bundled": {"enabled": False}}}, "no Redis configured: set redis.url"),
    ({"redis": {"password": "a", "existingSecret": "s"}}, "either redis.password or redis.existingSecret"),
    ({"redis": {"existingSecretUrlKey": "url", "bundled": {"enabled": False}}}, "redis.existingSecret (the Secret's name) is empty"),
    ({"redis": {"url": "redis://:hunter2@r:6379", "bundled": {"enabled": False}}}, "redis.url contains a password"),
    ({c: {"enabled": False} for c in SERVICES}, "every service is disabled"),
    ({"tls": {"enabled": True}}, "tls.enabled needs a certificate"),
    ({"tls": {"enabled": True, "existingSecret": "t", "certManager": {"enabled": True, "issuerRef": {"name": "i"}}}},
     "either tls.existingSecret or tls.certManager.enabled"),
    ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "needs tls.certManager.issuerRef.name"),
    ({"tls": {"clientCA": {"enabled": True}}}, "set tls.enabled=true"),
    ({"auth": {"policy": {"a": 1}, "policyExistingSecret": "p"}}, "either auth.policy or auth.policyExistingSecret"),
    ({"auth": {"enabled": False}, "metrics": {"protect": True}}, "metrics.protect needs auth.enabled=true"),
    ({"auth": {"policy": {"a": 1}}, "metrics": {"protect": True, "serviceMonitor": {"enabled": True}}},
     "set metrics.serviceMonitor.tokenSecret.name"),
    ({"redis": {"tls": {"enabled": True}}}, "redis.tls.enabled needs redis.tls.existingSecret"),
    ({"relay": {"enabled": True}}, "relay.database.existingSecret"),
    ({"redis": {"url": "redis://r:6379", "bundled": {"enabled": False}, "tls": {"enabled": True, "existingSecret": "c"}}},
     "redis.url is not rediss://"),
    ({"redis": {"tls": {"clientCert": {"existingSecret": "c"}}}}, "needs redis.tls.enabled=true"),
    ({"redis": {"clusterNodes": ["redis://a:7000"]}}, "set redis.bundled.enabled=false"),
    ({"redis": {"clusterNodes": ["redis://a:7000"], "url": "redis://r:6379", "bundled": {"enabled": False}}},
     "either redis.url (one Redis) or redis.clusterNodes"),
    ({"redis": {"clusterNodes": ["redis://a:7000"], "existingSecret": "s", "existingSecretUrlKey": "url",
                "bundled": {"enabled": False}}}, "redis.existingSecretUrlKey (one whole URL) cannot be used"),
    ({"redis": {"clusterNodes": ["redis://a:7000", "redis://:hunter2@b:7001"], "bundled": {"enabled": False}}},
     "redis.clusterNodes URL contains a password"),
    ({"redis": {"clusterNodes": ["redis://a:7000", "rediss://b:7001"], "bundled": {"enabled": False}}},
     "mixes redis:// and rediss://"),
    ({"redis": {"clusterNodes": ["redis://a:7000"], "bundled": {"enabled": False},
                "tls": {"enabled": True, "existingSecret": "c"}}}, "redis.clusterNodes are not rediss://"),
])
def test_inconsistent_values_fail_with_one_clear_line(chart, values, expected):
    with pytest.raises(helm.HelmRenderError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert expected in str(err.value), str(err.value)


def test_push_allow_private_reaches_the_admin_and_the_pusher_only(chart):
    def flag(objects, component):
        return by_name(objects, "ConfigMap", f"{FULLNAME}-{component}")["data"].get("EVENTFLOW_PUSH_ALLOW_PRIVATE")

    defaults = render(chart, SCENARIOS["defaults"])
    assert {c: flag(defaults, c) for c in SERVICES} == {c: None for c in SERVICES}
    assert by_name(defaults, "ConfigMap", f"{FULLNAME}-pusher")["data"]["EVENTFLOW_PUSH_POLL_MS"] == "5000"
    allowed = render(chart, {"pushAllowPrivate": True})
    assert {c for c in SERVICES if flag(allowed, c) == "true"} == {"admin", "pusher"}


def test_archive_takes_its_database_url_from_a_secret_and_settings_its_binary_accepts(chart):
    objects = render(chart, SCENARIOS["archive"])
    dep = by_name(objects, "Deployment", f"{FULLNAME}-archive")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/usr/local/bin/eventflow-archive"]
    env = container_env(container)
    assert env["EVENTFLOW_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "archive-db", "key": "url"}
    data = by_name(objects, "ConfigMap", f"{FULLNAME}-archive")["data"]
    assert data["EVENTFLOW_ARCHIVE_STREAMS"] == "orders,payments"
    assert data["EVENTFLOW_ARCHIVE_RETENTION_DAYS"] == "30"
    assert data["EVENTFLOW_GRPC_ADDR"] == "0.0.0.0:50055" and data["EVENTFLOW_METRICS_ADDR"] == "0.0.0.0:9095"
    accepted = help_envs(binary_help("eventflow-archive"))
    names = {n for n in set(data) | set(env) if n.startswith("EVENTFLOW_")}
    assert names <= accepted, f"not accepted by eventflow-archive: {sorted(names - accepted)}"
    assert not [o for o in render(chart, {}) if o["metadata"]["name"] == f"{FULLNAME}-archive"], "off by default"


def test_archive_without_its_database_secret_fails_with_one_clear_line(chart):
    with pytest.raises(helm.HelmRenderError) as err:
        chart.render({"archive": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    assert "archive.database.existingSecret" in str(err.value), str(err.value)


def test_relay_is_off_by_default_and_reads_its_database_url_from_a_secret(chart):
    spec = OPTIONAL_SERVICES["relay"]
    name = f"{FULLNAME}-relay"
    defaults = render(chart, SCENARIOS["defaults"])
    assert not [o for o in defaults if o["metadata"]["name"] == name], "the relay needs a database: off by default"
    objects = render(chart, SCENARIOS["relay"])
    for kind in ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"):
        by_name(objects, kind, name)
    dep = by_name(objects, "Deployment", name)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [f"/usr/local/bin/{spec['binary']}"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": spec["grpc_port"], "metrics": spec["metrics_port"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = container_env(container)
    assert env["EVENTFLOW_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "outbox-db", "key": "dsn"}
    data = by_name(objects, "ConfigMap", name)["data"]
    assert data["EVENTFLOW_GRPC_ADDR"] == f"0.0.0.0:{spec['grpc_port']}"
    assert data["EVENTFLOW_RELAY_WORKERS"] == "4"
    assert data["EVENTFLOW_RELAY_BATCH_SIZE"] == "1000"
    assert "EVENTFLOW_NO_MIGRATE" not in data
    names = set(data) | set(env)
    accepted = help_envs(binary_help(spec["binary"]))
    unknown = {n for n in names if n.startswith("EVENTFLOW_")} - accepted
    assert not unknown, f"relay: the binary does not accept {sorted(unknown)}"
