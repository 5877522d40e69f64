"""Slicer adapters for cine loops (2D+t): a sequence browser in, a segmentation sequence out.

A cine in Slicer is a sequence of single-slice volumes (scalar, or RGB vector volumes as the
DICOM image-sequence plugin loads colour echo loops) shown through a sequence browser. MemSeg
reads it as a `Cine`, runs `segment_sequence`, and records the masks as a **segmentation
sequence synchronised in the same browser**, whose proxy is the user's segmentation node: every
frame is written through the segment editor logic (masking and overwrite settings apply), other
segments of the same frame are kept, and the browser plays image and masks together.

Console use (Slicer's Python console)::

    from MemSegLogic.mrml import sequences
    browser = slicer.util.getNode("US cine browser")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    # a point list F placed on the frame shown (the browser's selected item)
    result = mrml_sequence.segmentSequence(browser, segmentation, "LV", slicer.util.getNode("F"),
                                           model="/path/to/memsam.pth")
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..cine.cine import Cine, plane_needed, select_plane
from ..cine.segment import SequenceResult, frame_prompt, segment_sequence
from ..core.geometry import transform_points
from ..errors import InvalidPromptError, InvalidVolumeError, SequenceBrowserError
from ..io.cine_io import is_numeric_index
from .nodes import controlPointsWorld, roiCornersWorld, toWorldMatrix
from .segments import editorLogicFor, writeMaskToSegment

# A prompt point may sit this far (in voxels of the single-slice volume) off the frame's plane:
# anything placed in a slice view showing the frame lies within the slice's slab.
_PLANE_TOLERANCE = 0.5


# -- reading the cine ---------------------------------------------------------------------------
def _volumeSequence(browserNode, sequenceNode=None):
    if browserNode is None or not browserNode.IsA("vtkMRMLSequenceBrowserNode"):
        kind = "nothing" if browserNode is None else browserNode.GetClassName()
        raise ValueError(f"expected a sequence browser node, got {kind}")
    sequence = sequenceNode or browserNode.GetMasterSequenceNode()
    if sequence is None:
        raise InvalidVolumeError(f"sequence browser {browserNode.GetName()} has no sequence to segment")
    if not browserNode.IsSynchronizedSequenceNode(sequence.GetID(), True):
        raise SequenceBrowserError(f"sequence {sequence.GetName()} is not browsed by {browserNode.GetName()}")
    return sequence


def _itemVoxels(node, sequence, item: int) -> Tuple[np.ndarray, np.ndarray]:
    """A copy of an item's voxels (K, J, I, C) and its IJK->RAS (the item's own frame)."""
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):  # vector volumes included
        kind = "nothing" if node is None else node.GetClassName()
        raise InvalidVolumeError(
            f"item {item} of sequence {sequence.GetName()} is {kind}, not an image: choose a volume sequence")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InvalidVolumeError(f"item {item} of sequence {sequence.GetName()} has no voxels")
    columns, rows, slices = image.GetDimensions()
    components = image.GetNumberOfScalarComponents()
    if components not in (1, 3, 4):
        raise InvalidVolumeError(
            f"sequence {sequence.GetName()} has {components} components per pixel: expected grey or RGB(A) frames")
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    voxels = np.array(voxels.reshape(slices, rows, columns, components), copy=True)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return voxels, slicer.util.arrayFromVTKMatrix(matrix)


def _asFrame(voxels: np.ndarray, ijk_to_ras: np.ndarray, plane) -> Tuple[np.ndarray, np.ndarray]:
    """A (K, J, I, C) item as one frame (rows, cols[, C]) and the frame's (1, H, W) IJK->RAS."""
    if voxels.shape[0] == 1:
        frame = voxels[0]
    elif plane is None:
        raise plane_needed(voxels.shape[:3])
    else:
        frames, ijk_to_ras = select_plane(voxels[np.newaxis], ijk_to_ras, plane)
        frame = frames[0]
    return (frame[..., 0] if frame.shape[-1] == 1 else frame), ijk_to_ras


def cineFromBrowser(browserNode, sequenceNode=None, plane=None, referenceNode=None) -> Cine:
    """The browser's master volume sequence (or ``sequenceNode``, one it browses) as a `Cine`:
    copies of the frames (grey, or RGB(A) as loaded from colour DICOM), the frames' IJK->RAS
    in ``referenceNode``'s coordinate system (its parent transform; world RAS by default, with
    the proxy volume's transform applied) and the index values, name and unit.

    Items that are 3D volumes need ``plane=(axis, index)``: the 2D plane followed through time.
    Every item must share one shape and geometry. Raises `InvalidVolumeError` for a sequence that
    cannot be segmented (empty, one item, constant...). The user's nodes are only read."""
    sequence = _volumeSequence(browserNode, sequenceNode)
    to_frame = np.linalg.inv(toWorldMatrix(referenceNode)) @ toWorldMatrix(browserNode.GetProxyNode(sequence))
    frames, first = [], None
    for item in range(sequence.GetNumberOfDataNodes()):
        voxels, ijk_to_ras = _itemVoxels(sequence.GetNthDataNode(item), sequence, item)
        if first is None:
            first = (voxels.shape, ijk_to_ras)
        elif voxels.shape != first[0]:
            raise InvalidVolumeError(
                f"item {item} (index {sequence.GetNthIndexValue(item)}) of {sequence.GetName()} has "
                f"{_describe(voxels.shape)}, item 0 has {_describe(first[0])}: every frame of a cine must share one grid")
        elif not np.allclose(ijk_to_ras, first[1], rtol=0.0, atol=1e-6 * max(1.0, np.abs(first[1]).max())):
            raise InvalidVolumeError(
                f"item {item} (index {sequence.GetNthIndexValue(item)}) of {sequence.GetName()} has another "
                "position, orientation or spacing than item 0: every frame of a cine must share one geometry")
        frame, frame_to_ras = _asFrame(voxels, ijk_to_ras, plane)
        frames.append(frame)
    if first is None:
        Cine(np.zeros((0, 1, 1), np.uint8)).check_segmentable()  # raises the "empty sequence" error
    values = tuple(sequence.GetNthIndexValue(item) for item in range(len(frames)))
    cine = Cine(np.stack(frames), to_frame @ frame_to_ras, values, sequence.GetIndexName(), sequence.GetIndexUnit())
    cine.check_segmentable()
    return cine


def _describe(shape) -> str:
    slices, rows, columns, components = shape
    colour = "" if components == 1 else f" x {components} components"
    return f"{slices} x {rows} x {columns} voxels{colour}"


# -- prompts -----------------------------------------------------------------------------------
def promptFromFrameMarkups(browserNode, pointsNode=None, roiNode=None, negativeNode=None, frame=None,
                           plane=None, sequenceNode=None):
    """A `Prompt` on one frame from markups, as `mrml.promptFromMarkups` builds one for a volume:
    positive points (a point list), negative points (another point list) and/or a box (an ROI:
    its extent on the frame's plane). ``frame`` defaults to the browser's selected item.

    Control points (world RAS) map through the frame's IJK->RAS; a point off the frame's plane
    (more than half a slice) is refused rather than projected, as it was not placed on the image."""
    sequence = _volumeSequence(browserNode, sequenceNode)
    count = sequence.GetNumberOfDataNodes()
    if frame is None:
        frame = _selectedItem(browserNode, sequence)
    frame = int(frame)
    if not 0 <= frame < count:
        raise InvalidPromptError(f"frame {frame} is outside the sequence (0..{count - 1})")
    voxels, ijk_to_ras = _itemVoxels(sequence.GetNthDataNode(frame), sequence, frame)
    _, frame_to_ras = _asFrame(voxels, ijk_to_ras, plane)
    world_to_ijk = np.linalg.inv(toWorldMatrix(browserNode.GetProxyNode(sequence)) @ frame_to_ras)
    slice_mm = float(np.linalg.norm(frame_to_ras[:3, 2]))

    def on_frame(points, what):
        ijk = transform_points(world_to_ijk, points)
        if len(ijk) and np.abs(ijk[:, 2]).max() > _PLANE_TOLERANCE:
            raise InvalidPromptError(
                f"a {what} lies {np.abs(ijk[:, 2]).max() * slice_mm:.1f} mm off the image plane of frame {frame}: "
                "place it in a slice view that shows the frame")
        return ijk[:, :2]

    positive = on_frame(controlPointsWorld(pointsNode), "positive point")
    negative = on_frame(controlPointsWorld(negativeNode), "negative point")
    box = None
    if roiNode is not None:
        corners = transform_points(world_to_ijk, roiCornersWorld(roiNode))
        if corners[:, 2].min() > _PLANE_TOLERANCE or corners[:, 2].max() < -_PLANE_TOLERANCE:
            raise InvalidPromptError(f"the ROI does not cross the image plane of frame {frame}")
        low, high = corners[:, :2].min(axis=0), corners[:, :2].max(axis=0)
        box = (low[0], low[1], high[0], high[1])
    if not len(positive) and not len(negative) and box is None:
        raise InvalidPromptError("empty prompt: place at least one point or an ROI box on the frame")
    return frame_prompt(frame, positive=positive, negative=negative, box=box)


def _selectedItem(browserNode, sequence) -> int:
    """The browser's selected item as an item number of ``sequence`` (matched by index value
    when it is not the master)."""
    selected = max(browserNode.GetSelectedItemNumber(), 0)
    master = browserNode.GetMasterSequenceNode()
    if sequence is master or master is None:
        return selected
    item = sequence.GetItemNumberFromIndexValue(master.GetNthIndexValue(selected), True)
    if item < 0:
        raise InvalidPromptError(f"sequence {sequence.GetName()} has no item at the browser's selected index")
    return item


# -- writing the result ------------------------------------------------------------------------
def _browserOfProxy(node):
    """The browser node whose proxy ``node`` is, or None."""
    scene = node.GetScene()
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode") if scene is not None else None
    for index in range(browsers.GetNumberOfItems() if browsers is not None else 0):
        browser = browsers.GetItemAsObject(index)
        if browser.IsProxyNodeID(node.GetID()):
            return browser
    return None


def _segmentationSequence(browserNode, segmentationNode):
    """The segmentation sequence ``segmentationNode`` is the proxy of in this browser, created
    (empty, with the master's index name, unit and type) when there is none; and whether it was."""
    sequence = browserNode.GetSequenceNode(segmentationNode)
    if sequence is not None:
        return sequence, False
    other = _browserOfProxy(segmentationNode)
    if other is not None and other is not browserNode:
        raise SequenceBrowserError(
            f"segmentation {segmentationNode.GetName()} is shown by sequence browser {other.GetName()}: "
            "use another segmentation node, or the sequence that browser plays")
    master = browserNode.GetMasterSequenceNode()
    scene = browserNode.GetScene()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode",
                                       scene.GenerateUniqueName(f"{segmentationNode.GetName()}-Sequence"))
    sequence.SetIndexName(master.GetIndexName())
    sequence.SetIndexUnit(master.GetIndexUnit())
    sequence.SetIndexType(master.GetIndexType())
    browserNode.AddSynchronizedSequenceNodeID(sequence.GetID())
    # Neither played nor saved until the writing is done (see _BrowseMasterOnly): the browser
    # must not copy anything between the proxy and the new sequence on its own meanwhile.
    browserNode.SetPlayback(sequence, False)
    browserNode.SetSaveChanges(sequence, False)
    browserNode.SetOverwriteProxyName(sequence, False)  # the user's segmentation keeps its name
    browserNode.AddProxyNode(segmentationNode, sequence, False)
    return sequence, True


def _unshare(segmentationNode, sequence) -> None:
    """The proxy shares its vtkSegmentation with the item on show when the browser saves changes
    (a shallow copy): give it its own copy, or loading another frame into it would overwrite
    that item."""
    shared = segmentationNode.GetSegmentation()
    for item in range(sequence.GetNumberOfDataNodes()):
        if sequence.GetNthDataNode(item).GetSegmentation() is shared:
            own = slicer.vtkSegmentation()
            own.DeepCopy(shared)
            segmentationNode.SetAndObserveSegmentation(own)
            return


def _emptyLike(segmentationNode):
    """A segmentation with the same segments (ids, names, colours, layers) and no voxels: the
    start of a frame no segmentation was recorded for."""
    empty = slicer.vtkMRMLSegmentationNode()
    empty.CopyContent(segmentationNode, True)
    for segmentId in empty.GetSegmentation().GetSegmentIDs():
        empty.GetSegmentation().ClearSegment(segmentId)
    return empty


class _BrowseMasterOnly:
    """While writing: only the master's proxy follows the selected item (other proxies, ours
    included, are left alone so browsing creates nothing in other sequences), no proxy change is
    saved into a sequence by the browser, playback paused. Every flag (or ``after``'s
    (playback, save changes) for a sequence) and the selected item are restored afterwards.

    Order matters: a proxy that shares its content with the item on show (save changes on) must
    stop being played *before* save changes goes off, or the browser deep-copies that item into
    its own proxy, i.e. into itself, which empties it."""

    def __init__(self, browserNode, after=None):
        self.browser = browserNode
        self.master = browserNode.GetMasterSequenceNode()
        nodes = vtk.vtkCollection()
        browserNode.GetSynchronizedSequenceNodes(nodes, False)
        self.others = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        self.after = after or {}

    def __enter__(self):
        browser = self.browser
        self.selected = browser.GetSelectedItemNumber()
        self.active = browser.GetPlaybackActive()
        self.master_playback = browser.GetPlayback(self.master)
        self.flags = [(s, *self.after.get(s.GetID(), (browser.GetPlayback(s), browser.GetSaveChanges(s))))
                      for s in self.others]
        browser.SetPlaybackActive(False)
        for sequence in self.others:
            browser.SetPlayback(sequence, False)
        for sequence in self.others:
            browser.SetSaveChanges(sequence, False)
        browser.SetPlayback(self.master, True)  # the source volume shows the frame written
        return self

    def __exit__(self, *exc):
        browser = self.browser
        for sequence, _, save in self.flags:
            browser.SetSaveChanges(sequence, save)
        for sequence, playback, _ in self.flags:
            browser.SetPlayback(sequence, playback)
        browser.SetSelectedItemNumber(self.selected)
        browser.Modified()  # the proxies show the selected item again (the Sequences logic observes this)
        browser.SetPlayback(self.master, self.master_playback)
        browser.SetPlaybackActive(self.active)
        return False


def writeSequenceResult(result: SequenceResult, browserNode, segmentationNode, segmentId: str,
                        editorNode=None) -> str:
    """Record ``result`` in the browser as a segmentation sequence with ``segmentationNode`` as its
    proxy (the sequence is created if the browser has none for this proxy, reused otherwise).

    Frame by frame: the segmentation recorded for that item (or, for an item without one, the
    same segments with no voxels) is loaded into the proxy, the frame's mask replaces segment
    ``segmentId`` (created if missing) through the segment editor logic, so the editor node's
    masking and overwrite settings apply, and the proxy is stored as that item. Other segments
    keep each frame's own content. ``result.ijk_to_ras`` is taken in the segmentation node's
    coordinate system (as `segmentSequence` computes it). The browser's selected item is
    restored; returns the segment id."""
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise ValueError("a segmentation node is required")
    master = _volumeSequence(browserNode)
    values = tuple(master.GetNthIndexValue(item) for item in range(master.GetNumberOfDataNodes()))
    if len(values) != len(result.masks) or values != tuple(result.index_values):
        raise SequenceBrowserError(
            f"the result has {len(result.masks)} frames (index {_span(result.index_values)}) but "
            f"{master.GetName()} has {len(values)} (index {_span(values)}): it was computed for another sequence")
    if browserNode.GetRecordingActive():
        raise SequenceBrowserError(f"sequence browser {browserNode.GetName()} is recording: stop recording first")
    if segmentationNode.GetScene() is not browserNode.GetScene():
        raise SequenceBrowserError("the segmentation and the sequence browser are in different scenes")

    sequence, created = _segmentationSequence(browserNode, segmentationNode)
    selected = max(browserNode.GetSelectedItemNumber(), 0)
    sourceVolume = browserNode.GetProxyNode(master)
    # a new sequence is played and saves Segment Editor corrections, as Slicer's "+" sequence does
    with _BrowseMasterOnly(browserNode, after={sequence.GetID(): (True, True)} if created else None):
        _unshare(segmentationNode, sequence)
        segmentation = segmentationNode.GetSegmentation()
        if not segmentId or segmentation.GetSegment(segmentId) is None:
            segmentId = segmentation.AddEmptySegment(segmentId or "", segmentId or "MemSeg")
        segment = segmentation.GetSegment(segmentId)
        name, color = segment.GetName(), segment.GetColor()
        if created:  # what the user drew so far belongs to the frame on show
            sequence.SetDataNodeAtValue(segmentationNode, values[selected])
        empty = _emptyLike(segmentationNode)
        for item, value in enumerate(values):
            browserNode.SetSelectedItemNumber(item)  # the source volume (intensity masking) shows frame t
            recorded = sequence.GetDataNodeAtValue(value, True)
            segmentationNode.CopyContent(recorded if recorded is not None else empty, True)
            if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
                segmentationNode.GetSegmentation().AddEmptySegment(segmentId, name, color)
            writeMaskToSegment(result.masks[item][np.newaxis], result.ijk_to_ras, segmentationNode, segmentId,
                               sourceVolume, editorNode)
            sequence.SetDataNodeAtValue(segmentationNode, value)
    # Undo states of the loop hold other frames' segmentations: undoing one would paste another
    # frame into the one on show.
    editorLogicFor(segmentationNode, editorNode=editorNode).ClearUndoState()
    return segmentId


class SequenceSnapshot:
    """The segmentation sequence ``segmentationNode`` is the proxy of in ``browserNode``, as it is
    now (every frame, and what the proxy shows): take it just before `writeSequenceResult`, and
    `restore()` undoes that whole run on every frame. The Segment Editor's own undo cannot: its
    history holds one frame's segmentation and goes when the frame changes. Restore only before
    anything else edits the sequence (the effect drops its snapshot when it is deactivated)."""

    def __init__(self, browserNode, segmentationNode):
        self.browser, self.segmentation = browserNode, segmentationNode
        sequence = browserNode.GetSequenceNode(segmentationNode)
        self.sequenceID = sequence.GetID() if sequence is not None else None  # None: the run creates it
        self.items = [] if sequence is None else [
            (sequence.GetNthIndexValue(item), _copyOf(sequence.GetNthDataNode(item)))
            for item in range(sequence.GetNumberOfDataNodes())]
        self.shown = _copyOf(segmentationNode)

    def restore(self) -> None:
        browser, scene = self.browser, self.browser.GetScene()
        sequence = browser.GetSequenceNode(self.segmentation)
        if sequence is None or (self.sequenceID is not None and sequence.GetID() != self.sequenceID):
            raise SequenceBrowserError(f"{self.segmentation.GetName()} is no longer recorded in the sequence it "
                                       "was: nothing to restore")
        with _BrowseMasterOnly(browser):
            _unshare(self.segmentation, sequence)
            if self.sequenceID is None:  # the run created the sequence: it goes
                browser.RemoveSynchronizedSequenceNode(sequence.GetID())
                scene.RemoveNode(sequence)
            else:
                kept = {value for value, _ in self.items}
                for item in reversed(range(sequence.GetNumberOfDataNodes())):
                    if sequence.GetNthIndexValue(item) not in kept:
                        sequence.RemoveDataNodeAtValue(sequence.GetNthIndexValue(item))
                for value, node in self.items:
                    sequence.SetDataNodeAtValue(node, value)
            self.segmentation.CopyContent(self.shown, True)


def _copyOf(segmentationNode):
    copy = slicer.vtkMRMLSegmentationNode()
    copy.CopyContent(segmentationNode, True)
    return copy


def _span(values) -> str:
    values = tuple(values)
    return "none" if not values else f"{values[0]}..{values[-1]}"


def segmentSequence(browserNode, segmentationNode, segmentId, prompts, editorNode=None, plane=None,
                    **options) -> SequenceResult:
    """Segment the browser's cine from ``prompts`` (a `Prompt` on a frame, see
    `MemSegLogic.cine.segment.frame_prompt`, or a markups point list / ROI on the frame shown) and
    record it in segment ``segmentId`` (created if missing) of a segmentation sequence in the
    same browser with ``segmentationNode`` as proxy (see `writeSequenceResult`).

    ``options`` go to `MemSegLogic.cine.segment.segment_sequence` (model, device, threshold,
    memory_frames, deep_update_every, seed, progress, cancel). ``plane`` chooses the plane of
    3D+t volumes. Nothing is written if the run fails or is cancelled. Returns the
    `SequenceResult` with ``segment_id`` set."""
    if segmentationNode is None:
        raise ValueError("a segmentation node is required")
    cine = cineFromBrowser(browserNode, plane=plane, referenceNode=segmentationNode)
    if prompts is not None and hasattr(prompts, "IsA"):
        if prompts.IsA("vtkMRMLMarkupsROINode"):
            prompts = promptFromFrameMarkups(browserNode, roiNode=prompts, plane=plane)
        else:
            prompts = promptFromFrameMarkups(browserNode, pointsNode=prompts, plane=plane)
    result = segment_sequence(cine, prompts, **options)
    result.segment_id = writeSequenceResult(result, browserNode, segmentationNode, segmentId, editorNode)
    return result


def addCineSequence(cine: Cine, scene=None, name: str = "Cine"):
    """Put a `Cine` into a scene as Slicer's DICOM image-sequence plugin loads a cine: a sequence
    of single-slice volumes (vector volumes for RGB frames) with the cine's index, a browser
    playing it (at 1/frame time for a time index in s), and its proxy volume. Returns the browser."""
    scene = scene or slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    sequence.SetIndexName(cine.index_name)
    sequence.SetIndexUnit(cine.index_unit)
    numeric = is_numeric_index(cine.index_values)
    sequence.SetIndexType(sequence.NumericIndex if numeric else sequence.TextIndex)
    frame = slicer.vtkMRMLVectorVolumeNode() if cine.is_color else slicer.vtkMRMLScalarVolumeNode()
    frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(cine.ijk_to_ras))
    for t, value in enumerate(cine.index_values):
        frame.SetAndObserveImageData(_imageData(cine.frames[t]))
        sequence.SetDataNodeAtValue(frame, value)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    sequence.SetAndObserveStorageNodeID(storage.GetID())  # saved as .seq.nrrd within a scene
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
    times = cine.times()
    if numeric and cine.index_unit == "s" and cine.n_frames > 1 and np.median(np.diff(times)) > 0:
        browser.SetPlaybackRateFps(float(1.0 / np.median(np.diff(times))))
    else:
        browser.SetPlaybackRateFps(10.0)  # the plugin's rate without a frame time
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSelectedItemNumber(0)
    browser.Modified()  # creates the proxy volume (the Sequences logic observes the browser)
    proxy = browser.GetProxyNode(sequence)
    if proxy is not None:
        proxy.CreateDefaultDisplayNodes()
    return browser


def _imageData(frame: np.ndarray):
    """A (H, W) or (H, W, C) frame as single-slice vtkImageData (spacing and origin live in the
    volume node's IJK->RAS, as in Slicer)."""
    frame = np.ascontiguousarray(frame)
    components = frame.shape[2] if frame.ndim == 3 else 1
    image = vtk.vtkImageData()
    image.SetDimensions(frame.shape[1], frame.shape[0], 1)
    scalars = numpy_support.numpy_to_vtk(frame.reshape(-1, components), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image
