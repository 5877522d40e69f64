"""Slicer files without the Slicer application: segmentation sequences (``.seq.mrb``) and whole
scenes (``.mrb``) written and read through a headless MRML scene (slicer-core), built the way the
application records a cine result, so that Slicer opens them as if it had made them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Dict, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..cine.cine import Cine
from ..cine.segment import SequenceResult
from ..core.geometry import transform_points
from ..errors import InvalidVolumeError, MemSegError
from ..io.atomic import replace_atomically
from ..io.outputs import clean_text
from .sequences import addCineSequence, writeSequenceResult

SEGMENTATION_SEQUENCE_SUFFIX = ".seq.mrb"
SCENE_BUNDLE_SUFFIX = ".mrb"


def headlessScene(fileIO: bool = False):
    """An MRML scene with the module logics the Slicer application registers (Colors, Volumes,
    Segmentations, Sequences, Markups), for plain Python with slicer-core. Returns
    ``(scene, applicationLogic, {name: logic})``; keep them referenced while the scene is used.

    ``fileIO`` adds the data
    IO manager that reading a scene bundle (.mrb) needs."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetModuleLogic("Colors", app.GetColorLogic())
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    logics = {}
    for name, logic in (("Volumes", slicer.vtkSlicerVolumesLogic()),
                        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
                        ("Sequences", slicer.vtkSlicerSequencesLogic()),
                        ("Markups", slicer.vtkSlicerMarkupsLogic())):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    if fileIO:
        cache = tempfile.TemporaryDirectory(prefix="memseg-mrml-cache-")
        remote = slicer.vtkMRMLRemoteIOLogic()
        remote.SetMRMLScene(scene)
        remote.SetMRMLApplicationLogic(app)
        remote.GetCacheManager().SetRemoteCacheDirectory(cache.name)
        io = slicer.vtkDataIOManagerLogic()
        io.SetMRMLScene(scene)
        io.SetMRMLApplicationLogic(app)
        io.SetAndObserveDataIOManager(remote.GetDataIOManager())
        remote.AddDataIOToScene()
        logics.update(RemoteIO=remote, DataIOManager=io, _cache=cache)
    return scene, app, logics


def saveSequence(sequenceNode, path) -> None:
    """Write a sequence node (e.g. a segmentation sequence) as a ``.seq.mrb`` sequence bundle,
    which Slicer loads with Add Data. The node itself is not changed (no storage node is left on it)."""
    path = pathlib.Path(path)
    if not path.name.lower().endswith(SEGMENTATION_SEQUENCE_SUFFIX):
        raise ValueError(f"a sequence bundle ends with {SEGMENTATION_SEQUENCE_SUFFIX}, got {path.name}")
    scene = sequenceNode.GetScene()
    storage = slicer.vtkMRMLSequenceStorageNode()
    scene.AddNode(storage)  # sequence storage needs a scene to register the data nodes' classes

    def write(partial):
        storage.SetFileName(str(partial))
        if not storage.WriteData(sequenceNode):
            raise MemSegError(f"could not write {path}")

    try:
        replace_atomically(path, write)
    finally:
        scene.RemoveNode(storage)


def writeSequenceBundle(cine: Cine, result: SequenceResult, path, segmentName: str = "MemSeg") -> None:
    """Save a result for Slicer without the Slicer application (the CLI's ``-o``):

    - ``OUT.seq.mrb``: the segmentation sequence alone (one segment ``segmentName``, the cine's
      index values, the frames' geometry); Slicer loads it with Add Data next to the cine.
    - ``OUT.mrb``: a whole scene (cine volume sequence + browser + segmentation sequence
      synchronised in it): opening it in Slicer plays the loop with the masks over it.

    Both are built the way `segmentSequence` records results in Slicer (a headless scene with
    the cine in a browser, `writeSequenceResult`)."""
    path = pathlib.Path(path)
    name = path.name.lower()
    if not name.endswith(SCENE_BUNDLE_SUFFIX):
        raise ValueError(f"write a {SEGMENTATION_SEQUENCE_SUFFIX} (segmentation sequence) or {SCENE_BUNDLE_SUFFIX} "
                         f"(scene) file, got {path.name}")
    segmentName = clean_text(segmentName, "segment name")
    scene, app, logics = headlessScene()
    try:
        browser = addCineSequence(cine, scene, name=path.name.split(".")[0] or "Cine")
        segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentName)
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(
            browser.GetProxyNode(browser.GetMasterSequenceNode()))
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment(segmentName, segmentName)
        writeSequenceResult(result, browser, segmentationNode, segmentId)
        if name.endswith(SEGMENTATION_SEQUENCE_SUFFIX):
            saveSequence(browser.GetSequenceNode(segmentationNode), path)
        else:
            def write(partial):
                if not scene.WriteToMRB(str(partial)):
                    raise MemSegError(f"could not write the scene bundle {path}")

            replace_atomically(path, write)
    finally:
        scene.Clear(1)


@dataclasses.dataclass
class SegmentationSequence:
    """Masks read back from a segmentation sequence: ``masks[segmentId]`` (T, H, W) uint8 on the
    segmentations' reference grid (``ijk_to_ras`` of one frame), ``names[segmentId]``."""

    masks: Dict[str, np.ndarray]
    names: Dict[str, str]
    ijk_to_ras: np.ndarray
    index_values: Tuple[str, ...]
    index_name: str
    index_unit: str

    def cine(self, segmentId: str) -> Cine:
        return Cine(self.masks[segmentId], self.ijk_to_ras.copy(), self.index_values, self.index_name, self.index_unit)


def readSegmentationSequence(path, segmentIds=None) -> SegmentationSequence:
    """Read the segmentation sequence of a ``.seq.mrb`` (or the first one in a scene ``.mrb``)
    into arrays, without the Slicer application: every segment (or ``segmentIds``), every item,
    resampled onto the reference grid the segmentations record (a single-slice frame grid)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidVolumeError(f"no such file: {path}")
    scene, app, logics = headlessScene(fileIO=True)
    try:
        if path.name.lower().endswith(SEGMENTATION_SEQUENCE_SUFFIX):
            storage = scene.AddNewNodeByClass("vtkMRMLSequenceStorageNode")
            sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
            storage.SetFileName(str(path))
            if not storage.ReadData(sequence):
                raise InvalidVolumeError(f"cannot read the sequence bundle {path}")
        else:
            if not scene.ReadFromMRB(str(path)):
                raise InvalidVolumeError(f"cannot read the scene bundle {path}")
            sequence = _firstSegmentationSequence(scene, path)
        return segmentationSequenceArrays(sequence, segmentIds)
    finally:
        scene.Clear(1)


def _firstSegmentationSequence(scene, path):
    sequences = scene.GetNodesByClass("vtkMRMLSequenceNode")
    for index in range(sequences.GetNumberOfItems()):
        sequence = sequences.GetItemAsObject(index)
        if sequence.GetNumberOfDataNodes() and sequence.GetNthDataNode(0).IsA("vtkMRMLSegmentationNode"):
            return sequence
    raise InvalidVolumeError(f"{path} holds no segmentation sequence")


def segmentationSequenceArrays(sequenceNode, segmentIds=None) -> SegmentationSequence:
    """The masks of a segmentation sequence node as arrays (see `readSegmentationSequence`)."""
    count = sequenceNode.GetNumberOfDataNodes()
    if count == 0:
        raise InvalidVolumeError(f"sequence {sequenceNode.GetName()} is empty")
    geometry_name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    reference, matrix, masks, names = None, None, {}, {}
    for item in range(count):
        node = sequenceNode.GetNthDataNode(item)
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            raise InvalidVolumeError(f"item {item} of {sequenceNode.GetName()} is not a segmentation")
        segmentation = node.GetSegmentation()
        if reference is None:
            geometry = segmentation.GetConversionParameter(geometry_name)
            reference = slicer.vtkOrientedImageData()
            if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, reference):
                raise InvalidVolumeError(f"segmentation sequence {sequenceNode.GetName()} records no reference grid")
            columns, rows, slices = reference.GetDimensions()
            if slices != 1:
                raise InvalidVolumeError(f"the segmentations' grid has {slices} slices: not a 2D+t segmentation")
            extent = reference.GetExtent()
            world = vtk.vtkMatrix4x4()
            reference.GetImageToWorldMatrix(world)
            matrix = slicer.util.arrayFromVTKMatrix(world)
            matrix[:3, 3] = transform_points(matrix, [extent[0], extent[2], extent[4]])  # extent may not start at 0
            ids = list(segmentIds) if segmentIds is not None else list(segmentation.GetSegmentIDs())
            masks = {i: np.zeros((count, rows, columns), np.uint8) for i in ids}
        for segmentId in masks:
            segment = segmentation.GetSegment(segmentId)
            if segment is None:
                continue  # a frame without this segment: no voxels
            names.setdefault(segmentId, segment.GetName())
            masks[segmentId][item] = _segmentOnGrid(node, segmentId, reference)
    values = tuple(sequenceNode.GetNthIndexValue(item) for item in range(count))
    return SegmentationSequence(masks, names, matrix, values, sequenceNode.GetIndexName(), sequenceNode.GetIndexUnit())


def _segmentOnGrid(segmentationNode, segmentId, reference) -> np.ndarray:
    labelmap = slicer.vtkOrientedImageData()
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    columns, rows, _ = reference.GetDimensions()
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return np.zeros((rows, columns), np.uint8)  # an empty segment has no extent
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference, resampled)
    voxels = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    return (voxels.reshape(rows, columns) != 0).astype(np.uint8)
