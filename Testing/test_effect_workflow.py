"""What the MedSAM-2 Segment Editor effect does, without Qt, on real MRML nodes (slicer-core) and
the real sam2 model code (tiny random weights): clicks in a slice view -> prompt -> segmentation
on the worker thread -> preview -> Cancel leaves the segment alone / Apply writes it through the
editor logic (masking, overwrite) as one undo step."""

import numpy as np
import pytest
from geometry_cases import GEOMETRIES, slice_view_on, view_xy

slicer = pytest.importorskip("slicer")
pytest.importorskip("sam2")

SHAPE_KJI = (6, 40, 36)


def _ball():
    k, j, i = np.indices(SHAPE_KJI)
    return ((((k - 3) / 2.5) ** 2 + ((j - 20) / 10.0) ** 2 + ((i - 18) / 9.0) ** 2) < 1) * 300.0


def test_clicks_preview_cancel_apply_and_one_undo(slicer_scene, tiny_sam2_checkpoint):
    from MemSegLogic import PropagationOptions, segment_volume
    from MemSegLogic.mrml import (
        editorLogicFor,
        orientedLabelmap,
        promptFromSliceView,
        removePreview,
        segmentEditorNode,
        showPreview,
        undoLastEdit,
        volumeFromNode,
    )
    from MemSegLogic.mrml.slice_view import ClickedPrompt
    from MemSegLogic.runtime.background import BackgroundTask

    ijk_to_ras = GEOMETRIES["lps-like-flipped"]
    volume_node = slicer.util.addVolumeFromArray(_ball().astype(np.float32), ijkToRAS=ijk_to_ras, name="ball")
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    organ = segmentation.GetSegmentation().AddEmptySegment("organ", "organ", (0.9, 0.2, 0.1))
    region = segmentation.GetSegmentation().AddEmptySegment("region", "region")
    view = slice_view_on(slicer_scene, volume_node)
    view.JumpSliceByOffsetting(*(ijk_to_ras @ [0, 0, 3, 1])[:3])

    clicks = ClickedPrompt()
    clicks.add(promptFromSliceView(volume_node, view, positiveXY=[view_xy(view, ijk_to_ras, [18, 20, 3])]))
    clicks.add(promptFromSliceView(volume_node, view, negativeXY=[view_xy(view, ijk_to_ras, [2, 2, 3])]))
    (prompt,) = clicks.prompts()
    assert (prompt.axis, prompt.slice_index, list(prompt.labels)) == (2, 3, [1, 0])

    volume = volumeFromNode(volume_node, referenceNode=segmentation)  # read on the main thread
    task = BackgroundTask(segment_volume, volume, clicks.prompts(), model=tiny_sam2_checkpoint.name,
                          device="cpu", axes=1, propagation=PropagationOptions(absent_slices=0))
    result = task.result(120)
    assert result.mask.any()  # the tiny model's answer: whatever it is, it must arrive intact
    preview = showPreview(result.mask, result.ijk_to_ras, segmentation, organ)
    shown = slicer.util.arrayFromSegmentBinaryLabelmap(preview, "preview", volume_node)
    np.testing.assert_array_equal(shown, result.mask)
    assert preview.GetSegmentation().GetSegment("preview").GetColor() == (0.9, 0.2, 0.1)
    assert preview.GetHideFromEditors()
    assert not slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, organ, volume_node).any()

    # Cancel: the preview goes, the segment and the undo history stay untouched
    removePreview(preview)
    assert preview.GetScene() is None and not undoLastEdit(segmentation)

    # Apply: editable area = inside "region" (half the volume), through the editor logic
    region_mask = np.zeros(SHAPE_KJI, np.uint8)
    region_mask[:, :20, :] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(region_mask, segmentation, region, volume_node)
    editor = segmentEditorNode()
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(region)
    logic = editorLogicFor(segmentation, volume_node, editor)
    logic.SaveStateForUndo()  # what scriptedEffect.saveStateForUndo() + modifySelectedSegmentByLabelmap do
    logic.ModifySegmentByLabelmap(segmentation, organ, orientedLabelmap(result.mask, result.ijk_to_ras),
                                  slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet, True, False)
    written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, organ, volume_node)
    np.testing.assert_array_equal(written, result.mask & region_mask)
    assert undoLastEdit(segmentation)
    assert not slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, organ, volume_node).any()


def test_clicked_prompt_collects_seeds_per_slice_and_refuses_mixed_views():
    from MemSegLogic import InvalidPromptError, Prompt
    from MemSegLogic.mrml.slice_view import ClickedPrompt

    clicks = ClickedPrompt()
    with pytest.raises(InvalidPromptError, match="empty prompt"):
        clicks.prompts()
    clicks.add(Prompt.from_points([[5.2, 6.1, 3.0]], axis="K"))
    clicks.add(Prompt.from_points(negative=[[1.0, 1.0, 3.0]], axis="K"))
    clicks.add(Prompt.from_points(axis="K", box=[[2, 2, 7], [9, 9, 7]]))
    clicks.add(Prompt.from_points([[4.0, 4.0, 7.0]], axis="K"))
    clicks.add(Prompt.from_points(axis="K", box=[[3, 3, 7], [8, 8, 7]]))  # replaces the box of slice 7
    first, second = clicks.prompts()
    assert (first.slice_index, list(first.labels), first.box) == (3, [1, 0], None)
    assert second.slice_index == 7 and list(second.labels) == [1]
    np.testing.assert_array_equal(second.box[:, :2], [[3, 3], [8, 8]])
    with pytest.raises(InvalidPromptError, match="shows J slices but the prompt so far is on K slices"):
        clicks.add(Prompt.from_points([[4.0, 2.0, 4.0]], axis="J"))
    assert clicks.remove_last_point() and len(clicks.prompts()[1].labels) == 0
    clicks.clear()
    assert clicks.empty
    clicks.add(Prompt.from_points([[4.0, 2.0, 4.0]], axis="J"))  # after clearing, any view
    assert clicks.prompts()[0].axis == 1
