"""deploy/kubernetes as an operator applies it: the Kustomize base and the KEDA overlay
render with `kubectl kustomize`, every object validates offline against Kubernetes'
schemas (the `kubernetes-validate` package), and the settings the manifests give the
processes are ones cs-relay reads and accepts, with the sizes that go with them (replicas
within the partition count, enough for standbys, a grace period above the shutdown)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.cli.commands import _parser
from streams.runtime.topics import by_user_topic_name
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"
# The Kubernetes release whose schemas the objects must satisfy: the client's (kubectl 1.32)
# and every later one the package knows.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
# Variables the manifests set for Kubernetes' own `$(NAME)` expansion, not for cs-relay.
EXPANSION_ONLY = {"POD_NAME"}
POD = "cs-relay-worker-0"


def render(folder: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/kubernetes (these machines have it at /usr/bin/kubectl)"
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render("base")


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc["metadata"]["name"], container


def environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with, as Kubernetes builds it: envFrom first,
    then env, `$(NAME)` expanded from what came before; secrets with placeholder values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(one(docs, "Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            value = item["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[item["name"]] = value
        elif "fieldRef" in item["valueFrom"]:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = POD
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = one(docs, "Secret", ref["name"])["stringData"]
            assert ref["key"] in secret, f"{item['name']}: the Secret has no key {ref['key']}"
            env[item["name"]] = secret[ref["key"]]
    return env


class Recording(dict):
    """An environment that remembers every variable cs-relay's settings asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def known_variables() -> set[str]:
    env = Recording({})
    Settings.from_env(env)
    return env.asked


@pytest.mark.parametrize("folder", ["base", "keda"])
def test_every_object_validates_against_the_kubernetes_schemas(folder):
    docs = render(folder)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: test_keda_scales_the_worker_within_the_partitions checks it
        for release in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, release, strict=True)
        checked += 1
    assert checked >= 7, [d["kind"] for d in docs]


def test_a_broken_object_is_refused_by_the_same_validation(base):
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    worker = one(base, "StatefulSet", "cs-relay-worker")
    misspelt = {**worker, "spec": {**worker["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[0], strict=True)
    wrong_type = {**worker, "spec": {**worker["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[0], strict=True)


def test_every_variable_the_manifests_set_is_one_cs_relay_reads(base):
    known = known_variables()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "CS_RELAY_ADMIN_TOKEN", "CSB_API_KEY"} <= known  # the recording works
    for name, container in containers(base):
        unknown = set(environment(base, container)) - known - EXPANSION_ONLY
        assert not unknown, f"{name} sets variables cs-relay does not read: {sorted(unknown)}"


def test_the_settings_the_manifests_give_are_accepted(base):
    for name, container in containers(base):
        errors: list[str] = []
        Settings.from_env(environment(base, container), errors=errors)
        assert not errors, f"{name}: {errors}"


def test_the_worker_is_sized_by_its_settings(base):
    worker = one(base, "StatefulSet", "cs-relay-worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    settings = Settings.from_env(environment(base, container))
    replicas = worker["spec"]["replicas"]
    assert replicas <= settings.topic_partitions, "a worker beyond the partition count gets no partition"
    if settings.standby_replicas:
        assert replicas >= settings.standby_replicas + 1, "standbys need another worker to live on"
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout + 10, "the worker must be allowed to finish its graceful stop"
    assert settings.web_host == "0.0.0.0" and settings.admin_token, "reachable by peers, so behind the token"
    assert settings.web_advertised_host == f"{POD}.{worker['spec']['serviceName']}"
    assert str(settings.data_dir) == container["volumeMounts"][0]["mountPath"]
    assert [t["metadata"]["name"] for t in worker["spec"]["volumeClaimTemplates"]] == ["data"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == settings.web_port
    service = one(base, "Service", worker["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True


def test_the_commands_the_manifests_run_exist(base):
    for name, container in containers(base):
        args = _parser().parse_args(container["args"])
        assert args.command == container["args"][0], name
    ingest = one(base, "Deployment", "cs-relay-ingest")
    (container,) = ingest["spec"]["template"]["spec"]["containers"]
    assert environment(base, container)["CS_RELAY_WRITE_KEYS"], "the ingest starts only with a write key"


def test_keda_scales_the_worker_within_the_partitions():
    docs = render("keda")
    scaled = one(docs, "ScaledObject", "cs-relay-worker")
    worker = one(docs, "StatefulSet", "cs-relay-worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    settings = Settings.from_env(environment(docs, container))
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "cs-relay-worker"}
    assert settings.standby_replicas + 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= settings.topic_partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.app_id
    assert trigger["metadata"]["topic"] == by_user_topic_name(settings.app_id)
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap_servers
