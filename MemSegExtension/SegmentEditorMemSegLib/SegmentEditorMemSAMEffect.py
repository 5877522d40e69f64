"""MemSAM (cine) Segment Editor effect: clicks or a box on one frame of a 2D+t loop -> the
structure on every frame, recorded as a segmentation sequence in the same sequence browser.

The source volume is the proxy of a sequence browser (how Slicer shows a DICOM echo cine or a
.seq.nrrd). Clicks are taken on the frame on show (`mrml.promptFromSliceView` on the proxy, moved
to that frame by `sequence.prompt_on_frame`); `segment_sequence` runs on MemSeg's worker thread
(`background.BackgroundTask`, polled by a QTimer); the result is written frame by frame through
the segment editor logic by `mrml_sequence.writeSequenceResult` on the main thread.
"""

import logging
import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from SegmentEditorMemSegLib.PromptMarkers import PromptMarkers, SliceViewClicks, settingsDevice, takeFinishedTask

__all__ = ["SegmentEditorMemSAMEffect"]

DEFAULT_MODEL = "memsam"
SHORTCUTS = (
    ("Left click", "add a point on the structure (on the frame shown)"),
    ("Shift + left click", "add a background (negative) point"),
    ("Ctrl + left drag", "draw a box"),
    ("Enter", "segment all frames"),
    ("Esc", "cancel the run"),
    ("C", "clear the prompt"),
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


class SegmentEditorMemSAMEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MemSAM (cine)"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.clicks = None
        self.promptFrame = None  # the frame the clicks were made on
        self.task = None
        self.taskTarget = None  # (browser, segmentation, segment id) the running task writes into
        self.markers = PromptMarkers("MemSeg cine")
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
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorMemSAMEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in SHORTCUTS)
        return (
            "<html>Segment a structure (e.g. the left ventricle) on every frame of a cine loop from a "
            "prompt on one frame (MemSAM: SAM with a space-time memory; forward and backward in time).<br>"
            "The source volume must be a sequence's proxy (a loaded echo DICOM cine or .seq.nrrd). Go to "
            "the frame where the structure is clearest, click on it, then <b>Segment all frames</b>. The "
            "result is recorded as a segmentation sequence in the same browser; masking and overwrite "
            "settings apply on every frame. MemSAM needs weights trained on your data "
            "(<code>memseg train-memsam</code>); SAM 2 / LiteMedSAM models run zero-shot."
            f"<p><table>{rows}</table></html>"
        )

    # ---------------------------------------------------------------------- options panel
    def setupOptionsFrame(self):
        self.modelCombo = qt.QComboBox()
        self.modelCombo.toolTip = ("memsam: the weights folder's memsam.pth (your trained MemSAM); other "
                                   "models propagate zero-shot (not trained on cine loops)")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)

        import ctk

        self.weightsPath = ctk.ctkPathLineEdit()
        self.weightsPath.filters = ctk.ctkPathLineEdit.Files
        self.weightsPath.nameFilters = ["MemSAM checkpoint (*.pth *.pt)"]
        self.weightsPath.toolTip = "Optional: a MemSAM checkpoint file to use instead of the weights folder's"
        self.scriptedEffect.addLabeledOptionsWidget("MemSAM weights:", self.weightsPath)

        self.memoryFramesSpin = qt.QSpinBox()
        self.memoryFramesSpin.setRange(1, 1000)
        self.memoryFramesSpin.toolTip = ("Frames MemSAM reads from memory: the first plus the latest. Loops up "
                                         "to this length + 1 are computed exactly as the reference does")
        self.scriptedEffect.addLabeledOptionsWidget("Memory frames:", self.memoryFramesSpin)

        self.negativeCheckBox = qt.QCheckBox("Clicks mark background")
        self.scriptedEffect.addOptionsWidget(self.negativeCheckBox)

        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.statusLabel = qt.QLabel("Show the frame where the structure is clearest and click on it.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.applyButton = qt.QPushButton("Segment all frames")
        self.applyButton.connect("clicked()", self.onApply)
        self.clearButton = qt.QPushButton("Clear prompt")
        self.clearButton.connect("clicked()", self.onClearPrompt)
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.connect("clicked()", self.onCancel)
        row = qt.QHBoxLayout()
        for button in (self.applyButton, self.clearButton, self.cancelButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)

        self.modelCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.memoryFramesSpin.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.weightsPath.connect("currentPathChanged(QString)", self.updateMRMLFromGUI)
        self._populateModels()
        self._updateButtons()

    def _populateModels(self):
        names = [DEFAULT_MODEL]
        try:
            _logic()
            from MemSegLogic.runtime import checkpoints

            names += [c.name for c in checkpoints.list_checkpoints(("memsam",) + checkpoints.VOLUME_ENGINES)]
        except Exception:  # dependencies not installed yet: the MemSeg module offers to install them
            logging.warning("MemSeg: MemSegLogic is not importable yet", exc_info=True)
        for name in names:
            self.modelCombo.addItem(name)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

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

    def activate(self):
        *_, slice_view = _logic()
        if self.clicks is None:
            self.clicks = slice_view.ClickedPrompt()
        if self._browser() is None:
            self._say("The source volume is not a sequence's frame: load a cine loop (echo DICOM, .seq.nrrd) and "
                      "select its proxy volume as the source volume.")

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
            actions = {"Return": self.onApply, "KP_Enter": self.onApply, "Escape": self.onCancel,
                       "c": self.onClearPrompt, "C": self.onClearPrompt}
            action = actions.get(callerInteractor.GetKeySym())
            if action is not None:
                action()
            return action is not None
        if self.task is not None:
            return False
        consumed, click = self.mouse.event(callerInteractor, eventId, self.negativeCheckBox.checked)
        if click is not None:
            self._addClick(viewWidget.sliceLogic().GetSliceNode(), **click)
        return consumed

    def _browser(self):
        parameters = self.scriptedEffect.parameterSetNode()
        volumeNode = parameters.GetSourceVolumeNode() if parameters is not None else None
        if volumeNode is None:
            return None
        return slicer.modules.sequences.logic().GetFirstBrowserNodeForProxyNode(volumeNode)

    def _addClick(self, sliceNode, positive=(), negative=(), box=None):
        _, _, mrml, _, sequence, _ = _logic()
        browser = self._browser()
        if browser is None:
            self._say("Select the proxy volume of a cine loop as the source volume.")
            return
        frame = max(browser.GetSelectedItemNumber(), 0)
        if self.promptFrame is not None and frame != self.promptFrame:
            # MemSAM starts from one prompted frame: clicks on a new frame start a new prompt
            self.onClearPrompt()
            self._say(f"New prompt on frame {frame} (the one on frame {self.promptFrame} was cleared).")
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        try:
            prompt = mrml.promptFromSliceView(volumeNode, sliceNode, positive, negative, box)
            self.clicks.add(sequence.prompt_on_frame(prompt, frame))
        except Exception as error:
            self._say(str(error))
            return
        self.promptFrame = frame
        self.markers.show(sliceNode, positive, negative, box)
        self._say(f"Prompt on frame {frame}: Segment all frames (Enter) or add more clicks.")
        self._updateButtons()

    # ---------------------------------------------------------------------- actions
    def onClearPrompt(self):
        if self.task is not None:
            return
        if self.clicks is not None:
            self.clicks.clear()
        self.promptFrame = None
        self.markers.clear()
        self._say("Prompt cleared. Click on the structure on the frame shown.")
        self._updateButtons()

    def onApply(self):
        if self.task is not None or self.clicks is None or self.clicks.empty:
            return
        _, background, _, mrml_sequence, sequence, _ = _logic()
        parameters = self.scriptedEffect.parameterSetNode()
        browser = self._browser()
        segmentationNode, segmentId = parameters.GetSegmentationNode(), parameters.GetSelectedSegmentID()
        try:
            if browser is None:
                raise ValueError("the source volume is not a sequence's proxy volume")
            # Read on the main thread; the worker gets plain arrays only.
            cine = mrml_sequence.cineFromBrowser(browser, referenceNode=segmentationNode)
            (prompt,) = self.clicks.prompts()
        except Exception as error:
            self._say(str(error))
            return
        model = self.scriptedEffect.parameter("CineWeights") or self.scriptedEffect.parameter("CineModel")
        self.taskTarget = (browser, segmentationNode, segmentId)
        self.task = background.BackgroundTask(
            sequence.segment_sequence, cine, prompt, model=model, device=settingsDevice(),
            memory_frames=self.scriptedEffect.integerParameter("CineMemoryFrames"))
        self.timer.start()
        self._updateButtons()

    def _pollTask(self):
        task = takeFinishedTask(self)
        if task is None:
            return
        (browser, segmentationNode, segmentId), self.taskTarget = self.taskTarget, None
        MemSegLogic, _, _, mrml_sequence, _, _ = _logic()
        try:
            result = task.result()
            segmentId = mrml_sequence.writeSequenceResult(result, browser, segmentationNode, segmentId,
                                                          self.scriptedEffect.parameterSetNode())
        except MemSegLogic.SegmentationCancelled:
            self._say("Cancelled: nothing was changed.")
            self.progressBar.value = 0
        except Exception as error:
            logging.error("MemSeg failed:\n%s", task.traceback_text or "")
            self._say(f"Failed: {error}")
            slicer.util.errorDisplay(f"MemSeg could not segment the sequence: {error}",
                                     detailedText=task.traceback_text)
        else:
            label = " (zero-shot: this model was not trained on cine loops)" if result.zero_shot else ""
            self._say(f"Recorded on {len(result.masks)} frames in {result.seconds:.0f} s on {result.device}"
                      f"{label}. Play the sequence to review it.")
            self.clicks.clear()
            self.promptFrame = None
            self.markers.clear()
        self._updateButtons()

    def onCancel(self):
        if self.task is not None:
            self.task.cancel()
            self._say("Cancelling...")
        self._updateButtons()

    # ---------------------------------------------------------------------- helpers
    def _say(self, text):
        self.statusLabel.text = text

    def _updateButtons(self):
        running = self.task is not None
        hasPrompt = self.clicks is not None and not self.clicks.empty
        self.applyButton.enabled = hasPrompt and not running
        self.clearButton.enabled = hasPrompt and not running
        self.cancelButton.enabled = running
        for widget in (self.modelCombo, self.weightsPath, self.memoryFramesSpin):
            widget.enabled = not running

