"""Writes the listings of the attributes Python code can reach on the Qt classes MemSeg's Slicer
layer uses, read from the real Qt API through a Python binding of Qt:
qt_listing.json from PySide6 (Qt 6), qt5_listing.json from PyQt5 (Qt 5.15). Slicer 5.10's official
builds use Qt 5.15 (its CMakeLists.txt: Slicer_REQUIRED_QT_VERSION 5.15, 5.12 on Linux; CTK is
built with CTK_QT_VERSION 5), later ones Qt 5.15 or 6: the API-checked stand-in allows only what
both listings have. PySide2 (Qt 5.15's PySide) has no wheel for Python 3.11+ (5.15.2.1 requires
Python < 3.11), hence PyQt5, which has.

Slicer exposes Qt to Python through PythonQt, whose rule is: a class's methods, public slots,
signals, Q_INVOKABLE methods, enums, and its Q_PROPERTYs as plain attributes (``button.enabled``).
The bindings give the methods, slots, signals and enums through ``dir()``; the properties come from
the class's QMetaObject. The result is a superset of what PythonQt offers only where a binding adds
Python-only helpers (none of which MemSeg uses), so an attribute missing from a listing does not
exist in Slicer's Python either. Committed: the listings, not the bindings.

    python -m pip install --target /tmp/pyside PySide6-Essentials
    PYTHONPATH=/tmp/pyside python Testing/slicer_api/generate_qt_listing.py
    python -m pip install --target /tmp/pyqt5 "PyQt5==5.15.*"
    PYTHONPATH=/tmp/pyqt5 QT_QPA_PLATFORM=offscreen python Testing/slicer_api/generate_qt_listing.py PyQt5
"""

import enum
import importlib
import json
import pathlib
import sys

# The Qt classes MemSeg's module and effects use (qt.<Name> in Slicer); add one here when the
# code starts to use it, then re-run.
CLASSES = (
    "QAbstractButton", "QAbstractItemView", "QCheckBox", "QComboBox", "QFormLayout", "QHBoxLayout", "QIcon", "QLabel", "QLineEdit",
    "QProgressBar", "QPushButton", "QSettings", "QSpinBox", "QTableWidget", "QTableWidgetItem",
    "QTimer", "QVBoxLayout", "QWidget", "Qt",
)
OUTPUTS = {"PySide6": "qt_listing.json", "PyQt5": "qt5_listing.json"}


def qt_class(modules, name):
    for module in modules:
        if hasattr(module, name):
            return getattr(module, name)
    raise SystemExit(f"{name} is not a Qt class")


def attributes(cls):
    names = {name for name in dir(cls) if not name.startswith("_")}
    for name in list(names):  # PythonQt puts enum values in the class too (qt.Qt.ToolTipRole)
        value = getattr(cls, name, None)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            names |= set(value.__members__)
    meta = getattr(cls, "staticMetaObject", None)
    if meta is not None:
        names |= {meta.property(index).name() for index in range(meta.propertyCount())}
    return sorted(names)


def main(binding="PySide6"):
    modules = [importlib.import_module(f"{binding}.{name}") for name in ("QtWidgets", "QtGui", "QtCore")]
    version = getattr(importlib.import_module(binding), "__version__", None) or modules[2].PYQT_VERSION_STR
    listing = {
        "source": f"{binding} {version} (Qt {modules[2].qVersion()})",
        "qt": modules[2].qVersion(),
        "rule": "methods, slots, signals, enums with their values, and Q_PROPERTYs (as attributes) of each class, with its bases'",
        "classes": {name: attributes(qt_class(modules, name)) for name in CLASSES},
    }
    output = pathlib.Path(__file__).with_name(OUTPUTS[binding])
    output.write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {output} ({len(CLASSES)} classes)", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:2])  # PySide6 (default) or PyQt5
