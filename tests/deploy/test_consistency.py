"""The manifests agree with the code: role resources, ports, metric names, pinned versions."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from orchestration import ports
from orchestration.cluster import ROLE_RESOURCES
from orchestration.metrics import ray_metric_names
from tests.deploy.helpers import DEPLOY, DOCKER, REPO, find, grafana_queries, promql_metric_names, rendered

RAY_CONTAINER_PORTS = {"gcs-server": ports.RAY_GCS_PORT, "dashboard": ports.RAY_DASHBOARD_PORT,
                       "client": ports.RAY_CLIENT_PORT, "metrics": ports.RAY_METRICS_EXPORT_PORT,
                       "serve": ports.RAY_SERVE_HTTP_PORT}


def raycluster(overlay: str) -> dict:
    (cluster,) = find(rendered(overlay), "RayCluster")
    return cluster["spec"]


def group_resources(group: dict) -> dict[str, float]:
    """rayStartParams.resources as `ray start --resources=...` sees it: KubeRay puts the value on a shell
    command line, so it is a shell-quoted JSON object (the form of KubeRay's ray-job.resources.yaml sample)."""
    raw = group["rayStartParams"]["resources"]
    words = shlex.split(raw)
    assert len(words) == 1 and raw.startswith('"'), f"{group['groupName']}: quote the JSON for the shell"
    return json.loads(words[0])


def container_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


# -- role resources ------------------------------------------------------------------------------------


def test_prod_has_one_worker_group_per_role_with_its_custom_resource() -> None:
    groups = raycluster("prod")["workerGroupSpecs"]
    advertised = {g["groupName"]: set(group_resources(g)) for g in groups}
    assert sorted(set().union(*advertised.values())) == sorted(ROLE_RESOURCES.values())
    for name, resources in advertised.items():
        assert len(resources) == 1, f"prod group {name} should serve one role, advertises {resources}"
    by_role = {next(iter(r)): g for g, r in advertised.items()}
    assert by_role[ROLE_RESOURCES["rollout"]] == "rollout-lowp"
    assert by_role[ROLE_RESOURCES["reward"]] == "reward"


def test_dev_single_gpu_group_carries_every_role() -> None:
    (group,) = raycluster("dev")["workerGroupSpecs"]
    assert sorted(group_resources(group)) == sorted(ROLE_RESOURCES.values())
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_worker_groups_are_gpu_pods_with_shm_and_bounds(overlay: str) -> None:
    spec = raycluster(overlay)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, group["groupName"]
        assert 0 <= group["minReplicas"] <= group["maxReplicas"], group["groupName"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"]
        shm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
        assert shm["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


# -- ports ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_ray_ports_match_orchestration_ports(overlay: str) -> None:
    spec = raycluster(overlay)
    head = spec["headGroupSpec"]
    assert container_ports(head["template"]["spec"]["containers"][0]) == RAY_CONTAINER_PORTS
    assert head["rayStartParams"]["metrics-export-port"] == str(ports.RAY_METRICS_EXPORT_PORT)
    for group in spec["workerGroupSpecs"]:
        assert container_ports(group["template"]["spec"]["containers"][0]) == {
            "metrics": ports.RAY_METRICS_EXPORT_PORT}
        assert group["rayStartParams"]["metrics-export-port"] == str(ports.RAY_METRICS_EXPORT_PORT)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_api_ports_match_orchestration_ports(overlay: str) -> None:
    objects = rendered(overlay)
    (deployment,) = find(objects, "Deployment", "solrl-api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container_ports(container) == {"http": ports.API_PORT}
    assert container["args"][container["args"].index("--port") + 1] == str(ports.API_PORT)
    (service,) = find(objects, "Service", "solrl-api")
    assert service["spec"]["ports"] == [{"name": "http", "port": ports.API_PORT, "targetPort": "http"}]
    (config,) = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("solrl-api-config")]
    assert config["data"]["SOLRL_RAY_ADDRESS"] == f"http://solrl-head-svc:{ports.RAY_DASHBOARD_PORT}"


def test_network_policies_open_only_known_ports() -> None:
    policies = {p["metadata"]["name"]: p for p in find(rendered("prod"), "NetworkPolicy")}
    head = policies["solrl-ray-head"]["spec"]["ingress"]
    unrestricted = [rule for rule in head if "ports" not in rule]
    assert unrestricted == [{"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "solrl"}}}]}]
    dashboard_peers = [rule["from"] for rule in head
                       if {"protocol": "TCP", "port": ports.RAY_DASHBOARD_PORT} in rule.get("ports", [])]
    assert dashboard_peers == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "solrl", "app.kubernetes.io/component": "api"}}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}],
    ]
    opened = {p["port"] for policy in policies.values() for rule in policy["spec"]["ingress"]
              for p in rule.get("ports", [])}
    assert opened == {ports.RAY_DASHBOARD_PORT, ports.RAY_METRICS_EXPORT_PORT, ports.API_PORT, 5432}


def test_monitors_scrape_the_named_ports() -> None:
    (pod_monitor,) = find(rendered("monitoring"), "PodMonitor")
    (service_monitor,) = find(rendered("monitoring"), "ServiceMonitor")
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert [e["port"] for e in service_monitor["spec"]["endpoints"]] == ["http"]
    assert service_monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_head_points_the_dashboard_at_grafana_and_prometheus() -> None:
    env = {e["name"]: e.get("value") for e in
           raycluster("prod")["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("RAY_GRAFANA_HOST", "RAY_PROMETHEUS_HOST", "RAY_GRAFANA_IFRAME_HOST"):
        assert re.match(r"^https?://[\w.-]+(:\d+)?$", env[name] or ""), name


def test_dockerfiles_expose_the_same_ports() -> None:
    def exposed(name: str) -> set[int]:
        text = (DOCKER / name).read_text()
        return {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}

    assert exposed("Dockerfile.api") == {ports.API_PORT}
    assert exposed("Dockerfile.gpu") == set(RAY_CONTAINER_PORTS.values())
    assert f"--metrics-export-port={ports.RAY_METRICS_EXPORT_PORT}" in (DOCKER / "Dockerfile.gpu").read_text()


# -- metrics -------------------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads((DEPLOY / "monitoring" / "solrl-dashboard.json").read_text())


def test_promql_parser_finds_metric_names() -> None:
    expr = 'sum by (precision) (rate(ray_a_total{job_id=~"$job_id", x="y{z}"}[$__rate_interval])) / on(job) ray_b'
    assert promql_metric_names(expr) == {"ray_a_total", "ray_b"}
    assert promql_metric_names("histogram_quantile(0.9, sum by (le) (ray_c_bucket[5m]))") == {"ray_c_bucket"}


def test_every_dashboard_metric_is_one_the_code_emits() -> None:
    emitted = {f"ray_{name}" for name in ray_metric_names()}
    queried = set().union(*(promql_metric_names(q) for q in grafana_queries(dashboard())))
    assert queried, "the dashboard queries no metric"
    unknown = sorted(queried - emitted)
    assert not unknown, f"the dashboard queries metrics orchestration/metrics.py does not emit: {unknown}"


def test_dashboard_covers_the_training_signals() -> None:
    queried = set().union(*(promql_metric_names(q) for q in grafana_queries(dashboard())))
    for metric in ("ray_solrl_rollout_images_per_second", "ray_solrl_reward_mean", "ray_solrl_selection_spearman",
                   "ray_solrl_phase_stage1_seconds", "ray_solrl_weight_sync_seconds"):
        assert metric in queried, metric
    throughput = [q for q in grafana_queries(dashboard()) if "rollout_images_per_second" in q]
    assert any("by (precision)" in q for q in throughput), "rollout throughput should be split by precision"


# -- versions ------------------------------------------------------------------------------------------


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


def test_ray_version_is_the_same_everywhere() -> None:
    for overlay in ("dev", "prod"):
        assert raycluster(overlay)["rayVersion"] == pins(DOCKER / "constraints-gpu.txt")["ray"]
    assert pins(DOCKER / "requirements-api.txt")["ray"] == pins(DOCKER / "constraints-gpu.txt")["ray"]


def test_images_pin_the_torch_the_makefile_tests() -> None:
    makefile = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    for name in ("Dockerfile.gpu", "Dockerfile.api"):
        arg = re.search(r"^ARG TORCH_VERSION=(\S+)$", (DOCKER / name).read_text(), re.M).group(1)
        assert arg == makefile, f"{name} builds torch {arg}, make test uses {makefile}"


def test_kuberay_version_is_noted() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "v1.7.0-rc.0" in readme and "feeaf72" in readme
