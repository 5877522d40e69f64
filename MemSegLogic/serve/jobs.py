"""The server's job queue: a `ThreadPoolExecutor` runs jobs ``workers`` at a time (one by
default: one GPU), in arrival order; each job keeps its state, the latest progress
(fraction, message) and its cancel flag, and a finished job is forgotten ``ttl`` seconds later.

A job's work is any ``run(progress, cancel)`` call (`segment_volume` / `segment_sequence`): it
reports through MemSeg's `Monitor` and stops at the next slice once ``cancel.is_set()``; the flag
also turns itself on when the job's time limit passes.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional

from ..errors import MemSegError, SegmentationCancelled

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class QueueFullError(MemSegError):
    """The server holds as many unfinished jobs as it accepts."""


class JobCancel:
    """A job's cancel flag for `Monitor`: set by a cancel request, or by the clock at ``deadline``."""

    def __init__(self, deadline: Optional[float]):
        self._event = threading.Event()
        self.deadline = deadline

    def set(self) -> None:
        self._event.set()

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def is_set(self) -> bool:
        return self._event.is_set() or self.timed_out()


@dataclasses.dataclass
class Job:
    id: str
    kind: str
    state: str = QUEUED
    fraction: float = 0.0
    message: str = "queued"
    error: Optional[str] = None
    error_type: Optional[str] = None
    result: object = None
    created: float = dataclasses.field(default_factory=time.monotonic)
    finished: Optional[float] = None
    cancel: JobCancel = dataclasses.field(default_factory=lambda: JobCancel(None))

    def status(self) -> dict:
        status = {"id": self.id, "kind": self.kind, "state": self.state, "fraction": round(self.fraction, 4),
                  "message": self.message}
        if self.error is not None:
            status.update(error=self.error, error_type=self.error_type)
        return status


class JobQueue:
    def __init__(self, workers: int = 1, ttl: float = 600.0, time_limit: Optional[float] = 3600.0,
                 max_jobs: int = 32):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memseg-job")
        self._jobs: Dict[str, Job] = {}
        self._lock = threading.Lock()
        self.workers, self.ttl, self.time_limit, self.max_jobs = workers, ttl, time_limit, max_jobs
        self._model_locks: Dict[str, threading.Lock] = {}

    def submit(self, kind: str, model: str, run: Callable) -> Job:
        """Queue ``run(progress, cancel)``; jobs of one model run one at a time (they share its
        cached engine), whatever ``workers`` allows."""
        self.expire()
        with self._lock:
            unfinished = sum(job.state not in FINISHED for job in self._jobs.values())
            if unfinished >= self.max_jobs:
                raise QueueFullError(f"the server already holds {unfinished} unfinished jobs: try again later")
            job = Job(id=secrets.token_urlsafe(16), kind=kind)
            self._jobs[job.id] = job
            model_lock = self._model_locks.setdefault(str(model), threading.Lock())
        self._executor.submit(self._run, job, model_lock, run)
        return job

    def _run(self, job: Job, model_lock: threading.Lock, run: Callable) -> None:
        with model_lock:
            if job.cancel.is_set():  # cancelled while queued
                self._finish(job, CANCELLED, "cancelled before it started")
                return
            job.cancel.deadline = None if self.time_limit is None else time.monotonic() + self.time_limit
            job.state, job.message = RUNNING, "starting"

            def progress(fraction: float, message: str) -> None:
                job.fraction, job.message = fraction, message

            try:
                job.result = run(progress, job.cancel)
            except SegmentationCancelled as error:
                if job.cancel.timed_out():
                    self._finish(job, FAILED, f"the job ran past the server's time limit of {self.time_limit:g} s",
                                 "ServerError")
                else:
                    self._finish(job, CANCELLED, str(error))
            except (MemSegError, ValueError) as error:  # the input's fault: said as it is
                self._finish(job, FAILED, str(error), type(error).__name__)
            except Exception as error:  # a bug or the machine (e.g. CUDA): one line, kept in the log
                self._finish(job, FAILED, f"internal error on the server ({type(error).__name__}: {error})",
                             "ServerError")
            else:
                self._finish(job, DONE, job.message or "done")
                job.fraction = 1.0

    def _finish(self, job: Job, state: str, message: str, error_type: Optional[str] = None) -> None:
        job.message = message
        if state == FAILED:
            job.error, job.error_type = message, error_type
        job.finished = time.monotonic()
        job.state = state

    def get(self, job_id: str) -> Optional[Job]:
        self.expire()
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Optional[Job]:
        job = self.get(job_id)
        if job is not None and job.state not in FINISHED:
            job.cancel.set()
            if job.state == QUEUED:
                job.message = "cancelling"
        return job

    def expire(self) -> None:
        """Forget jobs finished more than ``ttl`` seconds ago (their results with them)."""
        now = time.monotonic()
        with self._lock:
            for job_id in [j.id for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl]:
                del self._jobs[job_id]

    def counts(self) -> dict:
        with self._lock:
            states = [job.state for job in self._jobs.values()]
        return {state: states.count(state) for state in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)}

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
