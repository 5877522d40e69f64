"""Slicer adapters: MRML nodes in, segments out. The only MemSegLogic module that imports `slicer`.

Writes go through `vtkSlicerSegmentEditorLogic`, exactly as Segment Editor effects write: the
editor node's masking (editable area, intensity range) and overwrite settings apply, and each
write is one undo step. Works in the Slicer application and, for tests, with `slicer-core`.

Console use (Slicer's Python console)::

    from MemSegLogic import mrml
    volume = slicer.util.getNode("CTChest")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "lung")
    prompt = mrml.promptFromMarkups(volume, roiNode=slicer.util.getNode("R"))
    mrml.segmentVolumeNode(volume, segmentation, segmentId, prompt, model="medsam-lite", preset="ct-lung")
    mrml.undoLastEdit(segmentation)  # one undo removes the whole result
"""

from __future__ import annotations

import weakref

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..volume3d.segment import SegmentationResult, segment_volume
from ..errors import InvalidPromptError, InvalidVolumeError
from ..core.geometry import AXIS_NAMES, axis_index, transform_points
from ..core.prompt import Prompt
from ..core.volume import Volume

# One editor logic per segmentation node keeps that node's undo history between calls.
_editor_logics: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _to_world(node) -> np.ndarray:
    """4x4 from the node's local RAS to world RAS (linear parent transforms only)."""
    transform = node.GetParentTransformNode() if node is not None else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InvalidVolumeError(f"{node.GetName()} is under a non-linear transform: harden it first")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _matrix_to_numpy(matrix)


def _ijk_to_world(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return _to_world(volumeNode) @ _matrix_to_numpy(matrix)


def volumeFromNode(volumeNode, referenceNode=None) -> Volume:
    """A `Volume` (a copy of the voxels) with IJK->RAS expressed in ``referenceNode``'s coordinate
    system (its parent transform); world RAS when no reference is given."""
    if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        kind = "nothing" if volumeNode is None else volumeNode.GetClassName()
        raise InvalidVolumeError(f"expected a scalar volume node, got {kind}")
    if volumeNode.GetImageData() is None:
        raise InvalidVolumeError(f"volume {volumeNode.GetName()} has no voxels")
    components = volumeNode.GetImageData().GetNumberOfScalarComponents()
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    if components > 1 and array.ndim == 3:  # arrayFromVolume keeps the component axis
        array = array[..., None]
    return Volume(array, np.linalg.inv(_to_world(referenceNode)) @ _ijk_to_world(volumeNode))


def _control_points_world(markupsNode) -> np.ndarray:
    if markupsNode is None:
        return np.zeros((0, 3))
    points = []
    for index in range(markupsNode.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(index, position)
        points.append(position)
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def _roi_corners_world(roiNode) -> np.ndarray:
    """The 8 corners of an ROI markup (it may be rotated, and under transforms), in world RAS."""
    object_to_world = _matrix_to_numpy(roiNode.GetObjectToWorldMatrix())
    half = np.array(roiNode.GetSize()) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    return transform_points(object_to_world, signs * half)


def promptFromMarkups(volumeNode, pointsNode=None, roiNode=None, negativeNode=None, axis=None) -> Prompt:
    """A `Prompt` from markups: positive points (a point list), negative points (another point
    list) and/or a box (an ROI: its extent on the slice through its centre).

    The slice axis is ``axis`` if given; else, with an ROI, the IJK axis along which the ROI is
    thinnest (draw it flat on the slice you mean); else K."""
    world_to_ijk = np.linalg.inv(_ijk_to_world(volumeNode))
    to_ijk = lambda ras: transform_points(world_to_ijk, ras)  # noqa: E731
    positive = to_ijk(_control_points_world(pointsNode))
    negative = to_ijk(_control_points_world(negativeNode))
    box = None
    if roiNode is not None:
        corners_ijk = to_ijk(_roi_corners_world(roiNode))
        low, high = corners_ijk.min(axis=0), corners_ijk.max(axis=0)
        axis = int(np.argmin(np.rint(high) - np.rint(low))) if axis is None else axis_index(axis)
        low[axis] = high[axis] = np.rint((low[axis] + high[axis]) / 2.0)
        box = [low, high]
    if not len(positive) and not len(negative) and box is None:
        raise InvalidPromptError("empty prompt: place at least one point or an ROI box")
    return Prompt.from_points(positive, negative, axis=axis if axis is not None else "K", box=box)


def batchPrompts(volumeNodes, pointsNode=None, roiNode=None) -> list:
    """For a batch run: the same markups (points and/or ROI, in world RAS) as a prompt for each
    volume, as ``[(volumeNode, prompt or None, reason it is skipped)]``. A volume the markups do
    not fall inside is skipped with the reason, instead of stopping the batch."""
    plan = []
    for volumeNode in volumeNodes:
        try:
            prompt = promptFromMarkups(volumeNode, pointsNode=pointsNode, roiNode=roiNode)
            volume = volumeFromNode(volumeNode)
            volume.check_segmentable()
            prompt.check(volume)
        except (InvalidPromptError, InvalidVolumeError) as error:
            plan.append((volumeNode, None, str(error)))
        else:
            plan.append((volumeNode, prompt, ""))
    return plan


def promptFromSliceView(volumeNode, sliceNode, positiveXY=(), negativeXY=(), boxXY=None) -> Prompt:
    """A `Prompt` from positions in a slice view (the XY of its interactor events): positive and
    negative clicks and/or a dragged box (two corners). Each lands on the voxel under the cursor;
    the slice axis is the volume axis the view shows (an oblique reformat is refused)."""
    from .slice_view import prompt_from_view

    return prompt_from_view(_ijk_to_world(volumeNode), _matrix_to_numpy(sliceNode.GetXYToRAS()),
                            _matrix_to_numpy(sliceNode.GetSliceToRAS()), positiveXY, negativeXY, boxXY)


def promptFromSegmentSlice(volumeNode, segmentationNode, segmentId, sliceNode) -> Prompt:
    """A mask prompt: the segment's cross-section on the volume slice a view shows (the Segment
    Editor's "seed from the current slice": paint or correct one slice, propagate it)."""
    from ..core.geometry import slice_stack
    from .slice_view import view_axis

    ijk_to_world = _ijk_to_world(volumeNode)
    slice_to_ras = _matrix_to_numpy(sliceNode.GetSliceToRAS())
    axis = view_axis(slice_to_ras, ijk_to_world)
    plane_ijk = transform_points(np.linalg.inv(ijk_to_world), slice_to_ras[:3, 3])
    index = int(np.rint(plane_ijk[axis]))
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
    if not 0 <= index < slice_stack(mask, axis).shape[0]:
        raise InvalidPromptError(f"the view shows {AXIS_NAMES[axis]}={index}, outside the volume")
    cross_section = slice_stack(mask, axis)[index] > 0
    if not cross_section.any():
        raise InvalidPromptError(f"segment {segmentId!r} has no voxels on slice {AXIS_NAMES[axis]}={index}: "
                                 "paint it on the slice shown, or click instead")
    return Prompt.from_mask(cross_section, axis, index)


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
    labelmap.SetImageToWorldMatrix(_numpy_to_matrix(ijkToRAS))
    return labelmap


def showPreview(mask: np.ndarray, ijkToRAS: np.ndarray, segmentationNode, segmentId: str, previewNode=None):
    """Show a result before it is applied: a separate segmentation node (under the same transform)
    holding one segment in the target segment's colour. The target segment is not touched, so
    Cancel only removes the preview and nothing enters the undo history. Returns the preview node
    (pass it back to update it)."""
    scene = segmentationNode.GetScene()
    if previewNode is None or previewNode.GetScene() is None:
        previewNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{segmentationNode.GetName()} MemSeg preview")
        previewNode.SetHideFromEditors(True)  # not offered in segmentation selectors
        previewNode.CreateDefaultDisplayNodes()
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


def removePreview(previewNode) -> None:
    if previewNode is not None and previewNode.GetScene() is not None:
        previewNode.GetScene().RemoveNode(previewNode)


def writeMaskToSegment(mask: np.ndarray, ijkToRAS: np.ndarray, segmentationNode, segmentId: str,
                       sourceVolumeNode=None, editorNode=None, mode: str = "set") -> None:
    """Write a KJI mask into a segment as one undoable edit, honouring the editor's masking and
    overwrite settings. ``mode``: "set" replaces the segment, "add" unions, "remove" erases."""
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
    logic.SaveStateForUndo()
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
    progress, cancel). Nothing is written if the run fails or is cancelled."""
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
