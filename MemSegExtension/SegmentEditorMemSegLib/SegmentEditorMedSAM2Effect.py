"""MedSAM-2 Segment Editor effect: clicks or a box on one slice -> the object in 3D.

Thin Qt layer over MemSegLogic: it turns slice-view events into a `ClickedPrompt`
(`mrml.promptFromSliceView`), runs `segment_volume` on MemSeg's worker thread
(`background.BackgroundTask`, polled by a QTimer: the UI never waits), shows the result as a
preview segmentation, and on Apply writes it with `modifySelectedSegmentByLabelmap` after one
`saveStateForUndo()`, so the editor's masking, editable intensity range, overwrite settings and
undo apply exactly as for Slicer's own effects.
"""

import logging

import qt
import slicer
from slicer.i18n import tr as _

from SegmentEditorMemSegLib.MemSegEffect import MemSegEffect
from SegmentEditorMemSegLib.PromptMarkers import settingsDevice

__all__ = ["SegmentEditorMedSAM2Effect"]

SHORTCUTS = (
    (_("Left click"), _("add a point on the object")),
    (_("Shift + left click"), _("add a background (negative) point")),
    (_("Ctrl + left drag"), _("draw a box")),
    ("P", _("preview")),
    (_("Enter"), _("apply the preview")),
    (_("Esc"), _("cancel the run or discard the preview")),
    (_("Backspace"), _("remove the last point")),
    ("C", _("clear the prompt")),
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


class SegmentEditorMedSAM2Effect(MemSegEffect):
    NAME = "MedSAM-2"
    MARKER_PREFIX = "MemSeg"

    def __init__(self, scriptedEffect):
        MemSegEffect.__init__(self, scriptedEffect)
        self.previewNode = None
        self.streamed = None  # the running task's slices, shown as they arrive
        self.previewResult = None

    def helpText(self):
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in SHORTCUTS)
        return "<html>" + _(
            "Segment the object you click on, through the whole volume (MedSAM-2: SAM 2 with a "
            "self-sorting memory, propagated along one or all three volume axes).<br>"
            "Click or drag a box on the object in one slice view, then <b>Preview</b> and <b>Apply</b>. "
            "Clicks on another slice of the same view orientation add a second seed slice, to correct "
            "the propagation. Masking, editable area and overwrite settings apply; Undo removes the "
            "result.") + f"<p><table>{rows}</table></html>"

    # ---------------------------------------------------------------------- options panel
    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = _("Model weights (downloaded and verified on first use)")
        self.scriptedEffect.addLabeledOptionsWidget(_("Model:"), self.modelCombo)

        self.axesCombo = qt.QComboBox()
        self.axesCombo.addItem(_("3 axes (6 directions, fused)"), 3)
        self.axesCombo.addItem(_("1 axis (the view's, both directions)"), 1)
        self.scriptedEffect.addLabeledOptionsWidget(_("Propagation:"), self.axesCombo)

        self.memoryCombo = qt.QComboBox()
        self.memoryCombo.addItem(_("self-sorting (MedSAM-2)"), "self-sorting")
        self.memoryCombo.addItem(_("stock SAM 2"), "sam2")
        self.scriptedEffect.addLabeledOptionsWidget(_("Memory:"), self.memoryCombo)

        self.presetCombo = qt.QComboBox()
        self.scriptedEffect.addLabeledOptionsWidget(_("Intensity preset:"), self.presetCombo)

        self.negativeCheckBox = qt.QCheckBox(_("Clicks mark background"))
        self.negativeCheckBox.toolTip = _("Same as Shift + click (for a trackpad or a pen)")
        self.scriptedEffect.addOptionsWidget(self.negativeCheckBox)

        self.maskSeedButton = qt.QPushButton(_("Seed from segment's slice"))
        self.maskSeedButton.toolTip = _("Use the selected segment's cross-section on the slice shown in the last "
                                         "clicked view (Red if none) as the prompt")
        self.maskSeedButton.connect("clicked()", self.onSeedFromSegment)
        self.clearButton = qt.QPushButton(_("Clear prompt"))
        self.clearButton.connect("clicked()", self.onClearPrompt)
        row = qt.QHBoxLayout()
        row.addWidget(self.maskSeedButton)
        row.addWidget(self.clearButton)
        self.scriptedEffect.addOptionsWidget(row)

        self._addProgressWidgets(_("Click on the object in a slice view."))

        self.previewButton = qt.QPushButton(_("Preview"))
        self.previewButton.connect("clicked()", self.onPreview)
        self.applyButton = qt.QPushButton(_("Apply"))
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton = qt.QPushButton(_("Cancel"))
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
        self.presetCombo.addItem(_("(default)"), "")
        for preset in presets:
            self.presetCombo.addItem(preset, preset)

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

    # ---------------------------------------------------------------------- interaction
    def keyActions(self):
        return {"p": self.onPreview, "P": self.onPreview, "Return": self.onApply, "KP_Enter": self.onApply,
                "Escape": self.onCancel, "BackSpace": self.onRemoveLastPoint, "c": self.onClearPrompt,
                "C": self.onClearPrompt}

    def _addClick(self, sliceNode, positive=(), negative=(), box=None):
        mrml = _logic()[2]
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if volumeNode is None:
            self._say(_("Select a source volume first."))
            return
        try:
            self.clicks.add(mrml.promptFromSliceView(volumeNode, sliceNode, positive, negative, box))
        except Exception as error:
            self._say(str(error))
            return
        self.markers.show(sliceNode, positive, negative, box)
        self._say(_("Prompt ready: Preview (P) or add more clicks."))
        self._updateButtons()

    # ---------------------------------------------------------------------- actions
    def onSeedFromSegment(self):
        mrml = _logic()[2]
        parameters = self.scriptedEffect.parameterSetNode()
        segmentationNode, segmentId = parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID()
        volumeNode = parameters.GetSourceVolumeNode()
        sliceNode = self.lastSliceNode or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        try:
            self.clicks.clear()
            self.clicks.add(mrml.promptFromSegmentSlice(volumeNode, segmentationNode, segmentId, sliceNode))
        except Exception as error:
            self._say(str(error))
            return
        self.markers.clear()
        self._say(_("The segment's cross-section on this slice is the prompt: Preview (P)."))
        self._updateButtons()

    def onRemoveLastPoint(self):
        if self.clicks is not None and self.clicks.remove_last_point():
            self._say(_("Last point removed (its marker stays until the prompt is cleared)."))
        self._updateButtons()

    def onClearPrompt(self):
        self._clearPrompt()
        self._discardPreview()
        self._say(_("Prompt cleared. Click on the object in a slice view."))
        self._updateButtons()

    def onPreview(self):
        if self.runner.running or self.clicks is None or self.clicks.empty:
            return
        MemSegLogic, background, mrml, unused = _logic()
        parameters = self.scriptedEffect.parameterSetNode()
        try:
            volume = mrml.volumeFromNode(parameters.GetSourceVolumeNode(), referenceNode=parameters.GetSegmentationNode())
            prompts = self.clicks.prompts()
        except Exception as error:
            self._say(str(error))
            return
        try:
            import MemSeg

            runner = MemSeg.segmenter()  # this computer or a MemSeg server, as the module's settings say
        except Exception as error:
            self._say(str(error))
            return
        # The worker gets plain arrays only: MRML and Qt are touched on this (the main) thread,
        # which shows the slices the worker has finished on each poll (a server sends only the end result).
        self.streamed = mrml.StreamedPreview(MemSegLogic.PreviewMask(volume.shape_kji), volume.ijk_to_ras,
                                             parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID(),
                                             self.previewNode)
        streaming = {"preview": self.streamed.mask} if runner is MemSegLogic else {}
        task = background.BackgroundTask(
            runner.segment_volume, volume, prompts, **streaming,
            model=self.scriptedEffect.parameter("Model"),
            axes=int(self.scriptedEffect.integerParameter("Axes")),
            preset=self.scriptedEffect.parameter("Preset") or None, device=settingsDevice(),
            propagation=MemSegLogic.PropagationOptions(memory=self.scriptedEffect.parameter("Memory")),
            speed=MemSeg.speedOptions(self.scriptedEffect.parameter("Model")))
        self.runner.start(task, self._showResult, failed=lambda error: self._discardPreview())
        self._updateButtons()

    def _onTick(self):
        if self.streamed is not None and self.streamed.refresh():
            self.previewNode = self.streamed.node

    def _showResult(self, result):
        """The finished run as the preview (main thread); returns the status text."""
        mrml = _logic()[2]
        self.streamed = None
        parameters = self.scriptedEffect.parameterSetNode()
        self.previewResult = result
        self.previewNode = mrml.showPreview(result.mask, result.ijk_to_ras, parameters.GetSegmentationNode(),
                                            parameters.GetSelectedSegmentID(), self.previewNode)
        return _("Preview: {slices} slices in {seconds:.0f} s on {device}. Apply (Enter) or Cancel (Esc).").format(
            slices=result.slices_visited, seconds=result.seconds, device=result.device)

    def onApply(self):
        if self.runner.running:
            return
        if self.previewResult is None:
            self.onPreview()  # Enter without a preview: compute it; Apply again to accept
            return
        if not self._confirmSegmentVisible():
            return
        mrml = _logic()[2]
        labelmap = mrml.orientedLabelmap(self.previewResult.mask, self.previewResult.ijk_to_ras)
        self.scriptedEffect.saveStateForUndo()
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            labelmap, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
        self._discardPreview()
        self._clearPrompt()
        self._say(_("Applied (Undo reverts it). Click to segment another object."))
        self._updateButtons()

    def onCancel(self):
        if not self.runner.cancel():
            self._discardPreview()
            self._say(_("Preview discarded."))
        self._updateButtons()

    def _discardPreview(self):
        if self.previewNode is not None:
            _logic()[2].removePreview(self.previewNode)
        self.streamed, self.previewNode, self.previewResult = None, None, None

    _discardResults = _discardPreview

    # ---------------------------------------------------------------------- helpers
    def _updateButtons(self):
        if not hasattr(self, "previewButton"):  # the options frame is not built yet
            return
        running = self.runner.running
        hasPrompt = self.clicks is not None and not self.clicks.empty
        self.previewButton.enabled = hasPrompt and not running
        self.applyButton.enabled = self.previewResult is not None and not running
        self.cancelButton.enabled = running or self.previewResult is not None
        for widget in (self.modelCombo, self.axesCombo, self.memoryCombo, self.presetCombo, self.maskSeedButton):
            widget.enabled = not running

