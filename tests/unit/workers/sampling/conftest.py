"""Make the repository root importable for ``.venv/bin/pytest`` (the project is not pip-installed and the
pytest config sets no ``pythonpath``). Harmless, and removable, once a root-level conftest or
``[tool.pytest.ini_options] pythonpath = ["."]`` exists."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
