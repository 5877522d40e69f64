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

import ctk
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
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


def _runOn():
    _ensureLogicImportable()
    from MemSegLogic.serve import RUN_HERE

    return slicer.util.settingsValue(RUN_ON_SETTING, RUN_HERE)


def segmenter():
    """What runs segmentations, as the "Run on" setting says: MemSegLogic on this computer, or a
    client of a MemSeg server (the same calls and results; MemSegLogic.serve.segmenter decides)."""
    from MemSegLogic.serve import segmenter as choose

    return choose(_runOn(), slicer.util.settingsValue(SERVER_URL_SETTING, ""),
                  slicer.util.settingsValue(SERVER_TOKEN_SETTING, ""))


def speedOptions(model):
    """`SpeedOptions` from the settings for ``model``: its input size and the CPU backend."""
    _ensureLogicImportable()
    from MemSegLogic import SpeedOptions

    return SpeedOptions(input_size=settingsInputSize(model),
                        backend=slicer.util.settingsValue(CPU_BACKEND_SETTING, "auto") or "auto")


def settingsDevice():
    """The device chosen in the settings; "auto" with a server, which runs on its own device."""
    from MemSegLogic.serve import RUN_HERE

    return slicer.util.settingsValue(DEVICE_SETTING, "auto") if _runOn() == RUN_HERE else "auto"


def applyWeightsFolderSetting():
    """MemSegLogic finds weights through MEMSEG_WEIGHTS_DIR; the module's setting (if any) sets it
    for this Slicer session (the effect and console scripts then use the same folder)."""
    folder = slicer.util.settingsValue(WEIGHTS_FOLDER_SETTING, "")
    if folder:
        os.environ["MEMSEG_WEIGHTS_DIR"] = folder
    else:
        os.environ.pop("MEMSEG_WEIGHTS_DIR", None)


def settingsInputSize(model):
    """The input size chosen in the settings for ``model`` (None: the model's own; LiteMedSAM,
    fixed at 256, always gets None)."""
    size = slicer.util.settingsValue(INPUT_SIZE_SETTING, "")
    if not size:
        return None
    from MemSegLogic.runtime.checkpoints import get_checkpoint

    try:
        return int(size) if get_checkpoint(model).engine == "medsam2" else None
    except Exception:  # an unknown model: segment_volume says so itself
        return None


def defaultModel():
    """The 3D model the module and the MedSAM-2 effect start with: the user's choice in the
    module's settings, else MemSegLogic's default (defined once, in the logic)."""
    _ensureLogicImportable()
    from MemSegLogic.runtime.checkpoints import DEFAULT_MODEL

    return slicer.util.settingsValue(DEFAULT_MODEL_SETTING, DEFAULT_MODEL)


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
    plan = dependencies.current_plan(requirements, version, client_only=_runOn() == RUN_ON_SERVER)
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
    remaining = dependencies.current_plan(requirements, version, client_only=_runOn() == RUN_ON_SERVER)
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


def _checkpointName(checkpoint):
    if isinstance(checkpoint, str):
        return checkpoint
    if isinstance(checkpoint, dict):
        return checkpoint["name"]
    return checkpoint.name


#
# MemSeg
#


class MemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MemSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
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
# MemSegWidget
#


class MemSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module panel: inputs, model settings, Apply / progress / Cancel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._queue = []  # segmentations still to run (a batch)
        self._observedSegmentation = None
        self._undoSegmentation = None  # the last Apply's, when it went to MemSeg's own undo history
        # The task runner the effects use too (SegmentEditorMemSegLib sits next to this file).
        from SegmentEditorMemSegLib.TaskRunner import TaskRunner

        self.runner = TaskRunner(self._show, onIdle=self._onTaskEnded)

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        _ensureLogicImportable()
        from MemSegLogic.runtime.slicer_support import slicer_version_problem

        versionProblem = slicer_version_problem((slicer.app.majorVersion, slicer.app.minorVersion))
        if versionProblem:
            logging.error(versionProblem)
            self.layout.addWidget(qt.QLabel(versionProblem))

        # Inputs
        inputsButton = ctk.ctkCollapsibleButton()
        inputsButton.text = _("Inputs")
        self.layout.addWidget(inputsButton)
        inputsForm = qt.QFormLayout(inputsButton)

        self.volumeSelector = self._nodeSelector(
            "vtkMRMLScalarVolumeNode", _("Image to segment (a 3D volume, or the current frame of a sequence)."),
            addEnabled=False, noneEnabled=False)
        self.volumeSelector.showChildNodeTypes = False  # no label maps
        inputsForm.addRow(_("Input volume:"), self.volumeSelector)

        self.segmentationSelector = self._nodeSelector(
            "vtkMRMLSegmentationNode", _("Segmentation that receives the result. Choose 'Create new' to make one."),
            addEnabled=True, noneEnabled=True)
        inputsForm.addRow(_("Segmentation:"), self.segmentationSelector)

        self.segmentCombo = qt.QComboBox()
        self.segmentCombo.toolTip = _("Segment to write into; '(new segment)' adds one.")
        inputsForm.addRow(_("Segment:"), self.segmentCombo)

        self.pointsSelector = self._nodeSelector(
            "vtkMRMLMarkupsFiducialNode", _("Positive clicks on the structure (optional if a box is given)."),
            addEnabled=True, noneEnabled=True)
        self.pointsPlaceWidget = self._placeWidget(multiple=True)
        inputsForm.addRow(_("Seed points:"), self._row(self.pointsSelector, self.pointsPlaceWidget))

        self.roiSelector = self._nodeSelector(
            "vtkMRMLMarkupsROINode", _("Box around the structure (optional if points are given)."),
            addEnabled=True, noneEnabled=True)
        self.roiPlaceWidget = self._placeWidget(multiple=False)
        inputsForm.addRow(_("Seed box:"), self._row(self.roiSelector, self.roiPlaceWidget))

        # Settings
        settingsButton = ctk.ctkCollapsibleButton()
        settingsButton.text = _("Settings")
        self.layout.addWidget(settingsButton)
        settingsForm = qt.QFormLayout(settingsButton)

        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = _("Model that segments and propagates the prompt.")
        settingsForm.addRow(_("Model:"), self.modelCombo)

        self.presetCombo = qt.QComboBox()
        self.presetCombo.toolTip = _("How image intensities are windowed before they reach the model.")
        settingsForm.addRow(_("Intensity preset:"), self.presetCombo)

        self.deviceCombo = qt.QComboBox()
        for device in ("auto", "cuda", "mps", "cpu"):
            self.deviceCombo.addItem(device)
        self.deviceCombo.toolTip = _("Where models run (also for the MedSAM-2 Segment Editor effect). "
                                     "auto: CUDA, then Apple MPS, then CPU.")
        self.deviceCombo.currentText = slicer.util.settingsValue(DEVICE_SETTING, "auto")
        self.deviceCombo.connect("currentTextChanged(QString)",
                                 lambda text: qt.QSettings().setValue(DEVICE_SETTING, text))
        settingsForm.addRow(_("Device:"), self.deviceCombo)

        # Where segmentations run: here, or on a MemSeg server (`memseg serve` on a GPU machine)
        _ensureLogicImportable()
        from MemSegLogic.serve import RUN_HERE, RUN_ON_SERVER

        self.runOnCombo = qt.QComboBox()
        self.runOnCombo.addItem(_("this computer"), RUN_HERE)
        self.runOnCombo.addItem(_("a MemSeg server"), RUN_ON_SERVER)
        self.runOnCombo.toolTip = _("Where the module and both Segment Editor effects run models. A MemSeg server "
                                    "(memseg serve) lends its GPU; this computer then needs no PyTorch.")
        self.runOnCombo.currentIndex = max(0, self.runOnCombo.findData(_runOn()))
        self.runOnCombo.connect("currentIndexChanged(int)", self._onRunOnChanged)
        settingsForm.addRow(_("Run on:"), self.runOnCombo)
        self.serverUrlEdit = qt.QLineEdit()
        self.serverUrlEdit.placeholderText = "http://gpu-box:8765"
        self.serverUrlEdit.text = slicer.util.settingsValue(SERVER_URL_SETTING, "")
        self.serverUrlEdit.connect("editingFinished()", lambda: qt.QSettings().setValue(
            SERVER_URL_SETTING, self.serverUrlEdit.text.strip()))
        self.serverTokenEdit = qt.QLineEdit()
        self.serverTokenEdit.echoMode = qt.QLineEdit.Password
        self.serverTokenEdit.placeholderText = _("printed by memseg serve when it first starts")
        self.serverTokenEdit.text = slicer.util.settingsValue(SERVER_TOKEN_SETTING, "")
        self.serverTokenEdit.connect("editingFinished()", lambda: qt.QSettings().setValue(
            SERVER_TOKEN_SETTING, self.serverTokenEdit.text.strip()))
        self.testConnectionButton = qt.QPushButton(_("Test connection"))
        self.testConnectionButton.connect("clicked(bool)", lambda unused: self.onTestConnection())
        settingsForm.addRow(_("Server address:"), self.serverUrlEdit)
        settingsForm.addRow(_("Server token:"), self.serverTokenEdit)
        settingsForm.addRow(self.testConnectionButton)
        self._onRunOnChanged()

        self.inputSizeCombo = qt.QComboBox()
        for label, size in ((_("model's own"), ""), ("512", "512"), ("256", "256")):
            self.inputSizeCombo.addItem(label, size)
        self.inputSizeCombo.toolTip = _(
            "Input size of MedSAM-2 / SAM 2 models. Smaller is several times faster on a CPU, at the cost "
            "of detail on small objects (README: Speed). LiteMedSAM always runs at 256.")
        self.inputSizeCombo.currentIndex = max(0, self.inputSizeCombo.findData(
            slicer.util.settingsValue(INPUT_SIZE_SETTING, "")))
        self.inputSizeCombo.connect("currentIndexChanged(int)", lambda index: qt.QSettings().setValue(
            INPUT_SIZE_SETTING, self.inputSizeCombo.itemData(index)))
        settingsForm.addRow(_("Model input size:"), self.inputSizeCombo)

        from MemSegLogic.engines.backends import BACKENDS

        self.backendCombo = qt.QComboBox()
        for backend in BACKENDS:
            self.backendCombo.addItem(backend)
        self.backendCombo.toolTip = _(
            "Where medsam-lite's image encoder runs on a CPU. auto: OpenVINO when it is installed (several times "
            "faster, same results; offered by Check / install Python packages), else PyTorch.")
        self.backendCombo.currentText = slicer.util.settingsValue(CPU_BACKEND_SETTING, "auto")
        self.backendCombo.connect("currentTextChanged(QString)",
                                  lambda text: qt.QSettings().setValue(CPU_BACKEND_SETTING, text))
        settingsForm.addRow(_("CPU engine:"), self.backendCombo)

        self.dependenciesButton = qt.QPushButton(_("Check / install Python packages"))
        self.dependenciesButton.toolTip = _("Lists what MemSeg still needs in Slicer's Python and installs it after you confirm.")
        self.dependenciesButton.connect("clicked(bool)", lambda unused: ensureDependencies())
        settingsForm.addRow(self.dependenciesButton)

        self.weightsFolderEdit = ctk.ctkPathLineEdit()
        self.weightsFolderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.weightsFolderEdit.toolTip = _("Folder for downloaded model weights (empty: MemSeg's default cache).")
        self.weightsFolderEdit.currentPath = slicer.util.settingsValue(WEIGHTS_FOLDER_SETTING, "")
        self.weightsFolderEdit.connect("currentPathChanged(QString)", self._onWeightsFolderChanged)
        settingsForm.addRow(_("Weights folder:"), self.weightsFolderEdit)
        applyWeightsFolderSetting()

        # Checkpoints: list, download (in the background, with progress), verify, delete
        checkpointsButton = ctk.ctkCollapsibleButton()
        checkpointsButton.text = _("Model weights")
        checkpointsButton.collapsed = True
        self.layout.addWidget(checkpointsButton)
        checkpointsLayout = qt.QVBoxLayout(checkpointsButton)
        self.checkpointTable = qt.QTableWidget()
        self.checkpointTable.setColumnCount(4)
        self.checkpointTable.setHorizontalHeaderLabels([_("Model"), _("Size"), _("State"), _("Description")])
        self.checkpointTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.checkpointTable.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.checkpointTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.checkpointTable.horizontalHeader().setStretchLastSection(True)
        checkpointsLayout.addWidget(self.checkpointTable)
        self.downloadButton = qt.QPushButton(_("Download"))
        self.downloadButton.toolTip = _("Download the selected model's weights and check their SHA-256.")
        self.verifyButton = qt.QPushButton(_("Verify"))
        self.verifyButton.toolTip = _("Check the selected file's SHA-256 against the registered one.")
        self.deleteButton = qt.QPushButton(_("Delete"))
        self.deleteButton.toolTip = _("Delete the selected model's downloaded file.")
        checkpointsLayout.addLayout(self._hbox(self.downloadButton, self.verifyButton, self.deleteButton))
        self.downloadButton.connect("clicked(bool)", self.onDownloadCheckpoint)
        self.verifyButton.connect("clicked(bool)", self.onVerifyCheckpoint)
        self.deleteButton.connect("clicked(bool)", self.onDeleteCheckpoint)

        # Run
        self.applyButton = qt.QPushButton(_("Apply"))
        self.applyButton.toolTip = _("Segment the volume from the prompt.")
        self.batchButton = qt.QPushButton(_("Apply to all volumes"))
        self.batchButton.toolTip = _("Segment every volume in the scene from the same seed points / box (e.g. "
                                     "registered follow-up scans), each into its own segmentation; volumes "
                                     "the seeds do not fall inside are skipped.")
        self.undoButton = qt.QPushButton(_("Undo"))
        self.undoButton.toolTip = _("Undo the last Apply. (An Apply into the segmentation the Segment Editor "
                                    "edits is undone there instead, with its Undo button or Ctrl+Z.)")
        self.undoButton.enabled = False
        self.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.layout.addLayout(self._hbox(self.applyButton, self.batchButton, self.undoButton))
        self.effectButton = qt.QPushButton(_("Open the MedSAM-2 effect in the Segment Editor"))
        self.effectButton.toolTip = _("Click on the structure in a slice view instead of placing markups.")
        self.effectButton.connect("clicked(bool)", self.onOpenEffect)
        self.layout.addWidget(self.effectButton)

        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.progressBar.value = 0
        self.progressBar.textVisible = True
        self.cancelButton = qt.QPushButton(_("Cancel"))
        self.cancelButton.toolTip = _("Stop the running segmentation; nothing is written.")
        self.cancelButton.enabled = False
        self.layout.addLayout(self._hbox(self.progressBar, self.cancelButton))

        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.layout.addWidget(self.statusLabel)

        self.layout.addStretch(1)

        # Connections
        self.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateApplyEnabled)
        self.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSegmentationNodeChanged)
        self.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.pointsPlaceWidget.setCurrentNode)
        self.pointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateApplyEnabled)
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.roiPlaceWidget.setCurrentNode)
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateApplyEnabled)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.batchButton.connect("clicked(bool)", self.onBatchButton)
        self.cancelButton.connect("clicked(bool)", self.onCancelButton)

        self.pointsPlaceWidget.setCurrentNode(self.pointsSelector.currentNode())
        self.roiPlaceWidget.setCurrentNode(self.roiSelector.currentNode())
        self._populateModelAndPresetChoices()
        self.modelCombo.connect("currentTextChanged(QString)",
                                lambda text: qt.QSettings().setValue(DEFAULT_MODEL_SETTING, text))
        self._populateCheckpoints()
        self._onSegmentationNodeChanged(self.segmentationSelector.currentNode())
        self._updateApplyEnabled()

    def cleanup(self):
        self.runner.cleanup()
        self.removeObservers()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _nodeSelector(nodeType, toolTip, addEnabled, noneEnabled):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = [nodeType]
        selector.selectNodeUponCreation = True
        selector.addEnabled = addEnabled
        selector.removeEnabled = addEnabled
        selector.renameEnabled = addEnabled
        selector.noneEnabled = noneEnabled
        selector.showHidden = False
        selector.setMRMLScene(slicer.mrmlScene)
        selector.setToolTip(toolTip)
        return selector

    @staticmethod
    def _placeWidget(multiple):
        placeWidget = slicer.qSlicerMarkupsPlaceWidget()
        placeWidget.setMRMLScene(slicer.mrmlScene)
        placeWidget.buttonsVisible = False
        placeWidget.placeButton().show()
        if multiple:
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            placeWidget.deleteButton().show()
        return placeWidget

    @staticmethod
    def _hbox(*widgets):
        box = qt.QHBoxLayout()
        for widget in widgets:
            box.addWidget(widget)
        return box

    def _row(self, *widgets):
        container = qt.QWidget()
        box = self._hbox(*widgets)
        box.setContentsMargins(0, 0, 0, 0)
        container.setLayout(box)
        return container

    def _populateModelAndPresetChoices(self):
        """Fill the model and preset combo boxes from MemSegLogic (lazily imported)."""
        _ensureLogicImportable()
        preferred = defaultModel()
        models = []  # (name, description)
        try:
            from MemSegLogic.runtime import checkpoints

            models = [(_checkpointName(c), getattr(c, "description", "")) for c in checkpoints.list_checkpoints(checkpoints.VOLUME_ENGINES)]
        except Exception:
            logging.warning("MemSeg: could not list the models; offering only %r", preferred, exc_info=True)
        if preferred not in [name for name, _description in models]:
            models.insert(0, (preferred, ""))
        self.modelCombo.clear()
        for name, description in models:
            self.modelCombo.addItem(name)
            if description:
                self.modelCombo.setItemData(self.modelCombo.count - 1, description, qt.Qt.ToolTipRole)
        self.modelCombo.currentIndex = max(self.modelCombo.findText(preferred), 0)

        # First item: let the logic pick its default preset (preset=None).
        self.presetCombo.clear()
        self.presetCombo.addItem(_("(default)"), "")
        try:
            from MemSegLogic.core import intensity

            for name in intensity.PRESET_NAMES:
                self.presetCombo.addItem(name, name)
                description = getattr(getattr(intensity, "PRESETS", {}).get(name), "description", "")
                if description:
                    self.presetCombo.setItemData(self.presetCombo.count - 1, description, qt.Qt.ToolTipRole)
        except Exception:
            logging.warning("MemSeg: could not list the intensity presets", exc_info=True)
        self.presetCombo.currentIndex = 0

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
        self._updateApplyEnabled()

    def _populateSegments(self, caller=None, event=None):
        previous = self.segmentCombo.currentData
        wasBlocked = self.segmentCombo.blockSignals(True)
        try:
            self.segmentCombo.clear()
            self.segmentCombo.addItem(_("(new segment)"), "")
            segmentation = self._observedSegmentation
            if segmentation is not None:
                for index in range(segmentation.GetNumberOfSegments()):
                    segmentId = segmentation.GetNthSegmentID(index)
                    self.segmentCombo.addItem(segmentation.GetSegment(segmentId).GetName(), segmentId)
            index = self.segmentCombo.findData(previous) if previous else -1
            self.segmentCombo.currentIndex = max(index, 0)
        finally:
            self.segmentCombo.blockSignals(wasBlocked)

    def _updateApplyEnabled(self, *unused):
        running = self.runner.running
        hasPrompt = self.pointsSelector.currentNode() is not None or self.roiSelector.currentNode() is not None
        self.applyButton.enabled = (not running) and self.volumeSelector.currentNode() is not None and hasPrompt
        self.batchButton.enabled = (not running) and hasPrompt
        self.undoButton.enabled = (not running) and self._undoSegmentation is not None
        if self.volumeSelector.currentNode() is None:
            self.applyButton.toolTip = _("Select an input volume.")
        elif not hasPrompt:
            self.applyButton.toolTip = _("Select seed points and/or a seed box.")
        else:
            self.applyButton.toolTip = _("Segment the volume from the prompt.")

    def _setRunning(self, running):
        self.cancelButton.enabled = running
        for widget in (self.volumeSelector, self.segmentationSelector, self.segmentCombo,
                       self.pointsSelector, self.roiSelector, self.modelCombo, self.presetCombo):
            widget.enabled = not running
        for button in (self.downloadButton, self.deleteButton, self.verifyButton):
            button.enabled = not running
        self._updateApplyEnabled()

    def _segmentationNodeFor(self, volumeNode):
        segmentationNode = self.segmentationSelector.currentNode()
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            self.segmentationSelector.setCurrentNode(segmentationNode)
        return segmentationNode

    # ---------------------------------------------------------------- actions
    def onApplyButton(self):
        volumeNode = self.volumeSelector.currentNode()
        if self.runner.running:
            return
        if volumeNode is None:
            slicer.util.errorDisplay(_("Select an input volume first."))
            return
        try:
            prompt = _importMrml().promptFromMarkups(volumeNode, pointsNode=self.pointsSelector.currentNode(),
                                                     roiNode=self.roiSelector.currentNode())
            segmentationNode = self._segmentationNodeFor(volumeNode)
        except Exception as error:
            self._showError(error)
            return
        self._queue = [(volumeNode, prompt, segmentationNode, self.segmentCombo.currentData, True)]
        self._startNextSegmentation()

    def onBatchButton(self):
        """The same seeds on every volume of the scene, one after the other, each into a new
        segmentation named after its volume."""
        if self.runner.running:
            return
        mrml = _importMrml()
        volumeNodes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                       if not node.IsA("vtkMRMLLabelMapVolumeNode")]
        try:
            plan = mrml.batchPrompts(volumeNodes, pointsNode=self.pointsSelector.currentNode(),
                                     roiNode=self.roiSelector.currentNode())
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
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  volumeNode.GetName() + " MemSeg")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
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
        model = self.modelCombo.currentText or defaultModel()
        try:
            runner = segmenter()
        except Exception as error:
            self._queue = []
            self._showError(error)
            return
        task = background.BackgroundTask(
            runner.segment_volume, volume, prompt, model=model, preset=self.presetCombo.currentData or None,
            device=settingsDevice(), speed=speedOptions(model))
        self._start(task, volumeNode.GetName(),
                    lambda result: self._writeResult(result, volumeNode, segmentationNode, segmentId, volume.ijk_to_ras,
                                                     undoInEditor))

    def _writeResult(self, result, volumeNode, segmentationNode, segmentId, ijkToRAS, undoInEditor=False):
        """On the main thread: the finished segmentation into its segment, as one undoable edit, in
        the Segment Editor's undo history where `mrml.undoHistoryFor` says so, else in MemSeg's."""
        if segmentationNode.GetScene() is None:
            raise RuntimeError(_("the segmentation was deleted while MemSeg ran"))
        if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", NEW_SEGMENT_NAME)
        mrml = _importMrml()
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
        if self.segmentationSelector.currentNode() is segmentationNode:
            self.segmentCombo.currentIndex = max(self.segmentCombo.findData(segmentId), 0)
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
            self.progressBar.value = progress
        if text is not None:
            self.statusLabel.text = text

    def _showError(self, error):
        from SegmentEditorMemSegLib.TaskRunner import showError

        showError(error, traceback.format_exc(), lambda text: self._show(None, text))

    def onSceneStartClose(self, caller=None, event=None):
        """The scene is closing: a running segmentation stops (its target goes with the scene),
        queued ones are dropped, and there is nothing left to undo here."""
        self._queue = []
        if self.runner.running:
            self.runner.abandon()
            self._show(0, _("The scene was closed: the run was stopped."))
            self._setRunning(False)
        self._undoSegmentation = None
        self._updateApplyEnabled()

    def onUndoButton(self):
        """Undo the last Apply that went to MemSeg's own undo history."""
        if self._undoSegmentation is not None and _importMrml().undoLastEdit(self._undoSegmentation):
            self.statusLabel.text = _("Undone.")
        self._undoSegmentation = None
        self._updateApplyEnabled()

    def onCancelButton(self):
        if self.runner.cancel():
            self.cancelButton.enabled = False

    def onOpenEffect(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        volumeNode = self.volumeSelector.currentNode()
        if volumeNode is not None:
            editor.setSourceVolumeNode(volumeNode)
        if self.segmentationSelector.currentNode() is not None:
            editor.setSegmentationNode(self.segmentationSelector.currentNode())
        editor.setActiveEffectByName("MedSAM-2")

    # ---------------------------------------------------------- model weights
    def _onRunOnChanged(self, *unused):
        qt.QSettings().setValue(RUN_ON_SETTING, self.runOnCombo.currentData)
        remote = self.runOnCombo.currentIndex == 1
        for widget in (self.serverUrlEdit, self.serverTokenEdit, self.testConnectionButton):
            widget.enabled = remote
        self.deviceCombo.enabled = not remote  # a server runs on its own device

    def onTestConnection(self):
        if self.runner.running:
            return
        from MemSegLogic.runtime import background
        from MemSegLogic.serve import check_connection

        for setting, edit in ((SERVER_URL_SETTING, self.serverUrlEdit), (SERVER_TOKEN_SETTING, self.serverTokenEdit)):
            qt.QSettings().setValue(setting, edit.text.strip())
        task = background.BackgroundTask(check_connection, self.serverUrlEdit.text, self.serverTokenEdit.text)
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
        self.checkpointTable.setRowCount(0)
        for row, checkpoint in enumerate(checkpoints.list_checkpoints()):
            state = checkpoints.checkpoint_state(checkpoint, check=check and checkpoint.name == selected)
            size = f"{checkpoint.size_bytes / 2**20:.0f} MB" if checkpoint.size_bytes else ""
            self.checkpointTable.insertRow(row)
            for column, text in enumerate((checkpoint.name, size, state, checkpoint.description)):
                self.checkpointTable.setItem(row, column, qt.QTableWidgetItem(text))
            if checkpoint.name == selected:
                self.checkpointTable.selectRow(row)
        self.checkpointTable.resizeColumnsToContents()

    def _selectedCheckpoint(self):
        rows = self.checkpointTable.selectionModel().selectedRows() if self.checkpointTable.selectionModel() else []
        return self.checkpointTable.item(rows[0].row(), 0).text() if rows else None

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
