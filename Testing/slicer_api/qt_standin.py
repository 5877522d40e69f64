"""TEST STAND-IN for Slicer's ``qt`` module (PythonQt) -- not Qt.

Each class allows exactly the attributes that both qt_listing.json (Qt 6) and qt5_listing.json
(Qt 5.15, what Slicer 5.10 ships) list for it (generated from the real Qt API by
generate_qt_listing.py): using anything else raises AttributeError, as it would in
Slicer. Listed properties keep what is set; a few widgets keep the state the effects read back
(combo box items, check state, timer activity); other listed methods accept any arguments and do
nothing. No drawing, no events: it checks that the code speaks Qt's API, not that Qt behaves.
"""

import inspect
import json
import pathlib
import types

LISTING = json.loads((pathlib.Path(__file__).with_name("qt_listing.json")).read_text(encoding="utf-8"))
# Slicer 5.10 ships Qt 5.15, later Slicers Qt 5.15 or 6: a member is allowed when both have it.
QT5_LISTING = json.loads((pathlib.Path(__file__).with_name("qt5_listing.json")).read_text(encoding="utf-8"))


def qt_members(class_name):
    """The members of Qt class ``class_name`` that Qt 6 and Qt 5.15 both have."""
    return set(LISTING["classes"][class_name]) & set(QT5_LISTING["classes"][class_name])


def listed_members(listing, class_name):
    """What Python reaches on a class of another listing (CTK's, Slicer's widgets): its listed
    members and its listed bases', down to the first Qt class, whose members are `qt_members`."""
    names = set()
    while class_name in listing["classes"]:
        names |= set(listing["classes"][class_name]["attributes"])
        class_name = listing["classes"][class_name]["base"]
    return names | qt_members(class_name)


# PythonQt's additions to every wrapped QObject (connect/disconnect a signal by its signature,
# the C++ class name), on top of Qt's own API.
# ``name``: the object's objectName, which Slicer's own slicer.util.findChildren / childWidgetVariables read.
PYTHONQT_EXTRAS = {"connect", "disconnect", "className", "name"}
# What an unset property reads as (the C++ default of these properties).
PROPERTY_DEFAULTS = {"active": False, "enabled": True, "checked": False, "value": 0, "text": "", "toolTip": "", "wordWrap": False,
                     "textVisible": True, "visible": True}


class StandIn:
    QT_CLASS = ""

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_state", {})
        object.__setattr__(self, "_connections", [])

    @classmethod
    def _allowed(cls):
        return qt_members(cls.QT_CLASS) | PYTHONQT_EXTRAS

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._allowed():
            raise AttributeError(f"qt.{self.QT_CLASS} has no attribute {name!r} (not in Qt's API)")
        if name in self._state:
            return self._state[name]
        if name in PROPERTY_DEFAULTS:
            return PROPERTY_DEFAULTS[name]
        return lambda *args, **kwargs: None

    def __setattr__(self, name, value):
        if name not in self._allowed():
            raise AttributeError(f"qt.{self.QT_CLASS} has no property {name!r} (not in Qt's API)")
        self._state[name] = value

    def connect(self, signal, slot):
        self._connections.append((signal, slot))

    def disconnect(self, signal, slot):
        self._connections.remove((signal, slot))  # PythonQt raises if it was not connected

    def emit(self, signal, *args):
        """Test helper (not Qt): call the slots connected to ``signal`` (none while signals are blocked)."""
        if self._state.get("_signalsBlocked"):
            return
        for connected, slot in list(self._connections):
            if connected == signal:
                slot(*args[:_accepted(slot, len(args))])

    def blockSignals(self, block):
        """QObject::blockSignals: returns the previous state."""
        previous = self._state.get("_signalsBlocked", False)
        self._state["_signalsBlocked"] = block
        return previous


def _accepted(slot, offered):
    """How many of a signal's arguments PythonQt passes: no more than the Python slot takes
    (PythonQtSignalReceiver: a slot(self) connected to clicked(bool) is called without the bool)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return offered
    return min(offered, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class QComboBox(StandIn):
    QT_CLASS = "QComboBox"

    def __init__(self, *args):
        StandIn.__init__(self)
        object.__setattr__(self, "_items", [])  # [text, data, {role: value}]
        object.__setattr__(self, "_index", -1)

    def addItem(self, text, data=None):
        self._items.append([text, data, {}])
        if self._index < 0:
            object.__setattr__(self, "_index", 0)

    def clear(self):
        self._items.clear()
        object.__setattr__(self, "_index", -1)

    def findText(self, text):
        return next((i for i, item in enumerate(self._items) if item[0] == text), -1)

    def findData(self, data):
        return next((i for i, item in enumerate(self._items) if item[1] == data), -1)

    def itemData(self, index, role=None):
        return self._items[index][1] if role is None else self._items[index][2].get(role)

    def setItemData(self, index, value, role):
        self._items[index][2][role] = value

    def __getattr__(self, name):
        if name == "count":
            return len(self._items)
        if name == "currentIndex":
            return self._index
        if name == "currentText":
            return self._items[self._index][0] if self._index >= 0 else ""
        if name == "currentData":
            return self._items[self._index][1] if self._index >= 0 else None
        return StandIn.__getattr__(self, name)

    def __setattr__(self, name, value):
        if name == "currentText":  # QComboBox::setCurrentText selects the item with that text
            index = self.findText(value)
            if index >= 0:
                self.currentIndex = index
            return
        if name == "currentIndex":
            changed = value != self._index
            object.__setattr__(self, "_index", value)
            if changed:
                self.emit("currentIndexChanged(int)", value)
            return
        StandIn.__setattr__(self, name, value)


class QTimer(StandIn):
    QT_CLASS = "QTimer"

    def start(self, *args):
        self._state["active"] = True

    def stop(self):
        self._state["active"] = False

    def isActive(self):
        return self._state.get("active", False)


def _simple(name):
    return type(name, (StandIn,), {"QT_CLASS": name})


def qt_module():
    """A fresh stand-in ``qt`` module."""
    module = types.ModuleType("qt")
    module.__doc__ = __doc__
    special = {"QComboBox": QComboBox, "QTimer": QTimer}
    for name in LISTING["classes"]:
        if name == "Qt":
            continue
        cls = special.get(name) or _simple(name)
        for member in qt_members(name):  # enum values as class attributes (qt.QAbstractItemView.SelectRows)
            if member[:1].isupper() and not hasattr(cls, member):
                setattr(cls, member, member)
        setattr(module, name, cls)
    module.Qt = types.SimpleNamespace(**{member: member for member in qt_members("Qt") if member[:1].isupper()})
    return module
