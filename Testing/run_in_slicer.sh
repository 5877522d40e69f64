#!/usr/bin/env bash
# Run MemSeg's self-tests (MemSegTest, SegmentEditorMemSegTest) inside a real 3D Slicer, the way
# the ctest entries that slicer_add_python_unittest registers run them (Slicer's
# CMake/SlicerMacroPythonTesting.cmake): the launcher with --testing, our modules on the
# additional module paths, and slicer.testing.runUnitTest(<folders>, <module name>).
#
# This is the real check of what CI can only replay (Testing/test_slicer_loader.py uses
# stand-ins for Qt and Slicer's GUI classes). Needs Slicer 5.10 or later with MemSeg's Python
# packages installed (MemSeg module > Settings > Check / install Python packages) and network
# access for Slicer's sample data. The effect's test clicks in the Red slice view, so Slicer
# runs with its main window (no --no-main-window); it closes itself when the tests end.
#
#   Testing/run_in_slicer.sh /path/to/Slicer [MemSeg|SegmentEditorMemSeg ...]
#
# Exit status: 0 when every test passed.
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1" ]]; then
  echo "usage: $0 /path/to/Slicer [test module ...]  (Slicer: the launcher of Slicer 5.10 or later)" >&2
  exit 2
fi
slicer="$1"
shift
modules=("$@")
if [[ ${#modules[@]} -eq 0 ]]; then
  modules=(MemSeg SegmentEditorMemSeg)
fi

extension="$(cd "$(dirname "${BASH_SOURCE[0]}")/../MemSegExtension" && pwd)"
status=0
for module in "${modules[@]}"; do
  echo "=== ${module} in $("${slicer}" --version 2>/dev/null || echo Slicer)"
  if ! "${slicer}" --no-splash --testing --additional-module-paths "${extension}" \
      --python-code "import slicer.testing; slicer.testing.runUnitTest(['${extension}'], '${module}')"; then
    echo "=== ${module}: FAILED" >&2
    status=1
  fi
done
exit "${status}"
