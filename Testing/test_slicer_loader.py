"""Slicer's own loading of our files, replayed: the hidden module that registers the Segment
Editor effects, and each effect loaded from its source file the way Slicer's C++ does it.

Slicer's Qt application cannot run here, so its loaders are replayed in Python, each from the C++
function named in its docstring, in a fresh interpreter (a child process) with Slicer's rule for
`sys.path` (every scripted module's folder is on it). Real MRML comes from slicer-core (scene,
volume, segmentation, slice node, the segment editor logic that writes and undoes), real VTK
interactor events, real model weights. STAND-INS, named as such: `qt` (API-checked: only the
attributes Qt's real API has in Qt 6 and Qt 5.15, from Testing/slicer_api/qt_listing.json and
qt5_listing.json), `ctk` (API-checked against CTK's headers: ctk_listing.json), `SegmentEditorEffects`,
`slicer.ScriptedLoadableModule`, `slicer.i18n`, the effect adaptor (qSlicerSegmentEditorScriptedEffect)
and the slice widget, holding only what Slicer's classes do on these paths. Not Slicer: run
Testing/run_in_slicer.sh in a real one.
"""

from __future__ import annotations

import pathlib

import pytest
from conftest import run_slicer_replay

pytest.importorskip("slicer")

REPO = pathlib.Path(__file__).resolve().parents[1]

_REPLAY = r'''
import importlib.util
import os
import pathlib
import sys
import types
import warnings

import slicer  # real MRML (slicer-core)

EXTENSION = sys.argv[1]
SLICER_API = sys.argv[2]
sys.path.insert(0, EXTENSION)  # Slicer puts each scripted module's folder on sys.path


def load_source_as_module(module_name, path):
    """qSlicerScriptedUtils::loadSourceAsModule (Base/QTCore/qSlicerScriptedUtils.cxx): runs
    `imp.load_source(moduleName, fileName)`, which executes the file in the module that
    sys.modules already holds under that name (PyImport_AddModule created it) or a new one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import imp
    imp.load_source(module_name, path)


class ScriptedEffectAdaptor:
    """Stand-in for qSlicerSegmentEditorScriptedEffect (the C++ adaptor). setPythonSource replays
    qSlicerSegmentEditorScriptedEffect::setPythonSource (Modules/Loadable/Segmentations/
    EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx)."""

    registered = []
    parameter_node = None  # the Segment Editor's vtkMRMLSegmentEditorNode, once a scene exists

    def __init__(self, parent):
        self._self = None

    editor_logic = None  # the editor widget's vtkSlicerSegmentEditorLogic (real), once a scene exists
    options = []

    # qSlicerSegmentEditorAbstractEffect's Q_INVOKABLEs the effects call
    # (Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorAbstractEffect.h)
    def parameterSetNode(self):
        return ScriptedEffectAdaptor.parameter_node

    def addOptionsWidget(self, widget):
        ScriptedEffectAdaptor.options.append(widget)

    def addLabeledOptionsWidget(self, label, widget):
        ScriptedEffectAdaptor.options.append(widget)

    def _key(self, name):  # parameters live on the editor node as "<effect name>.<parameter>"
        return f"{self.name}.{name}"

    def setParameterDefault(self, name, value):
        if self.parameterSetNode().GetAttribute(self._key(name)) is None:
            self.setParameter(name, value)

    def setParameter(self, name, value):
        self.parameterSetNode().SetAttribute(self._key(name), str(value))

    def parameter(self, name):
        return self.parameterSetNode().GetAttribute(self._key(name)) or ""

    def integerParameter(self, name):
        return int(self.parameter(name) or 0)

    def confirmCurrentSegmentVisible(self):  # the segment is shown: ConfirmedWithoutDialog
        return 1

    def saveStateForUndo(self):  # the editor widget's slot: its logic's SaveStateForUndo
        ScriptedEffectAdaptor.editor_logic.SaveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, labelmap, mode, bypassMasking=False):
        node = self.parameterSetNode()
        ScriptedEffectAdaptor.editor_logic.ModifySegmentByLabelmap(
            node.GetSegmentationNode(), node.GetSelectedSegmentID(), labelmap, mode, True, bypassMasking)

    def setPythonSource(self, path):
        assert path.endswith(".py")
        module_name = pathlib.PurePosixPath(path).parent.name  # "Use parent directory name as module name"
        class_name = pathlib.PurePosixPath(path).stem
        if not class_name.endswith("Effect"):
            class_name += "Effect"
        if module_name not in sys.modules:  # PyImport_AddModule: get, or create a bare module
            sys.modules[module_name] = types.ModuleType(module_name)
        module = sys.modules[module_name]
        cls = getattr(module, class_name, None)
        if cls is None:
            load_source_as_module(module_name, path)
            cls = getattr(module, class_name, None)
        if cls is None:
            raise RuntimeError(f"class {class_name} was not found in {path}")
        self._self = cls(self)  # PythonCppAPI.instantiateClass(this, ...)
        return True

    def self(self):
        return self._self


def install_standins():
    effects_adaptor = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    effects_adaptor.qSlicerSegmentEditorScriptedEffect = ScriptedEffectAdaptor
    sys.modules[effects_adaptor.__name__] = effects_adaptor
    sys.path.insert(0, SLICER_API)
    import qt_standin  # API-checked stand-in for PythonQt's qt (Testing/slicer_api)

    qt = qt_standin.qt_module()
    sys.modules["qt"] = qt
    import slicer_standins  # parameterNodeWrapper, replayed (Testing/slicer_api)

    slicer.parameterNodeWrapper = sys.modules["slicer.parameterNodeWrapper"] = \
        slicer_standins.parameter_node_wrapper_module()

    # Slicer's SegmentEditorEffects package (its register() adds to the effect factory, a list
    # here), slicer.ScriptedLoadableModule, ctk: shared with test_slicer_module (slicer_standins).
    sys.modules.update(slicer_standins.segment_editor_effects_modules(ScriptedEffectAdaptor.registered.append))
    sys.modules["ctk"] = slicer_standins.ctk_module()
    slicer.ScriptedLoadableModule = sys.modules["slicer.ScriptedLoadableModule"] = \
        slicer_standins.scripted_loadable_module({})

    class Application:  # slicer.app: only its signal connections matter here
        connections = []

        def connect(self, signal, slot):
            self.connections.append((signal, slot))

    slicer.app = Application()

    slicer.i18n = sys.modules["slicer.i18n"] = slicer_standins.i18n_module()


def load_scripted_module(path):
    """qSlicerScriptedLoadableModule::setPythonSource (Base/QTGUI/qSlicerScriptedLoadableModule.cxx):
    module name = file name; the class of that name from sys.modules, else loadSourceAsModule and
    look again; then the class is instantiated with the module's parent object."""
    name = pathlib.Path(path).stem
    module = sys.modules.get(name)
    if module is None or not hasattr(module, name):
        load_source_as_module(name, path)
        module = sys.modules[name]
    return getattr(module, name)(types.SimpleNamespace())


install_standins()
import slicer.util

SETTINGS = {"MemSeg/WeightsFolder": os.path.join(os.getcwd(), "my-weights")}  # what the user chose earlier
slicer.util.settingsValue = lambda key, default=None, **kwargs: SETTINGS.get(key, default)  # QSettings stand-in
os.environ.pop("MEMSEG_WEIGHTS_DIR", None)
module = load_scripted_module(os.path.join(EXTENSION, "MemSeg.py"))
hidden = load_scripted_module(os.path.join(EXTENSION, "SegmentEditorMemSeg.py"))
for signal, slot in slicer.app.connections:
    if signal == "startupCompleted()":
        slot()
print("weights folder", os.environ.get("MEMSEG_WEIGHTS_DIR") == SETTINGS["MemSeg/WeightsFolder"])
names = sorted(type(adaptor.self()).__name__ for adaptor in ScriptedEffectAdaptor.registered)
print("registered", names)
for adaptor in ScriptedEffectAdaptor.registered:  # the Segment Editor clones each effect per view
    clone = adaptor.self().clone()
    print("cloned", type(clone.self()).__name__, clone.self().scriptedEffect.name)

# Scene hygiene (issue 13, defect 5): what an effect shows goes on deactivate, on scene close and
# on cleanup, and a running task is stopped. Real MRML scene, volume, segmentation, slice node.
import time

import numpy as np
from MemSegLogic.mrml import headlessScene
from MemSegLogic.runtime.background import BackgroundTask

scene, application_logic, logics = headlessScene()
slicer.mrmlScene = scene
slicer.app.applicationLogic = lambda: application_logic
slicer.modules = types.SimpleNamespace(**{n.lower(): types.SimpleNamespace(logic=(lambda l=l: l))
                                          for n, l in logics.items()})
volume = slicer.util.addVolumeFromArray(np.zeros((8, 40, 40), np.int16), ijkToRAS=np.eye(4), name="vol")
segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
segment_id = segmentation.GetSegmentation().AddEmptySegment("s", "s")
import slicer_standins

editor_node = slicer_standins.segment_editor_node(scene, volume, segmentation, segment_id)
ScriptedEffectAdaptor.parameter_node = editor_node
slice_node = slicer_standins.axial_slice_node(scene, (80.0, 60.0), (20.0, 20.0, 4.0))
effect = next(a.self() for a in ScriptedEffectAdaptor.registered if a.self().NAME == "MedSAM-2")


def helper_nodes():
    return sorted(node.GetName() for node in scene.GetNodes() if not node.GetSaveWithScene()
                  and (node.IsA("vtkMRMLMarkupsNode") or node.IsA("vtkMRMLSegmentationNode")))


def show_prompt_and_preview():
    effect.activate()
    effect._addClick(slice_node, positive=[[200, 150]], negative=[[220, 150]])
    mask = np.zeros((8, 40, 40), np.uint8)
    mask[2:6, 10:30, 10:30] = 1
    finished = types.SimpleNamespace(mask=mask, ijk_to_ras=np.eye(4), slices_visited=4, seconds=1.0, device="cpu")
    effect._showResult(finished)  # what the task runner calls with a finished run's result


def slow(progress, cancel):
    while not cancel.is_set():
        time.sleep(0.01)
    raise RuntimeError("cancelled")


show_prompt_and_preview()
print("shown", helper_nodes())
effect.deactivate()
print("after deactivate", helper_nodes(), effect.previewNode, effect.clicks.empty)
show_prompt_and_preview()
task = BackgroundTask(slow)
effect.runner.start(task, lambda result: "done")
scene.InvokeEvent(slicer.vtkMRMLScene.StartCloseEvent)  # what vtkMRMLScene::Clear fires first
print("after scene close", helper_nodes(), effect.previewNode, effect.clicks.empty, effect.runner.running,
      task.cancel_event.is_set(), effect.runner.timer.active)
show_prompt_and_preview()
timer = effect.runner.timer
effect.cleanup()
effect.cleanup()  # Slicer may clean an effect up more than once
print("after cleanup", helper_nodes(), effect.runner.timer, timer._connections)

# The MedSAM-2 effect end to end: options frame, recorded slice-view events (click, Shift-click,
# Ctrl-drag) through processInteractionEvents, Preview on the worker (real medsam-lite weights),
# Apply, Undo, Cancel, deactivate; the saved scene holds none of its helper nodes.
import vtk

array = np.zeros((8, 40, 40), np.int16)
array[2:6, 12:28, 12:28] = 400  # a bright block under the prompt
slicer.util.updateVolumeFromArray(volume, array)
editor_logic = slicer.vtkSlicerSegmentEditorLogic()
editor_logic.SetMRMLScene(scene)
editor_logic.SetSegmentEditorNode(editor_node)
editor_logic.SetSegmentationNode(segmentation)
editor_logic.SetSourceVolumeNode(volume)
ScriptedEffectAdaptor.editor_logic = editor_logic
slicer.qSlicerSegmentEditorAbstractEffect = types.SimpleNamespace(
    ModificationModeSet=slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet)
effect = next(a.self() for a in ScriptedEffectAdaptor.registered if a.self().NAME == "MedSAM-2").clone().self()
effect.setupOptionsFrame()
effect.setMRMLDefaults()
effect.updateGUIFromMRML()
effect.scriptedEffect.setParameter("Model", "medsam-lite")
effect.scriptedEffect.setParameter("Axes", 1)
effect.updateGUIFromMRML()
print("options", len(ScriptedEffectAdaptor.options), effect.modelCombo.currentText, effect.axesCombo.currentData)
effect.activate()


event = slicer_standins.slice_view_events(effect, slice_node)


press, release = vtk.vtkCommand.LeftButtonPressEvent, vtk.vtkCommand.LeftButtonReleaseEvent
consumed = [event(press, 200, 150), event(release, 200, 150),
            event(press, 275, 150, shift=1), event(release, 275, 150, shift=1),
            event(press, 150, 100, ctrl=1), event(release, 250, 200, ctrl=1)]
print("events", consumed, effect.clicks.prompts()[0].points.tolist() if hasattr(effect.clicks.prompts()[0], "points")
      else len(effect.clicks.prompts()), helper_nodes())


def run_preview():
    event(vtk.vtkCommand.KeyPressEvent, 0, 0, key="p")
    task = effect.runner.task
    while not task.done:
        effect.runner.poll()
        time.sleep(0.05)
    effect.runner.poll()
    return task


run_preview()
preview_voxels = int(np.count_nonzero(slicer.util.arrayFromSegmentBinaryLabelmap(
    effect.previewNode, effect.previewNode.GetSegmentation().GetNthSegmentID(0), volume))) if effect.previewNode else 0
written = lambda: int(np.count_nonzero(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)))
print("preview", preview_voxels, written(), effect.statusLabel.text[:8])
scene.SetSaveToXMLString(1)
scene.Commit()
saved = scene.GetSceneXMLString()
print("saved scene has helpers", "MemSeg" in saved, "has user nodes", 'name="vol"' in saved)
event(vtk.vtkCommand.KeyPressEvent, 0, 0, key="Return")
print("applied", written(), effect.previewNode is None, helper_nodes())
editor_logic.Undo()
print("undone", written())
effect._addClick(slice_node, positive=[[200, 150]])
event(vtk.vtkCommand.KeyPressEvent, 0, 0, key="p")
event(vtk.vtkCommand.KeyPressEvent, 0, 0, key="Escape")
task = effect.runner.task
task.wait(120)
effect.runner.poll()
print("cancelled", effect.statusLabel.text, effect.previewNode is None, written())
effect.deactivate()
print("deactivated", helper_nodes())
'''


@pytest.fixture(scope="module")
def replayed_startup(tmp_path_factory):
    """What a fresh Slicer prints after loading our modules and firing startupCompleted."""
    return run_slicer_replay(_REPLAY, tmp_path_factory.mktemp("replay"))


def test_slicer_registers_and_clones_both_effects(replayed_startup):
    assert "registered ['SegmentEditorMedSAM2Effect', 'SegmentEditorMemSAMEffect']" in replayed_startup
    assert "cloned SegmentEditorMedSAM2Effect MedSAM-2" in replayed_startup
    assert "cloned SegmentEditorMemSAMEffect MemSAM (cine)" in replayed_startup


def test_effects_leave_nothing_behind(replayed_startup):
    """Issue 13, defect 5: deactivate, scene close and cleanup remove the prompt markers and the
    preview; scene close also stops a running task; cleanup disconnects the poll timer."""
    shown = next(line for line in replayed_startup if line.startswith("shown "))
    assert "MemSeg positive" in shown and "MemSeg negative" in shown and "MemSeg preview" in shown
    assert "after deactivate [] None True" in replayed_startup
    assert "after scene close [] None True False True False" in replayed_startup
    assert "after cleanup [] None []" in replayed_startup  # the poll timer disconnected


def test_medsam2_effect_end_to_end_through_slice_view_events(replayed_startup):
    """The MedSAM-2 effect as the Segment Editor drives it, with API-checked Qt stand-ins
    (Testing/slicer_api) and real MRML: its options frame reads and writes its parameters on the
    editor node; a click and a Shift-click are points, a Ctrl-drag a box (each shown as a marker);
    P previews on the worker with the real medsam-lite weights (the bright block under the prompt);
    the saved scene holds no helper node; Enter applies through the editor logic; the editor's
    Undo empties the segment; Esc cancels a second run, which leaves nothing; deactivate clears."""
    assert "options 9 medsam-lite 1" in replayed_startup
    events = next(line for line in replayed_startup if line.startswith("events "))
    assert events.startswith("events [True, False, True, False, True, True]")
    assert "'MemSeg positive'" in events and "'MemSeg negative'" in events and "'MemSeg box" in events
    preview = next(line for line in replayed_startup if line.startswith("preview ")).split()
    assert 500 < int(preview[1]) <= 4 * 16 * 16 and preview[2] == "0"  # shown, not yet written
    assert "saved scene has helpers False has user nodes True" in replayed_startup
    applied = next(line for line in replayed_startup if line.startswith("applied ")).split()
    assert applied[1] == preview[1] and applied[2:] == ["True", "[]"]
    assert "undone 0" in replayed_startup
    assert "cancelled Cancelled: nothing was changed. True 0" in replayed_startup
    assert "deactivated []" in replayed_startup


def test_weights_folder_setting_applies_from_startup(replayed_startup):
    """The module's weights-folder setting reaches MemSegLogic (effects, console) once Slicer has
    started, without the module's panel ever being opened."""
    assert "weights folder True" in replayed_startup


def test_qt_listing_covers_every_qt_class_the_extension_uses():
    """The API-checked qt stand-in knows every Qt class our Slicer files name (a new one must be
    added to Testing/slicer_api/generate_qt_listing.py and the listing regenerated)."""
    import json
    import re

    listing = json.loads((REPO / "Testing" / "slicer_api" / "qt_listing.json").read_text(encoding="utf-8"))
    used = {name for path in (REPO / "MemSegExtension").rglob("*.py")
            for name in re.findall(r"\bqt\.([A-Z][A-Za-z]+)", path.read_text(encoding="utf-8"))}
    assert used and used <= set(listing["classes"]), used - set(listing["classes"])
    assert listing["source"].startswith("PySide6 ")



def test_slicer_widget_calls_exist_in_slicers_headers():
    """What MemSeg.py calls on Slicer's widgets (node selectors, markups place widgets, the
    Segment Editor widget it saves undo states through) exists in those classes' headers under
    PythonQt's rule (Testing/slicer_api/slicer_widgets_listing.json, generated from Slicer's
    sources), or in Qt's QWidget for what they inherit from it."""
    import ast
    import json

    listing = json.loads((REPO / "Testing" / "slicer_api" / "slicer_widgets_listing.json").read_text(encoding="utf-8"))
    qt_widget = set(json.loads((REPO / "Testing" / "slicer_api" / "qt_listing.json").read_text(
        encoding="utf-8"))["classes"]["QWidget"])

    def reachable(class_name):
        names = set()
        while class_name in listing["classes"]:
            names |= set(listing["classes"][class_name]["attributes"])
            class_name = listing["classes"][class_name]["base"]
        assert class_name == "QWidget"
        return names | qt_widget | {"connect", "disconnect", "className"}

    tree = ast.parse((REPO / "MemSegExtension" / "MemSeg.py").read_text(encoding="utf-8"))
    used = {"selector": set(), "placeWidget": set(), "editor": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in used:
            used[node.value.id].add(node.attr)
    assert {"segmentationNode", "setSegmentationNode", "saveStateForUndo"} <= used["editor"]
    for variable, class_name in (("selector", "qMRMLNodeComboBox"), ("placeWidget", "qSlicerMarkupsPlaceWidget"),
                                 ("editor", "qMRMLSegmentEditorWidget")):
        missing = used[variable] - reachable(class_name)
        assert not missing, f"{class_name} has no {sorted(missing)} ({listing['classes'][class_name]['header']})"
