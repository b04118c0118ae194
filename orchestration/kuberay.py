"""The ``kuberay`` job backend: run job-service jobs on a KubeRay-managed Ray cluster.

Two modes, both against one long-lived RayCluster (``deploy/`` creates it, named ``solrl``):

- ``rayjob`` (default): one ``RayJob`` custom resource per job, with ``clusterSelector`` pointing at the
  cluster and ``submissionMode: HTTPMode`` (the operator submits to the head's Jobs API itself, so no
  submitter pod). The job shows in the Ray dashboard's Jobs view *and* as a Kubernetes object
  (``kubectl get rayjobs``); deleting the RayJob stops the Ray job (the operator's finalizer does).
- ``jobs-api``: submit straight to the cluster's Ray Jobs API (``JobSubmissionClient`` at the head
  service's dashboard address), as a plain Ray deployment would.

Either way the job's spec travels the same way: the job API writes ``<jobs_root>/<job_id>/spec.json`` on
the shared volume (``services/api/job_files.write_spec``; ``deploy/`` mounts one ReadWriteMany PVC at
``/data`` in the API pod and in every Ray pod) and the entrypoint, built by ``JobKind.entrypoint`` from the
kind registry, reads it back. A ConfigMap would not reach the driver: on a long-lived cluster the driver
runs in the head pod, which is already running.

The RayJob is validated before it is sent: against the RayJob CRD's ``openAPIV3Schema`` with every object
closed (a misspelled field is an error, as ``kubeconform -strict`` does it), plus the few rules the operator
checks in Go (name length, DNS-1035, clusterSelector, TTL). The CRD comes from ``crd_path`` or is read from
the cluster; the create call also asks the API server for ``fieldValidation=Strict``.

The ``kubernetes`` and ``ray`` clients are imported lazily, so building and validating needs neither.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel

from orchestration.jobs import JobKind, validate_job
from orchestration.ports import RAY_DASHBOARD_PORT

log = logging.getLogger(__name__)

RAY_GROUP, RAY_VERSION = "ray.io", "v1"
RAYJOB_PLURAL = "rayjobs"
RAYJOB_CRD = "rayjobs.ray.io"
JobState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
JOB_STATES: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")
Mode = Literal["rayjob", "jobs-api"]

# KubeRay's own limits (ray-operator utils): a RayCluster name leaves room for "-serve-svc" (53), and a
# RayJob name for the 6 characters the operator appends when it names a cluster after the job (47).
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = 47
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Job ids become a label value and a path component: a Kubernetes label value, without dots first.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
JOB_ID_LABEL = "solrl.io/job-id"
KIND_LABEL = "solrl.io/kind"


class CustomResourceError(ValueError):
    """A custom resource failed validation; ``errors`` holds (field path, message) pairs."""

    def __init__(self, kind: str, errors: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.errors = errors
        super().__init__(f"{kind} is invalid: " + "; ".join(f"{path or '<root>'}: {msg}" for path, msg in errors))


class SubmissionNotFound(LookupError):
    """The RayJob or Ray job behind a submission reference no longer exists (or never did)."""


# --------------------------------------------------------------------------------------------------------
# Validation against a CRD's openAPIV3Schema


def load_crd_schema(crd: Path | Mapping[str, Any], version: str = RAY_VERSION) -> dict:
    """The ``openAPIV3Schema`` of ``version`` in a CRD (a YAML file or the parsed object)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a CRD is 20k+ lines
    doc = yaml.load(Path(crd).read_text(), Loader=loader) if isinstance(crd, str | Path) else crd
    for entry in doc["spec"]["versions"]:
        if entry["name"] == version:
            return copy.deepcopy(entry["schema"]["openAPIV3Schema"])
    names = [v["name"] for v in doc["spec"]["versions"]]
    raise KeyError(f"CRD {doc['metadata']['name']} has no version {version!r}; it has {names}")


def object_meta_schema(max_name_length: int) -> dict:
    """The part of ObjectMeta a manifest or a generated CR sets, closed; CRDs leave ``metadata`` open."""
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": DNS_1035, "maxLength": max_name_length},
            "namespace": {"type": "string", "pattern": DNS_1035, "maxLength": 63},
            "labels": string_map,
            "annotations": string_map,
        },
    }


def strict_schema(schema: dict, max_name_length: int = 253) -> dict:
    """A copy of a CRD schema that rejects unknown fields.

    Every object schema with ``properties`` but neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` is closed (``additionalProperties: false``): the API server
    would silently prune such fields, so a typo would vanish instead of failing. ``nullable: true`` is
    turned into an accepted ``null``. The root ``metadata`` (left open by every CRD) gets a closed
    ObjectMeta subset with the operator's name rules.
    """
    out = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                close(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    close(sub)
            elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
                close(value)

    close(out)
    out.setdefault("properties", {})["metadata"] = object_meta_schema(max_name_length)
    return out


def schema_errors(obj: Mapping[str, Any], schema: dict) -> list[tuple[str, str]]:
    """Every (path, message) that ``schema`` (already strict) reports for ``obj``, sorted by path."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = []
    for err in validator.iter_errors(obj):
        path = ".".join(str(p) for p in err.absolute_path)
        errors.append((path, err.message))
    return sorted(errors)


def validate_custom_resource(obj: Mapping[str, Any], schema: dict) -> None:
    """Raise :class:`CustomResourceError` if ``obj`` does not match the strict ``schema``."""
    errors = schema_errors(obj, schema)
    if errors:
        raise CustomResourceError(str(obj.get("kind", "object")), errors)


def rayjob_rule_errors(cr: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The RayJob rules KubeRay enforces in Go (not in the CRD schema) that a generated CR could break."""
    spec = cr.get("spec", {})
    errors: list[tuple[str, str]] = []
    selector = spec.get("clusterSelector") or {}
    if not spec.get("rayClusterSpec") and not selector.get("ray.io/cluster"):
        errors.append(("spec.clusterSelector", "set ray.io/cluster to the RayCluster's name (or give rayClusterSpec)"))
    if selector and spec.get("backoffLimit", 0) > 0:
        errors.append(("spec.backoffLimit", "must be 0 with clusterSelector"))
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        errors.append(("spec.ttlSecondsAfterFinished", "needs shutdownAfterJobFinishes: true"))
    if spec.get("suspend") and selector:
        errors.append(("spec.suspend", "the clusterSelector mode cannot be suspended"))
    if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
        errors.append(("spec.activeDeadlineSeconds", "must be a positive integer"))
    try:
        yaml.safe_load(spec.get("runtimeEnvYAML", "") or "")
    except yaml.YAMLError as err:
        errors.append(("spec.runtimeEnvYAML", f"is not valid YAML: {err}"))
    if "entrypointResources" in spec:
        try:
            resources = json.loads(spec["entrypointResources"])
            if not isinstance(resources, dict):
                raise ValueError("not an object")
        except ValueError as err:
            errors.append(("spec.entrypointResources", f"must be a JSON object of resource -> amount ({err})"))
    return errors


def validate_rayjob(cr: Mapping[str, Any], schema: dict) -> None:
    """Validate a RayJob against the strict CRD ``schema`` and KubeRay's own rules; raise on any error."""
    errors = schema_errors(cr, schema) + rayjob_rule_errors(cr)
    if errors:
        raise CustomResourceError("RayJob", errors)


# --------------------------------------------------------------------------------------------------------
# Building the RayJob


def check_job_id(job_id: str) -> str:
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id {job_id!r} must be 1-63 letters, digits, '-', '_' or '.', starting and "
                         "ending with a letter or digit (it becomes a label value and a directory name)")
    return job_id


def submission_id(job_id: str, attempt: int = 0) -> str:
    """The Ray job submission id of a job's attempt (Ray refuses to reuse one)."""
    return check_job_id(job_id) if attempt == 0 else f"{check_job_id(job_id)}-a{attempt}"


def rayjob_name(job_id: str, attempt: int = 0) -> str:
    """A RayJob name for the job: DNS-1035, at most 47 characters, unique per (job id, attempt)."""
    sub = submission_id(job_id, attempt)
    slug = re.sub(r"[^a-z0-9-]+", "-", sub.lower()).strip("-")
    name = f"solrl-{slug}"
    if len(name) > MAX_RAYJOB_NAME or slug != sub:  # lossy: keep it unique with a digest of the real id
        digest = hashlib.sha256(sub.encode()).hexdigest()[:8]
        name = f"{name[:MAX_RAYJOB_NAME - 9].rstrip('-')}-{digest}"
    return name


def job_dir(jobs_root: str, job_id: str) -> PurePosixPath:
    """Where the job's spec.json and outputs live, on the shared volume (same path in every pod)."""
    return PurePosixPath(jobs_root) / check_job_id(job_id)


def build_rayjob(
    job_id: str,
    kind: str,
    config: Mapping[str, Any],
    *,
    cluster_name: str,
    namespace: str | None = None,
    jobs_root: str = "/data/jobs",
    python: str = "python",
    attempt: int = 0,
    active_deadline_seconds: int | None = None,
) -> dict:
    """The RayJob custom resource that runs one job on the RayCluster ``cluster_name``.

    ``kind`` and ``config`` are validated with the job-kind registry first (``JobSpecError`` names the
    field); the entrypoint and the driver's resources come from the kind. No image is set: the job runs
    on the cluster's image (``clusterSelector``), which is what makes the job dir on the shared volume and
    the installed package the same for the driver and every actor.
    """
    job_kind, cfg = validate_job(kind, dict(config))
    return _rayjob(job_kind, cfg, job_id, cluster_name=cluster_name, namespace=namespace, jobs_root=jobs_root,
                   python=python, attempt=attempt, active_deadline_seconds=active_deadline_seconds)


def _rayjob(job_kind: JobKind, cfg: BaseModel, job_id: str, *, cluster_name: str, namespace: str | None,
            jobs_root: str, python: str, attempt: int, active_deadline_seconds: int | None) -> dict:
    resources = job_kind.resources(cfg)
    kind = job_kind.name
    sub = submission_id(job_id, attempt)
    spec: dict[str, Any] = {
        "clusterSelector": {"ray.io/cluster": cluster_name},
        "submissionMode": "HTTPMode",
        "jobId": sub,
        "entrypoint": job_kind.entrypoint(job_dir(jobs_root, job_id), python=python),
        "entrypointNumCpus": float(resources.num_cpus),
        "metadata": {"solrl_job_id": job_id, "solrl_kind": kind, "solrl_attempt": str(attempt)},
    }
    if resources.num_gpus:
        spec["entrypointNumGpus"] = float(resources.num_gpus)
    if resources.custom:
        spec["entrypointResources"] = json.dumps(resources.custom, sort_keys=True)
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_seconds)
    metadata: dict[str, Any] = {
        "name": rayjob_name(job_id, attempt),
        "labels": {"app.kubernetes.io/name": "solrl", "app.kubernetes.io/component": "job",
                   JOB_ID_LABEL: job_id, KIND_LABEL: kind},
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayJob", "metadata": metadata, "spec": spec}


def rayjob_state(cr: Mapping[str, Any]) -> JobState:
    """One of PENDING/RUNNING/SUCCEEDED/FAILED/STOPPED from a RayJob's status."""
    status = cr.get("status") or {}
    if status.get("jobDeploymentStatus") in ("Failed", "ValidationFailed"):
        return "FAILED"  # e.g. activeDeadlineSeconds passed, or the operator refused the spec
    job_status = status.get("jobStatus") or ""
    if job_status in JOB_STATES:
        return job_status  # type: ignore[return-value]
    return "PENDING"


# --------------------------------------------------------------------------------------------------------
# The backend


@dataclass(frozen=True)
class KubeRaySettings:
    """Where the backend submits. ``from_env`` reads the variables in ``ENV`` (deploy/ sets them); the job
    dir root, the job interpreter and the dashboard URL share the job API's variable names."""

    namespace: str = "solrl"
    cluster_name: str = "solrl"
    mode: Mode = "rayjob"
    jobs_root: str = "/data/jobs"  # on the shared volume, mounted at the same path in the API and Ray pods
    python: str = "python"  # the interpreter in the Ray image
    dashboard_url: str = ""  # jobs-api mode; "" = http://<cluster>-head-svc.<namespace>.svc:8265
    crd_path: str = ""  # RayJob CRD YAML to validate against; "" = read it from the cluster once
    active_deadline_seconds: int = 0  # 0 = no deadline

    ENV: ClassVar[dict[str, str]] = {
        "namespace": "SOLRL_KUBERAY_NAMESPACE", "cluster_name": "SOLRL_KUBERAY_CLUSTER_NAME",
        "mode": "SOLRL_KUBERAY_MODE", "jobs_root": "SOLRL_JOBS_DIR", "python": "SOLRL_JOB_PYTHON",
        "dashboard_url": "SOLRL_RAY_ADDRESS", "crd_path": "SOLRL_KUBERAY_CRD_PATH",
        "active_deadline_seconds": "SOLRL_KUBERAY_ACTIVE_DEADLINE_SECONDS",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> KubeRaySettings:
        values: dict[str, Any] = {}
        for name, variable in cls.ENV.items():
            raw = environ.get(variable)
            if raw is not None:
                values[name] = int(raw) if name == "active_deadline_seconds" else raw
        settings = cls(**values)
        if settings.mode not in ("rayjob", "jobs-api"):
            raise ValueError(f"SOLRL_KUBERAY_MODE={settings.mode!r}; use rayjob or jobs-api")
        return settings

    def head_dashboard_url(self) -> str:
        """KubeRay names the head service ``<cluster>-head-svc``."""
        return self.dashboard_url or f"http://{self.cluster_name}-head-svc.{self.namespace}.svc:{RAY_DASHBOARD_PORT}"


@dataclass(frozen=True)
class SubmissionRef:
    """What ``submit`` returns and ``stop``/``status`` take; ``str(ref)`` round-trips through ``parse``."""

    mode: Mode
    submission_id: str
    namespace: str = ""
    name: str = ""  # the RayJob's name (rayjob mode)

    def __str__(self) -> str:
        if self.mode == "rayjob":
            return f"rayjob:{self.namespace}/{self.name}:{self.submission_id}"
        return f"jobs-api:{self.submission_id}"

    @classmethod
    def parse(cls, text: str) -> SubmissionRef:
        mode, _, rest = text.partition(":")
        if mode == "rayjob":
            where, _, sub = rest.partition(":")
            namespace, _, name = where.partition("/")
            if namespace and name and sub:
                return cls("rayjob", sub, namespace, name)
        elif mode == "jobs-api" and rest:
            return cls("jobs-api", rest)
        raise ValueError(f"{text!r} is not a submission reference (rayjob:NS/NAME:ID or jobs-api:ID)")


@dataclass
class KubeRayBackend:
    """submit / stop / status of job-service jobs on a KubeRay cluster (see the module docstring).

    ``custom_api`` (a ``kubernetes.client.CustomObjectsApi``) and ``job_client`` (a Ray
    ``JobSubmissionClient``) are created on first use from the in-cluster or local kube config and the
    head's dashboard URL; pass them to reuse clients.
    """

    settings: KubeRaySettings = field(default_factory=KubeRaySettings)
    custom_api: Any = None
    job_client: Any = None
    _schema: dict | None = field(default=None, init=False, repr=False)

    # -- public interface --------------------------------------------------------------------------------
    def submit(self, job_id: str, kind: str, config: Mapping[str, Any], *, attempt: int = 0) -> SubmissionRef:
        """Validate and start the job; returns its reference.

        The caller has written ``<jobs_root>/<job_id>/spec.json`` on the shared volume already (the job API
        does, before it submits); the entrypoint reads it there.
        """
        s = self.settings
        job_kind, cfg = validate_job(kind, dict(config))
        cr = _rayjob(job_kind, cfg, job_id, cluster_name=s.cluster_name, namespace=s.namespace,
                     jobs_root=s.jobs_root, python=s.python, attempt=attempt,
                     active_deadline_seconds=s.active_deadline_seconds or None)
        if s.mode == "rayjob":
            validate_rayjob(cr, self.rayjob_schema())
        spec_file = Path(job_dir(s.jobs_root, job_id)) / "spec.json"
        if not spec_file.is_file():
            raise FileNotFoundError(f"{spec_file} does not exist: write the job's spec.json on the shared volume "
                                    "before submitting (services/api/job_files.write_spec does)")
        if s.mode == "rayjob":
            self._custom().create_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, s.namespace, RAYJOB_PLURAL, cr, field_validation="Strict")
            log.info("created RayJob %s/%s for job %s", s.namespace, cr["metadata"]["name"], job_id)
            return SubmissionRef("rayjob", cr["spec"]["jobId"], s.namespace, cr["metadata"]["name"])
        spec = cr["spec"]
        resources = json.loads(spec.get("entrypointResources", "{}"))
        self._jobs().submit_job(
            entrypoint=spec["entrypoint"], submission_id=spec["jobId"], metadata=spec["metadata"],
            entrypoint_num_cpus=spec["entrypointNumCpus"], entrypoint_num_gpus=spec.get("entrypointNumGpus"),
            entrypoint_resources=resources or None)
        log.info("submitted Ray job %s for job %s to %s", spec["jobId"], job_id, s.head_dashboard_url())
        return SubmissionRef("jobs-api", spec["jobId"])

    def stop(self, ref: SubmissionRef) -> None:
        """Ask the job to stop (asynchronous). A RayJob is deleted: the operator's finalizer stops its Ray job."""
        if ref.mode == "rayjob":
            try:
                self._custom().delete_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, ref.namespace, RAYJOB_PLURAL, ref.name, propagation_policy="Foreground")
            except Exception as err:
                if _http_status(err) != 404:
                    raise
        else:
            self._jobs().stop_job(ref.submission_id)

    def status(self, ref: SubmissionRef) -> JobState:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED; ``SubmissionNotFound`` if it is gone."""
        if ref.mode == "rayjob":
            try:
                cr = self._custom().get_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, ref.namespace, RAYJOB_PLURAL, ref.name)
            except Exception as err:
                if _http_status(err) == 404:
                    raise SubmissionNotFound(str(ref)) from err
                raise
            return rayjob_state(cr)
        try:
            value = self._jobs().get_job_status(ref.submission_id)
        except RuntimeError as err:  # the SDK raises RuntimeError("... status code 404 ...") for an unknown id
            if "404" in str(err) or "does not exist" in str(err):
                raise SubmissionNotFound(str(ref)) from err
            raise
        return str(getattr(value, "value", value))  # type: ignore[return-value]

    # -- helpers -----------------------------------------------------------------------------------------
    def rayjob_schema(self) -> dict:
        """The strict RayJob schema, from ``crd_path`` or the cluster's own CRD (read once)."""
        if self._schema is None:
            if self.settings.crd_path:
                raw = load_crd_schema(Path(self.settings.crd_path))
            else:
                raw = load_crd_schema(self._read_cluster_crd(RAYJOB_CRD))
            self._schema = strict_schema(raw, MAX_RAYJOB_NAME)
        return self._schema

    def _read_cluster_crd(self, name: str) -> dict:
        from kubernetes import client

        api = client.ApiextensionsV1Api(self._custom().api_client)
        # Raw JSON: the typed model would rename the schema's keys to snake_case.
        resp = api.read_custom_resource_definition(name, _preload_content=False)
        return json.loads(resp.data)

    def _custom(self) -> Any:
        if self.custom_api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self.custom_api = client.CustomObjectsApi()
        return self.custom_api

    def _jobs(self) -> Any:
        if self.job_client is None:
            from ray.job_submission import JobSubmissionClient

            # Ray's token auth: the client sends RAY_AUTH_TOKEN (set with RAY_AUTH_MODE=token from the
            # cluster's auth Secret in deploy/) as a bearer token.
            self.job_client = JobSubmissionClient(self.settings.head_dashboard_url())
        return self.job_client


def _http_status(err: Exception) -> int | None:
    return getattr(err, "status", None)


# --------------------------------------------------------------------------------------------------------
# `python -m orchestration.kuberay render ...`: print a job's RayJob (the deploy/jobs example is made so)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orchestration.kuberay",
                                     description="Print the RayJob the kuberay backend would create for a job.")
    parser.add_argument("command", choices=["render"])
    parser.add_argument("--kind", required=True)
    parser.add_argument("--config", required=True, type=Path, help="YAML file with the kind's config")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--cluster", default=KubeRaySettings.cluster_name)
    parser.add_argument("--namespace", default=KubeRaySettings.namespace)
    parser.add_argument("--jobs-root", default=KubeRaySettings.jobs_root)
    parser.add_argument("--crd", type=Path, help="validate against this RayJob CRD YAML before printing")
    args = parser.parse_args(argv)
    cr = build_rayjob(args.job_id, args.kind, yaml.safe_load(args.config.read_text()), cluster_name=args.cluster,
                      namespace=args.namespace, jobs_root=args.jobs_root)
    if args.crd:
        validate_rayjob(cr, strict_schema(load_crd_schema(args.crd), MAX_RAYJOB_NAME))
    header = (f"# RayJob of job {args.job_id} (kind {args.kind}), made by `python -m orchestration.kuberay render`.\n"
              f"# The entrypoint reads {job_dir(args.jobs_root, args.job_id)}/spec.json on the shared volume: "
              "the job API writes it (docs/deploy.md).\n")
    print(header + yaml.safe_dump(cr, sort_keys=False), end="")  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
