"""Segmentation off the UI thread (`MemSegLogic.runtime.background`) with the real sam2 model code (tiny
random weights): the caller's thread keeps running and sees progress, Cancel stops the run and
nothing is returned, errors come back with the worker's trace, and every task shares one worker."""

import threading
import time

import numpy as np
import pytest

from MemSegLogic import (
    InvalidPromptError,
    Prompt,
    PropagationOptions,
    SegmentationCancelled,
    Volume,
    segment_volume,
)
from MemSegLogic.runtime.background import BackgroundTask

pytest.importorskip("sam2")


def _volume():
    k, j, i = np.indices((6, 40, 36))
    ball = ((k - 3) / 2.5) ** 2 + ((j - 20) / 10.0) ** 2 + ((i - 18) / 9.0) ** 2 < 1
    return Volume((300.0 * ball).astype(np.float32))


def _thread_name(progress, cancel):
    return threading.current_thread().name


def test_the_caller_keeps_running_and_sees_progress(tiny_sam2_checkpoint):
    task = BackgroundTask(segment_volume, _volume(), Prompt.from_points([[18, 20, 3]]),
                          model=tiny_sam2_checkpoint.name, device="cpu", axes=1,
                          propagation=PropagationOptions(absent_slices=0))
    polls, seen = 0, []
    while not task.done:  # what the effect's QTimer does on the main thread
        polls += 1
        seen.append(task.poll()[0])
        time.sleep(0.01)
    result = task.result()
    assert result.mask.shape == (6, 40, 36)
    assert polls > 1 and seen == sorted(seen) and task.poll() == (1.0, task.poll()[1])
    assert task.poll()[1].startswith("done")
    percent, text = task.status()  # what the module's and the effect's timers show
    assert percent == 100 and text.startswith(task.poll()[1] + " (") and text.endswith(" s)")


def test_cancel_stops_the_run_and_returns_nothing(tiny_sam2_checkpoint):
    started = threading.Event()

    def run(progress, cancel):
        def report(fraction, message):
            progress(fraction, message)
            if "slice" in message:
                started.set()
                cancel.wait(5)  # hold the worker until the caller has pressed Cancel
        return segment_volume(_volume(), Prompt.from_points([[18, 20, 3]]), model=tiny_sam2_checkpoint.name,
                              device="cpu", axes=1, propagation=PropagationOptions(absent_slices=0),
                              progress=report, cancel=cancel)

    task = BackgroundTask(run)
    assert started.wait(60)
    task.cancel()
    with pytest.raises(SegmentationCancelled):
        task.result(60)


def test_errors_come_back_with_the_trace_and_one_worker_serves_every_task():
    task = BackgroundTask(segment_volume, _volume(), Prompt.from_points([[500, 20, 3]]), model="no-model")
    with pytest.raises(InvalidPromptError, match="outside the volume"):
        task.result(30)
    assert "InvalidPromptError" in task.traceback_text and "segment_volume" in task.traceback_text
    names = {BackgroundTask(_thread_name).result(30) for _ in range(3)}
    assert len(names) == 1 and names.pop().startswith("MemSeg")
    assert threading.current_thread().name == "MainThread"
