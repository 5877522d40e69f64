"""Writes ctk_listing.json: what Python can reach on the CTK widget classes MemSeg uses, read from
their C++ headers in a CTK source tree under PythonQt's rule (a member is reachable when it is a
Q_PROPERTY, a signal, a public slot or Q_INVOKABLE; enum values too), with the same header reader
as generate_slicer_listing.py. CTK's PythonQt wrapping of these classes is "light" (constructors
only) and its decorators (Libs/Widgets/ctkWidgetsPythonQtDecorators.h) add members to none of
them, so the headers are the whole API. Each class records its header and base class; a Qt base
class's members come from the Qt listings.

Use the CTK commit Slicer pins (Slicer_CTK_GIT_TAG in Slicer's SuperBuild/External_CTK.cmake):

    git clone https://github.com/commontk/CTK /tmp/CTK && git -C /tmp/CTK checkout <that commit>
    python Testing/slicer_api/generate_ctk_listing.py /tmp/CTK
"""
# Reads headers with regular expressions, so check the listing by eye after a regeneration.

import json
import pathlib
import sys

from generate_slicer_listing import read_classes

# The CTK classes MemSeg's Slicer files use (ctk.<Name>); add one here when the code starts to use
# it, then re-run.
HEADERS = {
    "ctkCollapsibleButton": "Libs/Widgets/ctkCollapsibleButton.h",
    "ctkPathLineEdit": "Libs/Widgets/ctkPathLineEdit.h",
    "ctkSliderWidget": "Libs/Widgets/ctkSliderWidget.h",
}
OUTPUT = pathlib.Path(__file__).with_name("ctk_listing.json")


def main(checkout, commit=None, pinned_by=None):
    commit, classes = read_classes(checkout, HEADERS, commit)
    listing = {"source": f"commontk/CTK@{commit}", "pinned_by": pinned_by or "",
               "rule": "Q_PROPERTY, signals, public slots, Q_INVOKABLE, enum values", "classes": classes}
    OUTPUT.write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:4])  # checkout [commit, when the headers are an exported tree] [who pins it]
