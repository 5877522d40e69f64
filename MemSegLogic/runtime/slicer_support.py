"""Which 3D Slicer versions MemSeg runs in (one definition: the extension's CMake check, the
module's warning and README's install section say the same; Testing/test_extension_build.py
checks that they agree).

Slicer 5.10 is the first release with `vtkSlicerSegmentEditorLogic` (Slicer's
Modules/Loadable/Segmentations/Logic, added 2025-09), which MemSeg writes segments through.
Everything else MemSeg uses from Slicer is older: `slicer.i18n` (5.4), `parameterNodeWrapper`
(5.4), the scripted Segment Editor effects; `slicer.packaging` (5.12) is used when present.
"""

from __future__ import annotations

from typing import Optional, Sequence

MINIMUM_SLICER_VERSION = (5, 10)


def slicer_version_problem(version: Sequence[int]) -> Optional[str]:
    """A one-line message if Slicer ``version`` (major, minor, ...) is too old for MemSeg, else None."""
    if tuple(version[:2]) >= MINIMUM_SLICER_VERSION:
        return None
    minimum = ".".join(map(str, MINIMUM_SLICER_VERSION))
    found = ".".join(map(str, version[:2]))
    return (f"MemSeg needs 3D Slicer {minimum} or later (this is Slicer {found}): "
            f"install a current Slicer from download.slicer.org.")
