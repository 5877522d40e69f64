# ============================================================================
#  TEST STAND-IN -- THIS IS NOT 3D SLICER.
#  Shared metadata check used by the stand-in GenerateConfig / CPack files.
# ============================================================================

include_guard(GLOBAL)

function(slicer_stub_check_extension_metadata caller)
  if(NOT DEFINED EXTENSION_NAME OR "${EXTENSION_NAME}" STREQUAL "")
    message(FATAL_ERROR "${caller}: EXTENSION_NAME is not set (is project() called before include(\${Slicer_USE_FILE})?)")
  endif()
  foreach(_var
      EXTENSION_HOMEPAGE
      EXTENSION_CATEGORY
      EXTENSION_CONTRIBUTORS
      EXTENSION_DESCRIPTION
      EXTENSION_ICONURL
      EXTENSION_SCREENSHOTURLS
      EXTENSION_DEPENDS
      )
    if(NOT DEFINED ${_var})
      message(FATAL_ERROR "${caller}: ${_var} is not set; set it before include(\${Slicer_USE_FILE}).")
    endif()
    string(STRIP "${${_var}}" _value)
    if(_value STREQUAL "")
      message(FATAL_ERROR "${caller}: ${_var} is empty.")
    endif()
  endforeach()
  # The ExtensionsIndex checks reject non-https homepage / icon URLs.
  foreach(_var EXTENSION_HOMEPAGE EXTENSION_ICONURL)
    if(NOT "${${_var}}" MATCHES "^https://")
      message(FATAL_ERROR "${caller}: ${_var} must be an https:// URL, got '${${_var}}'.")
    endif()
  endforeach()
  foreach(_url IN LISTS EXTENSION_SCREENSHOTURLS)
    if(NOT "${_url}" MATCHES "^https?://")
      message(FATAL_ERROR "${caller}: EXTENSION_SCREENSHOTURLS entry '${_url}' is not a URL.")
    endif()
  endforeach()
endfunction()
