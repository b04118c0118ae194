"""The roles as Ray actors: placement, sharding, weight sync and recovery (``RayRoles``).

Actors are thin wrappers over the plain classes in ``workers/`` (via ``orchestration.roles``):
- ``SamplerActor``: one policy copy (stage-1 low precision, BF16 regeneration, or evaluation). It
  encodes prompts, samples, and scores its own images on the reward server, so images never travel
  to the driver (only latents and rewards do).
- ``LearnerActor``: one data-parallel rank of the learner (torch.distributed: gloo on CPU, NCCL on
  GPU); rank 0 exports the new policy after each update.

Placement (``resources.placement``): ``colocate`` spreads every actor over the job's GPUs in
fractions (the paper's single-node setup); ``split`` gives the stage-1 fleet its own GPUs and the
BF16 roles the rest. With ``resources.num_gpus: 0`` everything runs on CPU.

Work is sharded by candidate (prompt, seed): each sampling request is cut into contiguous shards,
one per actor of the stage. A candidate's bits do not depend on its shard (forward batches have a
fixed shape), so adding actors adds throughput without changing results.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
import torch

from orchestration.config import TrainJobConfig
from orchestration.roles import (
    SampleOutput,
    SampleRequest,
    Stage,
    TrainRequest,
    build_reward,
    build_sampler,
    learner_settings,
    local_scorer,
    run_sample,
    stage1_precision,
    train_batch,
)

log = logging.getLogger(__name__)

# Custom resources a KubeRay worker group advertises per role (deploy/ uses the same names).
ROLE_RESOURCES = {"rollout": "solrl_rollout_lowp", "regen": "solrl_regen", "learner": "solrl_learner",
                  "reward": "solrl_reward"}
ROLE_RESOURCE_UNIT = 0.01  # what one actor requests of its role's resource (a group advertises whole units)
ACTOR_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def _device() -> str:
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


class SamplerActor:
    """A policy copy for one stage, inside a Ray actor."""

    def __init__(self, cfg_data: dict, stage: Stage, precision: str | None, reward_app: str | None) -> None:
        from orchestration.models import load_adapter

        self.cfg = TrainJobConfig.model_validate(cfg_data)
        self.stage = stage
        self.adapter = load_adapter(self.cfg, _device())
        self.worker = build_sampler(self.adapter, self.cfg, stage, precision)
        self.reward_app = reward_app
        self._local_score = None if reward_app else local_scorer(build_reward(self.cfg))
        self._client = None

    def _score(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._local_score is not None:
            return self._local_score(images, prompts)
        if self._client is None:
            from ray import serve

            from services.reward.client import RewardClient

            self._client = RewardClient(serve.get_app_handle(self.reward_app))
        breakdown = self._client.score(images, prompts)
        return breakdown.total, breakdown.components

    def ready(self) -> dict:
        return {"stage": self.stage, "precision": self.worker.precision, "version": self.worker.version,
                "device": str(self.adapter.device), "pid": os.getpid()}

    def set_policy(self, weights) -> float:
        return self.worker.set_policy(weights)

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int) -> None:
        from orchestration.weight_sync import SyncGroup

        self.sync_group = SyncGroup(host, port, rank, world_size, str(self.adapter.device))

    def receive_policy(self, manifest) -> float:
        """Full weights through the collective group (see orchestration/weight_sync.py)."""
        from workers.generation import PolicyWeights

        state = self.sync_group.receive(manifest)
        return self.worker.set_policy(PolicyWeights(manifest.version, full=state))

    def set_precision(self, precision: str, weights) -> None:
        self.worker = build_sampler(self.adapter, self.cfg, self.stage, precision)
        self.worker.set_policy(weights)

    def precision_report(self) -> str:
        return self.worker.report.to_text()

    def sample(self, request: SampleRequest) -> SampleOutput:
        return run_sample(self.worker, self.adapter, request, self._score)


class LearnerActor:
    """One data-parallel learner rank."""

    def __init__(self, cfg_data: dict, rank: int, world_size: int, master: tuple[str, int] | None) -> None:
        from orchestration.models import load_adapter
        from workers.learner import Learner

        self.cfg = TrainJobConfig.model_validate(cfg_data)
        self.rank = rank
        device = _device()
        if world_size > 1:
            import torch.distributed as dist

            backend = "nccl" if device == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{master[0]}:{master[1]}",  # type: ignore[index]
                                    rank=rank, world_size=world_size)
        self.adapter = load_adapter(self.cfg, device)
        self.learner = Learner(self.adapter, learner_settings(self.cfg), seed=self.cfg.seed)

    def ready(self) -> int:
        return self.rank

    def train(self, request: TrainRequest, offset: int, global_num_samples: int) -> dict[str, float]:
        batch = train_batch(self.adapter, request)
        batch.sample_offset, batch.global_num_samples = offset, global_num_samples
        return self.learner.train_step(batch, request.iteration)

    def policy_weights(self):
        return self.learner.policy_weights()

    def join_sync_group(self, host: str, port: int, world_size: int) -> None:
        from orchestration.weight_sync import SyncGroup

        self.sync_group = SyncGroup(host, port, 0, world_size, str(self.adapter.device))

    def policy_manifest(self):
        """Export the policy once; keep it for ``broadcast_policy`` and return its manifest."""
        from orchestration.weight_sync import manifest_of

        weights = self.learner.policy_weights()
        self._pending_full = weights.full
        return manifest_of(weights.version, weights.full)

    def broadcast_policy(self) -> None:
        self.sync_group.send(self._pending_full)
        self._pending_full = None

    def ema_weights(self):
        return self.learner.ema_weights()

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)


@dataclass
class ActorSlot:
    """One sampling actor and how to recreate it if it dies for good."""

    handle: ray.actor.ActorHandle
    make: Callable[[], ray.actor.ActorHandle]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DASHBOARD: dict[str, str | None] = {"url": None}


def ensure_ray(address: str | None = None, **init_kwargs) -> None:
    """Connect to RAY_ADDRESS / ``address`` or start a local cluster in this process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    init_kwargs.setdefault("log_to_driver", False)
    if address:
        context = ray.init(address=address, **init_kwargs)
    else:
        context = ray.init(**init_kwargs)
    url = getattr(context, "dashboard_url", None)
    _DASHBOARD["url"] = f"http://{url}" if url and not url.startswith("http") else url


class Placement:
    """Per-role Ray options from ``resources``: GPU fractions, placement groups, custom resources."""

    def __init__(self, cfg: TrainJobConfig, role_resources: bool) -> None:
        self.cfg = cfg
        r = cfg.resources
        self.role_resources = role_resources
        self.groups: dict[str, object] = {}
        self.gpu_share: dict[str, float] = {"rollout": 0.0, "regen": 0.0, "learner": 0.0}
        if r.num_gpus == 0:
            return
        from ray.util.placement_group import placement_group

        cpa = r.cpus_per_actor
        bf16_actors = r.regen_workers + 1 + r.learners  # + 1: the evaluation copy

        def bundle(per_gpu: int, roles: tuple[str, ...]) -> dict:
            # A bundle must hold whatever its actors request, custom role resources included.
            spec = {"GPU": 1, "CPU": per_gpu * cpa}
            if role_resources:
                spec.update({ROLE_RESOURCES[role]: ROLE_RESOURCE_UNIT * per_gpu for role in roles})
            return spec

        if r.placement == "colocate":
            per_gpu = math.ceil((r.rollout_workers + bf16_actors) / r.num_gpus)
            pg = placement_group([bundle(per_gpu, ("rollout", "regen", "learner"))] * r.num_gpus, strategy="PACK")
            ray.get(pg.ready())
            self.groups = {"rollout": pg, "regen": pg, "learner": pg}
            self.gpu_share = dict.fromkeys(("rollout", "regen", "learner"), 1.0 / per_gpu)
        else:
            lowp_gpus = max(1, r.num_gpus // 2)
            bf16_gpus = r.num_gpus - lowp_gpus
            lowp_per_gpu = math.ceil(r.rollout_workers / lowp_gpus)
            bf16_per_gpu = math.ceil(bf16_actors / bf16_gpus)
            lowp = placement_group([bundle(lowp_per_gpu, ("rollout",))] * lowp_gpus, strategy="PACK")
            bf16 = placement_group([bundle(bf16_per_gpu, ("regen", "learner"))] * bf16_gpus, strategy="PACK")
            ray.get([lowp.ready(), bf16.ready()])
            self.groups = {"rollout": lowp, "regen": bf16, "learner": bf16}
            self.gpu_share = {"rollout": 1.0 / lowp_per_gpu, "regen": 1.0 / bf16_per_gpu,
                              "learner": 1.0 / bf16_per_gpu}
        # Actors of a role are spread over its bundles in order: index i goes to bundle i % bundles.
        self.next_index: dict[str, int] = {"rollout": 0, "regen": 0, "learner": 0}

    def options(self, role: str, index: int) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        r = self.cfg.resources
        opts: dict = {"num_cpus": r.cpus_per_actor}
        if self.role_resources:
            opts["resources"] = {ROLE_RESOURCES[role]: ROLE_RESOURCE_UNIT}
        group = self.groups.get(role)
        if group is not None:
            bundles = len(group.bundle_specs)  # type: ignore[attr-defined]
            # regen and learner share the BF16 group: count them together so they spread evenly.
            pool = "bf16" if role in ("regen", "learner") and r.placement == "split" else role
            slot = self.next_index.setdefault(pool, 0) if r.placement == "split" else index
            if r.placement == "split":
                self.next_index[pool] += 1
            opts["num_gpus"] = self.gpu_share[role]
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=slot % bundles)
        return opts

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in {id(g): g for g in self.groups.values()}.values():
            remove_placement_group(pg)


class RayRoles:
    """The ``Roles`` contract on a Ray cluster (see the module docstring)."""

    def __init__(self, cfg: TrainJobConfig, *, job_id: str, use_reward_server: bool = True,
                 role_resources: bool = False, address: str | None = None) -> None:
        self.cfg = cfg
        self.job_id = job_id
        ensure_ray(address)
        r = cfg.resources
        self.placement = Placement(cfg, role_resources)
        self.reward_app: str | None = None
        if use_reward_server:
            self.reward_app = f"solrl-reward-{job_id}"
            self.reward_url = deploy_reward_server(cfg, self.reward_app, role_resources)
        data = cfg.model_dump(mode="json")
        self.stage1_precision = stage1_precision(cfg)
        self.slots: dict[str, list[ActorSlot]] = {"stage1": [], "regen": [], "eval": []}
        if self.stage1_precision:
            for i in range(r.rollout_workers):
                self.slots["stage1"].append(self._slot("rollout", i, data, "stage1", self.stage1_precision))
        for i in range(r.regen_workers):
            self.slots["regen"].append(self._slot("regen", i, data, "regen", None))
        self.slots["eval"].append(self._slot("regen", r.regen_workers, data, "eval", None))
        master = (ray.util.get_node_ip_address(), _free_port()) if r.learners > 1 else None
        learner_cls = ray.remote(LearnerActor)
        self.learners = [
            learner_cls.options(**self.placement.options("learner", i)).remote(data, i, r.learners, master)
            for i in range(r.learners)
        ]
        ray.get([a.ready.remote() for a in self.learners])
        ray.get([s.handle.ready.remote() for slots in self.slots.values() for s in slots])
        self._weights_ref = None
        self._weights_refs: dict[int, ray.ObjectRef] = {}
        # Full weights go through a collective group; LoRA deltas (small) through the object store.
        self.collective = not cfg.lora.enabled and cfg.resources.weight_sync != "object_store"
        if self.collective:
            self._form_sync_group()
        self.restarts = 0
        # Fault-injection point for chaos tests: called with (request, slots) right after a stage's
        # shards are submitted (e.g. to ray.kill an actor mid-iteration).
        self.after_submit: Callable[[SampleRequest, list[ActorSlot]], None] | None = None
        self.sync()

    # ---- actors ---------------------------------------------------------------------------
    def _slot(self, role: str, index: int, data: dict, stage: Stage, precision: str | None) -> ActorSlot:
        actor_cls = ray.remote(SamplerActor)
        opts = {**self.placement.options(role, index), "max_restarts": self.cfg.resources.max_restarts,
                "max_task_retries": 0}

        def make() -> ray.actor.ActorHandle:
            return actor_cls.options(**opts).remote(data, stage, precision, self.reward_app)

        return ActorSlot(make(), make)

    def _stage_slots(self, stage: Stage) -> list[ActorSlot]:
        return self.slots[stage] if self.slots[stage] else self.slots["regen"]

    def _sync_targets(self) -> list[ray.actor.ActorHandle]:
        return [s.handle for stage in ("stage1", "regen") for s in self.slots[stage]]

    def _form_sync_group(self) -> None:
        targets = self._sync_targets()
        host, port, world = ray.util.get_node_ip_address(), _free_port(), len(targets) + 1
        refs = [self.learners[0].join_sync_group.remote(host, port, world)]
        refs += [h.join_sync_group.remote(host, port, rank, world) for rank, h in enumerate(targets, start=1)]
        ray.get(refs)

    def _recover(self, slot: ActorSlot, weights_ref) -> None:
        """Wait for a restarted actor (or replace a dead one) and give it the current policy."""
        self.restarts += 1
        if self.collective:
            # The restarted process is not in the broadcast group any more: from now on full
            # weights travel through the object store (correct, only slower).
            log.warning("a sampling actor restarted: full-weight sync falls back to the object store")
            self.collective = False
            if weights_ref is None:
                weights_ref = self.learners[0].policy_weights.remote()
        deadline = time.monotonic() + 120
        while True:
            try:
                ray.get(slot.handle.ready.remote(), timeout=60)
                break
            except ray.exceptions.ActorDiedError:
                log.warning("sampling actor is dead for good; starting a replacement")
                slot.handle = slot.make()
            except ACTOR_ERRORS:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if weights_ref is not None:
            ray.get(slot.handle.set_policy.remote(weights_ref))

    # ---- the Roles contract --------------------------------------------------------------------
    def sample(self, request: SampleRequest, tick: Callable[[int], None] | None = None) -> SampleOutput:
        return self.submit_sample(request).result(tick)

    def submit_sample(self, request: SampleRequest) -> PendingSample:
        """Start sampling a request on the stage's actors (sharded); ``.result()`` collects it."""
        slots = self._stage_slots(request.stage)
        weights_ref = self._eval_weights_ref if request.stage == "eval" else self._weights_refs.get(request.version)
        pending = PendingSample(self, request, slots, weights_ref)
        if self.after_submit is not None:
            self.after_submit(request, slots)
        return pending

    def train(self, request: TrainRequest) -> dict[str, float]:
        n = len(request.prompts)
        shards = _split(n, len(self.learners))
        refs = [a.train.remote(_train_shard(request, lo, hi), lo, n) for a, (lo, hi) in zip(self.learners, shards,
                                                                                             strict=True)]
        return ray.get(refs)[0]

    def sync(self) -> float:
        """Export the new policy once (object store) and load it into every sampling actor."""
        start = time.perf_counter()
        if self.collective:
            manifest = ray.get(self.learners[0].policy_manifest.remote())
            refs = [self.learners[0].broadcast_policy.remote()]
            refs += [h.receive_policy.remote(manifest) for h in self._sync_targets()]
            ray.get(refs)
            self._weights_ref = None  # recovery exports a fresh copy through the object store if needed
            self._weights_refs = {}
            return time.perf_counter() - start
        self._weights_ref = self.learners[0].policy_weights.remote()
        version = ray.get(self._weights_ref).version
        # Keep the previous version too: a one-step-off prefetch still samples with it.
        self._weights_refs = {v: r for v, r in self._weights_refs.items() if v >= version - 1}
        self._weights_refs[version] = self._weights_ref
        targets = [s.handle for stage in ("stage1", "regen") for s in self.slots[stage]]
        ray.get([h.set_policy.remote(self._weights_ref) for h in targets])
        return time.perf_counter() - start

    _eval_weights_ref = None

    def load_eval_weights(self, use_ema: bool) -> int:
        leader = self.learners[0]
        self._eval_weights_ref = leader.ema_weights.remote() if use_ema else leader.policy_weights.remote()
        ray.get([s.handle.set_policy.remote(self._eval_weights_ref) for s in self.slots["eval"]])
        return ray.get(self._eval_weights_ref).version

    def set_stage1_precision(self, precision: str) -> None:
        if not self.slots["stage1"]:
            return
        ray.get([s.handle.set_precision.remote(precision, self._weights_ref) for s in self.slots["stage1"]])

    def learner_state(self) -> dict:
        return ray.get(self.learners[0].state_dict.remote())

    def load_learner_state(self, state: dict) -> None:
        ray.get([a.load_state_dict.remote(state) for a in self.learners])
        self.sync()

    def describe(self) -> dict:
        report = ray.get(self.slots["stage1"][0].handle.precision_report.remote()) if self.slots["stage1"] else ""
        info = ray.get(self._stage_slots("regen")[0].handle.ready.remote())
        return {"mode": "ray", "device": info["device"], "precision_report": report,
                "dashboard_url": ray_dashboard_url()}

    def close(self) -> None:
        for slots in self.slots.values():
            for s in slots:
                ray.kill(s.handle)
        for a in self.learners:
            ray.kill(a)
        if self.reward_app:
            from ray import serve

            try:
                serve.delete(self.reward_app)
            except Exception as err:  # noqa: BLE001 - best-effort cleanup must not mask the run's result
                log.warning("could not delete reward app %s: %s", self.reward_app, err)
        self.placement.remove()


class PendingSample:
    """A sampling request in flight on Ray: shards submitted, collected (and retried) by ``result``."""

    def __init__(self, roles: RayRoles, request: SampleRequest, slots: list[ActorSlot], weights_ref) -> None:
        self.roles, self.request, self.slots, self.weights_ref = roles, request, slots, weights_ref
        self.shards = _split(len(request.seeds), len(slots))
        self.refs = {i: self._submit(i) for i in range(len(self.shards))}

    def _submit(self, i: int) -> ray.ObjectRef:
        lo, hi = self.shards[i]
        return self.slots[i].handle.sample.remote(_shard(self.request, lo, hi))

    def result(self, tick: Callable[[int], None] | None = None) -> SampleOutput:
        results: dict[int, SampleOutput] = {}
        attempts = dict.fromkeys(self.refs, 0)
        limit = max(1, self.roles.cfg.resources.max_restarts)
        while self.refs:
            i, ref = next(iter(self.refs.items()))
            try:
                results[i] = ray.get(ref)
                del self.refs[i]
                if tick is not None:
                    tick(self.shards[i][1] - self.shards[i][0])
            except ACTOR_ERRORS as err:
                attempts[i] += 1
                if attempts[i] > limit:
                    raise RuntimeError(f"{self.request.stage} shard {i} failed {attempts[i]} times: {err}") from err
                log.warning("%s actor %d died mid-iteration (%s); retrying its shard", self.request.stage, i,
                            type(err).__name__)
                self.roles._recover(self.slots[i], self.weights_ref)  # noqa: SLF001 - the roles own recovery
                self.refs[i] = self._submit(i)
        return SampleOutput.cat([results[i] for i in range(len(self.shards))])


def reward_server_kwargs(cfg: TrainJobConfig) -> dict:
    """Model-based rewards' options for the server.

    Reward replicas get no GPU of their own (the job's placement groups hold whole GPUs), so
    "auto" means CPU there; set an explicit device only where the replicas can see one.
    """
    from workers.rewards import RewardOptions

    if not cfg.reward.models:
        return {}
    options = {}
    for name, m in cfg.reward.models.items():
        device = "cpu" if m.device == "auto" else m.device
        options[name] = RewardOptions(path=m.path, device=device, batch_size=m.batch_size, extra=dict(m.extra))
    return {"options": options}


def deploy_reward_server(cfg: TrainJobConfig, app_name: str, role_resources: bool) -> str:
    """Run the job's reward server (a Serve app) on the cluster; return its HTTP base URL."""
    from ray import serve

    from services.reward.server import build_reward_app

    r = cfg.resources
    if not serve.status().proxies:  # Serve not running here yet: bind its proxy to a free loopback port
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
        except ray.exceptions.ActorAlreadyExistsError as err:  # another job started Serve just now: use it
            log.info("Serve was started concurrently by another job: %s", err)
    app = build_reward_app(
        cfg.reward.weights, num_replicas=r.reward_replicas, num_cpus=r.cpus_per_actor,
        resources={ROLE_RESOURCES["reward"]: ROLE_RESOURCE_UNIT} if role_resources else None,
        image_size=(cfg.model.height, cfg.model.width), **reward_server_kwargs(cfg),
    )
    serve.run(app, name=app_name, route_prefix=f"/{app_name}")
    http = serve.context._global_client.http_config if serve.context._global_client else None  # noqa: SLF001
    host, port = (http.host, http.port) if http else ("127.0.0.1", 8000)
    return f"http://{host}:{port}/{app_name}"


def ray_dashboard_url() -> str | None:
    """The dashboard of the cluster this process started or joined (None if it has none)."""
    return _DASHBOARD["url"]


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, nearly equal [lo, hi) shards of n items (empty shards dropped)."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i + 1] > bounds[i]]


def _shard(request: SampleRequest, lo: int, hi: int) -> SampleRequest:
    return SampleRequest(request.stage, request.prompts[lo:hi], request.seeds[lo:hi], request.version,
                         request.return_images, request.sde_window)


def _train_shard(request: TrainRequest, lo: int, hi: int) -> TrainRequest:
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return TrainRequest(
        prompts=request.prompts[lo:hi], latents_BCHW=request.latents_BCHW[lo:hi],
        advantages_B=request.advantages_B[lo:hi], sigmas=request.sigmas, iteration=request.iteration,
        trajectory_BSCHW=cut(request.trajectory_BSCHW), log_probs_BT=cut(request.log_probs_BT),
        stochastic_steps=request.stochastic_steps,
    )
