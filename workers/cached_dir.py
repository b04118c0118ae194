"""Build a directory once, atomically: write into a temporary sibling, then rename into place."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
MARKER = "solrl_tiny.json"


def ensure_built_dir(target: Path, build: Callable[[Path], None], stamp: dict) -> Path:
    """Return ``target``, building it with ``build(tmp_dir)`` first if it has no ``MARKER`` yet.

    Safe under concurrent callers (processes, Ray actors): each builds into its own temporary
    directory and the first rename wins; the others' identical copies are discarded.
    """
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info("building %s", target)
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(stamp))  # written last: marks a complete build
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
