"""What MemSeg's Segment Editor effects share on the Qt side: the mouse grammar in slice views
(click = point, Shift + click = background point, Ctrl + drag = box), the markups that show a
prompt in every view, and the settings chosen in the MemSeg module."""

import slicer
import vtk

POSITIVE_COLOR, NEGATIVE_COLOR, BOX_COLOR = (0.1, 0.9, 0.2), (0.9, 0.1, 0.1), (0.9, 0.8, 0.1)


class SliceViewClicks:
    """Turns slice-view mouse events into clicks: ``event()`` returns (consumed, click) where
    click is None or a dict(positive=[xy], negative=[xy], box=[xy, xy] or None)."""

    def __init__(self):
        self.boxStart = None

    def event(self, interactor, eventId, negativeByDefault=False):
        xy = interactor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            if interactor.GetControlKey():
                self.boxStart = xy
                return True, None
            negative = bool(interactor.GetShiftKey()) or negativeByDefault
            return True, {"positive": [] if negative else [xy], "negative": [xy] if negative else [], "box": None}
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.boxStart is not None:
            start, self.boxStart = self.boxStart, None
            if abs(start[0] - xy[0]) > 2 and abs(start[1] - xy[1]) > 2:  # a drag, not a shaky click
                return True, {"positive": [], "negative": [], "box": [start, xy]}
            return True, None
        return False, None


class PromptMarkers:
    """Locked, hidden-from-editors markups showing the clicked prompt (green object points, red
    background points, yellow box) in every view; removed with ``clear()``."""

    def __init__(self, prefix="MemSeg"):
        self.prefix = prefix
        self.nodes = {}

    def show(self, sliceNode, positive=(), negative=(), box=None):
        xyToRAS = sliceNode.GetXYToRAS()
        toRAS = lambda xy: xyToRAS.MultiplyPoint([xy[0], xy[1], 0.0, 1.0])[:3]  # noqa: E731
        for points, key, color in ((positive, "positive", POSITIVE_COLOR), (negative, "negative", NEGATIVE_COLOR)):
            for xy in points:
                self._node(key, "vtkMRMLMarkupsFiducialNode", color).AddControlPoint(*toRAS(xy))
        if box is not None:
            node = self._node(f"box{len(self.nodes)}", "vtkMRMLMarkupsROINode", BOX_COLOR)
            a, b = toRAS(box[0]), toRAS(box[1])
            node.SetXYZ(*[(p + q) / 2.0 for p, q in zip(a, b)])
            node.SetSize(*[max(abs(p - q), 0.5) for p, q in zip(a, b)])

    def _node(self, key, className, color):
        node = self.nodes.get(key)
        if node is None or node.GetScene() is None:
            from MemSegLogic.mrml import addHelperNode

            node = addHelperNode(slicer.mrmlScene, className, f"{self.prefix} {key}")
            node.SetLocked(True)  # the prompt is edited through the effect, not by dragging
            node.GetDisplayNode().SetSelectedColor(*color)
            node.GetDisplayNode().SetPointLabelsVisibility(False)
            self.nodes[key] = node
        return node

    def clear(self):
        for node in self.nodes.values():
            if node.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(node)
        self.nodes = {}


def settingsDevice():
    """The device chosen in the MemSeg module's settings (auto: CUDA, then MPS, then CPU; always
    auto with a server, which runs on its own)."""
    import MemSeg

    return MemSeg.settingsDevice()
