"""`run_batch`: every case of a manifest segmented on Ray, one model-holding actor per worker.

Ray is started here (a local instance on this machine's cores: nothing to set up), or joined at
``address`` ("auto": the cluster this machine belongs to; "ray://head:10001": a remote one). Each
worker is a Ray actor that keeps its engine loaded between cases (`segment_volume`'s engine
cache); ``gpus_per_worker`` makes Ray place each on its own GPU share. Cases stream to the
workers as they free up. Only this process writes the output folder: masks come back from the
workers and are written atomically here, with the state a re-run reads to skip what is current.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import sys
import threading
import time
import warnings
from typing import List, Optional, Sequence

from ..errors import MemSegError, MemSegWarning, SegmentationCancelled
from ..io.outputs import OutputError, check_output_path
from ..io.segmentation_io import MASK_SUFFIXES, write_mask
from ..runtime.checkpoints import Checkpoint, list_checkpoints, register_checkpoint
from .keys import ContentDigests, case_key
from .manifest import Case, read_manifest
from .state import BatchState
from .summary import CaseRecord, counts, write_summary
from .work import run_case

CANCEL_WAIT_S = 10.0  # after Ctrl-C, how long running cases get to stop between two slices


@dataclasses.dataclass
class BatchReport:
    records: List[CaseRecord]
    summary_path: pathlib.Path
    wall_seconds: float
    workers: int

    @property
    def counts(self) -> dict:
        return counts(self.records)

    def summary(self) -> str:
        figures = ", ".join(f"{n} {status}" for status, n in self.counts.items() if n)
        return f"{len(self.records)} cases: {figures} ({self.wall_seconds:.0f} s, {self.workers} workers); summary: {self.summary_path}"


@dataclasses.dataclass
class _Job:
    case: Case
    key: str
    output: pathlib.Path


class CaseWorker:
    """The Ray actor: one per worker, its model loaded once (engine cache) and kept."""

    def __init__(self, device: str, threads: Optional[int], checkpoints: Sequence[Checkpoint] = ()):
        from ..runtime.devices import set_cpu_threads

        set_cpu_threads(threads)
        # A worker is a process of its own (on a cluster, on another machine): it knows the
        # checkpoints of the registry file only, so the driver's own registrations (a fine-tuned
        # model) travel with it.
        for checkpoint in checkpoints:
            register_checkpoint(checkpoint, replace=True)
        self.device = device
        self._cancel = threading.Event()

    def version(self) -> str:
        from .. import __version__

        return __version__

    def run(self, case: Case):
        """(outcome, None) or (None, one-line reason); warnings as a list of lines."""
        self._cancel.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MemSegWarning)
            try:
                return run_case(case, self.device, self._cancel), None, _warning_lines(caught)
            except SegmentationCancelled:
                return None, "cancelled", []
            except (MemSegError, ValueError, OSError) as error:
                return None, _one_line(str(error)), []
            except Exception as error:  # a bug: the reason in one line; the run goes on
                return None, _one_line(f"internal error ({type(error).__name__}: {error})"), []

    def cancel(self) -> None:  # runs beside `run` (the actor has two threads)
        self._cancel.set()


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "failed without a message"


def _warning_lines(caught) -> List[str]:
    return [_one_line(f"warning: {w.message}") for w in caught if issubclass(w.category, MemSegWarning)]


def run_batch(manifest, output_dir, address: Optional[str] = None, workers: int = 1, gpus_per_worker: float = 0.0,
              cpus_per_worker: Optional[int] = None, device: str = "auto", quiet: bool = False) -> BatchReport:
    """Segment every case of ``manifest`` into ``output_dir``; returns the report (also written as
    summary.csv / summary.json there). Bad manifests raise `ManifestError` before any work; a
    failing case is recorded and the others go on; Ctrl-C (KeyboardInterrupt) cancels what is
    running, writes the summary so far and is raised again."""
    from tqdm import tqdm

    started = time.perf_counter()
    if workers < 1 or gpus_per_worker < 0 or (cpus_per_worker is not None and cpus_per_worker < 1):
        raise ValueError("workers and cpus per worker must be at least 1, gpus per worker at least 0")
    cases = read_manifest(manifest)
    output_dir = pathlib.Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"the output folder {output_dir} is a file: name a folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    state = BatchState(output_dir)
    records, jobs = _plan(cases, output_dir, state)
    bar = tqdm(total=len(cases), initial=len(records), unit="case", file=sys.stderr, disable=quiet,
               desc="memseg batch")
    try:
        if jobs:
            _run_on_ray(jobs, records, state, bar, address, workers, gpus_per_worker, cpus_per_worker, device)
    finally:  # also on Ctrl-C and SIGTERM: the summary says what was done
        bar.close()
        summary_path = write_summary(output_dir, records, manifest, time.perf_counter() - started, workers)
    return BatchReport(records, summary_path, time.perf_counter() - started, workers)


def _plan(cases: List[Case], output_dir: pathlib.Path, state: BatchState):
    """Records of the cases settled without running (current outputs, refused outputs) and the jobs."""
    records, jobs, digests = [], [], ContentDigests()
    for case in cases:
        output = output_dir / case.output_name
        record = CaseRecord(case=case.name, row=case.row, image=str(case.image), output=str(output), status="failed",
                            model=case.model)
        try:
            key = case_key(case, digests)
            previous = state.current(case.name, key, output)
            if previous is None:
                check_output_path(output, MASK_SUFFIXES, inputs=case.inputs(), overwrite=state.wrote(case.name))
        except (MemSegError, OSError) as error:
            record.message = _one_line(str(error))
            records.append(record)
            continue
        if previous is None:
            jobs.append(_Job(case, key, output))
            continue
        record.status, record.seconds, record.message = "skipped", 0.0, "same inputs as an earlier run: output kept"
        for name in ("voxels", "volume_ml", "dice", "volume_difference_ml", "model", "device"):
            setattr(record, name, previous.get(name, getattr(record, name)))
        records.append(record)
    return records, jobs


def _run_on_ray(jobs, records, state, bar, address, workers, gpus_per_worker, cpus_per_worker, device):
    try:
        import ray
    except ImportError:
        raise MemSegError("memseg batch runs on Ray, which is not installed: pip install 'memseg[batch]' "
                          "(or pip install 'ray>=2.60')") from None

    started_ray = not ray.is_initialized()  # else: a Ray set up by the caller (a notebook, a test), left running
    actors, running, pending = [], {}, collections.deque(jobs)
    previous_sigint = None
    try:
        cpus_per_worker = _connect(address, workers, cpus_per_worker) if started_ray else \
            (cpus_per_worker or max(1, int(ray.cluster_resources().get("CPU", 1)) // workers))
        _check_resources(workers, cpus_per_worker, gpus_per_worker, autoscaling=started_ray and address is not None)
        actor_class = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_concurrency=2)(CaseWorker)
        spawn = lambda: actor_class.remote(device, cpus_per_worker if not gpus_per_worker else None,  # noqa: E731
                                           list_checkpoints())
        bar.set_description_str(f"memseg batch: starting {min(workers, len(jobs))} workers")
        actors = [spawn() for _ in range(min(workers, len(jobs)))]
        _check_versions(ray, actors)
        bar.set_description_str("memseg batch")
        idle = list(actors)
        while pending or running:
            while idle and pending:
                actor, job = idle.pop(), pending.popleft()
                running[actor.run.remote(job.case)] = (actor, job)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                actor, job = running[ref]
                try:
                    outcome, error, notes = ray.get(ref)
                    idle.append(actor)
                except ray.exceptions.RayError as lost:  # the worker died (out of memory, a lost node)
                    outcome, error, notes = None, _one_line(f"the worker stopped: {str(lost).splitlines()[0]}"), []
                    actors.remove(actor)
                    actors.append(spawn())
                    idle.append(actors[-1])
                with _interrupts_deferred():  # output, state and record together, or none of them
                    records.append(_finish(job, outcome, error, notes, state))
                    del running[ref]
                bar.update(1)
                bar.set_postfix(counts(records), refresh=False)
    except BaseException:
        previous_sigint = _ignore_interrupts()  # a second Ctrl-C must not cut the clean-up short
        for actor, _ in running.values():
            actor.cancel.remote()
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_S)
        for job in [job for _, job in running.values()] + list(pending):
            records.append(CaseRecord(case=job.case.name, row=job.case.row, image=str(job.case.image),
                                      output=str(job.output), status="cancelled", model=job.case.model,
                                      message="the run was stopped before this case finished; nothing was written"))
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray and ray.is_initialized():
            ray.shutdown()
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def _connect(address, workers, cpus_per_worker) -> int:
    """Start (no address) or join a Ray cluster; returns the CPUs each worker reserves."""
    import ray

    if address is None:
        cores = os.cpu_count() or 1
        cpus_per_worker = cpus_per_worker or max(1, cores // workers)
        # num_cpus explicit: as many as the workers reserve, so that asking for more workers than
        # cores oversubscribes on purpose instead of leaving workers unplaced
        ray.init(address="local", num_cpus=max(cores, workers * cpus_per_worker), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    else:
        cpus_per_worker = cpus_per_worker or 1
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return cpus_per_worker


def _check_resources(workers, cpus_per_worker, gpus_per_worker, autoscaling: bool) -> None:
    """A clear error when the cluster cannot place the workers (they would wait for ever); a
    warning only on a joined cluster, whose autoscaler may add nodes."""
    import ray

    resources = ray.cluster_resources()
    short = [f"{need:g} {name} ({have:g} in the cluster)"
             for name, need, have in (("CPU", workers * cpus_per_worker, resources.get("CPU", 0)),
                                      ("GPU", workers * gpus_per_worker, resources.get("GPU", 0))) if need > have]
    if not short:
        return
    message = f"{workers} worker{'s need' if workers > 1 else ' needs'} {' and '.join(short)}"
    if not autoscaling:
        raise MemSegError(f"{message}: use fewer --workers or a smaller --gpus-per-worker")
    warnings.warn(f"{message}: workers wait until the cluster has them (autoscaling)", MemSegWarning, stacklevel=3)


def _check_versions(ray, actors) -> None:
    from .. import __version__

    try:
        versions = set(ray.get([actor.version.remote() for actor in actors]))
    except ray.exceptions.RayError as error:
        raise MemSegError(f"the Ray workers could not start MemSeg ({_one_line(str(error).splitlines()[0])}): install "
                          f"memseg {__version__} on every node of the cluster") from None
    if versions != {__version__}:
        raise MemSegError(f"the Ray workers run MemSeg {', '.join(sorted(versions))} but this computer runs {__version__}: "
                          "install the same version everywhere (a case's key includes the version)")


def _finish(job: _Job, outcome, error: Optional[str], notes: List[str], state: BatchState) -> CaseRecord:
    """The case's record; a finished mask is written atomically and entered in the state."""
    record = CaseRecord(case=job.case.name, row=job.case.row, image=str(job.case.image), output=str(job.output),
                        status="failed", model=job.case.model, message=error or "")
    if outcome is None:
        return record
    figures = {"seconds": round(outcome.seconds, 3), "voxels": outcome.voxels, "volume_ml": outcome.volume_ml,
               "dice": outcome.dice, "volume_difference_ml": outcome.volume_difference_ml, "model": outcome.model,
               "device": outcome.device}
    try:
        write_mask(job.output, outcome.mask(), outcome.ijk_to_ras, segment_name=job.case.segment_name)
        state.record(job.case.name, job.key, job.output, figures)
    except (MemSegError, OSError) as problem:
        record.message = _one_line(f"the output could not be written: {problem}")
        return record
    for name, value in figures.items():
        setattr(record, name, value)
    record.status, record.message = "done", "; ".join(notes)
    return record


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold SIGINT/SIGTERM (main thread only) until the block is over, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda number, frame: received.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def _ignore_interrupts():
    """Ignore SIGINT (main thread only); returns the handler to restore, or None."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    return None
