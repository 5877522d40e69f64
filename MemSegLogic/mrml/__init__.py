"""Slicer adapters: the only MemSegLogic package that imports `slicer`. Works in the Slicer
application and, without it, with slicer-core (real MRML in plain Python).

- `nodes`: volume nodes -> `Volume`, markups and slice-view clicks -> `Prompt`
- `segments`: masks -> segments through the Segment Editor logic (masking, overwrite, undo), previews
- `slice_view`: the geometry of a click in a slice view (pure numpy, no Slicer)
- `sequences`: cine loops in sequence browsers -> `Cine`, results recorded as segmentation sequences
- `bundles`: .seq.mrb / .mrb files through a headless scene

Console use (Slicer's Python console)::

    from MemSegLogic import mrml
    volume = slicer.util.getNode("CTChest")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "lung")
    prompt = mrml.promptFromMarkups(volume, roiNode=slicer.util.getNode("R"))
    mrml.segmentVolumeNode(volume, segmentation, segmentId, prompt, model="medsam-lite", preset="ct-lung")
    mrml.undoLastEdit(segmentation)  # one undo removes the whole result
    from MemSegLogic import mrml  # also importable as MemSegLogic.mrml_sequence for cine loops
    browser = slicer.util.getNode("US cine browser")
    result = mrml.segmentSequence(browser, segmentation, "LV", slicer.util.getNode("F"),
                                  model="/path/to/memsam.pth")
"""

from .bundles import (
    SCENE_BUNDLE_SUFFIX,
    SEGMENTATION_SEQUENCE_SUFFIX,
    SegmentationSequence,
    headlessScene,
    readSegmentationSequence,
    saveSequence,
    segmentationSequenceArrays,
    writeSequenceBundle,
)
from .nodes import (
    addHelperNode,
    batchPrompts,
    controlPointsWorld,
    ijkToWorldMatrix,
    promptFromMarkups,
    promptFromSegmentSlice,
    promptFromSliceView,
    roiCornersWorld,
    toWorldMatrix,
    volumeFromNode,
)
from .segments import (
    MEMSEG_UNDO,
    SEGMENT_EDITOR_UNDO,
    StreamedPreview,
    editorLogicFor,
    newSegmentationFor,
    orientedLabelmap,
    removePreview,
    segmentEditorNode,
    segmentToWrite,
    segmentVolumeNode,
    showPreview,
    undoHistoryFor,
    undoLastEdit,
    writeMaskToSegment,
)
from .sequences import (
    SequenceSnapshot,
    addCineSequence,
    cineFromBrowser,
    promptFromFrameMarkups,
    segmentSequence,
    writeSequenceResult,
)

__all__ = [
    "MEMSEG_UNDO", "SEGMENT_EDITOR_UNDO", "undoHistoryFor",
    "SCENE_BUNDLE_SUFFIX", "SEGMENTATION_SEQUENCE_SUFFIX", "SegmentationSequence", "SequenceSnapshot", "StreamedPreview",
    "addCineSequence",
    "addHelperNode",
    "batchPrompts", "cineFromBrowser", "controlPointsWorld", "editorLogicFor", "headlessScene",
    "ijkToWorldMatrix", "newSegmentationFor", "orientedLabelmap", "promptFromFrameMarkups", "promptFromMarkups",
    "promptFromSegmentSlice", "promptFromSliceView", "readSegmentationSequence", "removePreview",
    "roiCornersWorld", "saveSequence", "segmentEditorNode", "segmentSequence", "segmentToWrite", "segmentVolumeNode",
    "segmentationSequenceArrays", "showPreview", "toWorldMatrix", "undoLastEdit", "volumeFromNode",
    "writeMaskToSegment", "writeSequenceBundle", "writeSequenceResult",
]
