"""Segments out: masks written into segmentation nodes the way Segment Editor effects write.

Writes go through `vtkSlicerSegmentEditorLogic`: the editor node's masking (editable area,
intensity range) and overwrite settings apply, and each write is one undo step. Previews live in
a separate segmentation node until applied.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..volume3d.segment import SegmentationResult, segment_volume
from .nodes import addHelperNode, promptFromMarkups, volumeFromNode

# One editor logic per segmentation node keeps that node's undo history between calls.
_editor_logics: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def segmentEditorNode(scene=None):
    """The Segment Editor's own parameter node (a singleton), created if the editor never opened."""
    scene = scene or slicer.mrmlScene
    node = scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.vtkMRMLSegmentEditorNode()
        node.SetSingletonTag("SegmentEditor")
        node = scene.AddNode(node)
    return node


def editorLogicFor(segmentationNode, sourceVolumeNode=None, editorNode=None):
    """The `vtkSlicerSegmentEditorLogic` MemSeg writes into ``segmentationNode`` with (kept, so
    its undo history lives as long as the node)."""
    scene = segmentationNode.GetScene()
    logic = _editor_logics.get(segmentationNode)
    if logic is None:
        logic = slicer.vtkSlicerSegmentEditorLogic()
        logic.SetMRMLScene(scene)
        _editor_logics[segmentationNode] = logic
    logic.SetSegmentEditorNode(editorNode or segmentEditorNode(scene))
    logic.SetSegmentationNode(segmentationNode)
    if sourceVolumeNode is not None:
        logic.SetSourceVolumeNode(sourceVolumeNode)
    return logic


def orientedLabelmap(mask: np.ndarray, ijkToRAS: np.ndarray):
    """A KJI mask as the `vtkOrientedImageData` segment editor effects modify segments with
    (``scriptedEffect.modifySelectedSegmentByLabelmap``); ``ijkToRAS`` in the segmentation's frame."""
    labelmap = slicer.vtkOrientedImageData()
    image = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(), deep=True,
                                       array_type=vtk.VTK_UNSIGNED_CHAR)
    labelmap.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    labelmap.GetPointData().SetScalars(image)
    labelmap.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToRAS))
    return labelmap


def showPreview(mask: np.ndarray, ijkToRAS: np.ndarray, segmentationNode, segmentId: str, previewNode=None):
    """Show a result before it is applied: a separate segmentation node (under the same transform)
    holding one segment in the target segment's colour. The target segment is not touched, so
    Cancel only removes the preview and nothing enters the undo history. Returns the preview node
    (pass it back to update it)."""
    scene = segmentationNode.GetScene()
    if previewNode is None or previewNode.GetScene() is None:
        previewNode = addHelperNode(scene, "vtkMRMLSegmentationNode", f"{segmentationNode.GetName()} MemSeg preview")
        previewNode.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
    segmentation = previewNode.GetSegmentation()
    segmentation.RemoveAllSegments()
    target = segmentationNode.GetSegmentation().GetSegment(segmentId)
    color = target.GetColor() if target is not None else (1.0, 1.0, 0.0)
    previewId = segmentation.AddEmptySegment("preview", "MemSeg preview", color)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        orientedLabelmap(mask, ijkToRAS), previewNode, previewId,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    display = previewNode.GetDisplayNode()
    if display is not None:
        display.SetOpacity(0.6)
    return previewNode


class StreamedPreview:
    """A run's `PreviewMask` shown in a preview node (`showPreview`) while it fills in: call
    `refresh` from the main thread's poll timer. A full-volume update takes the main thread a
    while on a large scan, so it happens at most every ``interval`` seconds (the first slice at once)."""

    def __init__(self, previewMask, ijkToRAS: np.ndarray, segmentationNode, segmentId: str, previewNode=None,
                 interval: float = 0.5):
        self.mask = previewMask
        self.ijkToRAS = np.array(ijkToRAS, dtype=np.float64)
        self.segmentationNode, self.segmentId = segmentationNode, segmentId
        self.node = previewNode
        self.interval = interval
        self._shownAt = None

    def refresh(self, force: bool = False) -> bool:
        """Show what arrived since the last refresh; True if the view changed."""
        now = time.monotonic()
        if not force and self._shownAt is not None and now - self._shownAt < self.interval:
            return False
        snapshot = self.mask.snapshot()
        if snapshot is None:
            return False
        self.node = showPreview(snapshot[1], self.ijkToRAS, self.segmentationNode, self.segmentId, self.node)
        self._shownAt = now
        return True


def removePreview(previewNode) -> None:
    if previewNode is not None and previewNode.GetScene() is not None:
        previewNode.GetScene().RemoveNode(previewNode)


# Where a module Apply is undone (`undoHistoryFor`).
SEGMENT_EDITOR_UNDO = "segment-editor"  # the Segment Editor's undo button / Ctrl+Z
MEMSEG_UNDO = "memseg"  # MemSeg's own history (`undoLastEdit`, the module's Undo button)


def newSegmentationFor(volumeNode, name: str = ""):
    """A new segmentation node on ``volumeNode``'s grid, shown, in the volume's scene."""
    segmentationNode = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    return segmentationNode


def segmentToWrite(segmentationNode, segmentId: str, newName: str) -> str:
    """``segmentId`` when the segmentation still has it, else the id of a new empty segment ``newName``."""
    segmentation = segmentationNode.GetSegmentation()
    if segmentId and segmentation.GetSegment(segmentId) is not None:
        return segmentId
    return segmentation.AddEmptySegment("", newName)


def undoHistoryFor(segmentationNode, editorSegmentationNode, editorAvailable: bool = True) -> str:
    """Which undo history a module Apply into ``segmentationNode`` should go to.

    The user undoes segment edits in the Segment Editor, so the state is saved there whenever the
    editor edits this segmentation or none yet (the caller then points the editor at it).
    When the editor edits another segmentation, switching it would drop that one's undo history,
    so the edit goes to MemSeg's own history instead."""
    if editorAvailable and (editorSegmentationNode is None or editorSegmentationNode is segmentationNode
                            or editorSegmentationNode.GetID() == segmentationNode.GetID()):
        return SEGMENT_EDITOR_UNDO
    return MEMSEG_UNDO


def writeMaskToSegment(mask: np.ndarray, ijkToRAS: np.ndarray, segmentationNode, segmentId: str,
                       sourceVolumeNode=None, editorNode=None, mode: str = "set", saveStateForUndo=None) -> None:
    """Write a KJI mask into a segment as one undoable edit, honouring the editor's masking and
    overwrite settings. ``mode``: "set" replaces the segment, "add" unions, "remove" erases.

    ``saveStateForUndo``: what saves the undo state before the write, when it belongs in another
    history than MemSeg's own (the Segment Editor widget's ``saveStateForUndo``, whose logic must
    edit ``segmentationNode``); by default MemSeg's history for the node (`undoLastEdit`)."""
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"segmentation {segmentationNode.GetName()} has no segment {segmentId!r}")
    modes = {"set": slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet,
             "add": slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
             "remove": slicer.vtkSlicerSegmentEditorLogic.ModificationModeRemove}
    if mode not in modes:
        raise ValueError(f"mode must be one of {', '.join(modes)}, got {mode!r}")
    geometry_parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if sourceVolumeNode is not None and not segmentationNode.GetSegmentation().GetConversionParameter(geometry_parameter):
        # An empty segmentation takes the source volume's grid, as the Segment Editor does.
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(sourceVolumeNode)
    labelmap = orientedLabelmap(mask, ijkToRAS)
    logic = editorLogicFor(segmentationNode, sourceVolumeNode, editorNode)
    (saveStateForUndo or logic.SaveStateForUndo)()
    logic.ModifySegmentByLabelmap(segmentationNode, segmentId, labelmap, modes[mode], True, False)


def undoLastEdit(segmentationNode) -> bool:
    """Undo MemSeg's last write into this segmentation; False if there is nothing to undo."""
    logic = _editor_logics.get(segmentationNode)
    if logic is None or not logic.CanUndo():
        return False
    logic.Undo()
    return True


def segmentVolumeNode(volumeNode, segmentationNode, segmentId, prompts, editorNode=None,
                      **options) -> SegmentationResult:
    """Segment ``volumeNode`` from ``prompts`` (a `Prompt`, a list of them, or a markups point
    list / ROI node) and write the mask into segment ``segmentId`` (created if missing).

    ``options`` go to `MemSegLogic.segment_volume` (model, axes, device, preset, threshold,
    propagation, speed, progress, cancel). Nothing is written if the run fails or is cancelled."""
    if segmentationNode is None:
        raise ValueError("a segmentation node is required")
    volume = volumeFromNode(volumeNode, referenceNode=segmentationNode)
    if prompts is not None and hasattr(prompts, "IsA"):
        if prompts.IsA("vtkMRMLMarkupsROINode"):
            prompts = promptFromMarkups(volumeNode, roiNode=prompts)
        else:
            prompts = promptFromMarkups(volumeNode, pointsNode=prompts)
    result = segment_volume(volume, prompts, **options)
    segmentation = segmentationNode.GetSegmentation()
    if not segmentId or segmentation.GetSegment(segmentId) is None:
        segmentId = segmentation.AddEmptySegment(segmentId or "", segmentId or "MemSeg")
    writeMaskToSegment(result.mask, volume.ijk_to_ras, segmentationNode, segmentId, volumeNode, editorNode)
    result.segment_id = segmentId
    return result
