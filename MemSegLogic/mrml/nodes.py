"""MRML nodes in: volume nodes as `Volume`, markups and slice-view clicks as `Prompt`.

Positions are taken in world RAS (parent transforms applied; a non-linear one is refused) and
mapped to the volume's voxels, so a prompt lands on the voxel the user placed it on.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..core.geometry import AXIS_NAMES, axis_index, transform_points
from ..core.prompt import Prompt
from ..core.volume import Volume
from ..errors import InvalidPromptError, InvalidVolumeError


def toWorldMatrix(node) -> np.ndarray:
    """4x4 from the node's local RAS to world RAS (linear parent transforms only)."""
    transform = node.GetParentTransformNode() if node is not None else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InvalidVolumeError(f"{node.GetName()} is under a non-linear transform: harden it first")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def ijkToWorldMatrix(volumeNode) -> np.ndarray:
    """4x4 from the volume's IJK to world RAS (its IJK->RAS under its parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return toWorldMatrix(volumeNode) @ slicer.util.arrayFromVTKMatrix(matrix)


def addHelperNode(scene, className: str, name: str):
    """A node MemSeg shows while the user works (a preview, prompt markers), with its display
    nodes: hidden from node selectors, never saved with the scene (a saved scene holds only the
    user's data), and never made the target of the user's markups placement."""
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    placing = (selection.GetActivePlaceNodeID(), selection.GetActivePlaceNodeClassName()) if selection else None
    node = scene.AddNewNodeByClass(className, name)
    if selection is not None and selection.GetActivePlaceNodeID() == node.GetID():
        # Markups logic makes a new markups node the target of the user's "place" tool: keep theirs.
        selection.SetActivePlaceNodeID(placing[0])
        selection.SetActivePlaceNodeClassName(placing[1])
    node.SetHideFromEditors(True)
    node.SetSaveWithScene(False)
    node.CreateDefaultDisplayNodes()
    for index in range(node.GetNumberOfDisplayNodes()):
        node.GetNthDisplayNode(index).SetSaveWithScene(False)
    return node


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
    return Volume(array, np.linalg.inv(toWorldMatrix(referenceNode)) @ ijkToWorldMatrix(volumeNode))


def controlPointsWorld(markupsNode) -> np.ndarray:
    """(N, 3) world RAS positions of a markups node's control points; none for no node."""
    if markupsNode is None:
        return np.zeros((0, 3))
    points = []
    for index in range(markupsNode.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(index, position)
        points.append(position)
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def roiCornersWorld(roiNode) -> np.ndarray:
    """The 8 corners of an ROI markup (it may be rotated, and under transforms), in world RAS."""
    object_to_world = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
    half = np.array(roiNode.GetSize()) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    return transform_points(object_to_world, signs * half)


def promptFromMarkups(volumeNode, pointsNode=None, roiNode=None, negativeNode=None, axis=None) -> Prompt:
    """A `Prompt` from markups: positive points (a point list), negative points (another point
    list) and/or a box (an ROI: its extent on the slice through its centre).

    The slice axis is ``axis`` if given; else, with an ROI, the IJK axis along which the ROI is
    thinnest (draw it flat on the slice you mean); else K."""
    world_to_ijk = np.linalg.inv(ijkToWorldMatrix(volumeNode))
    to_ijk = lambda ras: transform_points(world_to_ijk, ras)  # noqa: E731
    positive = to_ijk(controlPointsWorld(pointsNode))
    negative = to_ijk(controlPointsWorld(negativeNode))
    box = None
    if roiNode is not None:
        corners_ijk = to_ijk(roiCornersWorld(roiNode))
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

    return prompt_from_view(ijkToWorldMatrix(volumeNode), slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS()),
                            slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), positiveXY, negativeXY, boxXY)


def promptFromSegmentSlice(volumeNode, segmentationNode, segmentId, sliceNode) -> Prompt:
    """A mask prompt: the segment's cross-section on the volume slice a view shows (the Segment
    Editor's "seed from the current slice": paint or correct one slice, propagate it)."""
    from ..core.geometry import slice_stack
    from .slice_view import view_axis

    ijk_to_world = ijkToWorldMatrix(volumeNode)
    slice_to_ras = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
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
