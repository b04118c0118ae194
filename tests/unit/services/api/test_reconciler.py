"""The reconciler's decisions, on a real SQLite database.

Ray is the external boundary here and is stubbed (``FakeRay``: a dict of submissions); the real Jobs API
is exercised by tests/integration/api.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the job service needs the api extra")

from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from orchestration.jobs import Resources  # noqa: E402
from services.api.auth import create_token  # noqa: E402
from services.api.db import make_engine, migrate, session_factory  # noqa: E402
from services.api.job_files import LOG_FILE, write_spec  # noqa: E402
from services.api.ray_jobs import RayJobInfo, RayUnavailable  # noqa: E402
from services.api.reconciler import Reconciler  # noqa: E402
from services.api.settings import ApiSettings  # noqa: E402
from services.api.store import new_job_id  # noqa: E402
from services.api.tables import Job, JobStatus  # noqa: E402


class FakeRay:
    """Stands in for the Ray Jobs API: submissions by id, their status, and what was asked of it."""

    def __init__(self) -> None:
        self.jobs: dict[str, RayJobInfo] = {}
        self.submitted: list[tuple[str, str, dict]] = []
        self.stopped: list[str] = []
        self.down = False

    def list_jobs(self) -> dict[str, RayJobInfo]:
        if self.down:
            raise RayUnavailable("dashboard down")
        return dict(self.jobs)

    def submit(self, *, submission_id: str, entrypoint: str, resources: Resources, env_vars: dict,
               metadata: dict) -> bool:
        if submission_id in self.jobs:
            return False
        self.submitted.append((submission_id, entrypoint, metadata))
        self.jobs[submission_id] = RayJobInfo(submission_id, "PENDING", "", metadata)
        return True

    def set(self, sid: str, status: str, message: str = "") -> None:
        self.jobs[sid] = RayJobInfo(sid, status, message, {})

    def stop(self, sid: str) -> None:
        self.stopped.append(sid)

    def logs(self, sid: str) -> str | None:
        return f"log of {sid}\n" if sid in self.jobs else None


@pytest.fixture
def env(tmp_path: Path) -> tuple[ApiSettings, sessionmaker[Session], FakeRay, Reconciler, str]:
    settings = ApiSettings(home=tmp_path, max_active_jobs=3, max_active_aux_jobs=1, max_attempts=2)
    engine = make_engine(settings.database_url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        owner, _ = create_token(session, "t")
    ray = FakeRay()
    return settings, sessions, ray, Reconciler(settings, sessions, ray), owner.id  # type: ignore[arg-type]


def _add(env, kind: str = "solrl", priority: str = "rl", **fields) -> str:
    settings, sessions, _, _, owner = env
    job_id = new_job_id()
    config = {"run_dir": "/x"} if kind == "eval" else {}
    write_spec(settings.job_root, job_id, kind, config)
    with sessions() as session:
        session.add(Job(id=job_id, owner_id=owner, kind=kind, priority=priority, config=config, num_gpus=0,
                        status=fields.pop("status", JobStatus.PENDING), status_message="", attempt=1, **fields))
        session.commit()
    return job_id


def _row(env, job_id: str) -> Job:
    with env[1]() as session:
        return session.get(Job, job_id)


def test_rl_jobs_go_first_and_aux_jobs_have_their_own_cap(env) -> None:
    aux = [_add(env, "aux.vadd", "aux") for _ in range(2)]
    rl = [_add(env) for _ in range(3)]
    env[3].tick()
    assert [m["solrl_job_id"] for _, _, m in env[2].submitted] == rl  # 3 slots: every RL job, oldest first
    for job_id in rl:
        env[2].set(f"solrl-{job_id}", "SUCCEEDED")
    env[3].tick()  # RL jobs finish and free the slots; one aux job may run at a time
    assert [m["solrl_job_id"] for _, _, m in env[2].submitted][3:] == [aux[0]]
    assert _row(env, aux[1]).status == JobStatus.PENDING


def test_entrypoint_and_metadata_come_from_the_kind(env) -> None:
    job_id = _add(env)
    env[3].tick()
    sid, entrypoint, metadata = env[2].submitted[0]
    assert sid == f"solrl-{job_id}" and metadata == {"solrl_job_id": job_id, "kind": "solrl", "attempt": "1"}
    assert entrypoint.endswith(f"-m orchestration.entrypoint {env[0].job_root / job_id}")
    row = _row(env, job_id)
    assert row.status == JobStatus.SUBMITTED and row.ray_submission_id == sid and row.submitted_at


def test_a_submission_ray_already_has_is_ours(env) -> None:
    """After a crash between Ray accepting and the row update, the retry finds the duplicate."""
    job_id = _add(env)
    env[2].set(f"solrl-{job_id}", "RUNNING")
    env[3].tick()
    assert env[2].submitted == [] and _row(env, job_id).status == JobStatus.SUBMITTED
    env[3].tick()
    assert _row(env, job_id).status == JobStatus.RUNNING and _row(env, job_id).started_at


@pytest.mark.parametrize(("ray_status", "expected", "message"), [
    ("SUCCEEDED", JobStatus.SUCCEEDED, "done"),
    ("FAILED", JobStatus.FAILED, "done"),
    ("STOPPED", JobStatus.CANCELLED, "stopped outside this service"),
])
def test_terminal_ray_states_finish_the_row_and_keep_the_log(env, ray_status: str, expected: JobStatus,
                                                             message: str) -> None:
    job_id = _add(env, status=JobStatus.RUNNING, ray_submission_id="solrl-x")
    env[2].set("solrl-x", ray_status, "done")
    env[3].tick()
    row = _row(env, job_id)
    assert (row.status, row.status_message) == (expected, message) and row.finished_at
    assert (env[0].job_root / job_id / LOG_FILE).read_text() == "log of solrl-x\n"


def test_cancel_stops_the_ray_job_then_finishes_as_cancelled(env) -> None:
    job_id = _add(env, status=JobStatus.CANCELLING, ray_submission_id="solrl-c")
    env[2].set("solrl-c", "RUNNING")
    env[3].tick()
    assert env[2].stopped == ["solrl-c"] and _row(env, job_id).status == JobStatus.CANCELLING
    env[2].set("solrl-c", "STOPPED")
    env[3].tick()
    assert _row(env, job_id).status == JobStatus.CANCELLED
    never_ran = _add(env, status=JobStatus.CANCELLING)
    env[3].tick()
    assert _row(env, never_ran).status == JobStatus.CANCELLED


def test_a_job_the_cluster_lost_is_requeued_then_given_up(env) -> None:
    job_id = _add(env, status=JobStatus.RUNNING, ray_submission_id=f"solrl-{new_job_id()}")
    (env[0].job_root / job_id / "checkpoints").mkdir()
    (env[0].job_root / job_id / "checkpoints" / "latest").write_text("iter-000004")
    env[3].tick()  # lost -> PENDING attempt 2 -> resubmitted in the same pass under a new id
    row = _row(env, job_id)
    assert row.attempt == 2 and row.status == JobStatus.SUBMITTED and row.ray_submission_id == f"solrl-{job_id}-a2"
    assert row.last_checkpoint_step == 4
    env[2].jobs.clear()  # the cluster restarts again
    env[3].tick()
    row = _row(env, job_id)
    assert row.status == JobStatus.FAILED and "lost the job 2 times" in row.status_message


def test_nothing_changes_while_ray_is_unreachable(env) -> None:
    job_id = _add(env, status=JobStatus.RUNNING, ray_submission_id="solrl-y")
    queued = _add(env)
    env[2].down = True
    with pytest.raises(RayUnavailable):
        env[3].tick()
    assert _row(env, job_id).status == JobStatus.RUNNING and _row(env, queued).status == JobStatus.PENDING
