"""MemSAM (cine) Segment Editor effect: clicks or a box on one frame of a 2D+t loop -> the
structure on every frame, recorded as a segmentation sequence in the same sequence browser.

The source volume is the proxy of a sequence browser (how Slicer shows a DICOM echo cine or a
.seq.nrrd). Clicks are taken on the frame on show (`mrml.promptFromSliceView` on the proxy, moved
to that frame by `sequence.prompt_on_frame`); `segment_sequence` runs on MemSeg's worker thread
(`background.BackgroundTask`, polled by a QTimer); the result is written frame by frame through
the segment editor logic by `mrml_sequence.writeSequenceResult` on the main thread.
"""

import logging

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from SegmentEditorMemSegLib.MemSegEffect import MemSegEffect
from SegmentEditorMemSegLib.PromptMarkers import settingsDevice

__all__ = ["SegmentEditorMemSAMEffect"]

DEFAULT_MODEL = "memsam"
SHORTCUTS = (
    (_("Left click"), _("add a point on the structure (on the frame shown)")),
    (_("Shift + left click"), _("add a background (negative) point")),
    (_("Ctrl + left drag"), _("draw a box")),
    (_("Enter"), _("segment all frames")),
    (_("Esc"), _("cancel the run")),
    ("C", _("clear the prompt")),
)


def _logic():
    """MemSegLogic modules, imported on first use (torch may not be installed when Slicer starts)."""
    import MemSeg

    MemSeg._ensureLogicImportable()
    import MemSegLogic
    from MemSegLogic import mrml, mrml_sequence
    from MemSegLogic.cine import segment as sequence
    from MemSegLogic.mrml import slice_view
    from MemSegLogic.runtime import background

    return MemSegLogic, background, mrml, mrml_sequence, sequence, slice_view


class SegmentEditorMemSAMEffect(MemSegEffect):
    NAME = "MemSAM (cine)"
    MARKER_PREFIX = "MemSeg cine"

    def __init__(self, scriptedEffect):
        MemSegEffect.__init__(self, scriptedEffect)
        self.promptFrame = None  # the frame the clicks were made on
        self.lastRun = None  # the segmentation sequence as it was before the last run (SequenceSnapshot)

    def helpText(self):
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in SHORTCUTS)
        return "<html>" + _(
            "Segment a structure (e.g. the left ventricle) on every frame of a cine loop from a "
            "prompt on one frame (MemSAM: SAM with a space-time memory; forward and backward in time).<br>"
            "The source volume must be a sequence's proxy (a loaded echo DICOM cine or .seq.nrrd). Go to "
            "the frame where the structure is clearest, click on it, then <b>Segment all frames</b>. The "
            "result is recorded as a segmentation sequence in the same browser; masking and overwrite "
            "settings apply on every frame. <b>Undo run</b> restores every frame as it was before the last run "
            "(the Segment Editor's Undo holds one frame only). MemSAM needs weights trained on your data "
            "(<code>memseg train-memsam</code>); medsam2-us-heart was trained on heart ultrasound video; "
            "the other SAM 2 / LiteMedSAM models run zero-shot."
        ) + f"<p><table>{rows}</table></html>"

    # ---------------------------------------------------------------------- options panel
    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = _("memsam: the weights folder's memsam.pth (your trained MemSAM); "
                                    "medsam2-us-heart: trained on echo cine loops; the others propagate "
                                    "zero-shot (not trained on cine loops)")
        self.scriptedEffect.addLabeledOptionsWidget(_("Model:"), self.modelCombo)

        self.weightsPath = ctk.ctkPathLineEdit()
        self.weightsPath.filters = ctk.ctkPathLineEdit.Files
        self.weightsPath.nameFilters = [_("MemSAM checkpoint") + " (*.pth *.pt)"]
        self.weightsPath.toolTip = _("Optional: a MemSAM checkpoint file to use instead of the weights folder's")
        self.scriptedEffect.addLabeledOptionsWidget(_("MemSAM weights:"), self.weightsPath)

        self.memoryFramesSpin = qt.QSpinBox()
        self.memoryFramesSpin.setRange(1, 1000)
        self.memoryFramesSpin.toolTip = _("Frames MemSAM reads from memory: the first plus the latest. Loops up "
                                          "to this length + 1 are computed exactly as the reference does")
        self.scriptedEffect.addLabeledOptionsWidget(_("Memory frames:"), self.memoryFramesSpin)

        self.negativeCheckBox = qt.QCheckBox(_("Clicks mark background"))
        self.scriptedEffect.addOptionsWidget(self.negativeCheckBox)

        self._addProgressWidgets(_("Show the frame where the structure is clearest and click on it."))

        self.applyButton = qt.QPushButton(_("Segment all frames"))
        self.applyButton.connect("clicked()", self.onApply)
        self.clearButton = qt.QPushButton(_("Clear prompt"))
        self.clearButton.connect("clicked()", self.onClearPrompt)
        self.cancelButton = qt.QPushButton(_("Cancel"))
        self.cancelButton.connect("clicked()", self.onCancel)
        self.undoButton = qt.QPushButton(_("Undo run"))
        self.undoButton.toolTip = _("Restore every frame of the segmentation sequence as it was before the last run")
        self.undoButton.connect("clicked()", self.onUndoRun)
        row = qt.QHBoxLayout()
        for button in (self.applyButton, self.clearButton, self.cancelButton, self.undoButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)

        self.modelCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.memoryFramesSpin.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.weightsPath.connect("currentPathChanged(QString)", self.updateMRMLFromGUI)
        self._populateModels()
        self._updateButtons()

    def _populateModels(self):
        models = [(DEFAULT_MODEL, "")]
        try:
            _logic()
            from MemSegLogic.cine import cine_models

            models = cine_models()  # MemSAM, then models trained on echo, then the zero-shot ones
        except Exception:  # dependencies not installed yet: the MemSeg module offers to install them
            logging.warning("MemSeg: MemSegLogic is not importable yet", exc_info=True)
        for index, (name, how) in enumerate(models):
            self.modelCombo.addItem(name)
            self.modelCombo.setItemData(index, how, qt.Qt.ToolTipRole)  # e.g. "trained on echo cine loops"

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("CineModel", DEFAULT_MODEL)
        self.scriptedEffect.setParameterDefault("CineWeights", "")
        self.scriptedEffect.setParameterDefault("CineMemoryFrames", 16)

    def updateGUIFromMRML(self):
        for widget in (self.modelCombo, self.memoryFramesSpin, self.weightsPath):
            widget.blockSignals(True)
        self.modelCombo.currentIndex = max(self.modelCombo.findText(self.scriptedEffect.parameter("CineModel")), 0)
        self.memoryFramesSpin.value = self.scriptedEffect.integerParameter("CineMemoryFrames")
        self.weightsPath.currentPath = self.scriptedEffect.parameter("CineWeights")
        for widget in (self.modelCombo, self.memoryFramesSpin, self.weightsPath):
            widget.blockSignals(False)
        self._updateButtons()

    def updateMRMLFromGUI(self, *unused):
        self.scriptedEffect.setParameter("CineModel", self.modelCombo.currentText)
        self.scriptedEffect.setParameter("CineMemoryFrames", self.memoryFramesSpin.value)
        self.scriptedEffect.setParameter("CineWeights", self.weightsPath.currentPath)
        self._updateButtons()  # "Memory frames" applies to MemSAM only

    def activate(self):
        MemSegEffect.activate(self)
        if self._browser() is None:
            self._say(_("The source volume is not a sequence's frame: load a cine loop (echo DICOM, .seq.nrrd) "
                        "and select its proxy volume as the source volume."))

    # ---------------------------------------------------------------------- interaction
    def keyActions(self):
        return {"Return": self.onApply, "KP_Enter": self.onApply, "Escape": self.onCancel,
                "c": self.onClearPrompt, "C": self.onClearPrompt}

    def _browser(self):
        parameters = self.scriptedEffect.parameterSetNode()
        volumeNode = parameters.GetSourceVolumeNode() if parameters is not None else None
        if volumeNode is None:
            return None
        return slicer.modules.sequences.logic().GetFirstBrowserNodeForProxyNode(volumeNode)

    def _addClick(self, sliceNode, positive=(), negative=(), box=None):
        logic = _logic()
        mrml, sequence = logic[2], logic[4]
        browser = self._browser()
        if browser is None:
            self._say(_("Select the proxy volume of a cine loop as the source volume."))
            return
        frame = max(browser.GetSelectedItemNumber(), 0)
        if self.promptFrame is not None and frame != self.promptFrame:
            # MemSAM starts from one prompted frame: clicks on a new frame start a new prompt
            self.onClearPrompt()
            self._say(_("New prompt on frame {frame} (the one on frame {previous} was cleared).").format(
                frame=frame, previous=self.promptFrame))
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        try:
            prompt = mrml.promptFromSliceView(volumeNode, sliceNode, positive, negative, box)
            self.clicks.add(sequence.prompt_on_frame(prompt, frame))
        except Exception as error:
            self._say(str(error))
            return
        self.promptFrame = frame
        self.markers.show(sliceNode, positive, negative, box)
        self._say(_("Prompt on frame {frame}: Segment all frames (Enter) or add more clicks.").format(frame=frame))
        self._updateButtons()

    # ---------------------------------------------------------------------- actions
    def onClearPrompt(self):
        if self.runner.running:
            return
        self._clearPrompt()
        self._say(_("Prompt cleared. Click on the structure on the frame shown."))
        self._updateButtons()

    def _clearPrompt(self):
        MemSegEffect._clearPrompt(self)
        self.promptFrame = None

    def onApply(self):
        if self.runner.running or self.clicks is None or self.clicks.empty:
            return
        if not self._confirmSegmentVisible():
            return
        logic = _logic()
        background, mrml_sequence = logic[1], logic[3]
        parameters = self.scriptedEffect.parameterSetNode()
        browser = self._browser()
        segmentationNode, segmentId = parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID()
        try:
            if browser is None:
                raise ValueError(_("the source volume is not a sequence's proxy volume"))
            # Read on the main thread; the worker gets plain arrays only.
            cine = mrml_sequence.cineFromBrowser(browser, referenceNode=segmentationNode)
            (prompt,) = self.clicks.prompts()
        except Exception as error:
            self._say(str(error))
            return
        model = self._model()
        # memory frames are MemSAM's; the zero-shot models refuse them
        memoryFrames = self.scriptedEffect.integerParameter("CineMemoryFrames") if self._usesMemory() else None
        try:
            import MemSeg

            runner = MemSeg.segmenter()  # this computer or a MemSeg server, as the module's settings say
        except Exception as error:
            self._say(str(error))
            return
        task = background.BackgroundTask(
            runner.segment_sequence, cine, prompt, model=model, device=settingsDevice(),
            memory_frames=memoryFrames)
        self.runner.start(task, lambda result: self._record(result, browser, segmentationNode, segmentId))
        self._updateButtons()

    def _record(self, result, browser, segmentationNode, segmentId):
        """The finished run, written frame by frame into the segmentation sequence (main thread)."""
        mrml_sequence = _logic()[3]
        before = mrml_sequence.SequenceSnapshot(browser, segmentationNode)
        mrml_sequence.writeSequenceResult(result, browser, segmentationNode, segmentId,
                                          self.scriptedEffect.parameterSetNode())
        self.lastRun = before
        self._clearPrompt()
        label = _(" (zero-shot: this model was not trained on cine loops)") if result.zero_shot else ""
        return _("Recorded on {frames} frames in {seconds:.0f} s on {device}{label}. Play the sequence to "
                 "review it.").format(frames=len(result.masks), seconds=result.seconds, device=result.device,
                                      label=label)

    def onCancel(self):
        self.runner.cancel()
        self._updateButtons()

    def onUndoRun(self):
        if self.runner.running or self.lastRun is None:
            return
        lastRun, self.lastRun = self.lastRun, None
        try:
            lastRun.restore()
            self._say(_("Every frame is as it was before the last run."))
        except Exception as error:
            self._say(str(error))
        self._updateButtons()

    def _discardResults(self):
        """Deactivate, scene close, cleanup: other edits may follow, so the last run can no longer be
        restored without undoing them."""
        self.lastRun = None

    # ---------------------------------------------------------------------- helpers
    def _model(self):
        return self.scriptedEffect.parameter("CineWeights") or self.scriptedEffect.parameter("CineModel")

    def _usesMemory(self):
        """Whether the chosen model is MemSAM, whose memory the "Memory frames" setting sizes."""
        try:
            return _logic()[4].is_memsam(self._model())
        except Exception:  # MemSegLogic not importable yet: nothing can run anyway
            return True

    def _updateButtons(self):
        if not hasattr(self, "applyButton"):  # the options frame is not built yet
            return
        running = self.runner.running
        hasPrompt = self.clicks is not None and not self.clicks.empty
        self.applyButton.enabled = hasPrompt and not running
        self.clearButton.enabled = hasPrompt and not running
        self.cancelButton.enabled = running
        self.undoButton.enabled = self.lastRun is not None and not running
        for widget in (self.modelCombo, self.weightsPath):
            widget.enabled = not running
        self.memoryFramesSpin.enabled = not running and self._usesMemory()
