# ============================================================================
#  TEST STAND-IN -- THIS IS NOT 3D SLICER.
#  Stand-in for ${Slicer_EXTENSION_GENERATE_CONFIG}: checks that the extension
#  declared its metadata (the real file turns it into <Extension>Config.cmake),
#  then writes a summary the tests can read.
# ============================================================================

include("${CMAKE_CURRENT_LIST_DIR}/SlicerStubCheckExtensionMetadata.cmake")
slicer_stub_check_extension_metadata("Slicer_EXTENSION_GENERATE_CONFIG")

get_property(_stub_unittests GLOBAL PROPERTY SLICER_STUB_PYTHON_UNITTESTS)
get_property(_stub_modules GLOBAL PROPERTY SLICER_STUB_SCRIPTED_MODULES)
set(_stub_summary "${CMAKE_BINARY_DIR}/SlicerStubSummary.txt")
file(WRITE "${_stub_summary}" "# Written by the Slicer TEST STAND-IN (Testing/SlicerStub), not by Slicer.\n")
file(APPEND "${_stub_summary}" "extension ${EXTENSION_NAME}\n")
file(APPEND "${_stub_summary}" "scripted_modules ${_stub_modules}\n")
file(APPEND "${_stub_summary}" "python_unittests ${_stub_unittests}\n")
file(APPEND "${_stub_summary}" "qt_scripted_modules_dir ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}\n")
