"""Exceptions MemSeg raises on purpose.

Every error a user can cause (bad prompt, bad volume, missing weights) has its own class, so the
Slicer UI, the CLI and scripts can tell them apart and show a one-line reason; anything else is a
bug and keeps its traceback.
"""


class MemSegError(Exception):
    """Base class of MemSeg's expected, user-facing errors."""


class InvalidVolumeError(MemSegError, ValueError):
    """The image cannot be segmented as given (2D, RGB, NaNs, empty, unreadable...)."""


class InvalidPromptError(MemSegError, ValueError):
    """The seed prompt is empty, outside the volume, or malformed."""


class NothingFoundError(InvalidPromptError):
    """The model found nothing at the prompt on its own slice: there is nothing to propagate.
    ``frame_index`` is the slice in the pass' own frames; the caller names it in the volume."""

    def __init__(self, frame_index: int, message: str = ""):
        super().__init__(message or f"the model found no object on the seed slice (frame {frame_index}): "
                         + NOTHING_FOUND_ADVICE)
        self.frame_index = frame_index


NOTHING_FOUND_ADVICE = ("draw a box around the object, click nearer its centre, or choose an intensity preset "
                        "that shows it (e.g. ct-lung)")


class SequenceBrowserError(MemSegError, ValueError):
    """A Slicer sequence browser or segmentation cannot take a result as set up (recording, another
    sequence's result, a segmentation driven by another browser)."""


class CheckpointError(MemSegError):
    """Model weights are missing, corrupt, or unknown."""


class DeviceError(MemSegError):
    """The requested compute device is unavailable or ran out of memory."""


class MemSegWarning(UserWarning):
    """Something in the input looks wrong but may be real (isolated absurd values, sheared
    geometry): MemSeg goes on and says so (the CLI prints it, Slicer logs it)."""


class SegmentationCancelled(MemSegError):
    """The user cancelled a running segmentation; nothing was written."""
