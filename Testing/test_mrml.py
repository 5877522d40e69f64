"""MRML adapters against real Slicer nodes (slicer-core): geometry, write-back through the
segment editor logic (masking, overwrite, undo), and segmentVolumeNode end to end."""

import numpy as np
import pytest
import vtk
from geometry_cases import GEOMETRIES, assert_same_voxels_by_position

slicer = pytest.importorskip("slicer")


def _add_volume(array, ijk_to_ras, name="vol"):
    return slicer.util.addVolumeFromArray(array, ijkToRAS=ijk_to_ras, name=name)


def _segment_array(segmentation_node, segment_id, volume_node):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)


def _new_segmentation(volume_node, *names):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    ids = [node.GetSegmentation().AddEmptySegment(name, name) for name in names]
    return node, ids


def _phantom(shape=(12, 20, 24)):
    rng = np.random.default_rng(0)
    return rng.integers(-100, 100, size=shape).astype(np.int16)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_volume_from_node_keeps_voxels_and_geometry(slicer_scene, name):
    from MemSegLogic.mrml import volumeFromNode

    array = _phantom()
    node = _add_volume(array, GEOMETRIES[name])
    volume = volumeFromNode(node)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.ijk_to_ras, GEOMETRIES[name], atol=1e-9)
    volume.array[0, 0, 0] += 1  # a copy: the node's voxels do not change
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == array[0, 0, 0]


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_mask_lands_in_segment_with_volume_geometry(slicer_scene, name):
    from MemSegLogic.mrml import writeMaskToSegment

    array = _phantom()
    node = _add_volume(array, GEOMETRIES[name])
    segmentation, (segment_id,) = _new_segmentation(node, "organ")
    mask = np.zeros(array.shape, np.uint8)
    mask[3:7, 2:9, 5:17] = 1
    mask[8, 15, 20] = 1  # a lone voxel near a corner catches off-by-one flips
    writeMaskToSegment(mask, GEOMETRIES[name], segmentation, segment_id, node)
    np.testing.assert_array_equal(_segment_array(segmentation, segment_id, node), mask)
    labelmap = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    got = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(got, GEOMETRIES[name], atol=1e-6)


def test_masking_inside_another_segment_and_overwrite_modes(slicer_scene):
    from MemSegLogic.mrml import segmentEditorNode, writeMaskToSegment

    array = _phantom()
    node = _add_volume(array, GEOMETRIES["oblique"])
    segmentation, (organ, region, other) = _new_segmentation(node, "organ", "region", "other")
    region_mask = np.zeros(array.shape, np.uint8)
    region_mask[:, :10, :] = 1
    other_mask = np.zeros(array.shape, np.uint8)
    other_mask[:, :, :4] = 1
    editor = segmentEditorNode()
    editor.SetOverwriteMode(editor.OverwriteNone)
    writeMaskToSegment(region_mask, GEOMETRIES["oblique"], segmentation, region, node)
    writeMaskToSegment(other_mask, GEOMETRIES["oblique"], segmentation, other, node)

    mask = np.zeros(array.shape, np.uint8)
    mask[2:10, 5:15, 2:20] = 1
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(region)
    editor.SetOverwriteMode(editor.OverwriteAllSegments)
    writeMaskToSegment(mask, GEOMETRIES["oblique"], segmentation, organ, node)

    expected = mask & region_mask
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), expected)
    # "overwrite all" (Slicer's semantics, from its own editor logic): the organ's new voxels are
    # taken away from every other segment, the masking segment included.
    np.testing.assert_array_equal(_segment_array(segmentation, other, node), other_mask & (1 - expected))
    np.testing.assert_array_equal(_segment_array(segmentation, region, node), region_mask & (1 - expected))

    # overwrite none: another segment's voxels stay its own
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    editor.SetOverwriteMode(editor.OverwriteNone)
    everything = np.ones(array.shape, np.uint8)
    writeMaskToSegment(everything, GEOMETRIES["oblique"], segmentation, organ, node)
    np.testing.assert_array_equal(_segment_array(segmentation, other, node), other_mask & (1 - expected))
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), everything)


def test_one_undo_restores_previous_state(slicer_scene):
    from MemSegLogic.mrml import undoLastEdit, writeMaskToSegment

    array = _phantom()
    node = _add_volume(array, GEOMETRIES["k-flipped"])
    segmentation, (organ,) = _new_segmentation(node, "organ")
    first = np.zeros(array.shape, np.uint8)
    first[1:4, 1:4, 1:4] = 1
    second = np.zeros(array.shape, np.uint8)
    second[5:9, 5:12, 5:20] = 1
    writeMaskToSegment(first, GEOMETRIES["k-flipped"], segmentation, organ, node)
    writeMaskToSegment(second, GEOMETRIES["k-flipped"], segmentation, organ, node)
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), second)
    assert undoLastEdit(segmentation)
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), first)
    assert undoLastEdit(segmentation)
    assert not _segment_array(segmentation, organ, node).any()


def test_module_apply_is_undone_in_the_segment_editors_history(slicer_scene):
    """Issue 13, defect 3: an Apply saved into the Segment Editor's history is undone by the
    editor's Undo. The editor widget's ``saveStateForUndo``/``undo`` slots call its own
    vtkSlicerSegmentEditorLogic's ``SaveStateForUndo``/``Undo`` (qMRMLSegmentEditorWidget.cxx);
    a second real logic of that class, editing this segmentation, plays the widget's here."""
    from MemSegLogic.mrml import segmentEditorNode, undoLastEdit, writeMaskToSegment

    array = _phantom()
    node = _add_volume(array, GEOMETRIES["oblique"])
    segmentation, (organ,) = _new_segmentation(node, "organ")
    first = np.zeros(array.shape, np.uint8)
    first[2:5, 3:9, 4:10] = 1
    writeMaskToSegment(first, GEOMETRIES["oblique"], segmentation, organ, node)  # MemSeg's own history
    editorLogic = slicer.vtkSlicerSegmentEditorLogic()
    editorLogic.SetMRMLScene(slicer.mrmlScene)
    editorLogic.SetSegmentEditorNode(segmentEditorNode())
    editorLogic.SetSegmentationNode(segmentation)
    second = np.zeros(array.shape, np.uint8)
    second[6:10, 8:15, 10:20] = 1
    writeMaskToSegment(second, GEOMETRIES["oblique"], segmentation, organ, node,
                       saveStateForUndo=editorLogic.SaveStateForUndo)
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), second)
    assert editorLogic.CanUndo()
    editorLogic.Undo()
    np.testing.assert_array_equal(_segment_array(segmentation, organ, node), first)
    # The write went to one history only: MemSeg's still holds just the first write.
    assert undoLastEdit(segmentation)
    assert not _segment_array(segmentation, organ, node).any()
    assert not undoLastEdit(segmentation)


def test_undo_history_is_the_editors_unless_it_edits_another_segmentation(slicer_scene):
    from MemSegLogic.mrml import MEMSEG_UNDO, SEGMENT_EDITOR_UNDO, undoHistoryFor

    mine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert undoHistoryFor(mine, mine) == SEGMENT_EDITOR_UNDO
    assert undoHistoryFor(mine, None) == SEGMENT_EDITOR_UNDO  # the editor is then pointed at it
    assert undoHistoryFor(mine, other) == MEMSEG_UNDO  # switching would drop other's history
    assert undoHistoryFor(mine, None, editorAvailable=False) == MEMSEG_UNDO


def test_prompt_from_markups_lands_on_the_voxel(slicer_scene):
    from MemSegLogic.mrml import promptFromMarkups, volumeFromNode

    matrix = GEOMETRIES["oblique"]
    node = _add_volume(_phantom(), matrix)
    volume = volumeFromNode(node)
    target = np.array([7, 11, 5])  # (i, j, k)
    points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(*volume.ijk_to_ras_points(target + np.array([0.3, -0.2, 0.1])))
    prompt = promptFromMarkups(node, pointsNode=points, axis="K")
    assert prompt.slice_index == target[2]
    np.testing.assert_array_equal(np.rint(prompt.points[0]), target)

    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    lo, hi = np.array([4, 6, 8]), np.array([12, 15, 8])  # flat on slice k = 8
    roi.SetXYZ(*volume.ijk_to_ras_points((lo + hi) / 2.0))
    roi.SetSizeWorld(*(np.abs(matrix[:3, :3] @ (hi - lo)) + 0.01))
    box_prompt = promptFromMarkups(node, roiNode=roi)
    assert (box_prompt.axis, box_prompt.slice_index) == (2, 8)


def test_batch_prompts_use_the_same_markups_on_every_volume_and_skip_those_they_miss(slicer_scene):
    """The module's batch run: one point list (world RAS) becomes each volume's own prompt, on
    the voxel under it in that volume's grid (here the same place sampled with I and J
    flipped); a volume the point misses, and a 2D one, are skipped with the reason."""
    from MemSegLogic.mrml import batchPrompts, volumeFromNode

    near = _add_volume(_phantom(), GEOMETRIES["oblique"], "near")
    flip_ij = np.array([[-1, 0, 0, 23], [0, -1, 0, 19], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)  # IJK (24, 20, 12)
    flipped = _add_volume(_phantom(), GEOMETRIES["oblique"] @ flip_ij, "flipped")
    far_matrix = GEOMETRIES["oblique"].copy()
    far_matrix[:3, 3] += 1000.0
    far = _add_volume(_phantom(), far_matrix, "far")
    flat = _add_volume(_phantom((1, 20, 24)), np.eye(4), "flat")
    target = np.array([7, 11, 5])
    ras = volumeFromNode(near).ijk_to_ras_points(target)
    points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(*ras)

    plan = batchPrompts([near, flipped, far, flat], pointsNode=points)
    assert [node.GetName() for node, _, _ in plan] == ["near", "flipped", "far", "flat"]
    (_, prompt_near, _), (_, prompt_flipped, _), (_, none_far, why_far), (_, none_flat, why_flat) = plan
    np.testing.assert_allclose(prompt_near.points[0], target, atol=1e-6)
    np.testing.assert_allclose(prompt_flipped.points[0], [23 - 7, 19 - 11, 5], atol=1e-6)
    assert none_far is None and "outside the volume" in why_far
    assert none_flat is None and why_flat


def test_segment_volume_node_medsam_lite_real_ct(slicer_scene, chest_ct):
    """segmentVolumeNode with real weights on the real CT: right lung Dice, source unchanged."""
    from MemSegLogic import Prompt
    from MemSegLogic.core.metrics import dice
    from MemSegLogic.mrml import segmentVolumeNode, undoLastEdit

    volume, segments = chest_ct
    node = _add_volume(volume.array.copy(), volume.ijk_to_ras, name="CTChest4")
    before = slicer.util.arrayFromVolume(node).copy()
    segmentation, _ = _new_segmentation(node)
    reference = segments["right lung"]
    k = 20
    rows, cols = np.nonzero(reference[k])
    prompt = Prompt.from_box((cols.min(), rows.min(), k), (cols.max(), rows.max(), k))
    result = segmentVolumeNode(node, segmentation, "right lung", prompt, model="medsam-lite", preset="ct-chest",
                               axes=1)
    written = _segment_array(segmentation, result.segment_id, node)
    np.testing.assert_array_equal(written, result.mask)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert dice(written, reference) > 0.80
    assert undoLastEdit(segmentation)
    assert not _segment_array(segmentation, result.segment_id, node).any()


def test_segment_volume_node_six_orientations_with_sam2_code(slicer_scene, tiny_sam2_checkpoint):
    """The MRML entry point runs axes=3 with the self-sorting bank (real sam2 code, random
    weights): the fused mask is what lands in the segment, on an oblique volume."""
    pytest.importorskip("sam2")
    from MemSegLogic import Prompt, PropagationOptions
    from MemSegLogic.mrml import segmentVolumeNode

    k, j, i = np.indices((8, 28, 24))
    ball = ((k - 4) / 3.0) ** 2 + ((j - 14) / 9.0) ** 2 + ((i - 12) / 8.0) ** 2 < 1
    array = (np.random.default_rng(0).normal(0, 20, ball.shape) + 300 * ball).astype(np.float32)
    node = _add_volume(array, GEOMETRIES["oblique"])
    segmentation, _ = _new_segmentation(node)
    result = segmentVolumeNode(node, segmentation, "ball", Prompt.from_points([[12, 14, 4]], box=[[6, 6, 4], [18, 22, 4]]),
                               model=tiny_sam2_checkpoint.name, device="cpu", axes=3,
                               propagation=PropagationOptions(memory="self-sorting"))
    assert result.axes == 3 and set(result.visited_per_axis) == {"I", "J", "K"}
    np.testing.assert_array_equal(_segment_array(segmentation, result.segment_id, node), result.mask)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_files_we_write_read_back_identically_in_slicer(slicer_scene, tmp_path, name, suffix):
    """Our LPS<->RAS handling agrees with Slicer's own volume reader and writer: every voxel is at
    the same RAS position. (Slicer's reader turns a left-handed grid right-handed by reversing K,
    so the arrays are compared by position, not index.)"""
    from MemSegLogic import Volume
    from MemSegLogic.mrml import volumeFromNode

    volume = Volume(_phantom(), GEOMETRIES[name])
    path = tmp_path / f"ours{suffix}"
    volume.write(path)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(node)
    in_slicer = volumeFromNode(node)
    np.testing.assert_allclose(in_slicer.spacing, volume.spacing, atol=1e-5)
    assert_same_voxels_by_position(in_slicer, volume)

    writer = slicer.vtkMRMLVolumeArchetypeStorageNode()
    writer.SetFileName(str(tmp_path / f"slicer{suffix}"))
    assert writer.WriteData(node)
    back = Volume.read(tmp_path / f"slicer{suffix}")
    np.testing.assert_allclose(back.ijk_to_ras, in_slicer.ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(back.array, in_slicer.array)


def test_parent_transforms_are_followed(slicer_scene):
    """A volume under a linear transform: a point placed in the view (world RAS) still lands on
    the voxel under it, and the geometry handed to the segmentation is in its own frame."""
    from MemSegLogic.mrml import promptFromMarkups, volumeFromNode

    node = _add_volume(_phantom(), GEOMETRIES["oblique"])
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_parent = np.eye(4)
    to_parent[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    to_parent[:3, 3] = [15.0, -4.0, 30.0]
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, to_parent[r, c])
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")

    world = volumeFromNode(node, referenceNode=segmentation)
    np.testing.assert_allclose(world.ijk_to_ras, to_parent @ GEOMETRIES["oblique"], atol=1e-9)
    target = np.array([9, 3, 6])
    points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(*world.ijk_to_ras_points(target))
    prompt = promptFromMarkups(node, pointsNode=points)
    np.testing.assert_allclose(prompt.points[0], target, atol=1e-6)


def test_preview_and_prompt_markers_are_not_saved_with_the_scene(slicer_scene):
    """Helper nodes (the preview, prompt markers) live while the user works and never reach a
    saved scene: saving writes the user's segmentation, not them (nor their display nodes)."""
    from MemSegLogic.mrml import addHelperNode, showPreview

    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Lungs")
    segmentation.CreateDefaultDisplayNodes()
    segmentId = segmentation.GetSegmentation().AddEmptySegment("right", "right lung")
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    preview = showPreview(mask, np.eye(4), segmentation, segmentId)
    users = slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")  # the user's point list
    selection = slicer_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    assert selection.GetActivePlaceNodeID() == users.GetID()
    marker = addHelperNode(slicer_scene, "vtkMRMLMarkupsFiducialNode", "MemSeg prompt points")
    assert selection.GetActivePlaceNodeID() == users.GetID()  # the user's place tool still adds to F
    slicer_scene.SetSaveToXMLString(1)
    slicer_scene.Commit()
    saved = slicer_scene.GetSceneXMLString()
    assert 'name="Lungs"' in saved and f'id="{users.GetID()}"' in saved
    for node in (preview, marker):
        assert node.GetScene() is slicer_scene and node.GetHideFromEditors()
        for index in range(node.GetNumberOfDisplayNodes()):
            assert node.GetNthDisplayNode(index).GetID() not in saved
        assert node.GetName() not in saved and node.GetID() not in saved


def test_new_segmentation_and_the_segment_a_module_apply_writes(slicer_scene):
    """The module's Apply target: a new segmentation on the volume's grid, and the chosen segment
    while it exists, else a new one (the chosen one was deleted meanwhile)."""
    import numpy as np
    import slicer

    from MemSegLogic.mrml import newSegmentationFor, segmentToWrite

    ijk_to_ras = np.diag([0.5, 0.5, 2.0, 1.0])
    volume = slicer.util.addVolumeFromArray(np.zeros((4, 6, 8), np.int16), ijkToRAS=ijk_to_ras, name="v")
    segmentation = newSegmentationFor(volume, "target")
    assert segmentation.GetScene() is slicer_scene and segmentation.GetName() == "target"
    assert segmentation.GetDisplayNode() is not None
    geometry = segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    assert geometry.startswith("0.5;0;0;0;0;0.5;0;0;0;0;2;0")  # the volume's IJK->RAS
    kept = segmentation.GetSegmentation().AddEmptySegment("", "liver")
    assert segmentToWrite(segmentation, kept, "MemSeg") == kept
    added = segmentToWrite(segmentation, "deleted-meanwhile", "MemSeg")
    assert added != kept and segmentation.GetSegmentation().GetSegment(added).GetName() == "MemSeg"
    assert segmentToWrite(segmentation, "", "MemSeg") not in (kept, added)
