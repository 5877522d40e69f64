"""Writes slicer_widgets_listing.json: what Python can reach on the Slicer widget classes MemSeg's
module calls, read from their C++ headers in a Slicer source checkout under PythonQt's rule (a
member is reachable when it is a Q_PROPERTY, a signal, a public slot or Q_INVOKABLE; enum values
too). Each class records the header it was read from and the commit; base classes are followed
while their headers are in the checkout (Qt's own come from qt_listing.json).

    git clone https://github.com/Slicer/Slicer /tmp/Slicer
    python Testing/slicer_api/generate_slicer_listing.py /tmp/Slicer
"""
# Reads headers with regular expressions, so check the listing by eye after a regeneration.

import json
import pathlib
import re
import subprocess
import sys

HEADERS = {
    "qMRMLSegmentEditorWidget": "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h",
    "qMRMLNodeComboBox": "Libs/MRML/Widgets/qMRMLNodeComboBox.h",
    "qSlicerMarkupsPlaceWidget": "Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.h",
    "qMRMLWidget": "Libs/MRML/Widgets/qMRMLWidget.h",
    "qSlicerWidget": "Base/QTGUI/qSlicerWidget.h",
}
OUTPUT = pathlib.Path(__file__).with_name("slicer_widgets_listing.json")
ACCESS = re.compile(r"^\s*(public|protected|private)\s*(slots|Q_SLOTS)?\s*:|^\s*(signals|Q_SIGNALS)\s*:")
METHOD = re.compile(r"(\w+)\s*\(")


def members(text, class_name):
    start = re.search(r"class\s+\w*\s*" + class_name + r"\s*:\s*public\s+(\w+)", text)
    base = start.group(1) if start else None
    names = set(re.findall(r"Q_PROPERTY\(\s*[\w:<>*]+\s*\**\s*(\w+)", text))
    section = None
    depth = 0
    for line in text[start.end() if start else 0:].splitlines():
        code = line.split("//", 1)[0]
        match = ACCESS.match(code)
        if match and depth <= 1:
            slots = " slots" if match.group(2) else ""  # `public slots:` and `public Q_SLOTS:` alike
            section = "signals" if match.group(3) else match.group(1) + slots
            continue
        if "Q_INVOKABLE" in code or (section in ("public slots", "signals") and depth <= 1):
            found = METHOD.search(code.replace("Q_INVOKABLE", ""))
            if found and found.group(1) not in ("Q_DECLARE_PRIVATE", "Q_DISABLE_COPY", "Q_ENUM", "Q_ENUMS", "Q_OBJECT"):
                names.add(found.group(1))
        if re.match(r"^\s*enum\s+\w+", code) or section is not None:
            for block in re.findall(r"enum\s+\w+\s*\{([^}]*)\}", code):
                names |= {item.split("=")[0].strip() for item in block.split(",") if item.strip()}
        depth += code.count("{") - code.count("}")
    for block in re.findall(r"enum\s+\w+\s*\{([^}]*)\}", text, flags=re.S):  # enum values (PythonQt)
        names |= {re.sub(r"//.*", "", item).split("=")[0].strip() for item in block.split(",")} - {""}
    return sorted(n for n in names if n.isidentifier()), base


def read_classes(checkout, headers, commit=None):
    """(commit, {class: header, base, attributes}) of ``headers`` in a checkout (or an exported
    tree at ``commit``)."""
    checkout = pathlib.Path(checkout)
    commit = commit or subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
    classes = {}
    for name, header in headers.items():
        names, base = members((checkout / header).read_text(encoding="utf-8"), name)
        classes[name] = {"header": header, "base": base, "attributes": names}
    return commit, classes


def main(checkout, commit=None):
    commit, classes = read_classes(checkout, HEADERS, commit)
    listing = {"source": f"Slicer/Slicer@{commit}", "rule": "Q_PROPERTY, signals, public slots, Q_INVOKABLE, enum values",
               "classes": classes}
    OUTPUT.write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])  # checkout [commit, when the headers are an exported tree]
