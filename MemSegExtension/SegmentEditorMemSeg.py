"""Hidden module that registers MemSeg's Segment Editor effects when Slicer has started.

The effects live in SegmentEditorMemSegLib/ (one file per effect, as Slicer's effect loader
takes one Python source per effect); everything they compute is in the Qt-free MemSegLogic.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

EFFECT_SOURCES = ("SegmentEditorMedSAM2Effect.py",)


class SegmentEditorMemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegmentEditorMemSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["MemSeg team"]
        self.parent.hidden = True
        self.parent.helpText = "Registers MemSeg's Segment Editor effects (MedSAM-2 one-prompt 3D segmentation)."
        self.parent.acknowledgementText = "Built on Meta's SAM 2 and the MedSAM-2 method."
        slicer.app.connect("startupCompleted()", self.registerEditorEffects)

    def registerEditorEffects(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        folder = os.path.join(os.path.dirname(__file__), "SegmentEditorMemSegLib")
        for source in EFFECT_SOURCES:
            instance = effects.qSlicerSegmentEditorScriptedEffect(None)
            instance.setPythonSource(os.path.join(folder, source).replace("\\", "/"))
            instance.self().register()
