"""A job's directory on disk: its spec, what the job writes there, and safe access to it.

``JOB_DIR/spec.json`` is written by the service before the job reaches Ray; the entrypoint writes
metrics.jsonl, summary.json, sample grids and checkpoints/ next to it; the reconciler saves Ray's
driver log as ``job.log`` when the job ends (Ray's copy dies with the cluster).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"
LOG_FILE = "job.log"
METRICS_FILE = "metrics.jsonl"
_CHECKPOINT_NAME = re.compile(r"^iter-(\d+)$")


def job_dir(root: Path, job_id: str) -> Path:
    return root / job_id


def write_spec(root: Path, job_id: str, kind: str, config: dict[str, Any]) -> Path:
    """Create the job dir with its spec.json atomically (temp dir + rename): all of it or nothing."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=root))
    try:
        (tmp / SPEC_FILE).write_text(json.dumps({"id": job_id, "kind": kind, "config": config}, indent=2))
        final = job_dir(root, job_id)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_job_dir(root: Path, job_id: str) -> None:
    shutil.rmtree(job_dir(root, job_id), ignore_errors=True)


def checkpoint_step(directory: Path) -> int | None:
    """Iterations done at the newest complete checkpoint (``checkpoints/latest``), if any."""
    pointer = directory / "checkpoints" / "latest"
    try:
        match = _CHECKPOINT_NAME.match(pointer.read_text().strip())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: the job's float('nan') fields become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_metrics(directory: Path, since_step: int | None) -> list[dict[str, Any]]:
    """Records of metrics.jsonl whose ``iteration`` is >= since_step (all records when None).

    A line still being written (no newline yet, or cut mid-way) is skipped, not an error.
    """
    path = directory / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if since_step is not None and int(record.get("iteration", 0)) < since_step:
            continue
        records.append(_finite(record))
    return records


def list_artifacts(directory: Path) -> list[tuple[str, int, datetime]]:
    """(relative name, bytes, mtime) of every regular file under the job dir; symlinks are not followed."""
    if not directory.is_dir():
        return []
    found = []
    for base, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".tmp"))
        for name in sorted(files):
            path = Path(base) / name
            if path.is_symlink() or not path.is_file():
                continue
            stat = path.stat()
            found.append((path.relative_to(directory).as_posix(), stat.st_size,
                          datetime.fromtimestamp(stat.st_mtime, UTC)))
    return found


def resolve_artifact(directory: Path, name: str) -> Path | None:
    """The regular file ``name`` inside the job dir, or None.

    Refused (None): absolute names, any ``..`` part, backslashes or NUL, anything that resolves
    outside the job dir (a symlink pointing out included), and anything that is not a regular file.
    """
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    root = directory.resolve()
    try:
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target
