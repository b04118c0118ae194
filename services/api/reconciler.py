"""The reconciler: keeps job rows true to Ray, and the scheduler that feeds Ray from the queue.

One pass (``Reconciler.tick``), every ``reconcile_interval_s``:
1. sync every row Ray should know (SUBMITTED, RUNNING, CANCELLING) with Ray's job list. Jobs die
   with their cluster, so a job Ray no longer knows is requeued (attempt + 1; training resumes from
   its checkpoint) until ``max_attempts``, then FAILED;
2. submit PENDING jobs: RL jobs first, then aux jobs under their own cap, oldest first within a
   priority, while fewer than ``max_active_jobs`` are on the cluster.
While Ray is unreachable nothing changes: a row only moves on an answer from Ray. A restarted
service runs the same pass, so every row reaches its true state without any state of its own.
Run one service instance per database: two schedulers would race for the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestration.jobs import get_kind
from services.api.job_files import LOG_FILE, checkpoint_step, job_dir
from services.api.ray_jobs import RayJobInfo, RayJobs, RayUnavailable
from services.api.settings import ApiSettings
from services.api.store import submission_id
from services.api.tables import TERMINAL, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

ON_RAY = (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.CANCELLING)
# Ray status -> ours, for a job nobody asked us to cancel.
FROM_RAY = {"PENDING": JobStatus.SUBMITTED, "RUNNING": JobStatus.RUNNING, "SUCCEEDED": JobStatus.SUCCEEDED,
            "FAILED": JobStatus.FAILED, "STOPPED": JobStatus.CANCELLED}


class Reconciler:
    def __init__(self, settings: ApiSettings, sessions: sessionmaker[Session], ray: RayJobs) -> None:
        self.settings = settings
        self.sessions = sessions
        self.ray = ray

    async def run(self) -> None:
        """Forever (until cancelled at shutdown); a failed pass is logged and the next one runs."""
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except RayUnavailable as err:
                log.warning("reconciler: Ray unavailable, nothing changed: %s", err)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("reconciler pass failed")
            await asyncio.sleep(self.settings.reconcile_interval_s)

    def tick(self) -> None:
        ray_jobs = self.ray.list_jobs()  # raises RayUnavailable: then nothing is touched
        with self.sessions() as session:
            for job in session.scalars(select(Job).where(Job.status.in_(ON_RAY))).all():
                self._sync(session, job, ray_jobs.get(job.ray_submission_id or ""))
            self._schedule(session)

    def _move(self, session: Session, job: Job, **values: object) -> bool:
        """Write ``values`` only if the row still has the status we read: a cancel that landed since wins.

        Compare-and-set in SQL works the same on SQLite and PostgreSQL; the loser just waits for the
        next pass, which reads the new status.
        """
        result = session.execute(update(Job).where(Job.id == job.id, Job.status == job.status)
                                 .values(updated_at=utcnow(), **values))
        session.commit()
        session.refresh(job)
        return bool(result.rowcount)  # type: ignore[attr-defined] - a CursorResult for UPDATE

    # ---- sync ---------------------------------------------------------------------------------
    def _sync(self, session: Session, job: Job, info: RayJobInfo | None) -> None:
        step = checkpoint_step(job_dir(self.settings.job_root, job.id))
        if step != job.last_checkpoint_step:
            self._move(session, job, last_checkpoint_step=step)
        if info is None:
            self._lost(session, job)
            return
        if job.status == JobStatus.CANCELLING:
            if info.status in ("PENDING", "RUNNING"):
                self.ray.stop(info.submission_id)  # asynchronous in Ray; repeated until it sticks
            elif info.status == "STOPPED":
                self._finish(session, job, JobStatus.CANCELLED, "cancelled", info)
            else:  # it finished before the stop took effect: that is its true state
                self._finish(session, job, FROM_RAY[info.status], info.message, info)
            return
        status = FROM_RAY.get(info.status)
        if status is None:
            log.warning("job %s: unknown Ray status %s", job.id, info.status)
        elif status in TERMINAL:
            message = "stopped outside this service" if info.status == "STOPPED" else info.message
            self._finish(session, job, status, message, info)
        elif status != job.status:
            started = job.started_at or (utcnow() if status == JobStatus.RUNNING else None)
            self._move(session, job, status=status, status_message=info.message, started_at=started)

    def _lost(self, session: Session, job: Job) -> None:
        """Ray does not know the job: it never got there (cancelled first), or its cluster went away."""
        if job.status == JobStatus.CANCELLING:
            self._move(session, job, status=JobStatus.CANCELLED, finished_at=utcnow(),
                       status_message="cancelled before it ran on Ray")
        elif job.attempt < self.settings.max_attempts:
            message = (f"the Ray cluster lost submission {job.ray_submission_id}; requeued as attempt "
                       f"{job.attempt + 1} (training resumes from its last checkpoint)")
            if self._move(session, job, status=JobStatus.PENDING, attempt=job.attempt + 1,
                          ray_submission_id=None, status_message=message):
                log.warning("job %s: %s", job.id, message)
        else:
            self._move(session, job, status=JobStatus.FAILED, finished_at=utcnow(),
                       status_message=f"the Ray cluster lost the job {job.attempt} times; giving up")

    def _finish(self, session: Session, job: Job, status: JobStatus, message: str, info: RayJobInfo) -> None:
        self._save_log(job, info.submission_id)
        if self._move(session, job, status=status, status_message=message, finished_at=utcnow()):
            log.info("job %s: %s (%s)", job.id, status, message)

    def _save_log(self, job: Job, sid: str) -> None:
        """Keep Ray's driver log with the job: Ray's copy goes when the cluster does."""
        try:
            text = self.ray.logs(sid)
        except RayUnavailable as err:
            log.warning("job %s: could not fetch its log: %s", job.id, err)
            return
        if text is not None:
            (job_dir(self.settings.job_root, job.id) / LOG_FILE).write_text(text)

    # ---- schedule -----------------------------------------------------------------------------
    def _schedule(self, session: Session) -> None:
        on_cluster = select(func.count()).select_from(Job).where(
            Job.status.in_(ON_RAY), Job.ray_submission_id.is_not(None))
        active = int(session.scalar(on_cluster) or 0)
        active_aux = int(session.scalar(on_cluster.where(Job.priority == "aux")) or 0)
        pending = session.scalars(select(Job).where(Job.status == JobStatus.PENDING).order_by(Job.id)).all()
        queue = [j for j in pending if j.priority == "rl"] + [j for j in pending if j.priority != "rl"]
        for job in queue:
            if active >= self.settings.max_active_jobs:
                return
            if job.priority == "aux" and active_aux >= self.settings.max_active_aux_jobs:
                continue
            if self._submit(session, job):
                active += 1
                active_aux += job.priority == "aux"

    def _submit(self, session: Session, job: Job) -> bool:
        sid = submission_id(job.id, job.attempt)
        # Record the id first: if we crash after Ray accepts, the retry finds it as a duplicate.
        if not self._move(session, job, ray_submission_id=sid):
            return False  # cancelled meanwhile
        kind = get_kind(job.kind)
        cfg = kind.config_model.model_validate(job.config)
        directory = job_dir(self.settings.job_root, job.id)
        try:
            self.ray.submit(submission_id=sid, entrypoint=kind.entrypoint(directory, self.settings.job_python),
                            resources=kind.resources(cfg), env_vars=self._env_vars(),
                            metadata={"solrl_job_id": job.id, "kind": job.kind, "attempt": str(job.attempt)})
        except RayUnavailable as err:
            self._move(session, job, ray_submission_id=None, status_message=f"waiting to submit: {err}")
            log.warning("job %s: could not submit: %s", job.id, err)
            return False
        # If a cancel landed meanwhile this update loses, and the next pass stops the Ray job.
        self._move(session, job, status=JobStatus.SUBMITTED, submitted_at=utcnow(),
                   status_message=f"submitted to Ray as {sid}")
        log.info("job %s: submitted to Ray as %s", job.id, sid)
        return True

    def _env_vars(self) -> dict[str, str]:
        env = {"PYTHONPATH": str(self.settings.project_root),
               # Ray SIGKILLs a stopped job after this; the runner checkpoints on SIGTERM in the meantime.
               "RAY_JOB_STOP_WAIT_TIME_S": str(self.settings.job_stop_grace_s)}
        if os.environ.get("SOLRL_TINY_ROOT"):  # the tiny-model cache the jobs should reuse
            env["SOLRL_TINY_ROOT"] = os.environ["SOLRL_TINY_ROOT"]
        return env
