"""MedSAM-2 Segment Editor effect: clicks or a box on one slice -> the object in 3D.

Thin Qt layer over MemSegLogic: it turns slice-view events into a `ClickedPrompt`
(`mrml.promptFromSliceView`), runs `segment_volume` on MemSeg's worker thread
(`background.BackgroundTask`, polled by a QTimer: the UI never waits), shows the result as a
preview segmentation, and on Apply writes it with `modifySelectedSegmentByLabelmap` after one
`saveStateForUndo()`, so the editor's masking, editable intensity range, overwrite settings and
undo apply exactly as for Slicer's own effects.
"""

import logging
import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from SegmentEditorMemSegLib.PromptMarkers import (
    PromptMarkers,
    SliceViewClicks,
    settingsDevice,
    settingsInputSize,
    takeFinishedTask,
)

__all__ = ["SegmentEditorMedSAM2Effect"]

SHORTCUTS = (
    ("Left click", "add a point on the object"),
    ("Shift + left click", "add a background (negative) point"),
    ("Ctrl + left drag", "draw a box"),
    ("P", "preview"),
    ("Enter", "apply the preview"),
    ("Esc", "cancel the run or discard the preview"),
    ("Backspace", "remove the last point"),
    ("C", "clear the prompt"),
)


def _logic():
    """MemSegLogic, imported on first use (torch may not be installed when Slicer starts)."""
    import MemSeg

    MemSeg._ensureLogicImportable()  # MemSegLogic sits next to the MemSeg module
    import MemSegLogic
    from MemSegLogic import mrml
    from MemSegLogic.mrml import slice_view
    from MemSegLogic.runtime import background

    return MemSegLogic, background, mrml, slice_view


def _defaultModel():
    """The module's default 3D model (its setting, else MemSegLogic's default)."""
    import MemSeg

    return MemSeg.defaultModel()


class SegmentEditorMedSAM2Effect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM-2"
        scriptedEffect.perSegment = True  # writes into the selected segment
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.clicks = None
        self.task = None
        self.previewNode = None
        self.streamed = None  # the running task's slices, shown as they arrive
        self.previewResult = None
        self.markers = PromptMarkers()
        self.mouse = SliceViewClicks()
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self._pollTask)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorMedSAM2Effect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in SHORTCUTS)
        return (
            "<html>Segment the object you click on, through the whole volume (MedSAM-2: SAM 2 with a "
            "self-sorting memory, propagated along one or all three volume axes).<br>"
            "Click or drag a box on the object in one slice view, then <b>Preview</b> and <b>Apply</b>. "
            "Clicks on another slice of the same view orientation add a second seed slice, to correct "
            "the propagation. Masking, editable area and overwrite settings apply; Undo removes the "
            f"result.<p><table>{rows}</table></html>"
        )

    # ---------------------------------------------------------------------- options panel
    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = "Model weights (downloaded and verified on first use)"
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)

        self.axesCombo = qt.QComboBox()
        self.axesCombo.addItem("3 axes (6 directions, fused)", 3)
        self.axesCombo.addItem("1 axis (the view's, both directions)", 1)
        self.scriptedEffect.addLabeledOptionsWidget("Propagation:", self.axesCombo)

        self.memoryCombo = qt.QComboBox()
        self.memoryCombo.addItem("self-sorting (MedSAM-2)", "self-sorting")
        self.memoryCombo.addItem("stock SAM 2", "sam2")
        self.scriptedEffect.addLabeledOptionsWidget("Memory:", self.memoryCombo)

        self.presetCombo = qt.QComboBox()
        self.scriptedEffect.addLabeledOptionsWidget("Intensity preset:", self.presetCombo)

        self.negativeCheckBox = qt.QCheckBox("Clicks mark background")
        self.negativeCheckBox.toolTip = "Same as Shift + click (for a trackpad or a pen)"
        self.scriptedEffect.addOptionsWidget(self.negativeCheckBox)

        self.maskSeedButton = qt.QPushButton("Seed from segment's slice")
        self.maskSeedButton.toolTip = ("Use the selected segment's cross-section on the slice shown in the last "
                                       "clicked view (Red if none) as the prompt")
        self.maskSeedButton.connect("clicked()", self.onSeedFromSegment)
        self.clearButton = qt.QPushButton("Clear prompt")
        self.clearButton.connect("clicked()", self.onClearPrompt)
        row = qt.QHBoxLayout()
        row.addWidget(self.maskSeedButton)
        row.addWidget(self.clearButton)
        self.scriptedEffect.addOptionsWidget(row)

        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.statusLabel = qt.QLabel("Click on the object in a slice view.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.previewButton = qt.QPushButton("Preview")
        self.previewButton.connect("clicked()", self.onPreview)
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.connect("clicked()", self.onCancel)
        row = qt.QHBoxLayout()
        for button in (self.previewButton, self.applyButton, self.cancelButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)

        for combo in (self.modelCombo, self.axesCombo, self.memoryCombo, self.presetCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self._populateChoices()
        self._updateButtons()

    def _populateChoices(self):
        try:
            _logic()
            from MemSegLogic.core import intensity
            from MemSegLogic.runtime import checkpoints

            names = [c.name for c in checkpoints.list_checkpoints(checkpoints.VOLUME_ENGINES)]
            presets = list(intensity.PRESET_NAMES)
        except Exception:  # dependencies not installed yet: the MemSeg module offers to install them
            logging.warning("MemSeg: MemSegLogic is not importable yet", exc_info=True)
            names, presets = [_defaultModel()], []
        for name in names:
            self.modelCombo.addItem(name)
        self.presetCombo.addItem("(default)", "")
        for preset in presets:
            self.presetCombo.addItem(preset, preset)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Model", _defaultModel())
        self.scriptedEffect.setParameterDefault("Axes", 3)
        self.scriptedEffect.setParameterDefault("Memory", "self-sorting")
        self.scriptedEffect.setParameterDefault("Preset", "")

    def updateGUIFromMRML(self):
        for combo, parameter, isData in ((self.modelCombo, "Model", False), (self.axesCombo, "Axes", True),
                                         (self.memoryCombo, "Memory", True), (self.presetCombo, "Preset", True)):
            value = self.scriptedEffect.parameter(parameter)
            index = combo.findData(int(value) if parameter == "Axes" else value) if isData else combo.findText(value)
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = max(index, 0)
            combo.blockSignals(wasBlocked)
        self._updateButtons()

    def updateMRMLFromGUI(self, *unused):
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentText)
        self.scriptedEffect.setParameter("Axes", self.axesCombo.currentData)
        self.scriptedEffect.setParameter("Memory", self.memoryCombo.currentData)
        self.scriptedEffect.setParameter("Preset", self.presetCombo.currentData or "")

    def activate(self):
        _, _, _, slice_view = _logic()
        if self.clicks is None:
            self.clicks = slice_view.ClickedPrompt()

    def deactivate(self):
        self.onCancel()
        self.markers.clear()

    def cleanup(self):
        self.timer.stop()
        self.timer.disconnect("timeout()", self._pollTask)

    # ---------------------------------------------------------------------- interaction
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if eventId == vtk.vtkCommand.KeyPressEvent:  # also while running: Esc cancels
            return self._onKey(callerInteractor.GetKeySym())
        if self.task is not None:
            return False
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        consumed, click = self.mouse.event(callerInteractor, eventId, self.negativeCheckBox.checked)
        if click is not None:
            self.lastSliceNode = sliceNode
            self._addClick(sliceNode, **click)
        return consumed

    def _onKey(self, key):
        actions = {"p": self.onPreview, "P": self.onPreview, "Return": self.onApply, "KP_Enter": self.onApply,
                   "Escape": self.onCancel, "BackSpace": self.onRemoveLastPoint, "c": self.onClearPrompt,
                   "C": self.onClearPrompt}
        if key not in actions:
            return False
        actions[key]()
        return True

    def _addClick(self, sliceNode, positive=(), negative=(), box=None):
        _, _, mrml, _ = _logic()
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if volumeNode is None:
            self._say("Select a source volume first.")
            return
        try:
            self.clicks.add(mrml.promptFromSliceView(volumeNode, sliceNode, positive, negative, box))
        except Exception as error:
            self._say(str(error))
            return
        self.markers.show(sliceNode, positive, negative, box)
        self._say("Prompt ready: Preview (P) or add more clicks.")
        self._updateButtons()

    # ---------------------------------------------------------------------- actions
    def onSeedFromSegment(self):
        _, _, mrml, _ = _logic()
        parameters = self.scriptedEffect.parameterSetNode()
        segmentationNode, segmentId = parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID()
        volumeNode = parameters.GetSourceVolumeNode()
        sliceNode = getattr(self, "lastSliceNode", None) or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        try:
            self.clicks.clear()
            self.clicks.add(mrml.promptFromSegmentSlice(volumeNode, segmentationNode, segmentId, sliceNode))
        except Exception as error:
            self._say(str(error))
            return
        self.markers.clear()
        self._say("The segment's cross-section on this slice is the prompt: Preview (P).")
        self._updateButtons()

    def onRemoveLastPoint(self):
        if self.clicks is not None and self.clicks.remove_last_point():
            self._say("Last point removed (its marker stays until the prompt is cleared).")
        self._updateButtons()

    def onClearPrompt(self):
        if self.clicks is not None:
            self.clicks.clear()
        self.markers.clear()
        self._discardPreview()
        self._say("Prompt cleared. Click on the object in a slice view.")
        self._updateButtons()

    def onPreview(self):
        if self.task is not None or self.clicks is None or self.clicks.empty:
            return
        MemSegLogic, background, mrml, _ = _logic()
        parameters = self.scriptedEffect.parameterSetNode()
        try:
            volume = mrml.volumeFromNode(parameters.GetSourceVolumeNode(), referenceNode=parameters.GetSegmentationNode())
            prompts = self.clicks.prompts()
        except Exception as error:
            self._say(str(error))
            return
        # The worker gets plain arrays only: MRML and Qt are touched on this (the main) thread,
        # which shows the slices the worker has finished on each poll.
        self.streamed = mrml.StreamedPreview(MemSegLogic.PreviewMask(volume.shape_kji), volume.ijk_to_ras,
                                             parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID(),
                                             self.previewNode)
        self.task = background.BackgroundTask(
            MemSegLogic.segment_volume, volume, prompts, preview=self.streamed.mask,
            model=self.scriptedEffect.parameter("Model"),
            axes=int(self.scriptedEffect.integerParameter("Axes")),
            preset=self.scriptedEffect.parameter("Preset") or None, device=settingsDevice(),
            propagation=MemSegLogic.PropagationOptions(memory=self.scriptedEffect.parameter("Memory")),
            speed=MemSegLogic.SpeedOptions(input_size=settingsInputSize(self.scriptedEffect.parameter("Model"))))
        self.timer.start()
        self._updateButtons()

    def _pollTask(self):
        if self.streamed is not None and self.streamed.refresh():
            self.previewNode = self.streamed.node
        task = takeFinishedTask(self)
        if task is None:
            return
        self.streamed = None
        MemSegLogic, _, mrml, _ = _logic()
        try:
            result = task.result()
        except MemSegLogic.SegmentationCancelled:
            self._discardPreview()  # the slices shown so far go with the run
            self._say("Cancelled: nothing was changed.")
            self.progressBar.value = 0
        except Exception as error:
            self._discardPreview()
            logging.error("MemSeg failed:\n%s", task.traceback_text)
            self._say(f"Failed: {error}")
            slicer.util.errorDisplay(f"MemSeg could not segment: {error}", detailedText=task.traceback_text)
        else:
            parameters = self.scriptedEffect.parameterSetNode()
            self.previewResult = result
            self.previewNode = mrml.showPreview(result.mask, result.ijk_to_ras, parameters.GetSegmentationNode(),
                                                parameters.GetSelectedSegmentID(), self.previewNode)
            self._say(f"Preview: {result.slices_visited} slices in {result.seconds:.0f} s on {result.device}. "
                      "Apply (Enter) or Cancel (Esc).")
        self._updateButtons()

    def onApply(self):
        if self.previewResult is None:
            self.onPreview()  # Enter without a preview: compute it; Apply again to accept
            return
        _, _, mrml, _ = _logic()
        labelmap = mrml.orientedLabelmap(self.previewResult.mask, self.previewResult.ijk_to_ras)
        self.scriptedEffect.saveStateForUndo()
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            labelmap, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
        self._discardPreview()
        self.clicks.clear()
        self.markers.clear()
        self._say("Applied (Undo reverts it). Click to segment another object.")
        self._updateButtons()

    def onCancel(self):
        if self.task is not None:
            self.task.cancel()
            self._say("Cancelling...")
        else:
            self._discardPreview()
            self._say("Preview discarded.")
        self._updateButtons()

    def _discardPreview(self):
        _, _, mrml, _ = _logic()
        mrml.removePreview(self.previewNode)
        self.previewNode, self.previewResult = None, None

    # ---------------------------------------------------------------------- helpers
    def _say(self, text):
        self.statusLabel.text = text

    def _updateButtons(self):
        running = self.task is not None
        hasPrompt = self.clicks is not None and not self.clicks.empty
        self.previewButton.enabled = hasPrompt and not running
        self.applyButton.enabled = self.previewResult is not None and not running
        self.cancelButton.enabled = running or self.previewResult is not None
        for widget in (self.modelCombo, self.axesCombo, self.memoryCombo, self.presetCombo, self.maskSeedButton):
            widget.enabled = not running

