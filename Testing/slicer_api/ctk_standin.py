"""TEST STAND-IN for Slicer's ``ctk`` module (CTK's widgets through PythonQt) -- not CTK.

Each class allows exactly what ctk_listing.json lists for it (read from the headers of the CTK
commit Slicer 5.10 builds, by generate_ctk_listing.py) plus what its Qt base class has in both Qt
listings (see qt_standin): using anything else raises AttributeError, as it would in Slicer.
Properties keep what is set; enum values are class attributes (``ctk.ctkPathLineEdit.Dirs``).
"""

import json
import pathlib
import types

import qt_standin

LISTING = json.loads((pathlib.Path(__file__).with_name("ctk_listing.json")).read_text(encoding="utf-8"))
# What an unset property reads as (the C++ default of these properties).
PROPERTY_DEFAULTS = {"currentPath": "", "collapsed": False}


def members(class_name):
    """Everything Python reaches on CTK class ``class_name``: its own listed members, its CTK
    bases', and its Qt base class's."""
    return qt_standin.listed_members(LISTING, class_name)


class CtkStandIn(qt_standin.StandIn):
    CTK_CLASS = ""

    @classmethod
    def _allowed(cls):
        return members(cls.CTK_CLASS) | qt_standin.PYTHONQT_EXTRAS

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._allowed():
            raise AttributeError(f"ctk.{self.CTK_CLASS} has no attribute {name!r} (not in CTK's or Qt's API)")
        if name not in self._state and name in PROPERTY_DEFAULTS:
            return PROPERTY_DEFAULTS[name]
        return qt_standin.StandIn.__getattr__(self, name)

    def __setattr__(self, name, value):
        if name not in self._allowed():
            raise AttributeError(f"ctk.{self.CTK_CLASS} has no property {name!r} (not in CTK's or Qt's API)")
        self._state[name] = value


def _stand_in_class(name):
    cls = type(name, (CtkStandIn,), {"CTK_CLASS": name})
    for member in members(name):  # enum values as class attributes
        if member[:1].isupper():
            setattr(cls, member, member)
    return cls


CLASSES = {name: _stand_in_class(name) for name in LISTING["classes"]}


def ctk_module():
    """A fresh stand-in ``ctk`` module."""
    module = types.ModuleType("ctk")
    module.__doc__ = __doc__
    for name, cls in CLASSES.items():
        setattr(module, name, cls)
    return module
