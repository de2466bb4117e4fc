#!/bin/sh
# check_header.sh - mltrack.h compiles without a warning as C11, C17 and C2x, and mltrack.h with
# mltrack.hpp as C++11, 14, 17 and 20 (included directly and inside extern "C"), each with every
# macro used (tests/header/use.c, use.cpp), -Wall -Wextra -pedantic -Werror, with the configured
# compilers ($CC, $CXX) and with gcc/g++ and clang/clang++ when present. Run by `make check`.
set -u
src=${MLT_SRCDIR:?}
fails=0
tried=0
try() { # COMPILER ARGS...
    tried=$((tried + 1))
    if ! out=$("$@" -fsyntax-only -Wall -Wextra -pedantic -Werror -I"$src/include" 2>&1) ||
        [ -n "$out" ]; then
        echo "FAIL: $*"
        echo "$out"
        fails=$((fails + 1))
    else
        echo "ok: $*"
    fi
}
ccs=""
for c in ${CC%% *} gcc clang; do
    command -v "$c" >/dev/null 2>&1 && case " $ccs " in *" $c "*) ;; *) ccs="$ccs $c" ;; esac
done
cxxs=""
for c in ${CXX%% *} g++ clang++; do
    command -v "$c" >/dev/null 2>&1 && case " $cxxs " in *" $c "*) ;; *) cxxs="$cxxs $c" ;; esac
done
for c in $ccs; do
    for std in c11 c17 c2x; do
        try "$c" -std=$std -x c "$src/tests/header/use.c"
    done
done
for c in $cxxs; do
    for std in c++11 c++14 c++17 c++20; do
        try "$c" -std=$std -x c++ "$src/tests/header/use.cpp"
        try "$c" -std=$std -x c++ -DMLT_INSIDE_EXTERN_C "$src/tests/header/use.cpp"
    done
done
case "$ccs $cxxs" in
*clang*) ;;
*) echo "note: clang is not installed: the header was checked with gcc only" ;;
esac
echo "$tried compilations, $fails failed"
[ "$fails" -eq 0 ]
