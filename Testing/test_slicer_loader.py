"""Slicer's own loading of our files, replayed: the hidden module that registers the Segment
Editor effects, and each effect loaded from its source file the way Slicer's C++ does it.

Slicer's Qt application cannot run here, so its loaders are replayed in Python, each from the C++
function named in its docstring, in a fresh interpreter (a child process) with Slicer's rule for
`sys.path` (every scripted module's folder is on it). Real MRML comes from slicer-core; `qt`,
`SegmentEditorEffects`, `slicer.ScriptedLoadableModule` and the effect adaptor are stand-ins,
named as such, holding only what Slicer's classes do on these paths.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

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

    def parameterSetNode(self):  # qSlicerSegmentEditorAbstractEffect::parameterSetNode (Q_INVOKABLE)
        return ScriptedEffectAdaptor.parameter_node

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
    qt = types.ModuleType("qt")

    class QTimer:  # QTimer's slots setInterval/start/stop, PythonQt's connect/disconnect
        def __init__(self, parent=None):
            self.interval, self.connections, self.active = 0, [], False

        def setInterval(self, milliseconds):
            self.interval = milliseconds

        def start(self):
            self.active = True

        def stop(self):
            self.active = False

        def connect(self, signal, slot):
            self.connections.append((signal, slot))

        def disconnect(self, signal, slot):
            self.connections.remove((signal, slot))

    qt.QTimer = QTimer
    sys.modules["qt"] = qt

    # SegmentEditorEffects (Slicer's package): the base class as Slicer defines it
    # (AbstractScriptedSegmentEditorEffect.py: __init__ keeps the adaptor, register() adds it to
    # the effect factory; the factory is replaced by a list here).
    package = types.ModuleType("SegmentEditorEffects")
    package.__path__ = []

    class AbstractScriptedSegmentEditorEffect:
        def __init__(self, scriptedEffect):
            self.scriptedEffect = scriptedEffect

        def register(self):
            ScriptedEffectAdaptor.registered.append(self.scriptedEffect)

    base = types.ModuleType("SegmentEditorEffects.AbstractScriptedSegmentEditorEffect")
    base.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    base.__all__ = ["AbstractScriptedSegmentEditorEffect"]
    package.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    sys.modules["SegmentEditorEffects"] = package
    sys.modules[base.__name__] = base

    # slicer.ScriptedLoadableModule: what a module class's __init__ uses (parent, title...)
    loadable = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    loadable.ScriptedLoadableModule = ScriptedLoadableModule
    for name in ("ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(loadable, name, type(name, (), {}))
    sys.modules["ctk"] = types.ModuleType("ctk")
    sys.modules[loadable.__name__] = loadable
    slicer.ScriptedLoadableModule = loadable

    class Application:  # slicer.app: only its signal connections matter here
        connections = []

        def connect(self, signal, slot):
            self.connections.append((signal, slot))

    slicer.app = Application()

    # slicer.i18n (Base/Python/slicer/i18n.py): tr/translate return the text when no translation
    # is installed, which is what this stand-in does.
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    sys.modules[i18n.__name__] = i18n
    slicer.i18n = i18n


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
editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
editor_node.SetAndObserveSegmentationNode(segmentation)
editor_node.SetAndObserveSourceVolumeNode(volume)
editor_node.SetSelectedSegmentID(segment_id)
ScriptedEffectAdaptor.parameter_node = editor_node
slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
slice_node.SetDimensions(400, 300, 1)
slice_node.SetFieldOfView(80.0, 60.0, 1.0)
slice_node.SetOrientation("Axial")
slice_node.JumpSliceByCentering(20.0, 20.0, 4.0)
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
effect.cleanup()
print("after cleanup", helper_nodes(), effect.runner.timer.connections)
'''


@pytest.fixture(scope="module")
def replayed_startup(tmp_path_factory):
    """What a fresh Slicer prints after loading our modules and firing startupCompleted."""
    folder = tmp_path_factory.mktemp("replay")
    script = folder / "replay.py"
    script.write_text(textwrap.dedent(_REPLAY))
    completed = subprocess.run([sys.executable, str(script), str(REPO / "MemSegExtension")], capture_output=True,
                               text=True, timeout=300, cwd=folder,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines()


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
    assert "after cleanup [] []" in replayed_startup


def test_weights_folder_setting_applies_from_startup(replayed_startup):
    """The module's weights-folder setting reaches MemSegLogic (effects, console) once Slicer has
    started, without the module's panel ever being opened."""
    assert "weights folder True" in replayed_startup
