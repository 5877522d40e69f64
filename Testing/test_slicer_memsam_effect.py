"""The MemSAM (cine) Segment Editor effect driven end to end the way Slicer drives it, through
the replayed loader of test_slicer_loader.py (same child process, same STAND-INS: `qt` and `ctk`
API-checked against Testing/slicer_api's listings, the effect adaptor, the slice widget) with real
MRML from slicer-core: pydicom's real echo loop cut to a few frames as a sequence with its browser
(as Slicer's DICOM plugin loads a cine), a real slice node, real VTK interactor events, tiny random
MemSAM weights in the official checkpoint format, and the real medsam-lite weights (zero-shot).
Not Slicer: run Testing/run_in_slicer.sh in a real one.
"""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from conftest import run_slicer_replay

pytest.importorskip("slicer")

from test_slicer_loader import _REPLAY  # noqa: E402  (the loader replay and its stand-ins)

REPO = pathlib.Path(__file__).resolve().parents[1]
STARTUP_END = "# Scene hygiene"  # where the replay's startup (loading, registering) ends

_CINE_RUN = r'''
# The MemSAM (cine) effect: a real cine (sequence + browser), the effect activated and its options
# frame built, a click on the frame shown, "Segment all frames" on the worker, recorded into a
# segmentation sequence, the editor's Undo, Cancel mid-run, deactivate, the scene saved.
import time

import numpy as np
import vtk
from pydicom.data import get_testdata_file

from MemSegLogic.cine import Cine
from MemSegLogic.mrml import addCineSequence, headlessScene

scene, application_logic, logics = headlessScene()
slicer.mrmlScene = scene
slicer.app.applicationLogic = lambda: application_logic
slicer.modules = types.SimpleNamespace(**{n.lower(): types.SimpleNamespace(logic=(lambda l=l: l))
                                          for n, l in logics.items()})
slicer.util.mainWindow = lambda: types.SimpleNamespace(cursor=None)
slicer.util.errorDisplay = lambda text, **kwargs: print("error shown", text)
slicer.qSlicerSegmentEditorAbstractEffect = types.SimpleNamespace(
    ModificationModeSet=slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet)

echo = Cine.read(get_testdata_file("examples_ybr_color.dcm"))  # 30 colour frames, 240 x 320
FRAMES = 3
echo = Cine(echo.frames[:FRAMES], echo.ijk_to_ras, echo.index_values[:FRAMES], echo.index_name, echo.index_unit)
browser = addCineSequence(echo, scene, "US cine")
master = browser.GetMasterSequenceNode()
proxy = browser.GetProxyNode(master)
segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Echo")
segmentation.SetReferenceImageGeometryParameterFromVolumeNode(proxy)
segment_id = segmentation.GetSegmentation().AddEmptySegment("LV", "LV")
import slicer_standins

editor_node = slicer_standins.segment_editor_node(scene, proxy, segmentation, segment_id)
ScriptedEffectAdaptor.parameter_node = editor_node
editor_logic = slicer.vtkSlicerSegmentEditorLogic()  # the Segment Editor widget's own logic
editor_logic.SetMRMLScene(scene)
editor_logic.SetSegmentEditorNode(editor_node)
editor_logic.SetSegmentationNode(segmentation)
editor_logic.SetSourceVolumeNode(proxy)
ScriptedEffectAdaptor.editor_logic = editor_logic

slice_node = slicer_standins.axial_slice_node(scene, (200.0, 150.0), (echo.ijk_to_ras @ [160, 120, 0, 1])[:3])


def view_xy(i, j):
    """Where pixel (i, j) of a frame is in the slice view (inverse of the slice's XY->RAS)."""
    rasToXY = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(slice_node.GetXYToRAS(), rasToXY)
    xy = rasToXY.MultiplyPoint(list(echo.ijk_to_ras @ [i, j, 0, 1]))
    return int(round(xy[0])), int(round(xy[1]))


def helper_nodes():
    return sorted(node.GetName() for node in scene.GetNodes() if not node.GetSaveWithScene()
                  and (node.IsA("vtkMRMLMarkupsNode") or node.IsA("vtkMRMLSegmentationNode")))


def recorded():
    """Voxels of segment LV on each item of the segmentation sequence (None: no sequence yet)."""
    sequence = browser.GetSequenceNode(segmentation)
    if sequence is None:
        return None
    counts = []
    for item in range(sequence.GetNumberOfDataNodes()):
        node = sequence.GetNthDataNode(item)
        labelmap = node.GetBinaryLabelmapInternalRepresentation(segment_id) if node.GetSegmentation().GetSegment(
            segment_id) else None
        counts.append(0 if labelmap is None or labelmap.IsEmpty() else int(np.count_nonzero(
            vtk.util.numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()))))
    return counts


import vtk.util.numpy_support  # noqa: E402

effect = next(a.self() for a in ScriptedEffectAdaptor.registered if a.self().NAME == "MemSAM (cine)").clone().self()
ScriptedEffectAdaptor.options = []
effect.setupOptionsFrame()
effect.setMRMLDefaults()
effect.updateGUIFromMRML()
models = [effect.modelCombo.itemData(i, None) is None and effect.modelCombo._items[i][0]
          for i in range(effect.modelCombo.count)]
print("options", len(ScriptedEffectAdaptor.options), effect.modelCombo.currentText,
      effect.memoryFramesSpin.value, repr(effect.weightsPath.currentPath), "medsam-lite" in models)
effect.memoryFramesSpin.value = 3  # the user's edits reach the editor node's parameters
effect.memoryFramesSpin.emit("valueChanged(int)", 3)
print("parameters", effect.scriptedEffect.parameter("CineModel"), effect.scriptedEffect.parameter("CineMemoryFrames"))
effect.activate()
print("activated", effect.statusLabel.text[:40], effect.applyButton.enabled)


event = slicer_standins.slice_view_events(effect, slice_node)


press, release = vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.LeftButtonReleaseEvent
keyPress = vtk.vtkCommand.KeyPressEvent


def click(i, j, shift=0):
    x, y = view_xy(i, j)
    return [event(press, x, y, shift=shift), event(release, x, y, shift=shift)]


def run(key="Return"):
    event(keyPress, key=key)
    task = effect.runner.task
    while task is not None and not task.done:
        effect.runner.poll()
        time.sleep(0.05)
    effect.runner.poll()
    return task


browser.SetSelectedItemNumber(2)  # the user shows frame 2, paints a bit with the Segment Editor...
from MemSegLogic.mrml.segments import orientedLabelmap

painted = np.zeros((1, 240, 320), np.uint8)
painted[0, 100:110, 150:160] = 1
editor_logic.SaveStateForUndo()
editor_logic.ModifySegmentByLabelmap(segmentation, segment_id, orientedLabelmap(painted, echo.ijk_to_ras),
                                     slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd, True, False)
proxy_voxels = lambda: int(np.count_nonzero(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, proxy)))
print("painted", proxy_voxels(), editor_logic.CanUndo())
# ...and clicks on the structure there
consumed = click(160, 120)
(prompt,) = effect.clicks.prompts()
print("clicked", consumed, prompt.points.tolist(), list(prompt.labels), effect.promptFrame, helper_nodes(),
      effect.applyButton.enabled)
run()
after_memsam = recorded()
print("recorded memsam", after_memsam, browser.GetSelectedItemNumber(), helper_nodes(), effect.clicks.empty,
      effect.statusLabel.text)
scene.SetSaveToXMLString(1)
scene.Commit()
saved = scene.GetSceneXMLString()
print("saved scene has helpers", "MemSeg" in saved, "has user nodes", 'name="Echo"' in saved)

# zero-shot: medsam-lite from a click and a background click on frame 1
effect.modelCombo.currentIndex = effect.modelCombo.findText("medsam-lite")
browser.SetSelectedItemNumber(1)
consumed = click(160, 120) + click(40, 30, shift=1)
print("clicked again", consumed, effect.promptFrame, len(effect.clicks.prompts()[0].points),
      effect.memoryFramesSpin.enabled)
run()
after_lite = recorded()
print("recorded medsam-lite", after_lite, effect.scriptedEffect.parameter("CineModel"), effect.statusLabel.text)
clicked_pixel = [int(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, proxy)[0, 120, 160])
                 for item in range(FRAMES) if browser.SetSelectedItemNumber(item) or True]
browser.SetSelectedItemNumber(1)
print("clicked pixel in the mask", clicked_pixel)
# Ctrl+Z in the Segment Editor: its history held the paint on frame 2, a state of another frame's
# segmentation; the recorded frames must stay as they are
can_undo = editor_logic.CanUndo()
editor_logic.Undo()
print("editor undo", can_undo, recorded() == after_lite)
# "Undo run": every frame as it was before the medsam-lite run (MemSAM's), the frame shown included
undo_enabled = effect.undoButton.enabled
effect.undoButton.emit("clicked()")
print("undo run", undo_enabled, recorded() == after_memsam, proxy_voxels() == after_memsam[1],
      effect.undoButton.enabled, effect.statusLabel.text)

# Cancel mid-run: Esc while the worker runs; nothing is written
browser.SetSelectedItemNumber(2)
click(160, 120)
event(keyPress, key="Return")
running = effect.runner.running
event(keyPress, key="Escape")
task = effect.runner.task
task.wait(300)
effect.runner.poll()
print("cancelled", running, effect.statusLabel.text, recorded())
effect.deactivate()
print("deactivated", helper_nodes(), effect.clicks.empty)
scene.Commit()
print("saved scene has helpers", "MemSeg" in scene.GetSceneXMLString())
'''


@pytest.fixture(scope="module")
def memsam_effect_run(tmp_path_factory):
    """What the replayed Slicer prints while a user drives the MemSAM (cine) effect."""
    from random_weights import save_random_memsam

    assert STARTUP_END in _REPLAY
    folder = tmp_path_factory.mktemp("replay")
    # the weights folder the user chose in the module's settings holds their trained memsam.pth
    save_random_memsam(folder / "my-weights" / "memsam.pth", tiny=True)
    return run_slicer_replay(textwrap.dedent(_REPLAY).split(STARTUP_END)[0] + textwrap.dedent(_CINE_RUN), folder)


def _line(lines, start):
    return next(line for line in lines if line.startswith(start))


def _counts(line):
    """The first list of numbers in a printed line (voxels of the segment on each frame)."""
    return [int(n) for n in line.split("[", 1)[1].split("]", 1)[0].split(", ")]


def test_options_frame_reads_and_writes_the_editor_nodes_parameters(memsam_effect_run):
    """The options frame, built with the API-checked qt and ctk stand-ins, shows the defaults, lists
    the zero-shot models, and writes the user's edits to the editor node."""
    assert "options 7 memsam 16 '' True" in memsam_effect_run
    assert "parameters memsam 3" in memsam_effect_run


def test_click_on_the_frame_shown_records_every_frame_with_memsam(memsam_effect_run):
    """A click on frame 2 (a real slice node, recorded VTK events) is a point on that frame's
    pixel; Enter runs MemSAM (tiny random weights from the weights folder) on the worker and
    records a segmentation sequence over the 3 frames; the frame on show stays; the prompt and
    its markers go; the saved scene holds no helper node."""
    assert "painted 100 True" in memsam_effect_run
    assert "clicked [True, False] [[160.0, 120.0, 2.0]] [np.int64(1)] 2 ['MemSeg cine positive'] True" \
        in memsam_effect_run
    recorded = _line(memsam_effect_run, "recorded memsam ")
    assert len(_counts(recorded)) == 3  # random weights: what they segment is not the point
    assert recorded.split("] ", 1)[1].startswith("2 [] True Recorded on 3 frames")
    assert "saved scene has helpers False has user nodes True" in memsam_effect_run


def test_zero_shot_model_runs_without_memsams_memory_setting(memsam_effect_run):
    """medsam-lite (real weights, zero-shot) from a click and a Shift-click on frame 1 records the
    echo's structure on every frame, the clicked pixel inside. The memory setting is MemSAM's:
    greyed out, and not passed (before the fix every zero-shot run failed with "memory_frames sets
    MemSAM's memory")."""
    assert "clicked again [True, False, True, False] 1 2 False" in memsam_effect_run
    recorded = _line(memsam_effect_run, "recorded medsam-lite ")
    assert "Failed" not in recorded and "(zero-shot" in recorded
    counts = _counts(recorded)
    assert len(counts) == 3 and all(500 < n < 240 * 320 // 2 for n in counts), counts
    assert "clicked pixel in the mask [1, 1, 1]" in memsam_effect_run


def test_undo_run_restores_every_frame_and_cancel_changes_nothing(memsam_effect_run):
    """The Segment Editor's Undo has nothing to paste after a run (its history went with the
    frame's segmentation: the recorded frames stay); the effect's "Undo run" restores every frame
    as it was before the last run, the frame on show included (before it existed, a run could not
    be undone at all); Esc during a run cancels it and changes nothing; deactivate leaves no helper
    node, in the scene or in the saved scene."""
    assert "editor undo False True" in memsam_effect_run
    assert "undo run True True True False Every frame is as it was before the last run." in memsam_effect_run
    cancelled = _line(memsam_effect_run, "cancelled ")
    assert cancelled.startswith("cancelled True Cancelled: nothing was changed. [")
    assert _counts(cancelled) == _counts(_line(memsam_effect_run, "recorded memsam "))
    assert "deactivated [] True" in memsam_effect_run
    assert memsam_effect_run[-1] == "saved scene has helpers False"
