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
import threading
import traceback

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer without the i18n helpers

    def _(text):
        return text

    def translate(context, text):
        return text


DEFAULT_MODEL = "medsam-lite"
NEW_SEGMENT_NAME = "MemSeg"
DEVICE_SETTING = "MemSeg/Device"  # read by the Segment Editor effect too


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
    (the decisions are MemSegLogic.dependencies', unit-tested). Returns True when all is there.
    Never called at module load."""
    _ensureLogicImportable()
    from MemSegLogic import dependencies

    here = os.path.dirname(os.path.abspath(__file__))
    requirements = next(p for p in (os.path.join(here, "Resources", "requirements.txt"),
                                    os.path.join(os.path.dirname(here), "Resources", "requirements.txt"))
                        if os.path.isfile(p))
    version = (slicer.app.majorVersion, slicer.app.minorVersion)
    plan = dependencies.current_plan(requirements, version)
    if plan.nothing_to_do:
        if askConfirmation:
            slicer.util.infoDisplay(plan.summary())
        return True
    if slicer.app.testingEnabled() or (askConfirmation and not slicer.util.confirmOkCancelDisplay(
            plan.summary(), windowTitle=_("MemSeg: install Python packages"))):
        return False
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
                    packaging = getattr(slicer, "packaging", None) or getattr(slicer, "pydeps")
                    from packaging.requirements import Requirement

                    packaging.pip_ensure([Requirement(r) for r in step.requirements], requester="MemSeg")
                else:
                    slicer.util.pip_install(" ".join(step.pip_arguments()))
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    remaining = dependencies.current_plan(requirements, version)
    if not remaining.nothing_to_do:
        slicer.util.errorDisplay(_("Some packages are still missing; restart Slicer and try again.\n\n")
                                 + remaining.summary())
        return False
    return True


def _checkpointName(checkpoint):
    if isinstance(checkpoint, str):
        return checkpoint
    if isinstance(checkpoint, dict):
        return checkpoint["name"]
    return checkpoint.name


def _isCancellation(error):
    errors = sys.modules.get("MemSegLogic.errors")
    return errors is not None and isinstance(error, errors.SegmentationCancelled)


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


#
# MemSegWidget
#


class MemSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module panel: inputs, model settings, Apply / progress / Cancel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._cancelEvent = None
        self._observedSegmentation = None

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)

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

        self.dependenciesButton = qt.QPushButton(_("Check / install Python packages"))
        self.dependenciesButton.toolTip = _("Lists what MemSeg still needs in Slicer's Python and installs it after you confirm.")
        self.dependenciesButton.connect("clicked(bool)", lambda unused: ensureDependencies())
        settingsForm.addRow(self.dependenciesButton)

        # Run
        self.applyButton = qt.QPushButton(_("Apply"))
        self.applyButton.toolTip = _("Segment the volume from the prompt.")
        self.layout.addWidget(self.applyButton)

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
        self.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.cancelButton.connect("clicked(bool)", self.onCancelButton)

        self.pointsPlaceWidget.setCurrentNode(self.pointsSelector.currentNode())
        self.roiPlaceWidget.setCurrentNode(self.roiSelector.currentNode())
        self._populateModelAndPresetChoices()
        self._onSegmentationNodeChanged(self.segmentationSelector.currentNode())
        self._updateApplyEnabled()

    def cleanup(self):
        if self._cancelEvent is not None:
            self._cancelEvent.set()
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
        models = []  # (name, description)
        try:
            from MemSegLogic import checkpoints

            models = [(_checkpointName(c), getattr(c, "description", "")) for c in checkpoints.list_checkpoints()]
        except Exception:
            logging.warning("MemSeg: could not list the models; offering only %r", DEFAULT_MODEL, exc_info=True)
        if DEFAULT_MODEL not in [name for name, _description in models]:
            models.insert(0, (DEFAULT_MODEL, ""))
        self.modelCombo.clear()
        for name, description in models:
            self.modelCombo.addItem(name)
            if description:
                self.modelCombo.setItemData(self.modelCombo.count - 1, description, qt.Qt.ToolTipRole)
        self.modelCombo.currentIndex = self.modelCombo.findText(DEFAULT_MODEL)

        # First item: let the logic pick its default preset (preset=None).
        self.presetCombo.clear()
        self.presetCombo.addItem(_("(default)"), "")
        try:
            from MemSegLogic import intensity

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
        running = self._cancelEvent is not None
        hasPrompt = self.pointsSelector.currentNode() is not None or self.roiSelector.currentNode() is not None
        self.applyButton.enabled = (not running) and self.volumeSelector.currentNode() is not None and hasPrompt
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
        self._updateApplyEnabled()

    def _onProgress(self, fraction, message=""):
        """Progress callback given to MemSegLogic: ``callback(fraction, message)``.

        MemSegLogic calls it on this (the main) thread between steps.  Processing
        Qt events here keeps the panel responsive and lets the user click Cancel,
        which sets the cancel event the logic polls.  Running the model in a real
        background thread is a later issue; until then the UI only updates at
        these callbacks.
        """
        self.progressBar.value = int(round(100 * min(max(float(fraction), 0.0), 1.0)))
        if message:
            self.statusLabel.text = message
        slicer.app.processEvents()

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
        if volumeNode is None:
            slicer.util.errorDisplay(_("Select an input volume first."))
            return
        pointsNode = self.pointsSelector.currentNode()
        roiNode = self.roiSelector.currentNode()
        modelName = self.modelCombo.currentText or DEFAULT_MODEL
        preset = self.presetCombo.currentData or None  # None: the logic's default preset

        self._cancelEvent = threading.Event()
        self._setRunning(True)
        self.progressBar.value = 0
        self.statusLabel.text = _("Starting...")
        segmentationNode = None
        createdSegmentId = None
        try:
            mrml = _importMrml()
            prompt = mrml.promptFromMarkups(volumeNode, pointsNode=pointsNode, roiNode=roiNode)
            segmentationNode = self._segmentationNodeFor(volumeNode)
            segmentId = self.segmentCombo.currentData
            if not segmentId:
                segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", NEW_SEGMENT_NAME)
                createdSegmentId = segmentId
            result = mrml.segmentVolumeNode(
                volumeNode, segmentationNode, segmentId, prompt,
                model=modelName, preset=preset,
                progress=self._onProgress, cancel=self._cancelEvent)
            logging.info("MemSeg: %s wrote %d voxels from %d slices with %s on %s in %.1f s", segmentId,
                         int(result.mask.sum()), result.slices_visited, result.model, result.device, result.seconds)
            self.progressBar.value = 100
            self.statusLabel.text = _("Done.")
            self.segmentCombo.currentIndex = max(self.segmentCombo.findData(segmentId), 0)
        except Exception as error:
            if createdSegmentId is not None and segmentationNode is not None:
                # Do not leave an empty segment behind when nothing was written.
                segmentationNode.GetSegmentation().RemoveSegment(createdSegmentId)
            self.progressBar.value = 0
            if _isCancellation(error):
                self.statusLabel.text = _("Cancelled.")
            else:
                self.statusLabel.text = _("Failed: ") + str(error)
                slicer.util.errorDisplay(str(error), detailedText=traceback.format_exc())
        finally:
            self._cancelEvent = None
            self._setRunning(False)

    def onCancelButton(self):
        if self._cancelEvent is not None:
            self._cancelEvent.set()
            self.cancelButton.enabled = False
            self.statusLabel.text = _("Cancelling...")


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
        mrml.segmentVolumeNode(volumeNode, segmentationNode, segmentId, prompt, model=DEFAULT_MODEL)
        self.assertGreater(self._voxelCount(segmentationNode, segmentId, volumeNode), 0)

        self.delayDisplay("Undoing the edit")
        mrml.undoLastEdit(segmentationNode)
        self.assertEqual(self._voxelCount(segmentationNode, segmentId, volumeNode), 0)

        self.delayDisplay("Test passed")
