"""The RayJob the kuberay backend builds: from the kind registry, valid against the CRD, and checked strictly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from orchestration.jobs import JOB_KINDS, JobSpecError, validate_job
from orchestration.kuberay import (
    MAX_RAYJOB_NAME,
    CustomResourceError,
    KubeRaySettings,
    SubmissionRef,
    build_rayjob,
    job_dir,
    rayjob_name,
    rayjob_state,
    validate_rayjob,
)
from tests.deploy.helpers import DEPLOY, find, rendered

CLUSTER = "solrl"


def quickstart_rayjob(config: dict, **kwargs) -> dict:
    return build_rayjob("quickstart", "solrl", config, cluster_name=CLUSTER, namespace="solrl", **kwargs)


def test_quickstart_rayjob_validates_against_crd(quickstart_config: dict, rayjob_schema: dict) -> None:
    cr = quickstart_rayjob(quickstart_config)
    validate_rayjob(cr, rayjob_schema)
    assert cr["spec"]["clusterSelector"] == {"ray.io/cluster": CLUSTER}
    assert cr["metadata"]["labels"]["solrl.io/job-id"] == "quickstart"


def test_entrypoint_and_resources_come_from_the_kind_registry(quickstart_config: dict) -> None:
    cr = quickstart_rayjob(quickstart_config, jobs_root="/data/jobs")
    kind, cfg = validate_job("solrl", quickstart_config)
    resources = JOB_KINDS["solrl"].resources(cfg)
    assert cr["spec"]["entrypoint"] == kind.entrypoint(Path("/data/jobs/quickstart"), python="python")
    assert cr["spec"]["entrypoint"] == "python -m orchestration.entrypoint /data/jobs/quickstart"
    assert cr["spec"]["entrypointNumCpus"] == resources.num_cpus
    assert ("entrypointNumGpus" in cr["spec"]) == bool(resources.num_gpus)
    assert cr["spec"]["jobId"] == "quickstart"
    assert cr["spec"]["metadata"]["solrl_job_id"] == "quickstart"


def test_every_runnable_kind_builds_a_valid_rayjob(tmp_path: Path, rayjob_schema: dict,
                                                   quickstart_config: dict) -> None:
    from orchestration.config import read_config_file

    pretrain = read_config_file(Path(__file__).parents[2] / "configs" / "compositional" / "pretrain_quick.yaml")
    configs = {"eval": {"run_dir": str(tmp_path)}, "pretrain": pretrain}
    for name, kind in JOB_KINDS.items():
        if not kind.runnable:
            continue
        if name.startswith("aux."):
            config = {"preset": "quick"}
        else:
            config = configs.get(name) or {**quickstart_config, "method": name, "rollout": {"precision": "bf16"}}
        if name in ("diffusionnft", "flow_grpo"):
            config["rollout"] = {"num_candidates": 8, "precision": "bf16"}
        if name in ("solrl", "naive_quant"):
            config["rollout"] = {"num_candidates": 32, "precision": "fp8"}
        validate_rayjob(build_rayjob(f"job-{name.replace('_', '-')}", name, config, cluster_name=CLUSTER),
                        rayjob_schema)


def test_misspelled_field_is_rejected(quickstart_config: dict, rayjob_schema: dict) -> None:
    cr = quickstart_rayjob(quickstart_config)
    cr["spec"]["shutdownAfterJobFinish"] = False  # the real field is shutdownAfterJobFinishes
    with pytest.raises(CustomResourceError, match="shutdownAfterJobFinish") as err:
        validate_rayjob(cr, rayjob_schema)
    assert [path for path, _ in err.value.errors] == ["spec"]


def test_wrong_type_and_bad_metadata_are_rejected(quickstart_config: dict, rayjob_schema: dict) -> None:
    cr = quickstart_rayjob(quickstart_config)
    cr["spec"]["entrypointNumCpus"] = "half"
    cr["metadata"]["name"] = "Solrl_Job"
    cr["metadata"]["uid"] = "set-by-the-server"
    with pytest.raises(CustomResourceError) as err:
        validate_rayjob(cr, rayjob_schema)
    assert {path for path, _ in err.value.errors} == {"spec.entrypointNumCpus", "metadata.name", "metadata"}


def test_operator_rules_are_checked(quickstart_config: dict, rayjob_schema: dict) -> None:
    cr = quickstart_rayjob(quickstart_config)
    bad = copy.deepcopy(cr)
    bad["spec"]["ttlSecondsAfterFinished"] = 60  # without shutdownAfterJobFinishes: the operator refuses it
    bad["spec"]["clusterSelector"] = {"ray.io/cluster": ""}
    bad["spec"]["entrypointResources"] = "not json"
    with pytest.raises(CustomResourceError) as err:
        validate_rayjob(bad, rayjob_schema)
    assert {path for path, _ in err.value.errors} == {
        "spec.ttlSecondsAfterFinished", "spec.clusterSelector", "spec.entrypointResources"}


def test_invalid_job_config_is_refused_before_any_cr(quickstart_config: dict) -> None:
    bad = {**quickstart_config, "regen": {**quickstart_config["regen"], "num_selected": 64}}  # K > N
    with pytest.raises(JobSpecError, match="num_selected"):
        quickstart_rayjob(bad)
    with pytest.raises(JobSpecError, match="kind"):
        build_rayjob("x", "no-such-kind", {}, cluster_name=CLUSTER)


def test_rayjob_names_are_dns_labels_and_unique_per_attempt() -> None:
    long_id = "0123456789abcdef0123456789abcdef0123456789abcdef"
    names = {rayjob_name(i, a) for i in ("abc", "ABC", long_id, "a.b_c") for a in (0, 1)}
    assert len(names) == 8
    for name in names:
        assert len(name) <= MAX_RAYJOB_NAME and name.startswith("solrl-") and name[-1].isalnum(), name
        assert name == name.lower() and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"), name
    with pytest.raises(ValueError, match="job id"):
        rayjob_name("../etc")
    with pytest.raises(ValueError, match="job id"):
        job_dir("/data/jobs", "a/b")


def test_example_rayjob_in_deploy_is_up_to_date(quickstart_config: dict, rayjob_schema: dict) -> None:
    example = yaml.safe_load((DEPLOY / "jobs" / "rayjob-quickstart.yaml").read_text())
    assert example == quickstart_rayjob(quickstart_config), (
        "deploy/jobs/rayjob-quickstart.yaml is stale: regenerate it with the command in its header")
    validate_rayjob(example, rayjob_schema)


def test_rayjob_status_maps_to_job_states() -> None:
    assert rayjob_state({}) == "PENDING"
    assert rayjob_state({"status": {"jobDeploymentStatus": "Initializing"}}) == "PENDING"
    assert rayjob_state({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}) == "RUNNING"
    assert rayjob_state({"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}}) == "SUCCEEDED"
    assert rayjob_state({"status": {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}}) == "STOPPED"
    assert rayjob_state({"status": {"jobDeploymentStatus": "Failed", "jobStatus": "RUNNING"}}) == "FAILED"
    assert rayjob_state({"status": {"jobDeploymentStatus": "ValidationFailed"}}) == "FAILED"


def test_submission_refs_round_trip() -> None:
    for ref in (SubmissionRef("rayjob", "j1", "solrl", "solrl-j1"), SubmissionRef("jobs-api", "j1-a2")):
        assert SubmissionRef.parse(str(ref)) == ref
    with pytest.raises(ValueError, match="submission reference"):
        SubmissionRef.parse("rayjob:solrl")


def test_settings_from_environment() -> None:
    settings = KubeRaySettings.from_env({"SOLRL_KUBERAY_NAMESPACE": "team-a", "SOLRL_KUBERAY_MODE": "jobs-api",
                                         "SOLRL_KUBERAY_ACTIVE_DEADLINE_SECONDS": "3600",
                                         "SOLRL_JOBS_DIR": "/mnt/jobs"})
    assert (settings.namespace, settings.mode, settings.active_deadline_seconds) == ("team-a", "jobs-api", 3600)
    assert settings.jobs_root == "/mnt/jobs"  # the job API's own variable: one name for one knob
    assert settings.head_dashboard_url() == "http://solrl-head-svc.team-a.svc:8265"
    with pytest.raises(ValueError, match="SOLRL_KUBERAY_MODE"):
        KubeRaySettings.from_env({"SOLRL_KUBERAY_MODE": "k8s"})


def test_deployed_api_settings_reach_the_backend() -> None:
    (config,) = [c for c in find(rendered("prod"), "ConfigMap") if c["metadata"]["name"].startswith("solrl-api-config")]
    settings = KubeRaySettings.from_env({**config["data"], "SOLRL_KUBERAY_NAMESPACE": "solrl"})
    assert (settings.cluster_name, settings.jobs_root, settings.mode) == ("solrl", "/data/jobs", "rayjob")
    (cluster,) = find(rendered("prod"), "RayCluster")
    assert cluster["metadata"]["name"] == settings.cluster_name
    assert settings.head_dashboard_url() == config["data"]["SOLRL_RAY_ADDRESS"]


class FakeCustomObjects:
    """A stand-in for the kubernetes client's CustomObjectsApi (an external boundary; no cluster here)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.create_kwargs: dict = {}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        self.create_kwargs = kwargs
        self.objects[(namespace, body["metadata"]["name"])] = body
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if (namespace, name) not in self.objects:
            raise NotFoundError()
        return self.objects[(namespace, name)]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        if self.objects.pop((namespace, name), None) is None:
            raise NotFoundError()


class NotFoundError(Exception):
    status = 404


def test_backend_submits_validated_rayjobs(tmp_path: Path, crd_dir: Path, quickstart_config: dict) -> None:
    from orchestration.kuberay import KubeRayBackend, SubmissionNotFound

    fake = FakeCustomObjects()
    settings = KubeRaySettings(namespace="ns1", jobs_root=str(tmp_path), crd_path=str(crd_dir / "ray.io_rayjobs.yaml"))
    backend = KubeRayBackend(settings, custom_api=fake)
    with pytest.raises(FileNotFoundError, match="spec.json"):
        backend.submit("j1", "solrl", quickstart_config)
    assert fake.objects == {}
    (tmp_path / "j1").mkdir()
    (tmp_path / "j1" / "spec.json").write_text("{}")
    ref = backend.submit("j1", "solrl", quickstart_config)
    assert ref == SubmissionRef("rayjob", "j1", "ns1", "solrl-j1")
    assert fake.create_kwargs == {"field_validation": "Strict"}
    assert fake.objects[("ns1", "solrl-j1")]["spec"]["entrypoint"].endswith(f"{tmp_path}/j1")
    assert backend.status(ref) == "PENDING"
    fake.objects[("ns1", "solrl-j1")]["status"] = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    assert backend.status(ref) == "RUNNING"
    backend.stop(ref)
    backend.stop(ref)  # already gone: not an error
    with pytest.raises(SubmissionNotFound):
        backend.status(ref)
