"""Writes qt_listing.json: the attributes Python code can reach on the Qt classes MemSeg's Slicer
layer uses, read from the real Qt API through PySide6 (Qt 6). Slicer's official builds use Qt 5.15 up to
5.10 and Qt 5.15 or 6.8 from 5.12 on (Slicer's CMakeLists.txt, Slicer_REQUIRED_QT_VERSION): this
listing does not show members Qt 6 added or removed (PySide2, Qt 5.15's, has no wheel for
Python 3.11+), so keep to API both have.

Slicer exposes Qt to Python through PythonQt, whose rule is: a class's methods, public slots,
signals, Q_INVOKABLE methods, enums, and its Q_PROPERTYs as plain attributes (``button.enabled``).
PySide6 gives the methods, slots, signals and enums through ``dir()``; the properties come from
the class's QMetaObject. The result is a superset of what PythonQt offers only where PySide6 adds
Python-only helpers (none of which MemSeg uses), so an attribute missing from the listing does not
exist in Slicer's Python either. Committed: the listing, not PySide6.

    python -m pip install --target /tmp/pyside PySide6-Essentials
    PYTHONPATH=/tmp/pyside python Testing/slicer_api/generate_qt_listing.py
"""

import enum
import json
import pathlib
import sys

from PySide6 import QtCore, QtGui, QtWidgets

# The Qt classes MemSeg's module and effects use (qt.<Name> in Slicer); add one here when the
# code starts to use it, then re-run.
CLASSES = (
    "QAbstractButton", "QAbstractItemView", "QCheckBox", "QComboBox", "QFormLayout", "QHBoxLayout", "QIcon", "QLabel", "QLineEdit",
    "QProgressBar", "QPushButton", "QSettings", "QSpinBox", "QTableWidget", "QTableWidgetItem",
    "QTimer", "QVBoxLayout", "QWidget", "Qt",
)
OUTPUT = pathlib.Path(__file__).with_name("qt_listing.json")


def qt_class(name):
    for module in (QtWidgets, QtGui, QtCore):
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


def main():
    listing = {
        "source": f"PySide6 {__import__('PySide6').__version__} (Qt {QtCore.qVersion()})",
        "rule": "methods, slots, signals, enums with their values, and Q_PROPERTYs (as attributes) of each class, with its bases'",
        "classes": {name: attributes(qt_class(name)) for name in CLASSES},
    }
    OUTPUT.write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(CLASSES)} classes)", file=sys.stderr)


if __name__ == "__main__":
    main()
