"""The header every benchmark result carries: hardware, software versions, date, exact command."""

from __future__ import annotations

import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch


def environment() -> dict:
    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def write_report(out: Path, title: str, table_md: str, rows: list[dict], extra: dict | None = None) -> None:
    """OUT.json (environment + rows) and OUT.md (the same as a table with its header)."""
    env = environment()
    payload = {"title": title, "environment": env, **(extra or {}), "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    header = "\n".join(f"- {k}: `{v}`" for k, v in env.items())
    extras = "\n".join(f"- {k}: `{v}`" for k, v in (extra or {}).items())
    out.with_suffix(".md").write_text(f"# {title}\n\n{header}\n{extras}\n\n{table_md}\n")
