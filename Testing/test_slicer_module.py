"""The MemSeg module panel driven the way Slicer drives it, in a fresh interpreter (a child process).

Real: MRML (slicer-core scene, volume, segmentation, markups ROI, the parameter node), the module's
files (MemSeg.py, Resources/UI/MemSeg.ui), the worker thread, medsam-lite weights on a slab of real
CT, and a real `memseg serve` app under uvicorn on an ephemeral 127.0.0.1 port. STAND-INS, named as
such (Testing/slicer_api): `qt` and the Slicer/CTK widgets (API-checked against listings read from
the real Qt, Slicer and CTK APIs), `slicer.util.loadUI` (builds those stand-ins from OUR .ui),
`slicer.parameterNodeWrapper` and `slicer.ScriptedLoadableModule` (replayed from Slicer's Python
sources), QSettings (a dict). Not Slicer: Testing/run_in_slicer.sh runs the self-tests in a real one.
"""

from __future__ import annotations

import pathlib

import pytest
from conftest import run_slicer_replay

pytest.importorskip("slicer")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

REPO = pathlib.Path(__file__).resolve().parents[1]

_DRIVE = r'''
import os
import sys
import threading
import time
import types

import numpy as np
import slicer

START = time.monotonic()
_print = print
print = lambda *args: (_print(*args), _print(f"{time.monotonic() - START:.1f}s", args[0], file=sys.stderr))
EXTENSION, SLICER_API = sys.argv[1], sys.argv[2]
sys.path[:0] = [EXTENSION, SLICER_API]  # Slicer puts each scripted module's folder on sys.path
import qt_standin
import slicer_standins

qt = qt_standin.qt_module()
SETTINGS = {}


class QSettings(qt.QSettings):  # QSettings stand-in: this run's settings in a dict
    def setValue(self, key, value):
        SETTINGS[key] = value

    def value(self, key, default=None):
        return SETTINGS.get(key, default)

    def contains(self, key):
        return key in SETTINGS


qt.QSettings = QSettings
sys.modules["qt"] = qt
sys.modules["slicer.i18n"] = slicer.i18n = slicer_standins.i18n_module()
sys.modules.update(slicer_standins.segment_editor_effects_modules(register=lambda effect: None))
sys.modules["ctk"] = slicer_standins.ctk_module()
MODULE_PATH = os.path.join(EXTENSION, "MemSeg.py")
slicer.ScriptedLoadableModule = sys.modules["slicer.ScriptedLoadableModule"] = \
    slicer_standins.scripted_loadable_module({"MemSeg": MODULE_PATH})
slicer.parameterNodeWrapper = sys.modules["slicer.parameterNodeWrapper"] = \
    slicer_standins.parameter_node_wrapper_module()
for name, cls in slicer_standins.SLICER_WIDGETS.items():
    setattr(slicer, name, cls)
import slicer.util

slicer.util.loadUI = slicer_standins.load_ui
errors = []
slicer.util.errorDisplay = lambda text, **kwargs: errors.append(text)
from MemSegLogic.mrml import headlessScene

scene, application_logic, logics = headlessScene()
slicer.mrmlScene = scene
slicer.modules = types.SimpleNamespace(**{n.lower(): types.SimpleNamespace(logic=(lambda l=l: l))
                                          for n, l in logics.items()})
slicer.app = types.SimpleNamespace(applicationLogic=lambda: application_logic, majorVersion=5, minorVersion=10,
                                   connect=lambda *args: None, testingEnabled=lambda: True)

# Real CT: three slices of CTChest4 through the right lung, and a box on the seed slice as an ROI.
from MemSegLogic.app.demo import seed_box
from MemSegLogic.core.metrics import dice
from MemSegLogic.app.samples import load_chest_ct

ct, segments = load_chest_ct()
_, k = seed_box(segments["right lung"])
slab = ct.slab(k - 1, 3)
reference = segments["right lung"][k - 1:k + 2]
volumeNode = slicer.util.addVolumeFromArray(slab.array, ijkToRAS=slab.ijk_to_ras, name="CTChest4 slab")
box, _ = seed_box(reference)
corners = slab.ijk_to_ras_points(np.array(box.box, float).reshape(2, 3))
roiNode = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "seed box")
roiNode.SetCenter(*corners.mean(axis=0))
roiNode.SetSize(*(np.abs(corners[1] - corners[0]) + 0.5 * np.abs(np.diag(slab.ijk_to_ras)[:3])))

parent = types.SimpleNamespace(isEntered=False)
moduleFile, module = slicer_standins.load_scripted_module(MODULE_PATH, types.SimpleNamespace())
widget = moduleFile.MemSegWidget(parent)
widget.setup()
parent.isEntered = True
widget.enter()
ui, parameters = widget.ui, widget._parameterNode
print("setup", ui.volumeSelector.currentNode().GetName(), parameters.inputVolume.GetName(), ui.applyButton.enabled,
      parameters.model, ui.modelCombo.currentText)
ui.roiSelector.setCurrentNode(roiNode)  # the user picks the box: the parameter node follows
parameters.axes = "1"  # a script sets a parameter: the panel follows
print("picked", parameters.seedBox.GetName(), ui.axesCombo.currentData, ui.applyButton.enabled)


def run_to_end():
    task = widget.runner.task
    while not task.done:
        widget.runner.poll()
        time.sleep(0.05)
    widget.runner.poll()


def written():
    segmentation = parameters.segmentation
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, parameters.segmentId, volumeNode)


ui.applyButton.emit("clicked(bool)", False)
print("running", ui.cancelButton.enabled, ui.applyButton.enabled, ui.volumeSelector.enabled)
run_to_end()
mask = written()
print("applied", int(mask.sum()), round(dice(mask, reference), 2) >= 0.8, ui.statusLabel.text.split(":")[0],
      ui.undoButton.enabled, parameters.segmentation.GetName() != "", errors)
ui.undoButton.emit("clicked(bool)", False)
print("undone", int(written().sum()), ui.statusLabel.text)
ui.applyButton.emit("clicked(bool)", False)
ui.cancelButton.emit("clicked(bool)", False)
widget.runner.task.wait(120)
widget.runner.poll()
print("cancelled", ui.statusLabel.text, int(written().sum()), ui.applyButton.enabled)

# Issue 17: Run on a MemSeg server (real app, real uvicorn, loopback), Test connection, wrong token, Apply.
import uvicorn
from MemSegLogic.serve.app import create_app

TOKEN = "module-test-token-" + "y" * 32
server = uvicorn.Server(uvicorn.Config(create_app(token=TOKEN, device="cpu"), host="127.0.0.1", port=0,
                                       log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
ui.runOnCombo.currentIndex = 1
print("server settings", ui.serverUrlEdit.enabled, ui.testConnectionButton.enabled, ui.deviceCombo.enabled)
ui.serverUrlEdit.text = url
ui.serverUrlEdit.emit("editingFinished()")
ui.serverTokenEdit.text = "wrong"
ui.testConnectionButton.emit("clicked(bool)", False)
run_to_end()
print("wrong token:", ui.statusLabel.text, "| dialog:", errors.pop() == ui.statusLabel.text.split(": ", 1)[-1])
ui.serverTokenEdit.text = TOKEN
ui.testConnectionButton.emit("clicked(bool)", False)
run_to_end()
print("connection:", ui.statusLabel.text)
ui.applyButton.emit("clicked(bool)", False)
run_to_end()
remote = written()
print("remote", int(remote.sum()), np.array_equal(remote, mask), ui.statusLabel.text.split(":")[0])
server.should_exit = True

widget.exit()
parameters.axes = "3"  # not shown any more: the panel no longer follows
print("exited", ui.axesCombo.currentData)
widget.enter()
print("entered", ui.axesCombo.currentData)
scene.Clear(0)  # File > Close scene: a new parameter node, which the panel follows
parameters = widget._parameterNode
print("scene closed", parameters.axes, parameters.inputVolume, ui.applyButton.enabled, ui.undoButton.enabled)
parameters.axes = "1"
print("new node followed", ui.axesCombo.currentData)
widget.cleanup()
scene.SetSaveToXMLString(1)
scene.Commit()
saved = scene.GetSceneXMLString()
print("saved", "MemSeg preview" in saved, "ModuleName" in saved, 'axes' in saved, errors)
'''


@pytest.fixture(scope="module")
def driven_panel(tmp_path_factory):
    return run_slicer_replay(_DRIVE, tmp_path_factory.mktemp("module"))


def line(output, prefix):
    return next(text for text in output if text.startswith(prefix))


def test_panel_loads_from_its_ui_file_into_the_parameter_node(driven_panel):
    """setup builds the panel from Resources/UI/MemSeg.ui (every class, property and connection in
    the real APIs); enter puts the first volume and the default model in the parameter node; the
    ROI picked in the panel lands in the node and a parameter set by a script shows in the panel."""
    assert line(driven_panel, "setup ") == "setup CTChest4 slab CTChest4 slab False medsam-lite medsam-lite"
    assert line(driven_panel, "picked ") == "picked seed box 1 True"


def test_apply_on_the_worker_writes_the_local_result_then_undo_and_cancel(driven_panel):
    """Apply runs medsam-lite on the worker over three real CT slices and writes the right lung
    (Dice >= 0.8 against CTChest4's reference) into a new segmentation; the panel's Undo empties
    it; a cancelled second run writes nothing and re-enables Apply."""
    assert line(driven_panel, "running ") == "running True False False"
    applied = line(driven_panel, "applied ").split(" ", 2)
    assert int(applied[1]) > 300 and applied[2].startswith("True CTChest4 slab True True []"), applied
    assert line(driven_panel, "undone ") == "undone 0 Undone."
    assert line(driven_panel, "cancelled ") == "cancelled Cancelled: nothing was changed. 0 True"


def test_run_on_a_memseg_server_from_the_panel(driven_panel):
    """Issue 17 in the panel: "a MemSeg server" enables address, token and Test connection (and
    disables the device); a wrong token is one clear line; the right one shows the server's
    answer; Apply then runs on the server and writes the same mask as the local run."""
    assert line(driven_panel, "server settings ") == "server settings True True False"
    wrong = line(driven_panel, "wrong token:")
    assert "token" in wrong.lower() and "Traceback" not in wrong, wrong
    connected = line(driven_panel, "connection:")
    assert connected.startswith("connection: Connected:") and "medsam-lite" in connected, connected
    remote = line(driven_panel, "remote ").split()
    assert remote[2:] == ["True", "CTChest4", "slab"] and int(remote[1]) > 300, remote


def test_exit_disconnects_and_the_saved_scene_keeps_the_choices_only(driven_panel):
    """exit stops following the parameter node, enter follows it again; closing the scene gives a
    fresh parameter node (defaults, nothing to apply or undo) that the panel follows; the saved
    scene holds the module's parameter node (its choices) and no helper node."""
    assert line(driven_panel, "exited ") == "exited 1"
    assert line(driven_panel, "entered ") == "entered 3"
    assert line(driven_panel, "scene closed ") == "scene closed 3 None False False"
    assert line(driven_panel, "new node followed ") == "new node followed 1"
    assert line(driven_panel, "saved ") == "saved False True True []"
