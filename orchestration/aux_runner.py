"""Run an auxiliary method (``aux.<method>``): in this process, or as a task on the Ray cluster.

Both write the same output directory: ``config.json`` (the validated config, every preset value
filled in), the method's plots and files, ``results.json`` (its results plus provenance: date,
hardware, versions, command, wall time) and ``report.md`` (the tables docs/results/<method>.md is
made from). The config is validated before anything is written, so a rejected job leaves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workers.aux.common.config import AuxConfig
from workers.aux.registry import AUX_METHODS, AuxMethod


class AuxJobError(ValueError):
    """An auxiliary job that cannot run as asked (unknown or unimplemented method, bad config)."""


def get_method(name: str) -> AuxMethod:
    name = name.removeprefix("aux.")
    if name not in AUX_METHODS:
        raise AuxJobError(f"unknown auxiliary method {name!r}; valid: {', '.join(AUX_METHODS)}")
    method = AUX_METHODS[name]
    if not method.implemented:
        raise AuxJobError(f"aux.{name} is registered but not implemented yet")
    return method


def build_config(name: str, data: dict[str, Any]) -> AuxConfig:
    """Validate ``data`` (preset + overrides) against the method's config; errors name the field."""
    from pydantic import ValidationError

    from orchestration.jobs import JobSpecError

    method = get_method(name)
    try:
        return method.config_model().model_validate(data)
    except ValidationError as err:
        raise AuxJobError(str(JobSpecError.from_validation(err))) from None


def run_aux(name: str, cfg: AuxConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    """Run the method's experiment into ``out`` and write results.json and report.md."""
    from workers.aux.common.results import Stopwatch, provenance, write_json
    from workers.aux.common.runtime import resolve_device

    method = get_method(name)
    if not isinstance(cfg, method.config_model()):
        raise AuxJobError(f"config for aux.{method.name} must be {method.config_class}, got {type(cfg).__name__}")
    device = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    clock = Stopwatch()
    results = dict(method.run_fn()(cfg, out, show_progress=show_progress))
    report_body = str(results.pop("report_md", ""))
    record = {"method": f"aux.{method.name}", "title": method.title, "preset": cfg.preset,
              "provenance": provenance(device), "wall_seconds": clock.seconds(),
              "config": cfg.model_dump(mode="json"), **results}
    write_json(out / "results.json", record)
    (out / "report.md").write_text(render_report(record, report_body))
    return record


def render_report(record: dict[str, Any], body: str) -> str:
    prov = record["provenance"]
    head = [f"# aux.{record['method'].removeprefix('aux.')}: {record['title']}", "",
            f"- preset: `{record['preset']}`, seed {record['config'].get('seed')}",
            f"- hardware: {prov['hardware']}; torch {prov['torch']}, diffusers {prov['diffusers']}",
            f"- date: {prov['date']}; wall time {record['wall_seconds']:.1f} s",
            f"- command: `{prov['command']}`", ""]
    return "\n".join(head) + "\n" + body.strip() + "\n"


def _remote_entry(name: str, config: dict[str, Any], out: str, show_progress: bool) -> dict[str, Any]:
    cfg = build_config(name, config)  # validated again where it runs: the task may be on another node
    return run_aux(name, cfg, Path(out), show_progress=show_progress)


def run_aux_on_ray(name: str, cfg: AuxConfig, out: Path, *, address: str | None = None,
                   show_progress: bool = True) -> dict[str, Any]:
    """Run the experiment as one Ray task with the kind's resources (joins RAY_ADDRESS or starts a local cluster)."""
    import ray

    from orchestration.cluster import ensure_ray
    from orchestration.jobs import get_kind

    method = get_method(name)
    resources = get_kind(f"aux.{method.name}").resources(cfg)
    ensure_ray(address, log_to_driver=show_progress)
    task = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0)(_remote_entry)
    return ray.get(task.remote(method.name, cfg.model_dump(mode="json"), str(out.resolve()), show_progress))
