"""deploy/k8s and deploy/kserve offline: every manifest passes Kubernetes' schemas
(kubernetes-validate, strict: unknown fields fail), and its flags, variables, ports, probes,
selectors and volumes agree with clfserve's settings and with each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import (
    DEPLOY,
    PORTS,
    documents,
    flags,
    settings_from,
    unknown_variables,
)

K8S_VERSION = kubernetes_validate.latest_version()
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
KSERVE = DEPLOY / "kserve"


def by_kind(folder: Path) -> dict[str, dict[str, Any]]:
    """Each kind's document; Services by name as `Service/<name>`."""
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in documents(path):
            kind = doc["kind"]
            found[f"Service/{doc['metadata']['name']}" if kind == "Service" else kind] = doc
    return found


def as_pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    """A Pod around a custom resource's containers, so the core schema checks them."""
    metadata = {"name": "check"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers},
    }


def test_every_manifest_is_there() -> None:
    assert {p.name for p in MANIFESTS} == {
        "deployment.yaml",
        "service.yaml",
        "service-headless.yaml",
        "hpa.yaml",
        "pdb.yaml",
    }
    assert set(by_kind(KSERVE)) == {"ServingRuntime", "InferenceService"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_schema(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_schema_rejects_a_typo() -> None:
    """The check above can fail: a misspelt field is an error in strict mode."""
    deployment = by_kind(DEPLOY / "k8s")["Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_matches_the_settings(help_text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    k8s = by_kind(DEPLOY / "k8s")
    pod = k8s["Deployment"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert not unknown_variables(list(env))
    assert all(flag in help_text for flag in flags(container["args"]))
    settings = settings_from(container["args"], env, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": settings.port,
        "http": settings.rest_port,
        "metrics": settings.metrics_port,
    }
    assert ports == dict(zip(("grpc", "http", "metrics"), PORTS.values(), strict=True))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == settings.port, probe  # our health service
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[str(settings.repository)]]
    assert set(mounts.values()) <= set(volumes)
    cache = env["CLFSERVE_RUNTIME_CACHE"]  # writable though the root filesystem is read-only
    assert any(
        cache.startswith(path) and "emptyDir" in volumes[name] for path, name in mounts.items()
    )
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.grace


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    k8s = by_kind(DEPLOY / "k8s")
    deployment = k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = k8s["Service/clfserve"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert {p["targetPort"]: p["port"] for p in service["ports"]} == names
    headless = k8s["Service/clfserve-headless"]["spec"]  # pod IPs for client-side balancing
    assert headless["clusterIP"] == "None" and headless["selector"] == service["selector"]
    assert [(p["targetPort"], p["port"]) for p in headless["ports"]] == [("grpc", names["grpc"])]
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (
        k8s["PodDisruptionBudget"]["spec"]["minAvailable"]
        < k8s["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    )


def test_kserve_runtime_and_inference_service(
    help_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kserve = by_kind(KSERVE)
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    containers = runtime["spec"]["containers"]
    kubernetes_validate.validate(as_pod(containers), K8S_VERSION, strict=True)
    [container] = containers
    assert container["name"] == "kserve-container"  # the name KServe looks for
    assert all(flag in help_text for flag in flags(container["args"]))
    env = {item["name"]: item["value"] for item in container["env"]}
    assert not unknown_variables(list(env))
    settings = settings_from(container["args"], env, monkeypatch)
    assert str(settings.repository) == "/mnt/models"  # where KServe puts the storageUri
    [port] = container["ports"]
    assert port["containerPort"] == settings.rest_port == 8080  # KServe's HTTP port
    assert container["readinessProbe"]["httpGet"]["port"] == settings.rest_port
    assert "v2" in runtime["spec"]["protocolVersions"]
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    sized = {"name": "model", "image": container["image"], "resources": model["resources"]}
    kubernetes_validate.validate(as_pod([sized]), K8S_VERSION, strict=True)
