"""TEST STAND-INS for the Slicer GUI pieces MemSeg's module panel uses -- not Slicer.

- `load_ui`: stands in for ``slicer.util.loadUI`` (Qt's QUiLoader): reads OUR .ui file and builds
  API-checked stand-in widgets: Qt classes from qt_listing.json and qt5_listing.json (qt_standin),
  CTK classes from ctk_listing.json (ctk_standin), qMRML / qSlicer classes from
  slicer_widgets_listing.json (each read from their headers). A class, property or
  connection slot the real API lacks fails, as it would in Slicer.
- The Slicer widgets' behaviour on the paths the panel uses (a node combo box's current node and
  scene, a path line edit's path), named below.
- `parameter_node_wrapper_module`: replays ``slicer.parameterNodeWrapper`` (Base/Python/slicer/
  parameterNodeWrapper/wrapper.py, serializers.py, guiConnectors.py) for the parameter types MemSeg
  uses: str (SetParameter / GetParameter), MRML nodes (a node reference, with an empty parameter),
  defaults written on wrap, ``connectGui`` by the widgets' "SlicerParameterName" property.
- `scripted_loadable_module`: ``slicer.ScriptedLoadableModule``'s widget and logic bases; the
  logic's getParameterNode / createParameterNode replay Base/Python/slicer/ScriptedLoadableModule.py.
- `i18n_module`, `segment_editor_effects_modules`: ``slicer.i18n`` without a translation installed,
  and Slicer's ``SegmentEditorEffects`` package with its effect base class.
Real MRML (slicer-core) under all of them.
"""

import json
import os
import pathlib
import types
import typing
import xml.etree.ElementTree as ElementTree

import ctk_standin
import qt_standin
import slicer
import vtk

SLICER_LISTING = json.loads(pathlib.Path(__file__).with_name("slicer_widgets_listing.json").read_text(encoding="utf-8"))
PARAMETER_NAME_PROPERTY = "SlicerParameterName"  # wrapper.py: SlicerParameterNamePropertyName


def _slicer_class_attributes(name):
    """What Python reaches on a Slicer widget class: its listed members and its bases'."""
    return qt_standin.listed_members(SLICER_LISTING, name)


class SlicerWidget(qt_standin.StandIn):
    """A CTK / Slicer widget stand-in: allows exactly its class's API (slicer_widgets_listing.json)."""

    SLICER_CLASS = ""

    @classmethod
    def _allowed(cls):
        return _slicer_class_attributes(cls.SLICER_CLASS) | qt_standin.PYTHONQT_EXTRAS


class qMRMLWidget(SlicerWidget):
    """setMRMLScene emits mrmlSceneChanged(vtkMRMLScene*), which a .ui connects to its MRML widgets."""

    SLICER_CLASS = "qMRMLWidget"

    def setMRMLScene(self, scene):
        self._state["mrmlScene"] = scene
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)


class qMRMLNodeComboBox(SlicerWidget):
    """The current node and its signal; without "none" it selects the first node of its types, as
    qMRMLNodeComboBox does when the scene is set or a node is added."""

    SLICER_CLASS = "qMRMLNodeComboBox"

    def setMRMLScene(self, scene):
        self._state["mrmlScene"] = scene
        if scene is not None:
            scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, lambda caller, event: self._selectFirst())
            self._selectFirst()

    def _nodes(self):
        scene = self._state.get("mrmlScene")
        if scene is None:
            return []
        return [node for nodeType in self._state.get("nodeTypes", []) for node in
                (scene.GetNthNodeByClass(i, nodeType) for i in range(scene.GetNumberOfNodesByClass(nodeType)))
                if (self._state.get("showChildNodeTypes", True) or node.GetClassName() == nodeType)
                and not (node.GetHideFromEditors() and not self._state.get("showHidden", False))]

    def _selectFirst(self):
        if not self._state.get("noneEnabled", False) and self.currentNode() is None and self._nodes():
            self.setCurrentNode(self._nodes()[0])

    def currentNode(self):
        node = self._state.get("currentNode")
        return node if node is not None and node.GetScene() is not None else None

    def setCurrentNode(self, node):
        if node is not None and node not in self._nodes():
            raise ValueError(f"{node.GetID()} is not one of this selector's nodes")
        if node is not self._state.get("currentNode"):
            self._state["currentNode"] = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class qSlicerMarkupsPlaceWidget(SlicerWidget):
    SLICER_CLASS = "qSlicerMarkupsPlaceWidget"

    def placeButton(self):  # a QToolButton in Slicer; what the panel calls on it is QWidget's
        return qt_standin.qt_module().QWidget()

    deleteButton = placeButton


SLICER_WIDGETS = {cls.SLICER_CLASS: cls for cls in (qMRMLWidget, qMRMLNodeComboBox, qSlicerMarkupsPlaceWidget)}
for _cls in SLICER_WIDGETS.values():  # enum values as class attributes (slicer.qSlicerMarkupsPlaceWidget.ForcePlace...)
    for _member in SLICER_LISTING["classes"][_cls.SLICER_CLASS]["attributes"]:
        if _member[:1].isupper() and not hasattr(_cls, _member):
            setattr(_cls, _member, _member)
# What a .ui may name: Slicer's widgets and CTK's (ctk_standin, checked against ctk_listing.json).
UI_WIDGETS = {**SLICER_WIDGETS, **ctk_standin.CLASSES}


def load_scripted_module(path, parent):
    """qSlicerScriptedLoadableModule::setPythonSource (Base/QTGUI/qSlicerScriptedLoadableModule.cxx):
    the file runs as a module named after it (qSlicerScriptedUtils::loadSourceAsModule), then the
    class of that name is instantiated with the module's parent object."""
    import importlib.util
    import sys

    name = pathlib.Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, getattr(module, name)(parent)


def _value(element, qt):
    """A .ui property value as Python: string, bool, number, enum / set (checked against the class)."""
    kind = element[0]
    if kind.tag == "string":
        return kind.text or ""
    if kind.tag == "bool":
        return kind.text == "true"
    if kind.tag == "number":
        return int(kind.text)
    if kind.tag == "stringlist":
        return [item.text for item in kind]
    if kind.tag in ("enum", "set"):
        values = []
        for part in kind.text.split("|"):
            owner, _separator, value = part.partition("::")
            cls = getattr(qt, owner, None) or UI_WIDGETS.get(owner)
            if cls is None or value not in (qt_standin.LISTING["classes"].get(owner) or cls._allowed()):
                raise AttributeError(f"{part} is not in the API")
            values.append(value)
        return "|".join(values)
    return kind  # size etc.: kept as read


def load_ui(path):
    """Stand-in for slicer.util.loadUI: the .ui's widget tree as API-checked stand-ins. Each widget
    gets its objectName, its parent's children() list, its dynamic properties (property()), and
    the .ui's <connections>; properties and slots must exist in the real API."""
    qt = __import__("qt")
    root = ElementTree.parse(path).getroot()
    widgets = {}

    def build(element):
        class_name = element.get("class")
        cls = UI_WIDGETS.get(class_name) or getattr(qt, class_name, None)
        if cls is None:
            raise AttributeError(f"{path}: {class_name} is neither a listed Qt class nor a listed Slicer widget")
        widget = cls()
        dynamic = {}
        for prop in element.findall("property"):
            value = _value(prop, qt)
            if prop.get("stdset") == "0":
                dynamic[prop.get("name")] = value
            else:
                setattr(widget, prop.get("name"), value)  # AttributeError when not a property of the class
        for attribute in element.findall("attribute"):  # e.g. horizontalHeaderStretchLastSection (QTableWidget)
            if attribute.get("name").startswith("horizontalHeader") and "horizontalHeader" not in cls._allowed():
                raise AttributeError(f"{class_name} has no horizontal header")
        children = []
        for child in element.iter():
            if child is element or child.tag != "widget":
                continue
            if _nearest_widget_parent(element, child):
                children.append(build(child))
        name = element.get("name")
        for attribute, value in (("name", name), ("objectName", name), ("children", lambda: list(children)),
                                 ("property", lambda key: dynamic.get(key)), ("isWidgetType", lambda: True),
                                 ("findChildren", lambda *unused: _descendants(children))):
            widget._state[attribute] = value
        widgets[name] = widget
        return widget

    top = build(root.find("widget"))
    for connection in root.iter("connection"):
        sender, receiver = widgets[connection.findtext("sender")], widgets[connection.findtext("receiver")]
        slot = connection.findtext("slot")
        method = slot.split("(")[0]
        if method not in type(receiver)._allowed():
            raise AttributeError(f"{connection.findtext('receiver')} has no slot {slot}")
        sender.connect(connection.findtext("signal"), getattr(receiver, method))
    return top


def _nearest_widget_parent(parent, child):
    """Whether ``parent`` is the closest <widget> above ``child`` (layouts and items in between)."""
    def walk(element, inside):
        for sub in element:
            if sub is child:
                return inside
            found = walk(sub, False if sub.tag == "widget" else inside)
            if found is not None:
                return found
        return None
    return bool(walk(parent, True))


def _descendants(children):
    found = []
    for child in children:
        found.append(child)
        found += child.findChildren()
    return found


# ----------------------------------------------------------------- parameterNodeWrapper (replayed)


def parameter_node_wrapper_module():
    """A ``slicer.parameterNodeWrapper`` whose ``parameterNodeWrapper`` decorator does, for str and
    MRML node members, what Slicer's does (Base/Python/slicer/parameterNodeWrapper/)."""
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    module.SlicerParameterNamePropertyName = PARAMETER_NAME_PROPERTY
    return module


def _is_node_type(datatype):
    return isinstance(datatype, type) and issubclass(datatype, slicer.vtkMRMLNode)


class _Serializer:
    """serializers.py: StringSerializer (SetParameter/GetParameter) and NodeSerializer (an empty
    parameter marks it present; the value is the node reference of that name)."""

    def __init__(self, datatype):
        if not (datatype is str or _is_node_type(datatype)):
            raise TypeError(f"the stand-in replays str and MRML node members only, not {datatype}")
        self.node = _is_node_type(datatype)

    def isIn(self, parameterNode, name):
        return parameterNode.GetParameter(name) != "" or name in parameterNode.GetParameterNames()

    def write(self, parameterNode, name, value):
        if self.node:
            parameterNode.SetParameter(name, "")
            parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            parameterNode.SetParameter(name, str(value))

    def read(self, parameterNode, name):
        return parameterNode.GetNodeReference(name) if self.node else parameterNode.GetParameter(name)


def parameterNodeWrapper(classtype):
    members = typing.get_type_hints(classtype)
    serializers = {name: _Serializer(datatype) for name, datatype in members.items()}
    defaults = {name: getattr(classtype, name, None if serializers[name].node else "") for name in members}

    def init(self, parameterNode):  # wrapper.py _initMethod: missing parameters get their defaults
        self.parameterNode = parameterNode
        self._guis = {}
        self._nextTag = 0
        self._updating = False
        for name, serializer in serializers.items():
            if not serializer.isIn(parameterNode, name):
                serializer.write(parameterNode, name, defaults[name])

    def make_property(name):
        return property(lambda self: serializers[name].read(self.parameterNode, name),
                        lambda self, value: serializers[name].write(self.parameterNode, name, value))

    for name in members:
        setattr(classtype, name, make_property(name))

    def update_gui(self):  # wrapper.py _updateGUIFromParameterNode
        if self._updating:
            return
        self._updating = True
        try:
            for mapping in self._guis.values():
                for name, widget in mapping.items():
                    _write_widget(widget, getattr(self, name))
        finally:
            self._updating = False

    def connect_gui(self, gui):  # wrapper.py _connectGui, on an object of widgets (childWidgetVariables)
        mapping = {}
        for widget in gui.__dict__.values():
            name = widget.property(PARAMETER_NAME_PROPERTY)
            if name:
                if name not in members:
                    raise ValueError(f"Cannot find a param with the given name: {name}")
                mapping[name] = widget
        tag = self._nextTag
        self._nextTag += 1
        self._guis[tag] = mapping
        for name, widget in mapping.items():
            if serializers[name].node:  # guiConnectors.py qMRMLNodeComboBoxToNodeConnector
                widget.nodeTypes = [members[name].__name__]
            _write_widget(widget, getattr(self, name))

            def changed(*unused, name=name, widget=widget):
                if not self._updating:
                    setattr(self, name, _read_widget(widget))
            widget.connect(_CHANGED_SIGNAL[type(widget).__name__], changed)
            widget._state.setdefault("_parameterSlots", {})[tag] = changed
        self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: update_gui(self))
        return tag

    def disconnect_gui(self, tag):  # wrapper.py _disconnectGui: the widgets stop writing parameters
        for name, widget in self._guis.pop(tag, {}).items():
            widget.disconnect(_CHANGED_SIGNAL[type(widget).__name__], widget._state["_parameterSlots"].pop(tag))

    classtype.__init__ = init
    classtype.allParameters = dict(members)
    classtype.connectGui = connect_gui
    classtype.disconnectGui = disconnect_gui
    classtype.StartModify = lambda self: self.parameterNode.StartModify()
    classtype.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
    classtype.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
        event, callback, priority)
    classtype.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    classtype.Modified = lambda self: self.parameterNode.Modified()
    return classtype


_CHANGED_SIGNAL = {"qMRMLNodeComboBox": "currentNodeChanged(vtkMRMLNode*)", "QLineEdit": "textChanged(QString)"}


def _write_widget(widget, value):
    if isinstance(widget, qMRMLNodeComboBox):
        widget.setCurrentNode(value)
    else:
        widget.text = value


def _read_widget(widget):
    return widget.currentNode() if isinstance(widget, qMRMLNodeComboBox) else widget.text


# ----------------------------------------------------------------- ScriptedLoadableModule


def scripted_loadable_module(module_paths):
    """``slicer.ScriptedLoadableModule``: the module class keeps its parent; the widget has a parent
    (isEntered), a layout and resourcePath (Resources/ next to the module file); the logic replays
    getParameterNode / createParameterNode (singleton tagged with the module name)."""
    qt = __import__("qt")
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[:-len("Widget")]
            self.parent = parent or types.SimpleNamespace(isEntered=False)

        def setup(self):
            self.layout = qt.QVBoxLayout()

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(module_paths[self.moduleName]), "Resources", filename)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[:-len("Logic")] if type(self).__name__.endswith("Logic") else type(self).__name__
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest:
        pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


def i18n_module():
    """slicer.i18n (Base/Python/slicer/i18n.py): tr / translate return the text when no translation
    is installed."""
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


def segment_editor_effects_modules(register):
    """Slicer's SegmentEditorEffects package and its AbstractScriptedSegmentEditorEffect module
    (Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/): __init__ keeps the
    adaptor; register() hands it to the effect factory, here ``register(scriptedEffect)``."""
    package = types.ModuleType("SegmentEditorEffects")
    package.__path__ = []

    class AbstractScriptedSegmentEditorEffect:
        def __init__(self, scriptedEffect):
            self.scriptedEffect = scriptedEffect

        def register(self):
            register(self.scriptedEffect)

    base = types.ModuleType("SegmentEditorEffects.AbstractScriptedSegmentEditorEffect")
    base.AbstractScriptedSegmentEditorEffect = package.AbstractScriptedSegmentEditorEffect = \
        AbstractScriptedSegmentEditorEffect
    base.__all__ = ["AbstractScriptedSegmentEditorEffect"]
    return {package.__name__: package, base.__name__: base}


def ctk_module():
    """``ctk``: CTK's widgets, API-checked (ctk_standin)."""
    return ctk_standin.ctk_module()


# -- the scene a Segment Editor session has (real MRML), for the effects' harness tests --------------
def segment_editor_node(scene, source, segmentation, segment_id):
    """The Segment Editor's parameter node editing ``segment_id`` of ``segmentation`` on ``source``."""
    editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(segmentation)
    editor_node.SetAndObserveSourceVolumeNode(source)
    editor_node.SetSelectedSegmentID(segment_id)
    return editor_node


def axial_slice_node(scene, field_of_view, centre):
    """A 400 x 300 pixel axial slice view showing ``field_of_view`` (mm) around ``centre`` (RAS)."""
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetDimensions(400, 300, 1)
    slice_node.SetFieldOfView(*field_of_view, 1.0)
    slice_node.SetOrientation("Axial")
    slice_node.JumpSliceByCentering(*centre)
    return slice_node


class SliceWidget:
    """Stand-in for qMRMLSliceWidget: what an effect's processInteractionEvents reads of it."""

    def __init__(self, slice_node):
        self.slice_node = slice_node

    def className(self):
        return "qMRMLSliceWidget"

    def sliceLogic(self):
        return types.SimpleNamespace(GetSliceNode=lambda: self.slice_node)


def slice_view_events(effect, slice_node):
    """``event(eventId, x, y, ctrl, shift, key)``: a recorded VTK interactor event in the view of
    ``slice_node``, handed to ``effect.processInteractionEvents`` as Slicer does; its return value."""
    view, interactor = SliceWidget(slice_node), vtk.vtkGenericRenderWindowInteractor()

    def event(eventId, x=0, y=0, ctrl=0, shift=0, key=None):
        interactor.SetEventInformation(x, y, ctrl, shift, "\0" if key is None else key[0], 0, key)
        return effect.processInteractionEvents(interactor, eventId, view)

    return event
