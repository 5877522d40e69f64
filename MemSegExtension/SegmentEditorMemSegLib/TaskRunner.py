"""How MemSeg's panels (the module, both Segment Editor effects) run work off the main thread:
one `BackgroundTask` at a time, polled by a QTimer on the main thread, with progress, status,
Cancel and error display in one place."""

import logging
import sys
import traceback

import qt
import slicer
from slicer.i18n import tr as _

POLL_INTERVAL_MS = 100


def isCancellation(error):
    """True when ``error`` is MemSegLogic's "the user cancelled" (nothing was changed)."""
    errors = sys.modules.get("MemSegLogic.errors")
    return errors is not None and isinstance(error, errors.SegmentationCancelled)


def showError(error, detail, say=None):
    """A failure, the way every MemSeg panel reports it: one line in the status (``say``), a
    dialog with the traceback behind "Show details", the traceback in the log."""
    logging.error("MemSeg failed:\n%s", detail)
    if say is not None:
        say(_("Failed: {error}").format(error=error))
    slicer.util.errorDisplay(str(error), detailedText=detail)


class TaskRunner:
    """Runs one task at a time for a panel.

    ``show(progress, text)`` displays progress (0-100, None: unchanged) and a status line;
    ``onTick()`` runs on every poll while a task runs (e.g. a streamed preview);
    ``onIdle()`` runs once a task has ended, however it ended (e.g. button states).
    `start` takes ``finish(result)``, run on the main thread when the task succeeds (it returns the
    status text), and optionally ``failed(error)``, run when it failed or was cancelled."""

    def __init__(self, show, onIdle=None, onTick=None):
        self.show, self.onIdle, self.onTick = show, onIdle, onTick
        self.task = None
        self.what = ""
        self._finish = self._failed = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.poll)

    @property
    def running(self):
        return self.task is not None

    def start(self, task, finish, what="", failed=None):
        self.task, self._finish, self._failed, self.what = task, finish, failed, what
        self.show(0, _("Starting..."))
        self.timer.start()

    def poll(self):
        if self.task is None:
            if self.timer is not None:
                self.timer.stop()
            return
        if self.onTick is not None:
            self.onTick()
        progress, status = self.task.status()
        self.show(progress, f"{self.what}: {status}" if self.what else status)
        if not self.task.done:
            return
        self.timer.stop()
        task, self.task = self.task, None
        try:
            self.show(100, self._finish(task.result()))
        except Exception as error:
            if self._failed is not None:
                self._failed(error)
            if isCancellation(error):
                self.show(0, _("Cancelled: nothing was changed."))
            else:
                self.show(0, None)
                showError(error, task.traceback_text or traceback.format_exc(), lambda text: self.show(None, text))
        finally:
            if self.onIdle is not None:
                self.onIdle()

    def cancel(self):
        """Ask the running task to stop; its end is reported by the next poll."""
        if self.task is None:
            return False
        self.task.cancel()
        self.show(None, _("Cancelling..."))
        return True

    def abandon(self):
        """Cancel the running task and forget it: nothing it returns is used (the scene it would
        write into is closing, or the panel goes away)."""
        if self.task is not None:
            self.task.cancel()
        self.task = None
        if self.timer is not None:
            self.timer.stop()

    def cleanup(self):
        """The panel goes away: abandon the task and disconnect the timer (once)."""
        self.abandon()
        if self.timer is not None:
            self.timer.disconnect("timeout()", self.poll)
            self.timer = None
