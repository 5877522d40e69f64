"""Hidden module that registers MemSeg's Segment Editor effects when Slicer has started.

The effects live in SegmentEditorMemSegLib/ (one file per effect, as Slicer's effect loader
takes one Python source per effect); everything they compute is in the Qt-free MemSegLogic.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

EFFECT_SOURCES = ("SegmentEditorMedSAM2Effect.py", "SegmentEditorMemSAMEffect.py")


class SegmentEditorMemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegmentEditorMemSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["MemSeg team"]
        self.parent.hidden = True
        self.parent.helpText = ("Registers MemSeg's Segment Editor effects: MedSAM-2 (one-prompt 3D segmentation) "
                                "and MemSAM (cine) (one-prompt 2D+t segmentation of echo loops).")
        self.parent.acknowledgementText = "Built on Meta's SAM 2 and the MedSAM-2 method."
        slicer.app.connect("startupCompleted()", self.registerEditorEffects)

    def registerEditorEffects(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        # Slicer's effect loader takes the folder's name as the module name and looks for the
        # class there before running the file as a bare module of that name: importing our
        # package first makes it find the classes in the package (whose files import each other),
        # for registration and for every clone.
        import SegmentEditorMemSegLib  # noqa: F401

        folder = os.path.join(os.path.dirname(__file__), "SegmentEditorMemSegLib")
        for source in EFFECT_SOURCES:
            instance = effects.qSlicerSegmentEditorScriptedEffect(None)
            instance.setPythonSource(os.path.join(folder, source).replace("\\", "/"))
            instance.self().register()


class SegmentEditorMemSegTest(ScriptedLoadableModuleTest):
    """Self-test in a real Slicer (ctest registers it; also Reload and Test in the developer
    panel): sample data, a click on the right lung in the red view through the effect, Preview
    on the worker thread, Apply, Undo. Uses the `medsam-lite` weights that ship with its package;
    needs network access for the sample data."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ClickPreviewApplyUndo()

    def test_ClickPreviewApplyUndo(self):
        import numpy as np
        import SampleData

        self.delayDisplay("Loading CTChest")
        volumeNode = SampleData.downloadSample("CTChest")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("right lung")

        slicer.util.selectModule("SegmentEditor")
        editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editorWidget.setSegmentationNode(segmentationNode)
        editorWidget.setSourceVolumeNode(volumeNode)
        editorWidget.setCurrentSegmentID(segmentId)
        editorWidget.setActiveEffectByName("MedSAM-2")
        effect = editorWidget.activeEffect()
        self.assertIsNotNone(effect, "the MedSAM-2 effect is not registered")
        effect.setParameter("Model", "medsam-lite")
        effect.setParameter("Axes", "1")

        # A click on the right lung (patient right = RAS -x): a third of the way from the middle
        # of the volume to its right edge, on the middle axial slice, in the red view.
        bounds = [0.0] * 6
        volumeNode.GetRASBounds(bounds)
        center = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
        target = center + np.array([(bounds[0] - center[0]) / 3.0, 0.0, 0.0])
        sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
        sliceNode = sliceWidget.mrmlSliceNode()
        sliceNode.JumpSliceByCentering(*target)
        rasToXY = np.linalg.inv(slicer.util.arrayFromVTKMatrix(sliceNode.GetXYToRAS()))
        xy = (rasToXY @ np.append(target, 1.0))[:2]
        effect.self()._addClick(sliceNode, positive=[xy])

        self.delayDisplay("Preview (on MemSeg's worker thread)")
        effect.self().onPreview()
        task = effect.self().runner.task
        self.assertIsNotNone(task)
        while not task.done:  # the UI stays live while it runs
            slicer.app.processEvents()
            task.wait(0.1)
        effect.self().runner.poll()
        self.assertIsNotNone(effect.self().previewResult, effect.self().statusLabel.text)

        effect.self().onApply()
        written = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        self.assertGreater(int(np.count_nonzero(written)), 1000)

        self.delayDisplay("Undo")
        editorWidget.undo()
        labelmap = slicer.vtkOrientedImageData()
        segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
        self.assertTrue(labelmap.IsEmpty() or not np.count_nonzero(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)))
        self.delayDisplay("Test passed")
