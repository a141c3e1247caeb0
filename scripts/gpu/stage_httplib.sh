#!/usr/bin/env bash
# stage_httplib.sh: copies Debian's cpp-httplib (libcpp-httplib-dev) into an ignored folder of the repository,
# so a machine without it (the GPU machine) can build mo_serve from the copy carried with the working tree.
#   bash scripts/gpu/stage_httplib.sh [DEST=.deps/httplib]
# then there: cmake ... -DCMAKE_PREFIX_PATH=$PWD/.deps/httplib   (scripts/gpu/run_all.sh serve does this)
# Debian's package is a compiled library, not header-only: its httplib.h declares what libcpp-httplib.so
# defines, built with OpenSSL, zlib and Brotli support, and those macros change the classes' layout. So the
# copy holds the header, the .so, a relocatable cpp-httplib.pc with the same -D flags (and no Requires on
# .pc files the other machine may lack), the OpenSSL/zlib/Brotli headers that httplib.h includes
# (include-deps/, searched after the system's own with -idirafter), and fallback/: the shared libraries
# the .so needs plus pkgconf, for run_all.sh to use only where that machine has none of its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.deps/httplib}
dpkg -s libcpp-httplib-dev >/dev/null 2>&1 || { echo "stage_httplib.sh: libcpp-httplib-dev is not installed (apt-get install libcpp-httplib-dev)" >&2; exit 1; }
ARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)
LIB=/usr/lib/$ARCH
SO=$(readlink -f "$LIB/libcpp-httplib.so")
[ -f "$SO" ] || { echo "stage_httplib.sh: $LIB/libcpp-httplib.so is missing" >&2; exit 1; }
SONAME=$(objdump -p "$SO" | awk '/SONAME/ {print $2}')
VERSION=$(pkg-config --modversion cpp-httplib)
CFLAGS_D=$(pkg-config --cflags-only-other cpp-httplib)  # the -DCPPHTTPLIB_..._SUPPORT flags

rm -rf "$DEST"
mkdir -p "$DEST"/include "$DEST"/include-deps/openssl "$DEST"/lib/pkgconfig "$DEST"/fallback/lib "$DEST"/fallback/bin
cp /usr/include/httplib.h "$DEST"/include/
cp "$SO" "$DEST"/lib/
ln -s "$(basename "$SO")" "$DEST/lib/$SONAME"
ln -s "$SONAME" "$DEST"/lib/libcpp-httplib.so
# what httplib.h includes under those flags: <openssl/...> (with the multiarch configuration headers),
# <zlib.h> and <brotli/...>
cp -r /usr/include/openssl/. "$DEST"/include-deps/openssl/
cp -r "/usr/include/$ARCH/openssl/." "$DEST"/include-deps/openssl/
cp /usr/include/zlib.h /usr/include/zconf.h "$DEST"/include-deps/
cp -r /usr/include/brotli "$DEST"/include-deps/
# the libraries the .so was linked against (by soname) and pkgconf, each only a fallback
for dep in $(objdump -p "$SO" | awk '/NEEDED/ {print $2}' | grep -vE '^(libc|libm|libgcc_s|libstdc\+\+)\.so'); do
  cp -L "$LIB/$dep" "$DEST"/fallback/lib/
done
cp /usr/bin/pkgconf "$DEST"/fallback/bin/
cp -L "$LIB/$(objdump -p /usr/bin/pkgconf | awk '/NEEDED/ && /pkgconf/ {print $2}')" "$DEST"/fallback/lib/

cat >"$DEST"/lib/pkgconfig/cpp-httplib.pc <<EOF
# Debian's cpp-httplib $VERSION, staged by scripts/gpu/stage_httplib.sh (relocatable).
prefix=\${pcfiledir}/../..
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: cpp-httplib
Description: A C++ HTTP/HTTPS server and client library (Debian's build, staged)
Version: $VERSION
Libs: -L\${libdir} -lcpp-httplib
Libs.private: -pthread
Cflags: -I\${includedir} -idirafter\${prefix}/include-deps $CFLAGS_D
EOF
echo "stage_httplib.sh: cpp-httplib $VERSION ($SONAME) staged in $DEST ($(du -sh "$DEST" | cut -f1)); carry: [\"$DEST\"]"
