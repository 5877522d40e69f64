# ============================================================================
#  TEST STAND-IN -- THIS IS NOT 3D SLICER.
#  Stand-in for ${Slicer_EXTENSION_CPACK}: checks the extension metadata again
#  (the real file packages the extension and writes its description file) and
#  writes <Extension>.s4ext-style "key value" lines into the build tree.
# ============================================================================

include("${CMAKE_CURRENT_LIST_DIR}/SlicerStubCheckExtensionMetadata.cmake")
slicer_stub_check_extension_metadata("Slicer_EXTENSION_CPACK")

set(_stub_desc "${CMAKE_BINARY_DIR}/${EXTENSION_NAME}.s4ext")
file(WRITE "${_stub_desc}" "# Written by the Slicer TEST STAND-IN (Testing/SlicerStub), not by Slicer.\n")
foreach(_key HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  string(TOLOWER "${_key}" _lower)
  string(REPLACE ";" " " _value "${EXTENSION_${_key}}")
  string(REPLACE "\n" " " _value "${_value}")
  file(APPEND "${_stub_desc}" "${_lower} ${_value}\n")
endforeach()
