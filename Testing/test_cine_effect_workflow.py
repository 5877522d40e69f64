"""What the MemSAM (cine) Segment Editor effect does, without Qt, on real MRML nodes (slicer-core)
and the real MemSAM code (tiny random weights): a click in a slice view showing the browser's
proxy volume on frame f -> a prompt on frame f of the cine -> segment_sequence on MemSeg's worker
thread -> recorded as a segmentation sequence in the same browser."""

import numpy as np
import pytest
from geometry_cases import _matrix, _rotation, slice_view_on, view_xy

from MemSegLogic.cine import Cine

slicer = pytest.importorskip("slicer")

# a frame's IJK->RAS rotated about two axes with its columns flipped (like the diag(-1, -1, 1) of
# a DICOM cine): clicks must land on the pixel under the cursor anyway
FRAME_TO_RAS = _matrix(_rotation(0, 12) @ _rotation(1, -15) @ np.diag([-1.0, 1.0, 1.0]), (0.3, 0.3, 1.0),
                       (40.0, -12.0, 7.5))


def _frames(count=4, height=48, width=64):
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        blob = ((yy - 24) / (14 - t)) ** 2 + ((xx - 30) / (18 - t)) ** 2 <= 1
        frames.append(np.where(blob, 200, 40) + (xx % 7))
    return np.stack(frames).astype(np.uint8)


def test_click_on_the_frame_shown_segments_every_frame_on_the_worker(slicer_scene, tiny_memsam_checkpoint):
    from MemSegLogic.cine import prompt_on_frame, segment_sequence
    from MemSegLogic.mrml import (
        addCineSequence,
        cineFromBrowser,
        promptFromSliceView,
        segmentEditorNode,
        writeSequenceResult,
    )
    from MemSegLogic.mrml.slice_view import ClickedPrompt
    from MemSegLogic.runtime.background import BackgroundTask

    cine = Cine(_frames(), FRAME_TO_RAS, ("0", "0.02", "0.04", "0.06"), "time", "s")
    browser = addCineSequence(cine, slicer_scene, "echo")
    master = browser.GetMasterSequenceNode()
    proxy = browser.GetProxyNode(master)
    browser.SetSelectedItemNumber(2)  # the user shows frame 2 and clicks on the blob there
    view = slice_view_on(slicer_scene, proxy, field_of_view=(40.0, 30.0))
    view.JumpSliceByOffsetting(*FRAME_TO_RAS[:3, 3])

    clicks = ClickedPrompt()
    frame = browser.GetSelectedItemNumber()
    clicks.add(prompt_on_frame(promptFromSliceView(proxy, view, positiveXY=[view_xy(view, FRAME_TO_RAS, [30, 24, 0])]),
                               frame))
    clicks.add(prompt_on_frame(promptFromSliceView(proxy, view, negativeXY=[view_xy(view, FRAME_TO_RAS, [60, 3, 0])]),
                               frame))
    (prompt,) = clicks.prompts()
    assert (prompt.axis, prompt.slice_index) == (2, 2)
    np.testing.assert_allclose(prompt.points, [[30, 24, 2], [60, 3, 2]], atol=1e-6)  # the pixels clicked
    assert list(prompt.labels) == [1, 0]

    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segment_id = segmentation.GetSegmentation().AddEmptySegment("LV", "LV")
    frames = cineFromBrowser(browser, referenceNode=segmentation)  # read on the main thread
    task = BackgroundTask(segment_sequence, frames, prompt, model=tiny_memsam_checkpoint, device="cpu")
    result = task.result(timeout=600)
    assert result.prompt_frame == 2 and result.masks.shape == (4, 48, 64)

    writeSequenceResult(result, browser, segmentation, segment_id, segmentEditorNode(slicer_scene))
    recorded = [n for n in slicer_scene.GetNodesByClass("vtkMRMLSequenceNode")
                if browser.IsSynchronizedSequenceNode(n) and n is not master]
    assert len(recorded) == 1 and recorded[0].GetNumberOfDataNodes() == 4
    assert [recorded[0].GetNthIndexValue(i) for i in range(4)] == ["0", "0.02", "0.04", "0.06"]
    assert browser.GetSelectedItemNumber() == 2  # the user's frame is on show again


def test_a_click_across_the_frame_is_refused(slicer_scene):
    from MemSegLogic.cine import prompt_on_frame
    from MemSegLogic.core.prompt import Prompt
    from MemSegLogic.errors import InvalidPromptError

    with pytest.raises(InvalidPromptError, match="face-on"):
        prompt_on_frame(Prompt.from_points([(0, 10, 10)], axis="I"), 1)
