/*
 * fuzz_lease.c - fuzz target: the text of a delivery lease file (src/lease.c), as another host,
 * a torn write or tampering may leave it. The input is the file's bytes, or, when it starts with
 * '!', the fields of a line whose checksum the target appends (" <crc32c>\n"), so that mutated
 * fields get past the checksum.
 *
 * Checks: a refused text leaves the output untouched; an accepted one has the documented ranges
 * (gen > 0, pid > 0, a known role and state, a printable host without spaces); formatting what
 * was parsed succeeds, and parses back to the identical struct; the formatted text is canonical
 * (formatting it again gives the same bytes) and no buffer shorter than it takes it.
 */
#include "config.h"

#include "crc32c.h"
#include "fuzz.h"
#include "lease.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define TEXT_MAX 256 /* a lease file's text is shorter: anything longer is refused */

static bool host_ok(const char *h, size_t cap)
{
    size_t n = strnlen(h, cap);
    if (n == 0 || n >= cap) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i] <= ' ' || h[i] > '~') {
            return false;
        }
    }
    return true;
}

static void check(const char *text, size_t len)
{
    mlt__lease_info info, untouched;
    memset(&info, 0xA5, sizeof info);
    untouched = info;
    if (mlt__lease_parse(text, len, &info) != 0) {
        FUZZ_CHECK(memcmp(&info, &untouched, sizeof info) == 0);
        return;
    }
    FUZZ_CHECK(len < TEXT_MAX && text[len - 1] == '\n');
    FUZZ_CHECK(info.gen > 0 && info.pid > 0);
    FUZZ_CHECK(info.role == MLT__LEASE_WRITER || info.role == MLT__LEASE_RELAY);
    FUZZ_CHECK(info.state == MLT__LEASE_DELIVERING || info.state == MLT__LEASE_AWAY ||
               info.state == MLT__LEASE_RELEASED);
    FUZZ_CHECK(host_ok(info.host, sizeof info.host));

    char out[TEXT_MAX];
    int n = mlt__lease_format(&info, out, sizeof out);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof out && strlen(out) == (size_t)n);
    FUZZ_CHECK(out[n - 1] == '\n');
    mlt__lease_info back;
    memset(&back, 0x5A, sizeof back);
    FUZZ_CHECK(mlt__lease_parse(out, (size_t)n, &back) == 0);
    FUZZ_CHECK(memcmp(&back, &info, sizeof info) == 0);

    char again[TEXT_MAX];
    FUZZ_CHECK(mlt__lease_format(&back, again, sizeof again) == n);
    FUZZ_CHECK(memcmp(again, out, (size_t)n + 1) == 0);
    for (size_t cap = 0; cap <= (size_t)n; cap++) {
        FUZZ_CHECK(mlt__lease_format(&info, again, cap) == -1);
    }
    FUZZ_CHECK(mlt__lease_format(&info, again, (size_t)n + 1) == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == '!') {
        /* the fields, with their checksum made right; longer than any line: no use */
        size_t flen = size - 1;
        char line[2 * TEXT_MAX];
        if (flen + 11 > sizeof line) {
            return 0;
        }
        memcpy(line, data + 1, flen);
        uint32_t crc = mlt__crc32c(0, line, flen);
        int w = snprintf(line + flen, sizeof line - flen, " %08" PRIx32 "\n", crc);
        FUZZ_CHECK(w == 10);
        check(line, flen + 10);
        return 0;
    }
    check((const char *)data, size);
    return 0;
}
