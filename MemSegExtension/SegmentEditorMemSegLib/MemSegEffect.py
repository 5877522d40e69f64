"""The base class of MemSeg's Segment Editor effects: what both share on the Qt side (cloning
through Slicer's effect loader, the icon, the task runner, prompt markers, the mouse grammar in
slice views, key shortcuts, and leaving nothing behind: on deactivate, cleanup and scene close)."""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from slicer.i18n import tr as _

from SegmentEditorMemSegLib.PromptMarkers import PromptMarkers, SliceViewClicks
from SegmentEditorMemSegLib.TaskRunner import TaskRunner

__all__ = ["MemSegEffect"]

HERE = os.path.dirname(os.path.abspath(__file__))


class MemSegEffect(AbstractScriptedSegmentEditorEffect):
    """Subclasses set ``NAME`` and ``MARKER_PREFIX``, live in ``<ClassName>.py`` next to
    ``<ClassName>.png``, implement ``keyActions()``, ``_addClick(...)``, ``_discardResults()``
    and ``_updateButtons()``, and call ``_addProgressWidgets()`` from ``setupOptionsFrame``."""

    NAME = ""
    MARKER_PREFIX = "MemSeg"

    def __init__(self, scriptedEffect):
        scriptedEffect.name = self.NAME
        scriptedEffect.perSegment = True  # writes into the selected segment
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.clicks = None
        self.lastSliceNode = None
        self.markers = PromptMarkers(self.MARKER_PREFIX)
        self.mouse = SliceViewClicks()
        self.runner = TaskRunner(self._show, onIdle=self._updateButtons, onTick=self._onTick)
        self._sceneCloseTag = None

    # ------------------------------------------------------------------ Slicer's effect API
    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(self._sibling(".py"))
        return clonedEffect

    def icon(self):
        iconPath = self._sibling(".png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def activate(self):
        if self.clicks is None:
            import MemSeg

            MemSeg._ensureLogicImportable()  # MemSegLogic sits next to the MemSeg module
            from MemSegLogic.mrml import slice_view

            self.clicks = slice_view.ClickedPrompt()
        if self._sceneCloseTag is None:
            self._sceneCloseTag = slicer.mrmlScene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent,
                                                               self._onSceneStartClose)

    def deactivate(self):
        """Nothing of the effect stays when another is picked: the run stops, the preview and
        the prompt markers go."""
        self._dropEverything()
        self._stopObservingScene()

    def cleanup(self):
        self.runner.cleanup()
        self._dropEverything()
        self._stopObservingScene()

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if eventId == vtk.vtkCommand.KeyPressEvent:  # also while running: Esc cancels
            action = self.keyActions().get(callerInteractor.GetKeySym())
            if action is not None:
                action()
            return action is not None
        if self.runner.running:
            return False
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        consumed, click = self.mouse.event(callerInteractor, eventId, self.negativeCheckBox.checked)
        if click is not None:
            self.lastSliceNode = sliceNode
            self._addClick(sliceNode, **click)
        return consumed

    # ------------------------------------------------------------------ shared helpers
    def _sibling(self, extension):
        """This effect's own file next to this one (Slicer loads and clones effects by path)."""
        return os.path.join(HERE, type(self).__name__ + extension).replace("\\", "/")

    def _addProgressWidgets(self, initialStatus):
        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 100)
        self.statusLabel = qt.QLabel(initialStatus)
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def _show(self, progress, text):
        if progress is not None and hasattr(self, "progressBar"):
            self.progressBar.value = progress
        if text is not None:
            self._say(text)

    def _say(self, text):
        if hasattr(self, "statusLabel"):
            self.statusLabel.text = text

    def _onTick(self):
        """Called on every poll of a running task."""

    def _confirmSegmentVisible(self):
        """Slicer's effects ask before editing a hidden segment (qSlicerSegmentEditorAbstractEffect::
        confirmCurrentSegmentVisible returns NotConfirmed = 0 when the user declines)."""
        return bool(self.scriptedEffect.confirmCurrentSegmentVisible())

    def _clearPrompt(self):
        if self.clicks is not None:
            self.clicks.clear()
        self.markers.clear()

    def _dropEverything(self):
        self.runner.abandon()
        self._discardResults()
        self._clearPrompt()
        self._updateButtons()

    def _onSceneStartClose(self, caller=None, event=None):
        """The scene is closing: the run stops (its result has nowhere to go), the preview and
        markers go with the scene."""
        self._dropEverything()
        self._say(_("The scene was closed: the run was stopped."))

    def _stopObservingScene(self):
        if self._sceneCloseTag is not None:
            slicer.mrmlScene.RemoveObserver(self._sceneCloseTag)
            self._sceneCloseTag = None

    # ------------------------------------------------------------------ for subclasses
    def keyActions(self):
        return {}

    def _addClick(self, sliceNode, positive=(), negative=(), box=None):
        raise NotImplementedError

    def _discardResults(self):
        """Remove what the effect shows but has not applied (a preview)."""

    def _updateButtons(self):
        """Enable the options panel's buttons for the current state."""
