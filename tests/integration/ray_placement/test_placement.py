"""Placement groups on logical GPUs (a CPU host advertises 4 GPUs to Ray; no CUDA is touched)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from orchestration.cluster import ROLE_RESOURCES, Placement  # noqa: E402
from orchestration.config import load_config  # noqa: E402

QUICKSTART = Path(__file__).parents[3] / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module", autouse=True)
def logical_gpu_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rt_", dir="/tmp")
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, _temp_dir=temp_dir,
             resources={name: 4 for name in ROLE_RESOURCES.values()}, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _options(placement: str, gpus: int, role_resources: bool = False):
    cfg = load_config(QUICKSTART, [f"resources.placement={placement}", f"resources.num_gpus={gpus}",
                                   "resources.rollout_workers=2", "resources.regen_workers=2"])
    p = Placement(cfg, role_resources)
    opts = {(role, i): p.options(role, i) for role in ("rollout", "regen", "learner") for i in range(2)}
    return p, opts


def test_colocate_shares_every_gpu():
    p, opts = _options("colocate", 2)
    try:
        # 2 rollout + 2 regen + 1 eval + 1 learner = 6 actors on 2 GPUs: a third of a GPU each.
        assert all(o["num_gpus"] == pytest.approx(1 / 3) for o in opts.values())
        groups = {id(o["scheduling_strategy"].placement_group) for o in opts.values()}
        assert len(groups) == 1
        assert {o["scheduling_strategy"].placement_group_bundle_index for o in opts.values()} == {0, 1}
    finally:
        p.remove()


def test_split_separates_rollout_from_bf16_roles():
    p, opts = _options("split", 4, role_resources=True)
    try:
        rollout_pg = opts[("rollout", 0)]["scheduling_strategy"].placement_group
        bf16_pg = opts[("regen", 0)]["scheduling_strategy"].placement_group
        assert rollout_pg.id != bf16_pg.id
        assert opts[("learner", 0)]["scheduling_strategy"].placement_group.id == bf16_pg.id
        assert len(rollout_pg.bundle_specs) == 2 and len(bf16_pg.bundle_specs) == 2
        assert opts[("rollout", 0)]["num_gpus"] == 1.0  # 2 rollout actors on 2 dedicated GPUs
        assert opts[("rollout", 0)]["resources"] == {ROLE_RESOURCES["rollout"]: 0.01}
        assert ray.get(rollout_pg.ready(), timeout=30) and ray.get(bf16_pg.ready(), timeout=30)
    finally:
        p.remove()


def test_cpu_only_uses_no_placement_group():
    p, opts = _options("colocate", 0)
    assert all("scheduling_strategy" not in o and "num_gpus" not in o for o in opts.values())
