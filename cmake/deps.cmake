# Finds every dependency once; a missing one stops configure with the Debian package that provides it.
# .ci/run and scripts/install_deps.sh install all of them with apt-get.

macro(mo_require found what pkg)
  if(NOT ${found})
    message(FATAL_ERROR "mo: ${what} not found. Install the Debian package '${pkg}' (scripts/install_deps.sh does it).")
  endif()
endmacro()

find_package(Threads REQUIRED)
find_package(OpenMP)
mo_require(OpenMP_CXX_FOUND "OpenMP" "libomp-dev (or g++'s libgomp)")

# OpenBLAS: CPU matrix products through cblas.h. The OpenMP build is preferred: it shares the OpenMP
# thread pool with our kernels (the pthread build's threads fight OpenMP's spinning workers); the
# run path points at it so the alternatives symlink does not matter.
find_path(OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-openmp openblas openblas-pthread)
find_library(OPENBLAS_LIBRARY NAMES openblas PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp
             /usr/lib/aarch64-linux-gnu/openblas-openmp NO_DEFAULT_PATH)
find_library(OPENBLAS_LIBRARY NAMES openblas PATH_SUFFIXES openblas-openmp openblas-pthread)
set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)
set(_ob_found FALSE)
if(OPENBLAS_INCLUDE_DIR AND OPENBLAS_LIBRARY)
  set(_ob_found TRUE)
endif()
mo_require(_ob_found "OpenBLAS (cblas.h, libopenblas)" "libopenblas-openmp-dev")
# (installed as mo::openblas, which moConfig.cmake fills in by finding OpenBLAS again)
add_library(mo_openblas INTERFACE)
target_include_directories(mo_openblas INTERFACE $<BUILD_INTERFACE:${OPENBLAS_INCLUDE_DIR}>)
target_link_libraries(mo_openblas INTERFACE $<BUILD_INTERFACE:${OPENBLAS_LIBRARY}>)

find_package(JPEG)
mo_require(JPEG_FOUND "libjpeg-turbo (jpeglib.h)" "libjpeg-dev")

# PNG and WebP (data/image_decode.cpp): found, not required. Where libpng or libwebp is missing (a GPU
# machine without the -dev packages) mo still builds and reads JPEG; a PNG or WebP file is then refused
# with a message saying which packages the build lacked. scripts/install_deps.sh installs both, and CI
# builds with them. Debian 12's libwebp ships no CMake package: its header and libraries are found directly.
find_package(PNG)
find_path(WEBP_INCLUDE_DIR webp/demux.h)
find_library(WEBP_LIBRARY NAMES webp)
find_library(WEBPDEMUX_LIBRARY NAMES webpdemux)  # animated files (the first frame)
set(MO_WITH_PNG_WEBP OFF)
if(PNG_FOUND AND WEBP_INCLUDE_DIR AND WEBP_LIBRARY AND WEBPDEMUX_LIBRARY)
  set(MO_WITH_PNG_WEBP ON)
else()
  message(WARNING "mo: libpng or libwebp not found (Debian: libpng-dev libwebp-dev): this build reads JPEG "
                  "images only and refuses PNG and WebP files with a message")
endif()
add_library(mo_webp INTERFACE)  # installed as mo::webp, which moConfig.cmake points at the libraries again
if(MO_WITH_PNG_WEBP)
  target_include_directories(mo_webp INTERFACE $<BUILD_INTERFACE:${WEBP_INCLUDE_DIR}>)
  target_link_libraries(mo_webp INTERFACE $<BUILD_INTERFACE:${WEBPDEMUX_LIBRARY}> $<BUILD_INTERFACE:${WEBP_LIBRARY}>)
endif()

find_package(Protobuf)
mo_require(Protobuf_FOUND "protobuf (libprotobuf, protoc)" "libprotobuf-dev protobuf-compiler")

find_package(fmt)
mo_require(fmt_FOUND "fmt" "libfmt-dev")

# CLI11 (header-only): the tools' command lines (tools/common/cli.h). Its CMake package where installed,
# else the header on the include path (the single-header CLI11.hpp too).
find_package(CLI11 CONFIG QUIET)
if(NOT TARGET CLI11::CLI11)
  find_path(CLI11_INCLUDE_DIR NAMES CLI/CLI.hpp CLI11.hpp)
  if(CLI11_INCLUDE_DIR)
    add_library(CLI11::CLI11 INTERFACE IMPORTED)
    set_target_properties(CLI11::CLI11 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${CLI11_INCLUDE_DIR})
  endif()
endif()
set(_cli11_found FALSE)
if(TARGET CLI11::CLI11)
  set(_cli11_found TRUE)
endif()
mo_require(_cli11_found "CLI11 (CLI/CLI.hpp)" "libcli11-dev")

find_package(yaml-cpp)
mo_require(yaml-cpp_FOUND "yaml-cpp" "libyaml-cpp-dev")
if(TARGET yaml-cpp::yaml-cpp)
  set(MO_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(MO_YAML_TARGET yaml-cpp)
endif()

if(MO_BUILD_TESTS)
  find_package(GTest)
  mo_require(GTest_FOUND "GoogleTest" "libgtest-dev")
endif()

if(MO_WITH_MPI)
  find_package(MPI COMPONENTS CXX)
  mo_require(MPI_CXX_FOUND "MPI" "libopenmpi-dev openmpi-bin")
  add_compile_definitions(MO_WITH_MPI=1)
endif()
