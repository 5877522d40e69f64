"""MemSeg: one-prompt 3D/4D segmentation in 3D Slicer with memory-based models.

This file is the thin Slicer front end.  Everything that computes lives in the
Qt-free ``MemSegLogic`` package, which the extension ships next to this file.
``MemSegLogic`` is imported lazily, inside the methods that need it, never at
module load: Slicer imports every scripted module at startup, and on a fresh
install torch (from the PyTorch extension) and the model packages may not be
installed yet.
"""

import logging
import os
import sys
import traceback

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

NEW_SEGMENT_NAME = "MemSeg"
DEVICE_SETTING = "MemSeg/Device"  # read by the Segment Editor effect too
INPUT_SIZE_SETTING = "MemSeg/InputSize"  # "" = the model's own; read by the effect too
DEFAULT_MODEL_SETTING = "MemSeg/DefaultModel"
WEIGHTS_FOLDER_SETTING = "MemSeg/WeightsFolder"
CPU_BACKEND_SETTING = "MemSeg/CPUBackend"  # MemSegLogic.engines.backends.BACKENDS; read by the effect too
RUN_ON_SETTING = "MemSeg/RunOn"  # MemSegLogic.serve.RUN_HERE or RUN_ON_SERVER; read by the effects too
SERVER_URL_SETTING = "MemSeg/ServerURL"
SERVER_TOKEN_SETTING = "MemSeg/ServerToken"


# The effects and console scripts call these module-level names; each asks the shared logic.
def segmenter():
    return MemSegModuleLogic().segmenter()


def speedOptions(model):
    return MemSegModuleLogic().speedOptions(model)


def settingsDevice():
    return MemSegModuleLogic().device()


def defaultModel():
    return MemSegModuleLogic().defaultModel()


def applyWeightsFolderSetting():
    MemSegModuleLogic().applyWeightsFolderSetting()


def _ensureLogicImportable():
    """Make ``import MemSegLogic`` work.

    In an installed extension (and in its build tree) MemSegLogic sits next to
    this file, in a folder Slicer already put on sys.path.  When the module is
    loaded straight from a source checkout (MemSegExtension/ added as an
    additional module path, or the ctest that runs from the source tree), the
    package is one level up, at the top of the repository.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "MemSegLogic", "__init__.py")):
            if folder not in sys.path:
                sys.path.append(folder)
            return


def _importMrml():
    """The Slicer-side API of MemSegLogic (imported on first use)."""
    _ensureLogicImportable()
    from MemSegLogic import mrml

    return mrml


def ensureDependencies(askConfirmation=True):
    """Install what MemSeg still needs in Slicer's Python, after one confirmation listing it
    (the decisions are MemSegLogic.runtime.dependencies', unit-tested). Returns True when all is there.
    Never called at module load."""
    _ensureLogicImportable()
    from MemSegLogic.runtime import dependencies

    here = os.path.dirname(os.path.abspath(__file__))
    requirements = next(p for p in (os.path.join(here, "Resources", "requirements.txt"),
                                    os.path.join(os.path.dirname(here), "Resources", "requirements.txt"))
                        if os.path.isfile(p))
    version = (slicer.app.majorVersion, slicer.app.minorVersion)
    from MemSegLogic.serve import RUN_ON_SERVER

    # Segmenting on a MemSeg server: the client only, no torch (switch "Run on" back to install the rest).
    plan = dependencies.current_plan(requirements, version, client_only=MemSegModuleLogic().runOn() == RUN_ON_SERVER)
    if plan.nothing_to_do:
        if askConfirmation and not _offerOptionalPackages(plan):
            slicer.util.infoDisplay(plan.summary())
        return True
    if slicer.app.testingEnabled() or (askConfirmation and not slicer.util.confirmOkCancelDisplay(
            plan.summary(), windowTitle=_("MemSeg: install Python packages"))):
        return False
    replacedImported = []  # packages this session has loaded already: their new versions need a restart
    with slicer.util.WaitCursor():
        if plan.torch_problem:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay(_("Install the PyTorch extension from the Extensions Manager, restart "
                                           "Slicer, then try again."))
                return False
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=">=" + dependencies.MIN_TORCH) is None:
                return False
        for step in plan.steps:
            saved = {key: os.environ.get(key) for key in step.environment}
            os.environ.update(step.environment)
            try:
                if plan.api == "packaging" and not step.no_deps:
                    # A submodule Slicer does not import at startup (its module template imports it
                    # the same way); it asks for a restart itself when one is needed.
                    from packaging.requirements import Requirement
                    from slicer import packaging as slicerPackaging

                    slicerPackaging.pip_ensure([Requirement(r) for r in step.requirements], prompt_install=False,
                                               requester="MemSeg")
                else:
                    slicer.util.pip_install(" ".join(step.pip_arguments()))
                    replacedImported += [name for name in dependencies.import_names(step.requirements)
                                         if name in sys.modules]
            except Exception as error:  # pip failed: say so, keep Slicer running
                logging.error("MemSeg: installing %s failed", step.requirements, exc_info=True)
                slicer.util.errorDisplay(_("Installing {packages} failed: {error}").format(
                    packages=", ".join(step.requirements), error=error))
                return False
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    remaining = dependencies.current_plan(requirements, version, client_only=MemSegModuleLogic().runOn() == RUN_ON_SERVER)
    if not remaining.nothing_to_do:
        slicer.util.errorDisplay(_("Some packages are still missing; restart Slicer and try again.\n\n")
                                 + remaining.summary())
        return False
    if replacedImported:
        slicer.util.infoDisplay(_("Installed. Restart Slicer before segmenting: {packages} were already loaded "
                                  "in this session in their old versions.").format(packages=", ".join(replacedImported)))
    if askConfirmation:
        _offerOptionalPackages(remaining)
    return True


def _offerOptionalPackages(plan):
    """Ask, in a dialog of its own, whether to install the optional packages the plan lists
    (OpenVINO: a faster CPU engine); a no, or a failure, leaves MemSeg working as it is. True if asked."""
    if not plan.optional or slicer.app.testingEnabled():
        return False
    if not slicer.util.confirmOkCancelDisplay(plan.optional_summary(), windowTitle=_("MemSeg: optional packages")):
        return True
    try:
        with slicer.util.WaitCursor():
            slicer.util.pip_install(" ".join(plan.optional))
    except Exception as error:  # optional: say so, keep going without it
        logging.error("MemSeg: installing %s failed", plan.optional, exc_info=True)
        slicer.util.errorDisplay(_("Installing {packages} failed (MemSeg works without it): {error}").format(
            packages=", ".join(plan.optional), error=error))
    return True


def segmentEditorWidget():
    """The Segment Editor module's editor (a qMRMLSegmentEditorWidget), where users undo segment
    edits; None in a Slicer without that module."""
    module = getattr(slicer.modules, "segmenteditor", None)
    if module is None:
        return None
    return module.widgetRepresentation().self().editor


#
# MemSeg
#


class MemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MemSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # Its parameter node holds markups and segmentation nodes (their classes come from these modules).
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["MemSeg team"]
        self.parent.helpText = _(
            "Segment a whole 3D volume (or a 3D+t sequence) from a single prompt: place a few "
            "points and/or a box (ROI) on the structure in one slice, pick a model and click Apply. "
            "A memory-based foundation model (MedSAM-2, MemSAM) segments the prompted slice and "
            "propagates the result through the volume. "
            "See <a href='https://github.com/memseg/SlicerMemSeg'>the project page</a> for details."
        )
        self.parent.acknowledgementText = _(
            "MemSeg builds on MedSAM-2 (Zhu et al.; Ma et al.), MemSAM (Deng et al.) and "
            "Segment Anything / SAM 2 (Meta AI). Please cite the model you use. "
            "Model weights are distributed under their own licenses."
        )
        # The weights folder chosen in the settings must hold for the effects and the console from
        # the start, not only once this module's panel has been opened.
        slicer.app.connect("startupCompleted()", applyWeightsFolderSetting)


#
# MemSegParameterNode
#


@parameterNodeWrapper
class MemSegParameterNode:
    """The module's choices, kept in the scene (saved with it, restored when it is loaded).

    inputVolume, segmentation, seedPoints, seedBox: what Apply segments, where it writes, the prompt.
    segmentId: the segment to write into ("" = a new one). model, preset: as in the lists (preset "" =
    the model's default). Machine-wide choices (device, where to run, weights folder) are settings."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    seedPoints: vtkMRMLMarkupsFiducialNode
    seedBox: vtkMRMLMarkupsROINode
    segmentId: str = ""
    model: str = ""
    preset: str = ""
    axes: str = "3"  # how many orientations propagate: "3" (all, fused) or "1" (along K only, faster)


#
# MemSegModuleLogic
#


class MemSegModuleLogic(ScriptedLoadableModuleLogic):
    """What the module panel, both Segment Editor effects and the Python console share: MemSeg's
    settings read one way (where and how models run, which model, the weights folder) and the
    module's parameter node. Everything that computes is in the Qt-free MemSegLogic package.

    Not called ``MemSegLogic`` (Slicer's ``<Module>Logic`` habit): that is the package's name, and a
    class of that name in this file would hide the package here and in ``from MemSeg import *``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "MemSeg"  # the parameter node belongs to the module, not to this class's name

    def getParameterNode(self):
        return MemSegParameterNode(super().getParameterNode())

    @staticmethod
    def runOn():
        _ensureLogicImportable()
        from MemSegLogic.serve import RUN_HERE

        return slicer.util.settingsValue(RUN_ON_SETTING, RUN_HERE)

    def segmenter(self):
        """What runs segmentations, as the "Run on" setting says: MemSegLogic on this computer, or a
        client of a MemSeg server (the same calls and results; MemSegLogic.serve.segmenter decides)."""
        from MemSegLogic.serve import segmenter as choose

        return choose(self.runOn(), slicer.util.settingsValue(SERVER_URL_SETTING, ""),
                      slicer.util.settingsValue(SERVER_TOKEN_SETTING, ""))

    def speedOptions(self, model):
        """`SpeedOptions` from the settings for ``model``: its input size and the CPU backend."""
        _ensureLogicImportable()
        from MemSegLogic import SpeedOptions

        return SpeedOptions(input_size=self.inputSize(model),
                            backend=slicer.util.settingsValue(CPU_BACKEND_SETTING, "auto") or "auto")

    def device(self):
        """The device chosen in the settings; "auto" with a server, which runs on its own device."""
        from MemSegLogic.serve import RUN_HERE

        return slicer.util.settingsValue(DEVICE_SETTING, "auto") if self.runOn() == RUN_HERE else "auto"

    @staticmethod
    def inputSize(model):
        """The input size chosen in the settings for ``model``; None: the model's own (always for
        models without a choice, MemSegLogic.runtime.checkpoints.takes_input_size)."""
        size = slicer.util.settingsValue(INPUT_SIZE_SETTING, "")
        _ensureLogicImportable()
        from MemSegLogic.runtime.checkpoints import takes_input_size

        return int(size) if size and takes_input_size(model) else None

    @staticmethod
    def defaultModel():
        """The 3D model the module and the MedSAM-2 effect start with: the user's choice in the
        module's settings, else MemSegLogic's default (defined once, in the logic)."""
        _ensureLogicImportable()
        from MemSegLogic.runtime.checkpoints import DEFAULT_MODEL

        return slicer.util.settingsValue(DEFAULT_MODEL_SETTING, DEFAULT_MODEL)

    @staticmethod
    def applyWeightsFolderSetting():
        """MemSegLogic finds weights through MEMSEG_WEIGHTS_DIR; the module's setting (if any) sets it
        for this Slicer session (the effects and console scripts then use the same folder)."""
        folder = slicer.util.settingsValue(WEIGHTS_FOLDER_SETTING, "")
        if folder:
            os.environ["MEMSEG_WEIGHTS_DIR"] = folder
        else:
            os.environ.pop("MEMSEG_WEIGHTS_DIR", None)

    def modelChoices(self):
        """(name, description) for the model list, the user's default included."""
        _ensureLogicImportable()
        from MemSegLogic.runtime.checkpoints import volume_model_choices

        return volume_model_choices(self.defaultModel())

    @staticmethod
    def presetChoices():
        """(name, description) of the intensity presets."""
        _ensureLogicImportable()
        from MemSegLogic.core.intensity import PRESETS

        return [(name, preset.description) for name, preset in PRESETS.items()]

    @staticmethod
    def segmentationVolumes():
        """The volumes "Apply to all volumes" offers: every scalar volume but label maps."""
        return [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                if not node.IsA("vtkMRMLLabelMapVolumeNode")]


#
# MemSegWidget
#


class MemSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module panel (Resources/UI/MemSeg.ui): inputs, model settings, Apply / progress / Cancel. The
    choices of the Inputs section live in the scene's parameter node (MemSegParameterNode)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # observes the parameter node and the scene
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._queue = []  # segmentations still to run (a batch)
        self._observedSegmentation = None
        self._undoSegmentation = None  # the last Apply's, when it went to MemSeg's own undo history
        # The task runner the effects use too (SegmentEditorMemSegLib sits next to this file).
        from SegmentEditorMemSegLib.TaskRunner import TaskRunner

        self.runner = TaskRunner(self._show, onIdle=self._onTaskEnded)

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MemSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)  # the .ui passes the scene on to each MRML widget
        self.logic = MemSegModuleLogic()

        _ensureLogicImportable()
        from MemSegLogic.engines.backends import BACKENDS
        from MemSegLogic.runtime.slicer_support import slicer_version_problem
        from MemSegLogic.serve import RUN_HERE, RUN_ON_SERVER

        versionProblem = slicer_version_problem((slicer.app.majorVersion, slicer.app.minorVersion))
        if versionProblem:
            logging.error(versionProblem)
            self.ui.versionProblemLabel.text = versionProblem
            self.ui.versionProblemLabel.visible = True

        for placeWidget in (self.ui.pointsPlaceWidget, self.ui.roiPlaceWidget):
            placeWidget.placeButton().show()
        self.ui.pointsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.pointsPlaceWidget.deleteButton().show()

        # Settings (QSettings: this computer's, for the module, both effects and the console)
        for device in ("auto", "cuda", "mps", "cpu"):
            self.ui.deviceCombo.addItem(device)
        self.ui.deviceCombo.currentText = slicer.util.settingsValue(DEVICE_SETTING, "auto")
        self.ui.deviceCombo.connect("currentTextChanged(QString)",
                                    lambda text: qt.QSettings().setValue(DEVICE_SETTING, text))
        self.ui.runOnCombo.addItem(_("this computer"), RUN_HERE)
        self.ui.runOnCombo.addItem(_("a MemSeg server"), RUN_ON_SERVER)
        self.ui.runOnCombo.currentIndex = max(0, self.ui.runOnCombo.findData(self.logic.runOn()))
        self.ui.runOnCombo.connect("currentIndexChanged(int)", self._onRunOnChanged)
        for setting, edit in ((SERVER_URL_SETTING, self.ui.serverUrlEdit), (SERVER_TOKEN_SETTING, self.ui.serverTokenEdit)):
            edit.text = slicer.util.settingsValue(setting, "")
            edit.connect("editingFinished()", lambda setting=setting, edit=edit: qt.QSettings().setValue(
                setting, edit.text.strip()))
        self.ui.testConnectionButton.connect("clicked(bool)", lambda unused: self.onTestConnection())
        self._onRunOnChanged()
        for label, size in ((_("model's own"), ""), ("512", "512"), ("256", "256")):
            self.ui.inputSizeCombo.addItem(label, size)
        self.ui.inputSizeCombo.currentIndex = max(0, self.ui.inputSizeCombo.findData(
            slicer.util.settingsValue(INPUT_SIZE_SETTING, "")))
        self.ui.inputSizeCombo.connect("currentIndexChanged(int)", lambda index: qt.QSettings().setValue(
            INPUT_SIZE_SETTING, self.ui.inputSizeCombo.itemData(index)))
        for backend in BACKENDS:
            self.ui.backendCombo.addItem(backend)
        self.ui.backendCombo.currentText = slicer.util.settingsValue(CPU_BACKEND_SETTING, "auto")
        self.ui.backendCombo.connect("currentTextChanged(QString)",
                                     lambda text: qt.QSettings().setValue(CPU_BACKEND_SETTING, text))
        self.ui.dependenciesButton.connect("clicked(bool)", lambda unused: ensureDependencies())
        self.ui.weightsFolderEdit.currentPath = slicer.util.settingsValue(WEIGHTS_FOLDER_SETTING, "")
        self.ui.weightsFolderEdit.connect("currentPathChanged(QString)", self._onWeightsFolderChanged)
        self.logic.applyWeightsFolderSetting()

        # Model weights
        self.ui.downloadButton.connect("clicked(bool)", self.onDownloadCheckpoint)
        self.ui.verifyButton.connect("clicked(bool)", self.onVerifyCheckpoint)
        self.ui.deleteButton.connect("clicked(bool)", self.onDeleteCheckpoint)

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSegmentationNodeChanged)
        self.ui.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.pointsPlaceWidget.setCurrentNode)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.segmentCombo.connect("currentIndexChanged(int)", self._onSegmentChosen)
        self.ui.modelCombo.connect("currentIndexChanged(int)", self._onModelOrPresetChosen)
        self.ui.presetCombo.connect("currentIndexChanged(int)", self._onModelOrPresetChosen)
        self.ui.axesCombo.connect("currentIndexChanged(int)", self._onModelOrPresetChosen)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.batchButton.connect("clicked(bool)", self.onBatchButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.effectButton.connect("clicked(bool)", self.onOpenEffect)

        self._populateModelAndPresetChoices()
        self._populateCheckpoints()
        self.initializeParameterNode()  # also on a module reload

    def cleanup(self):
        self.runner.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Another module is shown: the panel stops following the parameter node (enter reconnects);
        a running batch goes on with it."""
        self._stopFollowingParameterNode()

    def _stopFollowingParameterNode(self):
        """The panel no longer writes into the parameter node nor shows its changes."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneEndClose(self, caller=None, event=None):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------- parameter node
    def initializeParameterNode(self):
        """Follow the scene's parameter node; an empty one starts with the first volume and the
        default model."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if not self._parameterNode.model:
            self._parameterNode.model = self.logic.defaultModel()

    def setParameterNode(self, parameterNode):
        self._stopFollowingParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            # The .ui names each node selector's parameter (its "SlicerParameterName" property).
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None):
        """Show the parameters whose lists are filled here (segment, model, preset); enable Apply."""
        parameters = self._parameterNode
        if parameters is None:
            return
        for combo, value in ((self.ui.segmentCombo, parameters.segmentId), (self.ui.presetCombo, parameters.preset),
                             (self.ui.axesCombo, parameters.axes)):
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = max(combo.findData(value), 0)
            combo.blockSignals(wasBlocked)
        wasBlocked = self.ui.modelCombo.blockSignals(True)
        self.ui.modelCombo.currentIndex = max(self.ui.modelCombo.findText(parameters.model), 0)
        self.ui.modelCombo.blockSignals(wasBlocked)
        self._checkCanApply()

    def _onSegmentChosen(self, index):
        if self._parameterNode:
            self._parameterNode.segmentId = self.ui.segmentCombo.itemData(index) or ""

    def _onModelOrPresetChosen(self, unused=None):
        if self._parameterNode:
            with slicer.util.NodeModify(self._parameterNode):
                self._parameterNode.model = self.ui.modelCombo.currentText
                self._parameterNode.preset = self.ui.presetCombo.currentData or ""
                self._parameterNode.axes = self.ui.axesCombo.currentData or "3"
        qt.QSettings().setValue(DEFAULT_MODEL_SETTING, self.ui.modelCombo.currentText)

    def _checkCanApply(self, *unused):
        parameters = self._parameterNode
        running = self.runner.running
        hasPrompt = parameters is not None and (parameters.seedPoints is not None or parameters.seedBox is not None)
        hasVolume = parameters is not None and parameters.inputVolume is not None
        self.ui.applyButton.enabled = (not running) and hasVolume and hasPrompt
        self.ui.batchButton.enabled = (not running) and hasPrompt
        self.ui.undoButton.enabled = (not running) and self._undoSegmentation is not None
        if not hasVolume:
            self.ui.applyButton.toolTip = _("Select an input volume.")
        elif not hasPrompt:
            self.ui.applyButton.toolTip = _("Select seed points and/or a seed box.")
        else:
            self.ui.applyButton.toolTip = _("Segment the volume from the prompt.")

    # ---------------------------------------------------------------- helpers
    def _populateModelAndPresetChoices(self):
        """Fill the model and preset lists from MemSegLogic."""
        self.ui.modelCombo.clear()
        for name, description in self.logic.modelChoices():
            self.ui.modelCombo.addItem(name)
            if description:
                self.ui.modelCombo.setItemData(self.ui.modelCombo.count - 1, description, qt.Qt.ToolTipRole)
        self.ui.axesCombo.clear()
        self.ui.axesCombo.addItem(_("all three, fused"), "3")
        self.ui.axesCombo.addItem(_("axial only (faster)"), "1")
        self.ui.presetCombo.clear()
        self.ui.presetCombo.addItem(_("(default)"), "")  # preset None: the model's own
        for name, description in self.logic.presetChoices():
            self.ui.presetCombo.addItem(name, name)
            if description:
                self.ui.presetCombo.setItemData(self.ui.presetCombo.count - 1, description, qt.Qt.ToolTipRole)

    def _onSegmentationNodeChanged(self, segmentationNode=None):
        if self._observedSegmentation is not None:
            self.removeObservers(self._populateSegments)
            self._observedSegmentation = None
        if segmentationNode is not None:
            segmentation = segmentationNode.GetSegmentation()
            for event in (slicer.vtkSegmentation.SegmentAdded,
                          slicer.vtkSegmentation.SegmentRemoved,
                          slicer.vtkSegmentation.SegmentModified):
                self.addObserver(segmentation, event, self._populateSegments)
            self._observedSegmentation = segmentation
        self._populateSegments()

    def _populateSegments(self, caller=None, event=None):
        wasBlocked = self.ui.segmentCombo.blockSignals(True)
        try:
            self.ui.segmentCombo.clear()
            self.ui.segmentCombo.addItem(_("(new segment)"), "")
            segmentation = self._observedSegmentation
            if segmentation is not None:
                for index in range(segmentation.GetNumberOfSegments()):
                    segmentId = segmentation.GetNthSegmentID(index)
                    self.ui.segmentCombo.addItem(segmentation.GetSegment(segmentId).GetName(), segmentId)
            chosen = self._parameterNode.segmentId if self._parameterNode else ""
            self.ui.segmentCombo.currentIndex = max(self.ui.segmentCombo.findData(chosen) if chosen else -1, 0)
        finally:
            self.ui.segmentCombo.blockSignals(wasBlocked)

    def _setRunning(self, running):
        self.ui.cancelButton.enabled = running
        for widget in (self.ui.volumeSelector, self.ui.segmentationSelector, self.ui.segmentCombo,
                       self.ui.pointsSelector, self.ui.roiSelector, self.ui.modelCombo, self.ui.presetCombo, self.ui.axesCombo,
                       self.ui.downloadButton, self.ui.deleteButton, self.ui.verifyButton):
            widget.enabled = not running
        self._checkCanApply()

    def _segmentationNodeFor(self, volumeNode):
        segmentationNode = self._parameterNode.segmentation
        if segmentationNode is None:
            segmentationNode = _importMrml().newSegmentationFor(volumeNode)
            self._parameterNode.segmentation = segmentationNode
        return segmentationNode

    # ---------------------------------------------------------------- actions
    def onApplyButton(self):
        volumeNode = self._parameterNode.inputVolume if self._parameterNode else None
        if self.runner.running:
            return
        if volumeNode is None:
            slicer.util.errorDisplay(_("Select an input volume first."))
            return
        try:
            prompt = _importMrml().promptFromMarkups(volumeNode, pointsNode=self._parameterNode.seedPoints,
                                                     roiNode=self._parameterNode.seedBox)
            segmentationNode = self._segmentationNodeFor(volumeNode)
        except Exception as error:
            self._showError(error)
            return
        self._queue = [(volumeNode, prompt, segmentationNode, self._parameterNode.segmentId, True)]
        self._startNextSegmentation()

    def onBatchButton(self):
        """The same seeds on every volume of the scene, one after the other, each into a new
        segmentation named after its volume."""
        if self.runner.running:
            return
        mrml = _importMrml()
        try:
            plan = mrml.batchPrompts(self.logic.segmentationVolumes(), pointsNode=self._parameterNode.seedPoints,
                                     roiNode=self._parameterNode.seedBox)
        except Exception as error:
            self._showError(error)
            return
        skipped = [f"{node.GetName()}: {reason}" for node, prompt, reason in plan if prompt is None]
        runs = [(node, prompt) for node, prompt, _reason in plan if prompt is not None]
        message = _("Segment {count} volume(s) from the same seeds?").format(count=len(runs))
        if skipped:
            message += "\n\n" + _("Skipped:") + "\n" + "\n".join(skipped)
        if not runs:
            slicer.util.errorDisplay(_("The seeds fall inside none of the volumes.") + "\n\n" + "\n".join(skipped))
            return
        if not slicer.util.confirmOkCancelDisplay(message, windowTitle=_("MemSeg batch")):
            return
        self._queue = []
        for volumeNode, prompt in runs:
            segmentationNode = mrml.newSegmentationFor(volumeNode, volumeNode.GetName() + " MemSeg")
            self._queue.append((volumeNode, prompt, segmentationNode, "", False))  # new nodes: MemSeg's undo
        self._startNextSegmentation()

    def _startNextSegmentation(self):
        """Start the first queued (volume, prompt, segmentation, segment id, undo in the editor?) on the worker."""
        volumeNode, prompt, segmentationNode, segmentId, undoInEditor = self._queue.pop(0)
        try:
            _ensureLogicImportable()
            from MemSegLogic.runtime import background

            volume = _importMrml().volumeFromNode(volumeNode, referenceNode=segmentationNode)
        except Exception as error:
            self._queue = []
            self._showError(error)
            return
        # The worker gets plain arrays; the target is fixed now, so changing the selectors while
        # it runs changes nothing.
        model = self._parameterNode.model or self.logic.defaultModel()
        try:
            runner = self.logic.segmenter()
        except Exception as error:
            self._queue = []
            self._showError(error)
            return
        task = background.BackgroundTask(
            runner.segment_volume, volume, prompt, model=model, preset=self._parameterNode.preset or None,
            axes=int(self._parameterNode.axes or 3), device=self.logic.device(), speed=self.logic.speedOptions(model))
        self._start(task, volumeNode.GetName(),
                    lambda result: self._writeResult(result, volumeNode, segmentationNode, segmentId, volume.ijk_to_ras,
                                                     undoInEditor))

    def _writeResult(self, result, volumeNode, segmentationNode, segmentId, ijkToRAS, undoInEditor=False):
        """On the main thread: the finished segmentation into its segment, as one undoable edit, in
        the Segment Editor's undo history where `mrml.undoHistoryFor` says so, else in MemSeg's."""
        if segmentationNode.GetScene() is None:
            raise RuntimeError(_("the segmentation was deleted while MemSeg ran"))
        mrml = _importMrml()
        segmentId = mrml.segmentToWrite(segmentationNode, segmentId, NEW_SEGMENT_NAME)
        editor = segmentEditorWidget() if undoInEditor else None
        history = mrml.undoHistoryFor(segmentationNode, editor.segmentationNode() if editor else None,
                                      editorAvailable=editor is not None)
        saveStateForUndo = None
        if history == mrml.SEGMENT_EDITOR_UNDO:
            if editor.segmentationNode() is None:
                editor.setSegmentationNode(segmentationNode)
                editor.setSourceVolumeNode(volumeNode)
            saveStateForUndo = editor.saveStateForUndo
        mrml.writeMaskToSegment(result.mask, ijkToRAS, segmentationNode, segmentId, volumeNode,
                                saveStateForUndo=saveStateForUndo)
        self._undoSegmentation = segmentationNode if history == mrml.MEMSEG_UNDO else None
        logging.info("MemSeg: %s wrote %d voxels from %d slices with %s on %s in %.1f s", segmentId,
                     int(result.mask.sum()), result.slices_visited, result.model, result.device, result.seconds)
        if self._parameterNode and self._parameterNode.segmentation is segmentationNode:
            self._parameterNode.segmentId = segmentId
        undoHint = (_("Undo it in the Segment Editor (Undo, Ctrl+Z).") if history == mrml.SEGMENT_EDITOR_UNDO
                    else _("Undo it with the Undo button here."))
        return _("{volume}: done in {seconds:.0f} s on {device}.").format(
            volume=volumeNode.GetName(), seconds=result.seconds, device=result.device) + " " + undoHint

    def _start(self, task, what, finish):
        """Run ``task`` on the shared task runner; ``finish(result)`` runs on the main thread when
        it succeeds and returns the status text. A failure or Cancel stops a batch too."""
        self.runner.start(task, finish, what, failed=lambda error: self._queue.clear())
        self._setRunning(True)

    def _onTaskEnded(self):
        self._setRunning(False)
        if self._queue:
            self._startNextSegmentation()

    def _show(self, progress, text):
        if progress is not None:
            self.ui.progressBar.value = progress
        if text is not None:
            self.ui.statusLabel.text = text

    def _showError(self, error):
        from SegmentEditorMemSegLib.TaskRunner import showError

        showError(error, traceback.format_exc(), lambda text: self._show(None, text))

    def onSceneStartClose(self, caller=None, event=None):
        """The scene is closing: a running segmentation stops (its target goes with the scene),
        queued ones are dropped, there is nothing left to undo here, and the parameter node goes."""
        self.setParameterNode(None)
        self._queue = []
        if self.runner.running:
            self.runner.abandon()
            self._show(0, _("The scene was closed: the run was stopped."))
            self._setRunning(False)
        self._undoSegmentation = None
        self._checkCanApply()

    def onUndoButton(self):
        """Undo the last Apply that went to MemSeg's own undo history."""
        if self._undoSegmentation is not None and _importMrml().undoLastEdit(self._undoSegmentation):
            self.ui.statusLabel.text = _("Undone.")
        self._undoSegmentation = None
        self._checkCanApply()

    def onCancelButton(self):
        if self.runner.cancel():
            self.ui.cancelButton.enabled = False

    def onOpenEffect(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        if self._parameterNode and self._parameterNode.inputVolume is not None:
            editor.setSourceVolumeNode(self._parameterNode.inputVolume)
        if self._parameterNode and self._parameterNode.segmentation is not None:
            editor.setSegmentationNode(self._parameterNode.segmentation)
        editor.setActiveEffectByName("MedSAM-2")

    # ---------------------------------------------------------- model weights
    def _onRunOnChanged(self, *unused):
        qt.QSettings().setValue(RUN_ON_SETTING, self.ui.runOnCombo.currentData)
        remote = self.ui.runOnCombo.currentIndex == 1
        for widget in (self.ui.serverUrlEdit, self.ui.serverTokenEdit, self.ui.testConnectionButton):
            widget.enabled = remote
        self.ui.deviceCombo.enabled = not remote  # a server runs on its own device

    def onTestConnection(self):
        if self.runner.running:
            return
        from MemSegLogic.runtime import background
        from MemSegLogic.serve import check_connection

        for setting, edit in ((SERVER_URL_SETTING, self.ui.serverUrlEdit), (SERVER_TOKEN_SETTING, self.ui.serverTokenEdit)):
            qt.QSettings().setValue(setting, edit.text.strip())
        task = background.BackgroundTask(check_connection, self.ui.serverUrlEdit.text, self.ui.serverTokenEdit.text)
        self._start(task, _("Server"), lambda line: _("Connected: {server}").format(server=line))

    def _onWeightsFolderChanged(self, path):
        qt.QSettings().setValue(WEIGHTS_FOLDER_SETTING, path)
        applyWeightsFolderSetting()
        self._populateCheckpoints()

    def _populateCheckpoints(self, check=False):
        """Fill the weights table; ``check`` hashes the selected file first."""
        _ensureLogicImportable()
        try:
            from MemSegLogic.runtime import checkpoints
        except Exception:
            logging.warning("MemSeg: could not list the model weights", exc_info=True)
            return
        selected = self._selectedCheckpoint()
        self.ui.checkpointTable.setRowCount(0)
        for row, checkpoint in enumerate(checkpoints.list_checkpoints()):
            state = checkpoints.checkpoint_state(checkpoint, check=check and checkpoint.name == selected)
            size = f"{checkpoint.size_bytes / 2**20:.0f} MB" if checkpoint.size_bytes else ""
            self.ui.checkpointTable.insertRow(row)
            for column, text in enumerate((checkpoint.name, size, state, checkpoint.description)):
                self.ui.checkpointTable.setItem(row, column, qt.QTableWidgetItem(text))
            if checkpoint.name == selected:
                self.ui.checkpointTable.selectRow(row)
        self.ui.checkpointTable.resizeColumnsToContents()

    def _selectedCheckpoint(self):
        rows = self.ui.checkpointTable.selectionModel().selectedRows() if self.ui.checkpointTable.selectionModel() else []
        return self.ui.checkpointTable.item(rows[0].row(), 0).text() if rows else None

    def onDownloadCheckpoint(self):
        name = self._selectedCheckpoint()
        if name is None or self.runner.running:
            return
        from MemSegLogic.runtime import background, checkpoints

        def finish(path):
            self._populateCheckpoints()
            return _("{name}: downloaded and verified ({path}).").format(name=name, path=path)

        self._queue = []
        self._start(background.BackgroundTask(checkpoints.download_checkpoint, name), name, finish)

    def onVerifyCheckpoint(self):
        if self._selectedCheckpoint() is not None:
            with slicer.util.WaitCursor():
                self._populateCheckpoints(check=True)

    def onDeleteCheckpoint(self):
        name = self._selectedCheckpoint()
        if name is None or not slicer.util.confirmOkCancelDisplay(
                _("Delete the downloaded weights of {name}?").format(name=name)):
            return
        from MemSegLogic.runtime import checkpoints

        try:
            checkpoints.delete_checkpoint(name)
        except Exception as error:
            self._showError(error)
        self._populateCheckpoints()


#
# MemSegTest
#


class MemSegTest(ScriptedLoadableModuleTest):
    """Self-test: needs network access (sample data) and the model weights."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSampleCT()

    @staticmethod
    def _voxelCount(segmentationNode, segmentId, referenceVolumeNode):
        import numpy as np

        if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            return 0
        labelmap = slicer.vtkOrientedImageData()
        segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
        if labelmap.IsEmpty():
            return 0
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
        return 0 if array is None else int(np.count_nonzero(array))

    def test_SegmentSampleCT(self):
        self.delayDisplay("Loading CTChest sample")
        import SampleData

        volumeNode = SampleData.downloadSample("CTChest")
        self.assertIsNotNone(volumeNode)

        # A box around the middle of the chest (heart / mediastinum).
        bounds = [0.0] * 6
        volumeNode.GetRASBounds(bounds)
        center = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MemSegTestBox")
        roiNode.SetCenter(center)
        roiNode.SetSize(80.0, 80.0, 40.0)

        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", NEW_SEGMENT_NAME)
        self.assertEqual(self._voxelCount(segmentationNode, segmentId, volumeNode), 0)

        self.delayDisplay("Segmenting with medsam-lite")
        mrml = _importMrml()
        prompt = mrml.promptFromMarkups(volumeNode, roiNode=roiNode)
        mrml.segmentVolumeNode(volumeNode, segmentationNode, segmentId, prompt, model="medsam-lite")  # offline weights
        self.assertGreater(self._voxelCount(segmentationNode, segmentId, volumeNode), 0)

        self.delayDisplay("Undoing the edit")
        mrml.undoLastEdit(segmentationNode)
        self.assertEqual(self._voxelCount(segmentationNode, segmentId, volumeNode), 0)

        self.delayDisplay("Test passed")
