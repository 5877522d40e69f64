# ============================================================================
#  TEST STAND-IN -- THIS IS NOT 3D SLICER.
#
#  Stand-in for the UseSlicer.cmake of a Slicer build tree (see
#  SlicerConfig.cmake next to this file).  It defines, with the argument
#  signatures of the real macros, only what a pure-Python extension calls:
#
#    slicerMacroBuildScriptedModule(NAME <n> SCRIPTS ... RESOURCES ...
#                                   [WITH_GENERIC_TESTS] [WITH_SUBDIR] [VERBOSE])
#        real: Slicer CMake/SlicerMacroBuildScriptedModule.cmake
#    ctkMacroCompilePythonScript(TARGET_NAME <t> SCRIPTS ... [RESOURCES ...]
#                                [SOURCE_DIR <d>] DESTINATION_DIR <d> INSTALL_DIR <d>
#                                [NO_INSTALL_SUBDIR] [GLOBAL_TARGET])
#        real: CTK CMake/ctkMacroCompilePythonScript.cmake
#    slicer_add_python_unittest(SCRIPT <file.py> [SLICER_ARGS ...] [TESTNAME_PREFIX <p>])
#        real: Slicer CMake/SlicerMacroPythonTesting.cmake
#
#  Semantics kept from the real macros: SCRIPTS/RESOURCES are relative to
#  SOURCE_DIR (default CMAKE_CURRENT_SOURCE_DIR) and keep their relative path
#  under DESTINATION_DIR; ".py" is appended to a script without extension;
#  files are copied at build time; scripts are byte-compiled after the copy;
#  DESTINATION_DIR is installed to INSTALL_DIR (its content only with
#  NO_INSTALL_SUBDIR); the copy / compile targets have the real names
#  Copy<T>PythonScriptFiles, Copy<T>PythonResourceFiles, Compile<T>PythonFiles.
#
#  Stricter than the real thing, on purpose (these are the bugs CI should catch):
#    * a listed SCRIPT or RESOURCE that does not exist is a FATAL_ERROR at
#      configure time (the real CTK macro only fails later, when copying);
#    * byte-compilation runs `${Python3_EXECUTABLE} -m py_compile` per file and
#      a syntax error FAILS the build (the real compile step only logs it);
#    * paths that would land outside DESTINATION_DIR, unknown keywords and a
#      TARGET_NAME used twice are FATAL_ERRORs;
#    * slicer_add_python_unittest does not add a ctest (there is no Slicer to
#      run it); it checks the script exists and records the test name.
#
#  Nothing in this file is copied from Slicer or CTK.
# ============================================================================

if(Slicer_STUB_USE_FILE_INCLUDED)
  return()
endif()
set(Slicer_STUB_USE_FILE_INCLUDED TRUE)

if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME "${PROJECT_NAME}")
endif()

if(NOT DEFINED BUILD_TESTING)
  option(BUILD_TESTING "Build (here: register) the extension's tests" ON)
endif()

if(NOT Python3_EXECUTABLE)
  message(FATAL_ERROR "Slicer stand-in: Python3_EXECUTABLE is not set (find_package(Slicer) first).")
endif()

set_property(GLOBAL PROPERTY SLICER_STUB_PYTHON_UNITTESTS "")
set_property(GLOBAL PROPERTY SLICER_STUB_SCRIPTED_MODULES "")
set_property(GLOBAL PROPERTY SLICER_STUB_PYTHON_TARGETS "")

# ----------------------------------------------------------------------------
# Internal: "<relative>" path of <file> under the destination; FATAL_ERROR if it
# would escape the destination directory.
function(_slicer_stub_check_relative caller kind file relpath)
  if(IS_ABSOLUTE "${relpath}" OR relpath MATCHES "^\\.\\./" OR relpath STREQUAL "..")
    message(FATAL_ERROR
      "${caller}(${kind}) '${file}' would be copied to '${relpath}', outside "
      "DESTINATION_DIR; give it relative to SOURCE_DIR instead.")
  endif()
endfunction()

# ----------------------------------------------------------------------------
function(ctkMacroCompilePythonScript)
  set(options NO_INSTALL_SUBDIR GLOBAL_TARGET)
  set(oneValueArgs TARGET_NAME SOURCE_DIR DESTINATION_DIR INSTALL_DIR)
  set(multiValueArgs SCRIPTS RESOURCES)
  cmake_parse_arguments(MY "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})

  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  foreach(varname TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${varname} OR "${MY_${varname}}" STREQUAL "")
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${varname} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  get_filename_component(MY_SOURCE_DIR "${MY_SOURCE_DIR}" REALPATH)
  get_filename_component(MY_DESTINATION_DIR "${MY_DESTINATION_DIR}" ABSOLUTE)

  set(target "${MY_TARGET_NAME}")
  if(TARGET Copy${target}PythonScriptFiles OR TARGET Compile${target}PythonFiles)
    message(FATAL_ERROR
      "ctkMacroCompilePythonScript: TARGET_NAME '${target}' used twice; the real "
      "macro would silently drop the second call's files.")
  endif()

  set(copied_scripts)
  set(compile_stamps)
  set(stamp_dir "${CMAKE_CURRENT_BINARY_DIR}/SlicerStubPyCompile/${target}")
  foreach(file IN LISTS MY_SCRIPTS)
    get_filename_component(file_ext "${file}" EXT)
    if(NOT "${file_ext}" MATCHES "py")
      set(file "${file}.py")
    endif()
    if(IS_ABSOLUTE "${file}")
      set(src "${file}")
      file(RELATIVE_PATH tgt_file "${CMAKE_CURRENT_BINARY_DIR}" "${file}")
    else()
      set(src "${MY_SOURCE_DIR}/${file}")
      set(tgt_file "${file}")
    endif()
    _slicer_stub_check_relative(ctkMacroCompilePythonScript SCRIPTS "${file}" "${tgt_file}")
    get_source_file_property(is_generated "${src}" GENERATED)
    if(NOT EXISTS "${src}" AND NOT is_generated)
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${target}) given nonexistent script '${src}'")
    endif()
    set(tgt "${MY_DESTINATION_DIR}/${tgt_file}")
    get_filename_component(tgt_dir "${tgt}" DIRECTORY)
    add_custom_command(
      OUTPUT "${tgt}"
      COMMAND "${CMAKE_COMMAND}" -E make_directory "${tgt_dir}"
      COMMAND "${CMAKE_COMMAND}" -E copy "${src}" "${tgt}"
      DEPENDS "${src}"
      COMMENT "Copying python script: ${tgt_file}"
      VERBATIM)
    list(APPEND copied_scripts "${tgt}")

    set(stamp "${stamp_dir}/${tgt_file}.compiled")
    get_filename_component(stamp_parent "${stamp}" DIRECTORY)
    add_custom_command(
      OUTPUT "${stamp}"
      COMMAND "${Python3_EXECUTABLE}" -m py_compile "${tgt}"
      COMMAND "${CMAKE_COMMAND}" -E make_directory "${stamp_parent}"
      COMMAND "${CMAKE_COMMAND}" -E touch "${stamp}"
      DEPENDS "${tgt}"
      COMMENT "Compiling python script: ${tgt_file}"
      VERBATIM)
    list(APPEND compile_stamps "${stamp}")
  endforeach()

  set(copied_resources)
  foreach(file IN LISTS MY_RESOURCES)
    if(IS_ABSOLUTE "${file}")
      message(FATAL_ERROR
        "ctkMacroCompilePythonScript(${target}) RESOURCES '${file}' is absolute; the "
        "real macro would copy it to DESTINATION_DIR/<absolute path>. Give it relative to SOURCE_DIR.")
    endif()
    _slicer_stub_check_relative(ctkMacroCompilePythonScript RESOURCES "${file}" "${file}")
    set(src "${MY_SOURCE_DIR}/${file}")
    get_source_file_property(is_generated "${src}" GENERATED)
    if(NOT EXISTS "${src}" AND NOT is_generated)
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${target}) given nonexistent resource '${src}'")
    endif()
    set(tgt "${MY_DESTINATION_DIR}/${file}")
    get_filename_component(tgt_dir "${tgt}" DIRECTORY)
    add_custom_command(
      OUTPUT "${tgt}"
      COMMAND "${CMAKE_COMMAND}" -E make_directory "${tgt_dir}"
      COMMAND "${CMAKE_COMMAND}" -E copy "${src}" "${tgt}"
      DEPENDS "${src}"
      COMMENT "Copying python resource: ${file}"
      VERBATIM)
    list(APPEND copied_resources "${tgt}")
  endforeach()

  add_custom_target(Copy${target}PythonScriptFiles ALL DEPENDS ${copied_scripts})
  if(copied_resources)
    add_custom_target(Copy${target}PythonResourceFiles ALL DEPENDS ${copied_resources})
  endif()
  add_custom_target(Compile${target}PythonFiles ALL DEPENDS ${compile_stamps})
  add_dependencies(Compile${target}PythonFiles Copy${target}PythonScriptFiles)

  if(MY_NO_INSTALL_SUBDIR)
    set(dir_to_install "${MY_DESTINATION_DIR}/")
  else()
    set(dir_to_install "${MY_DESTINATION_DIR}")
  endif()
  install(DIRECTORY "${dir_to_install}"
    DESTINATION "${MY_INSTALL_DIR}" COMPONENT RuntimeLibraries
    USE_SOURCE_PERMISSIONS)

  set_property(GLOBAL APPEND PROPERTY SLICER_STUB_PYTHON_TARGETS "${target}")
endfunction()

# ----------------------------------------------------------------------------
function(slicerMacroBuildScriptedModule)
  set(options WITH_GENERIC_TESTS WITH_SUBDIR VERBOSE)
  set(oneValueArgs NAME)
  set(multiValueArgs SCRIPTS RESOURCES)
  cmake_parse_arguments(MY_SLICER "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})

  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME OR "${MY_SLICER_NAME}" STREQUAL "")
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: NAME is mandatory")
  endif()
  message(STATUS "Configuring Scripted module: ${MY_SLICER_NAME} (Slicer stand-in)")
  if(MY_SLICER_VERBOSE)
    foreach(opt IN LISTS options oneValueArgs multiValueArgs)
      message(STATUS "${opt} = ${MY_SLICER_${opt}}")
    endforeach()
  endif()

  foreach(var SCRIPTS RESOURCES)
    foreach(value IN LISTS MY_SLICER_${var})
      if(IS_ABSOLUTE "${value}")
        set(value_absolute "${value}")
      else()
        set(value_absolute "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
      endif()
      if(NOT EXISTS "${value_absolute}" AND NOT EXISTS "${value_absolute}.py")
        get_source_file_property(is_generated "${value_absolute}" GENERATED)
        if(NOT is_generated)
          message(FATAL_ERROR
            "slicerMacroBuildScriptedModule(${var}) given nonexistent file or directory '${value}'")
        endif()
      endif()
    endforeach()
  endforeach()

  # Slicer discovers a scripted module by the file <NAME>.py holding class <NAME>.
  set(_main_found FALSE)
  foreach(value IN LISTS MY_SLICER_SCRIPTS)
    get_filename_component(_n "${value}" NAME_WE)
    if(_n STREQUAL MY_SLICER_NAME)
      set(_main_found TRUE)
    endif()
  endforeach()
  if(NOT _main_found)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule(NAME ${MY_SLICER_NAME}): SCRIPTS must contain ${MY_SLICER_NAME}.py")
  endif()

  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR "Attempting to build the Python scripted module '${MY_SLICER_NAME}' when Slicer_USE_PYTHONQT is OFF")
  endif()

  set(_no_install_subdir_option NO_INSTALL_SUBDIR)
  set(_destination_subdir "")
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(_destination_subdir "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
    set(_destination_subdir "/${_destination_subdir}")
    set(_no_install_subdir_option "")
  endif()

  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS ${MY_SLICER_SCRIPTS}
    RESOURCES ${MY_SLICER_RESOURCES}
    DESTINATION_DIR "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}${_destination_subdir}"
    INSTALL_DIR "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    ${_no_install_subdir_option}
    )

  set_property(GLOBAL APPEND PROPERTY SLICER_STUB_SCRIPTED_MODULES "${MY_SLICER_NAME}")
  if(BUILD_TESTING AND MY_SLICER_WITH_GENERIC_TESTS)
    set_property(GLOBAL APPEND PROPERTY SLICER_STUB_PYTHON_UNITTESTS
      "py_nomainwindow_qSlicer${MY_SLICER_NAME}ModuleGenericTest")
  endif()
endfunction()

# ----------------------------------------------------------------------------
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicer_add_python_unittest: unknown arguments \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT MY_SCRIPT)
    message(FATAL_ERROR "slicer_add_python_unittest: SCRIPT is mandatory")
  endif()
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: '${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}' does not exist")
  endif()
  get_filename_component(test_name "${MY_SCRIPT}" NAME_WE)
  # Recorded only: there is no Slicer launcher to run it with.
  set_property(GLOBAL APPEND PROPERTY SLICER_STUB_PYTHON_UNITTESTS "py_${MY_TESTNAME_PREFIX}${test_name}")
endfunction()
