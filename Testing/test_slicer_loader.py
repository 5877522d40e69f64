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

    def __init__(self, parent):
        self._self = None

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

    class QTimer:  # what the effects' __init__ uses: QTimer.setInterval (a slot), PythonQt's connect
        def __init__(self, parent=None):
            self.interval, self.connections = 0, []

        def setInterval(self, milliseconds):
            self.interval = milliseconds

        def connect(self, signal, slot):
            self.connections.append((signal, slot))

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


def test_weights_folder_setting_applies_from_startup(replayed_startup):
    """The module's weights-folder setting reaches MemSegLogic (effects, console) once Slicer has
    started, without the module's panel ever being opened."""
    assert "weights folder True" in replayed_startup
