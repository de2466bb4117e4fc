/*
 * fuzz.h - what every fuzz target shares: the libFuzzer entry point (built either with clang's
 * -fsanitize=fuzzer, or with replay_main.c, which runs it over files with any compiler) and a
 * splitter for inputs that hold several parts.
 */
#ifndef MLT_FUZZ_H
#define MLT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Runs one input; returns 0 (libFuzzer's contract). A finding aborts (sanitizers, or
 * FUZZ_CHECK). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A check of the target's own: prints where it failed and aborts, so that the fuzzer keeps the
 * input as a crash. */
#define FUZZ_CHECK(cond)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                \
        }                                                                                        \
    } while (0)

void fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* The next part of *data (of *size bytes) up to the separator sep (or the end); *data and *size
 * move past it and the separator. Returns the part's length; *part points at it. */
static inline size_t fuzz_next_part(const uint8_t **data, size_t *size, const char *sep,
                                    const uint8_t **part)
{
    size_t sep_len = strlen(sep);
    const uint8_t *p = *data;
    size_t n = *size;
    *part = p;
    for (size_t i = 0; i + sep_len <= n; i++) {
        if (memcmp(p + i, sep, sep_len) == 0) {
            *data = p + i + sep_len;
            *size = n - i - sep_len;
            return i;
        }
    }
    *data = p + n;
    *size = 0;
    return n;
}

#endif
