"""The Dockerfiles lint clean (hadolint), run as non-root with a HEALTHCHECK, and pin what they install.

No image is built here (no Docker engine on these machines): see docs/deploy.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.deploy.helpers import DOCKER, REPO, tool

DOCKERFILES = sorted(p.name for p in DOCKER.glob("Dockerfile.*") if not p.name.endswith(".dockerignore"))


def final_stage(text: str) -> str:
    return re.split(r"^FROM ", text, flags=re.M)[-1]


def requirement_name(spec: str) -> str:
    return re.match(r"^\s*([A-Za-z0-9_.-]+)", spec).group(1).lower().replace("_", "-")


def pinned(path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    for line in lines:
        if line:
            assert re.match(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?==[\w.+-]+$", line), f"{path.name}: not pinned: {line}"
    return {requirement_name(line) for line in lines if line}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_there_are_three_images() -> None:
    assert DOCKERFILES == ["Dockerfile.api", "Dockerfile.gpu", "Dockerfile.vllm"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    out = subprocess.run([tool("hadolint"), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"),
                          str(DOCKER / name)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root_with_a_healthcheck(name: str) -> None:
    text = (DOCKER / name).read_text()
    last = final_stage(text)
    users = re.findall(r"^USER (\S+)$", last, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}: final stage must run as non-root"
    assert re.search(r"^HEALTHCHECK ", last, re.M), f"{name}: no HEALTHCHECK in the final stage"
    assert (DOCKER / f"{name}.dockerignore").is_file(), f"{name}: no {name}.dockerignore beside it"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_and_versions_are_pinned(name: str) -> None:
    text = (DOCKER / name).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if resolved in ("build",):
            continue
        assert ":" in resolved and not resolved.endswith(":latest") and "$" not in resolved, f"{name}: {image}"
    for spec in re.findall(r'pip install[^\n]*?"([A-Za-z0-9_.\[\]-]+(?:==[^"]+)?)"', text):
        assert "==" in spec or spec.startswith(".") or spec == "transformer-engine[pytorch]", f"{name}: {spec}"


def test_gpu_constraints_pin_every_dependency_of_the_image() -> None:
    meta = project()
    needed = {requirement_name(d) for d in meta["dependencies"]}
    for extra in ("ray", "gpu", "te", "vllm"):
        needed |= {requirement_name(d) for d in meta["optional-dependencies"][extra]}
    missing = sorted(needed - {"torch"} - pinned(DOCKER / "constraints-gpu.txt"))
    assert not missing, f"pin these in docker/constraints-gpu.txt: {missing}"


def test_api_requirements_cover_the_api_import_closure() -> None:
    """The API image installs the project with --no-deps: everything it imports must be listed."""
    meta = project()
    needed = set()
    for extra in ("api", "k8s"):
        needed |= {requirement_name(d) for d in meta["optional-dependencies"].get(extra, [])}
    modules = ["orchestration.cli", "orchestration.jobs", "orchestration.kuberay"]
    if (REPO / "services" / "api" / "main.py").is_file():
        modules.append("services.api.main")
    code = (f"import sys, importlib.metadata as md, {', '.join(modules)}\n"
            "dists = md.packages_distributions()\n"
            "print('\\n'.join(sorted({d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    imported = {name.lower().replace("_", "-") for name in out.stdout.split()}
    direct = {requirement_name(d) for d in meta["dependencies"]}
    needed |= imported & direct
    missing = sorted(needed - {"torch"} - pinned(DOCKER / "requirements-api.txt"))
    assert not missing, f"add these (pinned) to docker/requirements-api.txt: {missing}"
    heavy = sorted(pinned(DOCKER / "requirements-api.txt") & {"diffusers", "transformers", "peft", "accelerate"})
    assert not heavy, f"the API image should not carry {heavy}"
