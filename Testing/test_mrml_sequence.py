"""Cine loops in Slicer, on real MRML nodes (slicer-core) with the real MemSAM code (tiny random
weights in the official layout): a sequence browser of single-slice volumes -> `Cine` ->
`segment_sequence` -> a segmentation sequence synchronised in the same browser (written frame by
frame through the segment editor logic) -> .seq.mrb / scene .mrb -> read back; colour and 3D+t
inputs, pydicom's real echo loop, and the errors a user can cause.

Random weights segment nothing in particular. The checks are that the browser's frames and a
markups prompt reach the model exactly as the same frames and pixel prompt given as arrays, and
that every frame's mask lands in its own sequence item, at the right RAS positions, with the time
index kept. The threshold is set to the median probability so the masks are non-trivial and differ
from frame to frame (an empty mask would match a frame that was never written)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import vtk
from geometry_cases import _matrix, _rotation

slicer = pytest.importorskip("slicer")

from MemSegLogic import mrml_sequence as ms  # noqa: E402  (imports slicer)
from MemSegLogic.cine import (  # noqa: E402
    Cine,  # noqa: E402
    SequenceResult,
    frame_prompt,
    segment_sequence,
)
from MemSegLogic.errors import InvalidPromptError, InvalidVolumeError, SegmentationCancelled, SequenceBrowserError  # noqa: E402

# Oblique, with the I axis flipped and anisotropic pixels: a frame's IJK->RAS that naive code gets wrong.
FRAME_TO_RAS = _matrix(_rotation(0, 21) @ _rotation(2, -34) @ np.diag([-1.0, 1.0, 1.0]), (0.31, 0.27, 1.0),
                       (-40.5, 12.25, 7.75))
TIMES = ("0", "0.04", "0.08", "0.12", "0.16")
SHAPE = (5, 72, 96)
CLICK = (48, 36)  # (x, y) inside the phantom's ellipse on every frame
MIDDLE = 2


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """One intra-op torch thread for this module (as in test_memsam_model.py): on a small shared
    machine, two threads competing with other processes made MemSAM about 3x slower. Restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _phantom(shape=SHAPE, seed=0) -> np.ndarray:
    """8-bit grey frames: a bright ellipse shrinking over time on a speckled background."""
    frames, height, width = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for t in range(frames):
        inside = ((yy - height / 2) / (height * (0.3 - 0.02 * t))) ** 2 + ((xx - width / 2) / (width * (0.28 - 0.02 * t))) ** 2 <= 1
        out.append(40.0 + 20.0 * xx / width + rng.normal(0.0, 6.0, (height, width)) + 140.0 * inside)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _browser(scene, frames, ijk_to_ras, values=TIMES, name="US cine", vector=None):
    """A cine as Slicer's DICOM image-sequence plugin loads one, built by hand here (not with
    `addCineSequence`): a temporary volume node copied into a sequence item per frame, time index
    in s, a browser with the sequence as master. ``frames`` (T, K, J, I[, C]) or (T, J, I[, C])."""
    frames = np.asarray(frames)
    vector = frames.shape[-1] == 3 if vector is None else vector
    if frames.ndim == (4 if vector else 3):
        frames = frames[:, np.newaxis]
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    temporary = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode")
    for frame, value in zip(frames, values):
        slicer.util.updateVolumeFromArray(temporary, frame)
        temporary.SetIJKToRASMatrix(_vtk(ijk_to_ras))
        sequence.SetDataNodeAtValue(temporary, value)
    scene.RemoveNode(temporary)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetPlaybackRateFps(25.0)
    browser.AddSynchronizedSequenceNode(sequence)  # the first one becomes the master
    browser.SetSelectedItemNumber(0)
    return browser


def _vtk(array):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def _numpy(matrix):
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _points(scene, ras_points):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    for ras in ras_points:
        node.AddControlPoint(*ras)
    return node


def _pixel_ras(ijk_to_ras, x, y):
    return (ijk_to_ras @ [x, y, 0.0, 1.0])[:3]


def _segment_ras(segmentation_node, segment_id) -> np.ndarray:
    """RAS of every voxel of a segment, read from its internal labelmap (its own extent and
    ImageToWorld matrix, however Slicer stored it), sorted."""
    labelmap = segmentation_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    extent = labelmap.GetExtent()
    if extent[0] > extent[1]:
        return np.zeros((0, 3))
    from vtk.util import numpy_support

    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    k, j, i = np.nonzero(voxels == segment.GetLabelValue())
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4]], axis=1).astype(float)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    return _sorted(ijk @ _numpy(matrix)[:3, :3].T + _numpy(matrix)[:3, 3])


def _mask_ras(mask, ijk_to_ras) -> np.ndarray:
    j, i = np.nonzero(mask)
    ijk = np.stack([i, j, np.zeros_like(i)], axis=1).astype(float)
    return _sorted(ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3])


def _sorted(points):
    points = np.round(np.asarray(points, float), 3)
    return points[np.lexsort(points.T[::-1])] if len(points) else points


def _assert_same_positions(segmentation_node, segment_id, mask, ijk_to_ras):
    got, expected = _segment_ras(segmentation_node, segment_id), _mask_ras(mask, ijk_to_ras)
    assert got.shape == expected.shape, f"{len(got)} voxels written, {len(expected)} expected"
    np.testing.assert_allclose(got, expected, atol=2e-3)


def _items(sequence):
    return [sequence.GetNthIndexValue(i) for i in range(sequence.GetNumberOfDataNodes())]


# -- reference: the same frames and prompt as plain arrays -----------------------------------------
@pytest.fixture(scope="module")
def reference(tiny_memsam_checkpoint):
    """`segment_sequence` on the phantom's arrays, prompted at CLICK on the middle frame, and
    the threshold (median probability) that makes its masks non-trivial."""
    result = segment_sequence(_phantom(), frame_prompt(MIDDLE, positive=[CLICK]), model=tiny_memsam_checkpoint,
                              device="cpu")
    return result, float(np.median(result.probability))


# -- reading the browser -----------------------------------------------------------------------------
def test_cine_from_browser_keeps_frames_geometry_and_index(slicer_scene):
    grey = _phantom()
    browser = _browser(slicer_scene, grey, FRAME_TO_RAS)
    cine = ms.cineFromBrowser(browser)
    np.testing.assert_array_equal(cine.frames, grey)
    np.testing.assert_allclose(cine.ijk_to_ras, FRAME_TO_RAS, atol=1e-9)
    assert (cine.index_values, cine.index_name, cine.index_unit) == (TIMES, "time", "s")

    # the proxy under a transform: frames in world RAS, or in a reference node's frame
    transform = slicer_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -3.0, 11.0)
    transform.SetMatrixTransformToParent(_vtk(shift))
    browser.GetProxyNode(browser.GetMasterSequenceNode()).SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(ms.cineFromBrowser(browser).ijk_to_ras, shift @ FRAME_TO_RAS, atol=1e-9)
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(ms.cineFromBrowser(browser, referenceNode=segmentation).ijk_to_ras, FRAME_TO_RAS,
                               atol=1e-9)

    # RGB vector volumes (colour echo DICOM as Slicer loads it) stay RGB until the model's grey
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    rgb = ms.cineFromBrowser(_browser(slicer_scene, colour, FRAME_TO_RAS, name="colour"))
    assert rgb.is_color
    np.testing.assert_array_equal(rgb.frames, colour)
    np.testing.assert_allclose(rgb.gray(), 0.299 * grey + 0.587 * (grey // 2) + 0.114 * (255 - grey.astype(float)),
                               atol=1e-3)


def test_prompt_from_markups_on_the_frame_shown(slicer_scene):
    browser = _browser(slicer_scene, _phantom(), FRAME_TO_RAS)
    browser.SetSelectedItemNumber(3)
    points = _points(slicer_scene, [_pixel_ras(FRAME_TO_RAS, 40.2, 30.9), _pixel_ras(FRAME_TO_RAS, 60, 20)])
    negative = _points(slicer_scene, [_pixel_ras(FRAME_TO_RAS, 5, 6)])
    prompt = ms.promptFromFrameMarkups(browser, pointsNode=points, negativeNode=negative)
    assert (prompt.axis, prompt.slice_index) == (2, 3)  # K = time, the frame shown
    np.testing.assert_allclose(prompt.points, [[40.2, 30.9, 3], [60, 20, 3], [5, 6, 3]], atol=1e-6)
    np.testing.assert_array_equal(prompt.labels, [1, 1, 0])

    # an ROI drawn on the oblique frame: rotated with it, pixels 20..70 x 10..50, 1 mm thick
    spacing = np.linalg.norm(FRAME_TO_RAS[:3, :3], axis=0)
    rotation = FRAME_TO_RAS[:3, :3] / spacing
    rotation[:, 2] *= np.sign(np.linalg.det(rotation))  # a rotation (the frame's I axis is flipped)
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = rotation
    object_to_node[:3, 3] = _pixel_ras(FRAME_TO_RAS, 45, 30)
    roi = slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetAndObserveObjectToNodeMatrix(_vtk(object_to_node))
    roi.SetSize(50 * spacing[0], 40 * spacing[1], 1.0)
    box = ms.promptFromFrameMarkups(browser, roiNode=roi, frame=1).to_slice_prompt()
    assert box.frame_index == 1
    np.testing.assert_allclose(box.box_xyxy, [20, 10, 70, 50])

    above = _points(slicer_scene, [_pixel_ras(FRAME_TO_RAS, 40, 30) + 3.0 * FRAME_TO_RAS[:3, 2]])
    with pytest.raises(InvalidPromptError, match="3.0 mm off the image plane of frame 3"):
        ms.promptFromFrameMarkups(browser, pointsNode=above)
    with pytest.raises(InvalidPromptError, match="outside the sequence"):
        ms.promptFromFrameMarkups(browser, pointsNode=points, frame=5)
    with pytest.raises(InvalidPromptError, match="empty prompt"):
        ms.promptFromFrameMarkups(browser, pointsNode=slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))


# -- the whole path --------------------------------------------------------------------------------------
def test_segment_sequence_records_every_frame_in_the_browser(slicer_scene, reference, tiny_memsam_checkpoint,
                                                              tmp_path):
    expected, threshold = reference
    browser = _browser(slicer_scene, _phantom(), FRAME_TO_RAS)
    browser.SetSelectedItemNumber(MIDDLE)  # the user prompts on the frame shown
    master = browser.GetMasterSequenceNode()
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Heart")
    click = _points(slicer_scene, [_pixel_ras(FRAME_TO_RAS, *CLICK)])
    messages = []
    result = ms.segmentSequence(browser, segmentation, "LV", click, model=tiny_memsam_checkpoint, device="cpu",
                                threshold=threshold, progress=lambda fraction, message: messages.append(message))

    # the browser's frames and the markups prompt reached the model as the arrays and pixel did
    np.testing.assert_allclose(result.probability, expected.probability, atol=1e-5)
    assert result.prompt_frame == MIDDLE and result.segment_id == "LV"
    # both directions from the middle frame: every frame decoded once, each with its own output
    assert sorted(m for m in messages if "(from frame 2)" in m) == [f"frame {k} of 5 (from frame 2)" for k in range(1, 6)]
    assert np.all(np.isfinite(result.probability))
    assert all(not np.allclose(result.probability[t], result.probability[t + 1]) for t in range(4))
    assert len({mask.tobytes() for mask in result.masks}) == 5 and all(0 < m.sum() < m.size for m in result.masks)

    # a segmentation sequence in the same browser, the user's segmentation as its proxy
    sequence = browser.GetSequenceNode(segmentation)
    assert sequence is not None and browser.IsSynchronizedSequenceNode(sequence.GetID())
    assert _items(sequence) == _items(master) == list(TIMES)
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "s")
    assert browser.GetSaveChanges(sequence)  # later corrections in the Segment Editor are recorded
    assert browser.GetSelectedItemNumber() == MIDDLE and segmentation.GetName() == "Heart"
    for t in range(5):
        item = sequence.GetNthDataNode(t)
        assert item.GetSegmentation().GetSegmentIDs() == ("LV",)
        _assert_same_positions(item, "LV", result.masks[t], FRAME_TO_RAS)
    _assert_same_positions(segmentation, "LV", result.masks[MIDDLE], FRAME_TO_RAS)  # the proxy shows frame 2
    browser.SetSelectedItemNumber(4)  # browsing shows each frame's mask
    _assert_same_positions(segmentation, "LV", result.masks[4], FRAME_TO_RAS)

    # .seq.mrb, reloaded by Slicer's own sequence storage in a fresh scene (reading a bundle
    # needs the scene's data IO manager: fileIO)
    path = tmp_path / "Heart.seq.mrb"
    ms.saveSequence(sequence, path)
    assert sequence.GetStorageNode() is None  # saving left the user's node as it was
    scene, app, logics = ms.headlessScene(fileIO=True)  # kept alive while used
    storage = scene.AddNewNodeByClass("vtkMRMLSequenceStorageNode")
    reloaded = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(reloaded)
    assert _items(reloaded) == list(TIMES) and (reloaded.GetIndexName(), reloaded.GetIndexUnit()) == ("time", "s")
    for t in range(5):
        _assert_same_positions(reloaded.GetNthDataNode(t), "LV", result.masks[t], FRAME_TO_RAS)
    # and as arrays on the frames' grid
    arrays = ms.readSegmentationSequence(path)
    np.testing.assert_array_equal(arrays.masks["LV"], result.masks)
    np.testing.assert_allclose(arrays.ijk_to_ras, FRAME_TO_RAS, atol=1e-6)
    assert arrays.index_values == TIMES and arrays.names == {"LV": "LV"}
    scene.Clear(1)


def test_writes_follow_the_editor_and_keep_each_frames_other_segments(slicer_scene):
    """An existing segmentation sequence (recorded as Slicer's UI records one: proxy = the user's
    segmentation, save changes on) with another structure drawn differently on every frame;
    editable area = inside that structure, intensity range 100..255 of the frame shown."""
    from MemSegLogic.mrml import orientedLabelmap, segmentEditorNode

    frames = _phantom()
    browser = _browser(slicer_scene, frames, FRAME_TO_RAS)
    browser.SetSelectedItemNumber(1)
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Heart")
    recorded = slicer_scene.AddNewNodeByClass("vtkMRMLSequenceNode", "Heart-Sequence")
    others = np.zeros(SHAPE, np.uint8)
    for t, value in enumerate(TIMES):
        others[t, 10 + 5 * t:60, 20:80 - 4 * t] = 1
        frame = slicer.vtkMRMLSegmentationNode()
        frame.GetSegmentation().AddEmptySegment("wall", "wall", (0.2, 0.8, 0.2))
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            orientedLabelmap(others[t][np.newaxis], FRAME_TO_RAS), frame, "wall",
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        recorded.SetDataNodeAtValue(frame, value)
    slicer.modules.sequences.logic().AddSynchronizedNode(recorded, segmentation, browser)
    browser.SetSaveChanges(recorded, True)
    browser.SetSelectedItemNumber(2)  # the proxy now shares item 2's segmentation (a shallow copy)
    _assert_same_positions(segmentation, "wall", others[2], FRAME_TO_RAS)

    editor = segmentEditorNode()
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID("wall")
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(100.0, 255.0)
    editor.SetOverwriteMode(editor.OverwriteNone)
    masks = np.zeros(SHAPE, np.uint8)
    for t in range(5):
        masks[t, 5 + 3 * t:50 + 3 * t, 10 + 6 * t:70] = 1
        masks[t, 71, 95 - t] = 1  # a lone pixel near a corner catches flips
    result = SequenceResult(masks, masks.astype(np.float32), FRAME_TO_RAS, TIMES, "time", "s", "test", "cpu", 2,
                            0.5, 0.0, False)
    sequences_before = slicer_scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")
    assert ms.writeSequenceResult(result, browser, segmentation, "LV") == "LV"

    assert browser.GetSequenceNode(segmentation) is recorded  # reused, nothing new
    assert slicer_scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == sequences_before
    assert _items(recorded) == list(TIMES) and browser.GetSelectedItemNumber() == 2
    for t in range(5):
        item = recorded.GetNthDataNode(t)
        assert set(item.GetSegmentation().GetSegmentIDs()) == {"wall", "LV"}
        _assert_same_positions(item, "wall", others[t], FRAME_TO_RAS)  # each frame's own, untouched
        # masked by that frame's wall and that frame's intensities (the source volume followed the frame)
        _assert_same_positions(item, "LV", masks[t] & others[t] & (frames[t] >= 100), FRAME_TO_RAS)
    assert (masks[0] & others[0] & (frames[0] >= 100)).sum() != (masks[0] & others[2] & (frames[2] >= 100)).sum()
    _assert_same_positions(segmentation, "LV", masks[2] & others[2] & (frames[2] >= 100), FRAME_TO_RAS)


def test_colour_sequence_is_segmented_and_recorded(slicer_scene, tiny_memsam_checkpoint):
    grey = _phantom()
    colour = np.stack([grey, grey, np.clip(grey.astype(int) + 9, 0, 255)], axis=-1).astype(np.uint8)
    browser = _browser(slicer_scene, colour, FRAME_TO_RAS)
    assert browser.GetProxyNode(browser.GetMasterSequenceNode()).IsA("vtkMRMLVectorVolumeNode")
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    prompt = frame_prompt(0, box=(20, 15, 75, 58))
    result = ms.segmentSequence(browser, segmentation, "LV", prompt, model=tiny_memsam_checkpoint, device="cpu",
                                threshold=0.5)
    assert result.masks.shape == SHAPE and result.index_values == TIMES
    sequence = browser.GetSequenceNode(segmentation)
    assert _items(sequence) == list(TIMES)
    for t in range(5):
        _assert_same_positions(sequence.GetNthDataNode(t), "LV", result.masks[t], FRAME_TO_RAS)


def test_3d_volume_sequence_needs_a_plane(slicer_scene, tiny_memsam_checkpoint):
    """A 3D+t sequence (a volume per time point): one plane (here J = 5, an oblique geometry) is
    followed through time and written back where that plane lies in the volumes."""
    rng = np.random.default_rng(3)
    volumes = rng.integers(0, 200, (4, 10, 12, 16)).astype(np.uint8)  # (T, K, J, I)
    volume_to_ras = _matrix(_rotation(1, 12), (0.7, 0.9, 1.6), (3.0, -8.0, 20.0))
    browser = _browser(slicer_scene, volumes, volume_to_ras, values=TIMES[:4])
    with pytest.raises(InvalidVolumeError, match="3D\\+t.*--plane K,INDEX.*plane=\\('K', INDEX\\)"):
        ms.cineFromBrowser(browser)
    cine = ms.cineFromBrowser(browser, plane=("J", 5))
    np.testing.assert_array_equal(cine.frames, volumes[:, :, 5, :])  # rows = K, columns = I
    np.testing.assert_allclose(cine.ijk_to_ras @ [7, 3, 0, 1], volume_to_ras @ [7, 5, 3, 1], atol=1e-9)

    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    result = ms.segmentSequence(browser, segmentation, "LV", frame_prompt(1, positive=[(8, 5)]), plane=("J", 5),
                                model=tiny_memsam_checkpoint, device="cpu", threshold=0.5)
    assert result.masks.shape == (4, 10, 16)
    np.testing.assert_allclose(result.ijk_to_ras, cine.ijk_to_ras, atol=1e-9)
    sequence = browser.GetSequenceNode(segmentation)
    for t in range(4):
        _assert_same_positions(sequence.GetNthDataNode(t), "LV", result.masks[t], cine.ijk_to_ras)


def test_cancel_writes_nothing(slicer_scene, tiny_memsam_checkpoint):
    browser = _browser(slicer_scene, _phantom(), FRAME_TO_RAS)
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().AddEmptySegment("wall", "wall")
    cancel = threading.Event()

    def progress(fraction, message):
        if message.startswith("frame 2 of"):
            cancel.set()

    with pytest.raises(SegmentationCancelled):
        ms.segmentSequence(browser, segmentation, "LV", frame_prompt(0, positive=[CLICK]),
                           model=tiny_memsam_checkpoint, device="cpu", progress=progress, cancel=cancel)
    assert browser.GetSequenceNode(segmentation) is None
    assert browser.GetNumberOfSynchronizedSequenceNodes() == 0
    assert slicer_scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == 1
    assert segmentation.GetSegmentation().GetSegmentIDs() == ("wall",)


# -- errors a user can cause ------------------------------------------------------------------------------
def _bare_sequence_browser(scene, volumes_and_matrices):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    for t, (array, matrix) in enumerate(volumes_and_matrices):
        node = slicer.vtkMRMLScalarVolumeNode()
        image = vtk.vtkImageData()
        image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        node.SetAndObserveImageData(image)
        slicer.util.arrayFromVolume(node)[:] = array
        node.SetIJKToRASMatrix(_vtk(matrix))
        sequence.SetDataNodeAtValue(node, str(t))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return browser


def test_sequences_that_cannot_be_segmented(slicer_scene):
    rng = np.random.default_rng(4)
    frame = lambda shape=(1, 20, 24): rng.integers(0, 255, shape).astype(np.uint8)  # noqa: E731
    with pytest.raises(InvalidVolumeError, match="empty"):
        ms.cineFromBrowser(_bare_sequence_browser(slicer_scene, []))
    with pytest.raises(InvalidVolumeError, match="one frame"):
        ms.cineFromBrowser(_bare_sequence_browser(slicer_scene, [(frame(), FRAME_TO_RAS)]))
    with pytest.raises(InvalidVolumeError, match="item 2 \\(index 2\\).*1 x 20 x 25 voxels, item 0 has 1 x 20 x 24"):
        ms.cineFromBrowser(_bare_sequence_browser(
            slicer_scene, [(frame(), FRAME_TO_RAS), (frame(), FRAME_TO_RAS), (frame((1, 20, 25)), FRAME_TO_RAS)]))
    moved = FRAME_TO_RAS.copy()
    moved[:3, 3] += 0.5
    with pytest.raises(InvalidVolumeError, match="item 1 \\(index 1\\).*another position, orientation or spacing"):
        ms.cineFromBrowser(_bare_sequence_browser(slicer_scene, [(frame(), FRAME_TO_RAS), (frame(), moved)]))
    # a segmentation sequence is not a cine
    segmentations = slicer_scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    for t in range(3):
        segmentations.SetDataNodeAtValue(slicer.vtkMRMLSegmentationNode(), str(t))
    browser = slicer_scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(segmentations.GetID())
    with pytest.raises(InvalidVolumeError, match="vtkMRMLSegmentationNode, not an image"):
        ms.cineFromBrowser(browser)
    with pytest.raises(InvalidVolumeError, match="has no sequence"):
        ms.cineFromBrowser(slicer_scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode"))


def test_result_and_browser_must_match(slicer_scene):
    browser = _browser(slicer_scene, _phantom(), FRAME_TO_RAS)
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    masks = np.zeros((4,) + SHAPE[1:], np.uint8)
    result = SequenceResult(masks, masks.astype(np.float32), FRAME_TO_RAS, TIMES[:4], "time", "s", "test", "cpu", 0,
                            0.5, 0.0, False)
    with pytest.raises(SequenceBrowserError, match="4 frames .* has 5 .* another sequence"):
        ms.writeSequenceResult(result, browser, segmentation, "LV")
    # a segmentation another browser plays cannot also be this browser's proxy
    other = _browser(slicer_scene, _phantom(seed=1), FRAME_TO_RAS, name="other cine")
    slicer.modules.sequences.logic().AddSynchronizedNode(None, segmentation, other)
    full = SequenceResult(np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.float32), FRAME_TO_RAS, TIMES, "time", "s",
                          "test", "cpu", 0, 0.5, 0.0, False)
    with pytest.raises(SequenceBrowserError, match="shown by sequence browser other cine browser"):
        ms.writeSequenceResult(full, browser, segmentation, "LV")
    assert browser.GetSequenceNode(segmentation) is None


def test_seq_nrrd_from_cine_write_opens_in_slicer(slicer_scene, tmp_path):
    """`Cine.write`'s .seq.nrrd read by Slicer's volume sequence storage: frames, geometry, index."""
    colour = np.stack([_phantom()] * 3, axis=-1)
    colour[..., 1] //= 2
    Cine(colour, FRAME_TO_RAS, TIMES, "time", "s").write(tmp_path / "loop.seq.nrrd")
    storage = slicer_scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    sequence = slicer_scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage.SetFileName(str(tmp_path / "loop.seq.nrrd"))
    assert storage.ReadData(sequence)
    assert _items(sequence) == list(TIMES) and sequence.GetIndexName() == "time"
    item = sequence.GetNthDataNode(3)
    assert item.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(item)[0], colour[3])
    matrix = vtk.vtkMatrix4x4()
    item.GetIJKToRASMatrix(matrix)
    # pixel positions: the I and J columns and the origin (Slicer's reader makes the grid
    # right-handed by flipping K, which moves nothing on a single slice)
    in_plane = [0, 1, 3]
    np.testing.assert_allclose(_numpy(matrix)[:, in_plane], FRAME_TO_RAS[:, in_plane], atol=1e-6)

    # and the reverse: a colour sequence Slicer saved keeps its time index in `Cine.read`
    storage.SetFileName(str(tmp_path / "saved by slicer.seq.nrrd"))
    assert storage.WriteData(sequence)
    back = Cine.read(tmp_path / "saved by slicer.seq.nrrd")
    assert (back.index_values, back.index_name, back.index_unit) == (TIMES, "time", "s")
    np.testing.assert_array_equal(back.frames, colour)
    np.testing.assert_allclose(back.ijk_to_ras[:, in_plane], FRAME_TO_RAS[:, in_plane], atol=1e-6)


# -- pydicom's real echo loop ------------------------------------------------------------------------------
def test_real_echo_dicom_to_seq_mrb_and_scene(slicer_scene, tiny_memsam_checkpoint, tmp_path):
    """examples_ybr_color.dcm: 30 colour frames of 240 x 320, FrameTime 33.333 ms, 0.051 cm pixels.
    All 30 frames with the default memory (16 frames), as a user would run it."""
    from pydicom.data import get_testdata_file

    cine = Cine.read(get_testdata_file("examples_ybr_color.dcm"))
    browser = ms.addCineSequence(cine, slicer_scene, name="US cine")
    master = browser.GetMasterSequenceNode()
    proxy = browser.GetProxyNode(master)
    assert proxy.IsA("vtkMRMLVectorVolumeNode") and master.GetNumberOfDataNodes() == 30
    assert (master.GetIndexName(), master.GetIndexUnit()) == ("time", "s")
    assert browser.GetPlaybackRateFps() == pytest.approx(30.0, abs=0.01)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy)[0], cine.frames[0])

    browser.SetSelectedItemNumber(12)
    click = _points(slicer_scene, [_pixel_ras(cine.ijk_to_ras, 160, 120)])
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Echo")
    result = ms.segmentSequence(browser, segmentation, "LV", click, model=tiny_memsam_checkpoint, device="cpu",
                                threshold=0.5)
    assert result.prompt_frame == 12 and result.masks.shape == (30, 240, 320) and result.memory_frames == 16
    sequence = browser.GetSequenceNode(segmentation)
    assert _items(sequence) == list(cine.index_values) and browser.GetSelectedItemNumber() == 12

    spacing = 0.5104970559477806
    expected_matrix = np.diag([-spacing, -spacing, 1.0, 1.0])
    ms.saveSequence(sequence, tmp_path / "echo.seq.mrb")
    reloaded = ms.readSegmentationSequence(tmp_path / "echo.seq.mrb")
    assert reloaded.masks["LV"].shape == (30, 240, 320)
    np.testing.assert_array_equal(reloaded.masks["LV"], result.masks)
    np.testing.assert_allclose(reloaded.ijk_to_ras, expected_matrix, atol=1e-9)
    np.testing.assert_allclose([float(v) for v in reloaded.index_values[:3]], [0.0, 0.033333, 0.066666])
    assert (reloaded.index_name, reloaded.index_unit) == ("time", "s")

    # the CLI's outputs: the segmentation sequence alone, and a whole scene that plays in Slicer
    ms.writeSequenceBundle(cine, result, tmp_path / "cli.seq.mrb", segmentName="LV")
    np.testing.assert_array_equal(ms.readSegmentationSequence(tmp_path / "cli.seq.mrb").masks["LV"], result.masks)
    ms.writeSequenceBundle(cine, result, tmp_path / "cli.mrb", segmentName="LV")
    scene, app, logics = ms.headlessScene(fileIO=True)  # kept alive while used
    assert scene.ReadFromMRB(str(tmp_path / "cli.mrb"))
    opened = scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    assert opened.GetPlaybackRateFps() == pytest.approx(30.0, abs=0.01)
    assert opened.GetMasterSequenceNode().GetNumberOfDataNodes() == 30
    opened_segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    assert opened.GetSequenceNode(opened_segmentation).GetNumberOfDataNodes() == 30
    opened.SetSelectedItemNumber(29)
    _assert_same_positions(opened_segmentation, "LV", result.masks[29], expected_matrix)
    np.testing.assert_array_equal(ms.cineFromBrowser(opened).frames, cine.frames)
    scene.Clear(1)
    with pytest.raises(ValueError, match="seq.mrb"):
        ms.writeSequenceBundle(cine, result, tmp_path / "out.nrrd")


# -- undoing a whole run -----------------------------------------------------------------------------------
def test_snapshot_restores_every_frame_of_a_recorded_run(slicer_scene):
    """A run recorded into a new segmentation sequence, then a second run over it: restoring the
    snapshot taken before the second run gives every frame the first run's mask back (and the
    frame on show); restoring the one taken before the first run removes the sequence it created
    and gives the proxy back what the user had drawn. (The Segment Editor's undo holds one frame.)"""
    from MemSegLogic.mrml import orientedLabelmap

    browser = _browser(slicer_scene, _phantom(), FRAME_TO_RAS)
    browser.SetSelectedItemNumber(MIDDLE)
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Heart")
    segmentation.GetSegmentation().AddEmptySegment("LV", "LV")
    drawn = np.zeros((1,) + SHAPE[1:], np.uint8)
    drawn[0, 30:40, 40:50] = 1
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        orientedLabelmap(drawn, FRAME_TO_RAS), segmentation, "LV", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    def result(offset):
        masks = np.zeros(SHAPE, np.uint8)
        for t in range(SHAPE[0]):
            masks[t, 5 + offset + 2 * t:40 + offset, 10:60 - 3 * t] = 1
        return masks, SequenceResult(masks, masks.astype(np.float32), FRAME_TO_RAS, TIMES, "time", "s", "test", "cpu",
                                     MIDDLE, 0.5, 0.0, False)

    before_first = ms.SequenceSnapshot(browser, segmentation)
    first, run = result(0)
    ms.writeSequenceResult(run, browser, segmentation, "LV")
    sequence = browser.GetSequenceNode(segmentation)
    before_second = ms.SequenceSnapshot(browser, segmentation)
    second, run = result(20)
    ms.writeSequenceResult(run, browser, segmentation, "LV")
    _assert_same_positions(sequence.GetNthDataNode(0), "LV", second[0], FRAME_TO_RAS)

    before_second.restore()
    assert browser.GetSequenceNode(segmentation) is sequence and _items(sequence) == list(TIMES)
    for t in range(SHAPE[0]):
        _assert_same_positions(sequence.GetNthDataNode(t), "LV", first[t], FRAME_TO_RAS)
    assert browser.GetSelectedItemNumber() == MIDDLE
    _assert_same_positions(segmentation, "LV", first[MIDDLE], FRAME_TO_RAS)
    browser.SetSelectedItemNumber(1)  # browsing shows the restored frames
    _assert_same_positions(segmentation, "LV", first[1], FRAME_TO_RAS)

    browser.SetSelectedItemNumber(MIDDLE)
    before_first.restore()
    assert browser.GetSequenceNode(segmentation) is None and sequence.GetScene() is None
    _assert_same_positions(segmentation, "LV", drawn[0], FRAME_TO_RAS)
    browser.SetSelectedItemNumber(0)  # no longer recorded: the drawing stays whatever the frame
    _assert_same_positions(segmentation, "LV", drawn[0], FRAME_TO_RAS)
    with pytest.raises(SequenceBrowserError, match="no longer recorded"):
        before_second.restore()
