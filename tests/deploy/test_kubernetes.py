"""deploy/kubernetes: rendered with `kubectl kustomize` (offline) and checked against the
Kubernetes and KEDA schemas, then against what the product needs of them."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.manifests import (
    BASE,
    GPU_OVERLAY,
    Manifests,
    Object,
    env,
    expand,
    needs_kubectl,
    render,
    tungsten_command,
)
from tests.support import ROOT
from tungstenkit._queue import Snapshot
from tungstenkit._settings import Settings
from tungstenkit.app.prometheus import render as render_metrics

pytestmark = needs_kubectl

HERE = ROOT / "tests" / "deploy"
#: The oldest Kubernetes the manifests claim (README), and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
#: The metadata keys KEDA's metrics-api scaler reads (pkg/scalers/metrics_api_scaler.go).
METRICS_API_KEYS = {
    "url",
    "format",
    "valueLocation",
    "targetValue",
    "activationTargetValue",
    "unsafeSsl",
    "aggregateFromKubeServiceEndpoints",
    "aggregationType",
    "timeout",
}
#: How long the worker's terminationGracePeriodSeconds lets a batch run after SIGTERM.
BATCH_BUDGET_S = 60


@pytest.fixture(scope="module", params=["base", "gpu"])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return render(BASE if request.param == "base" else GPU_OVERLAY)


@functools.cache
def _keda_validator() -> jsonschema.protocols.Validator:
    schema = yaml.safe_load((HERE / "schemas" / "keda-scaledobject-v2.20.2.yaml").read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as the API server's strict field validation (kubectl's
    default) does: an object schema that lists its properties admits no others."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(schema)
    return schema


def _labels_match(selector: Object, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _pod_labels(workload: Object) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def _selected(manifests: Manifests, selector: Object) -> list[str]:
    return [w["metadata"]["name"] for w in manifests.workloads() if _labels_match(selector, _pod_labels(w))]


def _settings_of(manifests: Manifests, container: Object) -> Settings:
    """The settings the container's process reads: its ConfigMap, then its own env."""
    environ = dict(manifests.config())
    environ.update({name: e["value"] for name, e in env(container).items() if "value" in e})
    return Settings.from_env(environ)


def test_every_object_is_valid_for_kubernetes(manifests: Manifests) -> None:
    known = [v.rsplit(".", 1)[0] for v in all_versions()]
    assert KUBERNETES_VERSIONS[0] in known, f"this kubernetes-validate has no schemas for {KUBERNETES_VERSIONS[0]}"
    kinds = set()
    for obj in manifests.objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        kinds.add(obj["kind"])
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert kinds == {"ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}


def test_the_scaled_object_is_valid_for_keda(manifests: Manifests) -> None:
    (scaled,) = manifests.of_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    _keda_validator().validate(scaled)
    spec = scaled["spec"]
    # The CRD's CEL rule, which jsonschema does not run.
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "metrics-api"
    assert set(trigger["metadata"]) <= METRICS_API_KEYS
    # Fallback applies only to AverageValue metrics.
    assert trigger.get("metricType", "AverageValue") == "AverageValue" and spec["fallback"]["replicas"] >= 1


def test_the_keda_schema_catches_a_misspelt_field(manifests: Manifests) -> None:
    (scaled,) = copy.deepcopy(manifests.of_kind("ScaledObject"))
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        _keda_validator().validate(scaled)


def test_the_workers_scale_on_the_queued_inputs_that_the_api_reports(manifests: Manifests) -> None:
    (scaled,) = manifests.of_kind("ScaledObject")
    spec = scaled["spec"]
    worker = manifests.one("Deployment", spec["scaleTargetRef"]["name"])
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert worker["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    # KEDA owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in worker["spec"]
    metadata = spec["triggers"][0]["metadata"]
    assert metadata["format"] == "prometheus"
    metric = metadata["valueLocation"]
    exposed = render_metrics(Snapshot(queued_inputs=0, metrics={}, workers=[], webhook_events_waiting=0), "m")
    # A gauge of /metrics, without labels.
    (sample,) = [s for f in text_string_to_metric_families(exposed) for s in f.samples if s.name == metric]
    assert sample.labels == {} and sample.value == 0
    # KEDA runs in its own namespace: the URL names the API's Service in this one.
    url = urlsplit(metadata["url"])
    service, namespace, svc = url.hostname.split(".")  # type: ignore[union-attr]
    assert (namespace, svc) == (scaled["metadata"]["namespace"], "svc")
    api = manifests.one("Service", service)
    assert api["metadata"]["namespace"] == namespace
    assert url.port in [p["port"] for p in api["spec"]["ports"]]
    assert url.path == "/metrics" and url.scheme == "http"
    assert _selected(manifests, {"matchLabels": api["spec"]["selector"]}) == ["tungsten-api"]
    assert float(metadata["targetValue"]) > 0 and float(metadata["activationTargetValue"]) == 0


def test_the_api_and_the_workers_run_the_same_model_from_the_config(manifests: Manifests) -> None:
    config = manifests.config()
    (config_map,) = manifests.of_kind("ConfigMap")
    contexts = {}
    for name, role in (("tungsten-api", "serve"), ("tungsten-worker", "worker")):
        container = manifests.container("Deployment", name)
        assert container["image"].startswith("tungsten-serving")
        assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
        args = [expand(a, config) for a in container["args"]]
        context = contexts[role] = tungsten_command(args)
        assert context.info_name == role
    model = config["MODEL"]
    assert {c.params["model"] for c in contexts.values()} == {model}
    assert (ROOT / model / "tungsten_model.py").is_file(), "the image holds no such model"
    assert contexts["serve"].params["workers"] == 0
    (port,) = manifests.container("Deployment", "tungsten-api")["ports"]
    assert contexts["serve"].params["port"] == port["containerPort"]
    assert contexts["serve"].params["host"] == "0.0.0.0"


def test_the_redis_password_comes_from_the_secret_everywhere(manifests: Manifests) -> None:
    assert manifests.of_kind("Secret") == []  # created by hand, never in the manifests
    from_secret = {"secretKeyRef": {"name": "tungsten-redis", "key": "password"}}
    redis = manifests.container("StatefulSet", "tungsten-redis")
    assert env(redis)["REDIS_PASSWORD"]["valueFrom"] == from_secret
    assert env(redis)["REDISCLI_AUTH"]["valueFrom"] == from_secret
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    service = manifests.one("Service", "tungsten-redis")
    assert _selected(manifests, {"matchLabels": service["spec"]["selector"]}) == ["tungsten-redis"]
    (port,) = service["spec"]["ports"]
    for name in ("tungsten-api", "tungsten-worker"):
        container = manifests.container("Deployment", name)
        names = [e["name"] for e in container["env"]]
        # Kubernetes expands $(VAR) only from variables defined before.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
        assert env(container)["REDIS_PASSWORD"]["valueFrom"] == from_secret
        url = env(container)["REDIS_URL"]["value"]
        assert url == f"redis://:$(REDIS_PASSWORD)@tungsten-redis:{port['port']}/0"
        assert _settings_of(manifests, container).redis_url == url  # the product reads REDIS_URL
    for obj in manifests.objects:
        assert "change-me" not in yaml.safe_dump(obj)


def test_redis_appends_every_write_to_a_persistent_volume(manifests: Manifests) -> None:
    statefulset = manifests.one("StatefulSet", "tungsten-redis")
    args = manifests.container("StatefulSet", "tungsten-redis")["args"]
    assert args[0] == "redis-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    data_dir = args[args.index("--dir") + 1]
    (mount,) = manifests.container("StatefulSet", "tungsten-redis")["volumeMounts"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mount == {"name": claim["metadata"]["name"], "mountPath": data_dir}
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert statefulset["spec"]["replicas"] == 1


def test_api_probes_ask_only_whether_this_api_takes_predictions(manifests: Manifests) -> None:
    container = manifests.container("Deployment", "tungsten-api")
    (port,) = container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/health?scope=api", port["name"]), probe
    # Startup outlasts the wait for Redis, so a pod that starts before Redis is not restarted.
    startup = container["startupProbe"]
    settings = _settings_of(manifests, container)
    assert startup["periodSeconds"] * startup["failureThreshold"] > settings.redis_connect_timeout_s + 30


def test_termination_grace_outlasts_the_drain_and_a_batch(manifests: Manifests) -> None:
    api = manifests.one("Deployment", "tungsten-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = _settings_of(manifests, container)
    # `tungsten serve` gives the API, then the webhook processes, TUNGSTEN_SHUTDOWN_GRACE_S + 5
    # each; the drain is part of the API's share.
    assert settings.drain_s < 5
    assert api["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + 2 * (settings.shutdown_grace_s + 5)
    worker = manifests.one("Deployment", "tungsten-worker")["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    settings = _settings_of(manifests, container)
    # The reader thread's join (5 s), the batch, then the results' writes.
    assert worker["terminationGracePeriodSeconds"] >= 5 + BATCH_BUDGET_S + settings.shutdown_grace_s


def test_services_budgets_and_policies_select_the_pods_they_mean(manifests: Manifests) -> None:
    for service in manifests.of_kind("Service"):
        (selected,) = _selected(manifests, {"matchLabels": service["spec"]["selector"]})
        workload = next(w for w in manifests.workloads() if w["metadata"]["name"] == selected)
        ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    budgets = {
        budget["metadata"]["name"]: _selected(manifests, budget["spec"]["selector"])
        for budget in manifests.of_kind("PodDisruptionBudget")
    }
    assert budgets == {"tungsten-api": ["tungsten-api"], "tungsten-worker": ["tungsten-worker"]}
    (policy,) = manifests.of_kind("NetworkPolicy")
    assert _selected(manifests, policy["spec"]["podSelector"]) == ["tungsten-redis"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert sorted(_selected(manifests, peer["podSelector"])) == ["tungsten-api", "tungsten-worker"]


def test_every_pod_runs_unprivileged_on_a_read_only_root(manifests: Manifests) -> None:
    for workload in manifests.workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        # Service links would add TUNGSTEN_API_PORT and the like, in the settings' prefix.
        assert pod["enableServiceLinks"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name


def test_the_api_and_workers_write_to_an_empty_tmp_and_keep_the_images_model_store(manifests: Manifests) -> None:
    image_home = re.search(r"TUNGSTEN_HOME=(\S+)", (ROOT / "Dockerfile").read_text())
    assert image_home is not None
    for name in ("tungsten-api", "tungsten-worker"):
        pod = manifests.one("Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/tmp"] in empty_dirs and env(container)["HOME"]["value"] == "/tmp", name
        # Models built into the image (`tungsten build`) live in its TUNGSTEN_HOME: nothing hides it.
        assert "TUNGSTEN_HOME" not in env(container) and "TUNGSTEN_HOME" not in manifests.config(), name
        assert not any(image_home.group(1).startswith(path) for path in mounts), name


def test_only_the_gpu_overlay_gives_workers_a_gpu() -> None:
    base, gpu = render(BASE), render(GPU_OVERLAY)
    for manifests in (base, gpu):
        for workload in manifests.workloads():
            if workload["metadata"]["name"] != "tungsten-worker":
                for container in workload["spec"]["template"]["spec"]["containers"]:
                    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in base.container("Deployment", "tungsten-worker")["resources"]["limits"]
    worker = gpu.one("Deployment", "tungsten-worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert toleration in worker["spec"]["template"]["spec"]["tolerations"]
    # A rolling update needs no spare GPU.
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    (scaled,) = gpu.of_kind("ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] < base.of_kind("ScaledObject")[0]["spec"]["maxReplicaCount"]
    # Everything else is the base's.
    assert container["args"] == base.container("Deployment", "tungsten-worker")["args"]
