# install.cmake: what `cmake --install build --prefix P` puts under P, and the build tree's mirror of it.
#   P/bin/mo_*                  the programs (tools/CMakeLists.txt)
#   P/share/mo/                 imagenet_classes.txt, recipes/*.yaml (`mo_train femto`), python/mo_checkpoint.py
#   P/lib/libmo_*.a             the libraries (static)
#   P/include/mo/<folder>/*.h   the public headers, included as in the source tree: "nn/mambaout.h"
#   P/lib/cmake/mo/             find_package(mo CONFIG): mo::autograd, mo::ops, mo::nn, mo::data, mo::dist,
#                               mo::engine, mo::tools and mo::mo (all of them); moConfig.cmake finds their
#                               dependencies
#   P/lib/pkgconfig/mo.pc       pkg-config --cflags --libs mo
# docs/install.md describes the use; tests/install/ builds a consumer project against an installed prefix.
include(CMakePackageConfigHelpers)

set(MO_PACKAGE_VERSION "${PROJECT_VERSION}")
if(NOT MO_PACKAGE_VERSION)
  set(MO_PACKAGE_VERSION 0.1.0)
endif()

# The build's switches that the public headers read: a consumer compiles them with the same ones.
set(_mo_defs "")
if(MO_WITH_CUDA)
  list(APPEND _mo_defs MO_WITH_CUDA=1)
endif()
if(MO_WITH_MPI)
  list(APPEND _mo_defs MO_WITH_MPI=1)
endif()
foreach(_d ${_mo_defs})
  target_compile_definitions(mo_autograd INTERFACE $<INSTALL_INTERFACE:${_d}>)
endforeach()

add_library(mo_all INTERFACE)
target_link_libraries(mo_all INTERFACE mo_tools mo_engine mo_nn mo_data mo_dist mo_ops mo_autograd)
set(_mo_libs mo_autograd mo_ops mo_nn mo_data mo_dist mo_engine mo_tools)
foreach(_t ${_mo_libs} mo_openblas mo_webp mo_all)
  string(REGEX REPLACE "^mo_" "" _short ${_t})
  if(_t STREQUAL "mo_all")
    set(_short mo)
  endif()
  set_target_properties(${_t} PROPERTIES EXPORT_NAME ${_short})
endforeach()
install(TARGETS ${_mo_libs} mo_openblas mo_webp mo_all EXPORT moTargets ARCHIVE DESTINATION lib)

# Headers keep their paths: P/include/mo/nn/mambaout.h is included as "nn/mambaout.h".
install(DIRECTORY autograd ops nn data dist DESTINATION include/mo FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh")
install(DIRECTORY tools/engine tools/common DESTINATION include/mo/tools FILES_MATCHING PATTERN "*.h"
        PATTERN "http_server.h" EXCLUDE PATTERN "serve_page.h" EXCLUDE  # mo_serve's, not installed
        PATTERN "*_internal.h" EXCLUDE)  # shared by one class's source files only
install(DIRECTORY ${PROJECT_BINARY_DIR}/tools/engine DESTINATION include/mo/tools FILES_MATCHING PATTERN "*.pb.h")

install(DIRECTORY recipes/ DESTINATION share/mo/recipes FILES_MATCHING PATTERN "*.yaml")
install(FILES python/mo_checkpoint.py DESTINATION share/mo/python)
# In the build tree <build>/share/mo/recipes links to the source recipes, so a program run from
# <build>/tools finds `femto` by the same rule as an installed one (tools/engine/recipe_path.h).
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/share/mo)
if(IS_SYMLINK ${PROJECT_BINARY_DIR}/share/mo/recipes OR NOT EXISTS ${PROJECT_BINARY_DIR}/share/mo/recipes)
  file(CREATE_LINK ${PROJECT_SOURCE_DIR}/recipes ${PROJECT_BINARY_DIR}/share/mo/recipes SYMBOLIC)
endif()

get_target_property(_dist_defs mo_dist INTERFACE_COMPILE_DEFINITIONS)
set(MO_WITH_NCCL_BUILT OFF)  # dist/CMakeLists.txt turns NCCL on where it finds it
if(_dist_defs MATCHES "MO_WITH_NCCL=1")
  set(MO_WITH_NCCL_BUILT ON)
endif()

# --- the CMake package ---------------------------------------------------------------------------------
# moConfig.cmake finds OpenBLAS where this build found it first (the OpenMP build, see deps.cmake).
get_filename_component(MO_OPENBLAS_LIBRARY_DIR ${OPENBLAS_LIBRARY} DIRECTORY)
set(MO_OPENBLAS_INCLUDE_DIR ${OPENBLAS_INCLUDE_DIR})
install(EXPORT moTargets NAMESPACE mo:: DESTINATION lib/cmake/mo)
configure_package_config_file(cmake/moConfig.cmake.in ${PROJECT_BINARY_DIR}/moConfig.cmake
                              INSTALL_DESTINATION lib/cmake/mo)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/moConfigVersion.cmake VERSION ${MO_PACKAGE_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/moConfig.cmake ${PROJECT_BINARY_DIR}/moConfigVersion.cmake
        DESTINATION lib/cmake/mo)

# --- mo.pc -----------------------------------------------------------------------------------------------
# The libraries are static, so Libs names everything they need: the pkg-config modules of fmt, yaml-cpp,
# protobuf, libjpeg, zlib and CLI11 (Requires), the rest as this build found it.
set(_pc_cflags "")
foreach(_d ${_mo_defs})
  string(APPEND _pc_cflags " -D${_d}")
endforeach()
set(_pc_libs "${OPENBLAS_LIBRARY}")
set(_pc_incs ${OPENBLAS_INCLUDE_DIR})
if(MO_WITH_MPI)
  list(APPEND _pc_incs ${MPI_CXX_INCLUDE_DIRS})
  list(APPEND _pc_libs ${MPI_CXX_LIBRARIES})
endif()
if(MO_WITH_CUDA)
  list(APPEND _pc_incs ${CUDAToolkit_INCLUDE_DIRS})
  list(APPEND _pc_libs ${CUDA_cublasLt_LIBRARY} ${CUDA_cublas_LIBRARY} ${CUDA_cudart_LIBRARY})
endif()
if(MO_WITH_NVJPEG)  # data/gpu_jpeg.cu (data/CMakeLists.txt)
  list(APPEND _pc_libs ${MO_NVJPEG_LIBRARY})
endif()
if(MO_WITH_NCCL_BUILT)
  list(APPEND _pc_incs ${NCCL_INCLUDE_DIR})
  list(APPEND _pc_libs ${NCCL_LIBRARY})
endif()
list(REMOVE_DUPLICATES _pc_incs)
foreach(_i ${_pc_incs})
  string(APPEND _pc_cflags " -I${_i}")
endforeach()
list(APPEND _pc_libs ${OpenMP_CXX_FLAGS} -lpthread)
list(JOIN _pc_libs " " MO_PC_LIBS)
set(MO_PC_CFLAGS "${_pc_cflags}")
set(MO_PC_IMAGE_REQUIRES "")
if(MO_WITH_PNG_WEBP)
  set(MO_PC_IMAGE_REQUIRES " libpng libwebpdemux libwebp")
endif()
configure_file(cmake/mo.pc.in ${PROJECT_BINARY_DIR}/mo.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mo.pc DESTINATION lib/pkgconfig)
