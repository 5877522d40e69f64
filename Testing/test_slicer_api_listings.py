"""What MemSeg's Slicer files use of Qt and CTK exists in the real classes: every member reached
on a `qt.<Class>` or `ctk.<Class>` object (or on the class, for enum values) is in that class's
API listing in Testing/slicer_api (Qt from Qt 6 *and* Qt 5.15, which Slicer 5.10 ships; CTK from the
headers of the commit Slicer 5.10 builds). Read statically from the source, so it also covers
code paths the harness does not drive; the harness (test_slicer_loader.py,
test_slicer_memsam_effect.py) checks the same listings at run time through the stand-ins."""

from __future__ import annotations

import ast
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SLICER_API = REPO / "Testing" / "slicer_api"
sys.path.insert(0, str(SLICER_API))

import ctk_standin  # noqa: E402
import qt_standin  # noqa: E402


def _allowed(module, class_name):
    if module == "qt":
        return qt_standin.qt_members(class_name) | qt_standin.PYTHONQT_EXTRAS
    return ctk_standin.members(class_name) | qt_standin.PYTHONQT_EXTRAS


def _toolkit_class(node):
    """("qt" | "ctk", class name) when ``node`` is `qt.X` / `ctk.X`, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("qt", "ctk"):
        return node.value.id, node.attr
    return None


def _key(node):
    """A variable `name` or `self.name`, as a comparable key."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return "self." + node.attr
    return None


def uses(tree):
    """(module, class, member, line) for each member reached on a Qt/CTK object or class: objects
    are variables assigned `qt.X(...)` / `ctk.X(...)` (plain names within one function, `self.`
    attributes within one class)."""
    found = []
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.ClassDef, ast.FunctionDef)):
            continue
        typed = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                kind = _toolkit_class(node.value.func)
                for target in node.targets if kind else ():
                    key = _key(target)
                    if key and (key.startswith("self.") == isinstance(scope, ast.ClassDef)):
                        typed[key] = kind
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            kind = _toolkit_class(node.value)
            if kind is not None:  # qt.QPushButton.Member (enum values)
                found.append((*kind, node.attr, node.lineno))
            elif _key(node.value) in typed:
                found.append((*typed[_key(node.value)], node.attr, node.lineno))
    return found


def _extension_uses():
    return {(path.name, *use) for path in (REPO / "MemSegExtension").rglob("*.py")
            for use in uses(ast.parse(path.read_text(encoding="utf-8")))}


def test_every_qt_and_ctk_member_the_extension_uses_exists_in_qt5_qt6_and_ctk():
    used = _extension_uses()
    assert {("SegmentEditorMemSAMEffect.py", "ctk", "ctkPathLineEdit", "currentPath")} <= \
        {use[:4] for use in used}  # the reader finds what it must check
    missing = sorted(use for use in used if use[3] not in _allowed(use[1], use[2]))
    assert not missing, "not in the real API (file, module, class, member, line): " + repr(missing)


def test_the_check_catches_a_member_the_real_class_lacks():
    """PySide-only helpers, Qt 6-only API and members of a CTK class's siblings all fail."""
    code = """
class Effect:
    def setup(self):
        self.path = ctk.ctkPathLineEdit()
        self.path.setFilters(1)          # a property setter, not a slot: not reachable in PythonQt
        label = qt.QLabel()
        label.accessibleIdentifier = ""  # Qt 6.9+ only
        slider = ctk.ctkSliderWidget()
        slider.setValue(1.0)             # a public slot: fine
"""
    bad = [use for use in uses(ast.parse(code)) if use[2] not in _allowed(use[0], use[1])]
    assert [use[2] for use in bad] == ["setFilters", "accessibleIdentifier"]


def test_listings_say_where_they_come_from():
    qt6 = json.loads((SLICER_API / "qt_listing.json").read_text(encoding="utf-8"))
    qt5 = json.loads((SLICER_API / "qt5_listing.json").read_text(encoding="utf-8"))
    ctk = json.loads((SLICER_API / "ctk_listing.json").read_text(encoding="utf-8"))
    assert qt6["qt"].startswith("6.") and qt5["qt"].startswith("5.15.")
    assert set(qt6["classes"]) == set(qt5["classes"])
    assert ctk["source"] == "commontk/CTK@dd4caeae7e979cf441e44ee85d3b0780120d113d"  # Slicer 5.10's pin
    assert "External_CTK.cmake" in ctk["pinned_by"]
    used = {use[2] for use in _extension_uses() if use[1] == "ctk"}
    assert used and used <= set(ctk["classes"]), used - set(ctk["classes"])
