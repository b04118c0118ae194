"""Every object the kustomizations render validates, strictly (unknown fields are errors).

Built-in kinds: kubernetes-validate's strict JSON schemas of Kubernetes 1.33. KubeRay kinds: the
RayCluster/RayJob CRD openAPIV3Schema with every object closed. Prometheus Operator kinds: a closed,
hand-written subset (their CRDs are not available offline). The last tests show each check can fail.
"""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from orchestration.kuberay import CustomResourceError, schema_errors, validate_custom_resource
from tests.deploy.helpers import (
    DEPLOY,
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    MONITORING_SCHEMAS,
    find,
    rendered,
)

CUSTOM_GROUPS = ("ray.io/", "monitoring.coreos.com/")


def validate_builtin(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomization_renders(name: str) -> None:
    objects = rendered(name)
    assert objects, f"{name} rendered nothing"
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in {name}: {keys}"
    assert {o["metadata"].get("namespace", "solrl") for o in objects if o["kind"] != "Namespace"} == {"solrl"}


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_builtin_objects_validate_strictly(name: str) -> None:
    failures = []
    for obj in rendered(name):
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            validate_builtin(obj)
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {err.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_raycluster_validates_against_crd(name: str, raycluster_schema: dict) -> None:
    (cluster,) = find(rendered(name), "RayCluster")
    assert schema_errors(cluster, raycluster_schema) == []


def test_monitors_validate() -> None:
    objects = rendered("monitoring")
    monitors = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in monitors} == {"PodMonitor", "ServiceMonitor"}
    for obj in monitors:
        validate_custom_resource(obj, MONITORING_SCHEMAS[obj["kind"]])


def test_every_rendered_kind_is_checked() -> None:
    known_custom = {"RayCluster", *MONITORING_SCHEMAS}
    for name in KUSTOMIZATIONS:
        for obj in rendered(name):
            if obj["apiVersion"].startswith(CUSTOM_GROUPS):
                assert obj["kind"] in known_custom, f"no schema checks {obj['kind']} in {name}"


def test_grafana_dashboard_configmap_holds_the_json() -> None:
    (cm,) = find(rendered("monitoring"), "ConfigMap", "solrl-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["solrl-dashboard.json"]) == json.loads(
        (DEPLOY / "monitoring" / "solrl-dashboard.json").read_text())


# -- the checks can fail -------------------------------------------------------------------------------


def test_misspelled_raycluster_field_is_rejected(raycluster_schema: dict) -> None:
    (cluster,) = find(rendered("prod"), "RayCluster")
    bad = copy.deepcopy(cluster)
    group = bad["spec"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = dict(schema_errors(bad, raycluster_schema))
    assert "spec.workerGroupSpecs.0" in errors  # maxReplica unknown / maxReplicas missing
    assert "spec.headGroupSpec.template.spec.containers.0" in errors
    with pytest.raises(CustomResourceError, match="imagePullPolicyy"):
        validate_custom_resource(bad, raycluster_schema)


def test_wrong_type_in_raycluster_is_rejected(raycluster_schema: dict) -> None:
    (cluster,) = find(rendered("dev"), "RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["minReplicas"] = "zero"
    bad["spec"]["authOptions"]["mode"] = "password"
    paths = {path for path, _ in schema_errors(bad, raycluster_schema)}
    assert paths == {"spec.workerGroupSpecs.0.minReplicas", "spec.authOptions.mode"}


def test_misspelled_builtin_field_is_rejected() -> None:
    (deployment,) = find(rendered("prod"), "Deployment", "solrl-api")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate_builtin(bad)


def test_misspelled_monitor_field_is_rejected() -> None:
    (monitor,) = find(rendered("monitoring"), "PodMonitor")
    bad = copy.deepcopy(monitor)
    bad["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(CustomResourceError, match="intervall"):
        validate_custom_resource(bad, MONITORING_SCHEMAS["PodMonitor"])
