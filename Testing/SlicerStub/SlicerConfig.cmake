# ============================================================================
#  TEST STAND-IN -- THIS IS NOT 3D SLICER.
#
#  A tiny replacement for the SlicerConfig.cmake of a Slicer build tree, so
#  that MemSeg's CMake files can be configured and "built" in CI without
#  building Slicer (hours, GBs).  Use it only as
#
#    cmake -S <repo> -B <build> -DSlicer_DIR=<repo>/Testing/SlicerStub
#
#  It provides just what a pure-Python extension touches: the variables
#  Slicer_USE_FILE, Slicer_EXTENSION_GENERATE_CONFIG, Slicer_EXTENSION_CPACK,
#  the qt-scripted-modules directory layout, and (via UseSlicer.cmake) the
#  macros slicerMacroBuildScriptedModule, ctkMacroCompilePythonScript and
#  slicer_add_python_unittest, with the same argument signatures as the real
#  ones (Slicer CMake/SlicerMacroBuildScriptedModule.cmake,
#  CTK CMake/ctkMacroCompilePythonScript.cmake,
#  Slicer CMake/SlicerMacroPythonTesting.cmake) but stricter checks.
#  Nothing here is copied from Slicer or CTK.
# ============================================================================

set(SlicerConfig_INCLUDED_ONCE TRUE)
set(Slicer_STUB TRUE)

# Version of the Slicer release the extension is built against (paths, and
# the extension's minimum-version check); -DSlicer_STUB_VERSION_MINOR=8 plays
# an older Slicer (find_package itself presets Slicer_VERSION_MINOR).
if(NOT DEFINED Slicer_STUB_VERSION_MINOR)
  set(Slicer_STUB_VERSION_MINOR 10)
endif()
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR ${Slicer_STUB_VERSION_MINOR})
set(Slicer_VERSION_PATCH 0)
set(Slicer_VERSION "${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}.${Slicer_VERSION_PATCH}")
set(Slicer_MAIN_PROJECT_APPLICATION_NAME Slicer)

# Layout of a Slicer (extension) build tree, relative to CMAKE_BINARY_DIR
# (build) or to the install prefix (install).
set(Slicer_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")
set(Slicer_QTSCRIPTEDMODULES_SUBDIR "qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")
set(Slicer_INSTALL_ROOT "./")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_INSTALL_ROOT}${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

set(Slicer_USE_PYTHONQT ON)
set(Slicer_BUILD_CLI_SUPPORT OFF)

# The real Slicer exports the interpreter of its own Python; the stand-in uses
# whatever Python the caller passes (-DPython3_EXECUTABLE=...) or finds one.
if(NOT Python3_EXECUTABLE)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
endif()
set(PYTHON_EXECUTABLE "${Python3_EXECUTABLE}")

set(Slicer_STUB_DIR "${CMAKE_CURRENT_LIST_DIR}")
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")

message(STATUS "Using Slicer TEST STAND-IN at ${CMAKE_CURRENT_LIST_DIR} (not a Slicer build tree)")
