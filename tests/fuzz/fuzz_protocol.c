/*
 * fuzz_protocol.c - fuzz target: the `mltrack run` line protocol, as a child's stdout feeds it.
 *
 *   byte 0   bits 0-3: seed of the chunk sizes; bits 4-7 all set: the rest is repeated until
 *            the stream is longer than the longest protocol line (MLT_PROTO_MAX_LINE): slow,
 *            so only one first byte in 16 does it
 *   then     the stream
 *
 * The stream goes through the splitter twice, whole and in chunks of pseudo-random sizes (1 byte
 * to a few KB): both must give the same lines. Every line is then parsed (in a buffer of exactly
 * its length plus the byte the parser may write) and, when well formed, checked with the key and
 * value rules that `mltrack run` applies before logging.
 */
#include "config.h"

#include "cli/protocol.h"
#include "common.h"
#include "fuzz.h"
#include "validate.h"

#include <stdlib.h>
#include <string.h>

typedef struct lines {
    mlt__buf text; /* for each line: len, too_long, line_no, then the bytes */
    size_t n;
} lines;

static void collect(char *line, size_t len, bool too_long, uint64_t line_no, void *ud)
{
    lines *l = ud;
    FUZZ_CHECK(too_long || len <= MLT_PROTO_MAX_LINE);
    FUZZ_CHECK(too_long || (len >= 8 && memcmp(line, MLT_PROTO_PREFIX, 8) == 0));
    FUZZ_CHECK(too_long || memchr(line, '\n', len) == NULL);
    size_t kept = too_long ? 0 : len; /* a cut line keeps what its chunks let in: not compared */
    mlt__buf_append(&l->text, &kept, sizeof kept);
    mlt__buf_append(&l->text, &too_long, sizeof too_long);
    mlt__buf_append(&l->text, &line_no, sizeof line_no);
    if (!too_long) {
        mlt__buf_append(&l->text, line, len);
    }
    l->n++;
}

/* Splits data[0..n) fed in chunks of pseudo-random sizes from seed (0: whole); big: larger
 * chunks, for the long streams. */
static void split(const char *data, size_t n, unsigned seed, bool big, lines *out)
{
    mlt_proto_splitter s;
    memset(&s, 0, sizeof s);
    mlt__buf_init(&out->text);
    out->n = 0;
    uint32_t x = seed * 2654435761u + 1;
    size_t at = 0;
    while (at < n) {
        size_t chunk = n - at;
        if (seed) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            size_t max = (x & 3) == 0 ? 4096 : (x & 3) == 1 ? 64 : 8;
            max *= big ? 256 : 1;
            chunk = 1 + (x >> 8) % max;
            chunk = chunk < n - at ? chunk : n - at;
        }
        mlt_proto_feed(&s, data + at, chunk, collect, out);
        at += chunk;
    }
    mlt_proto_finish(&s, collect, out);
    mlt_proto_splitter_free(&s);
    FUZZ_CHECK(!out->text.oom);
}

static void check_pairs(const mlt_proto_line *l, const char *buf, size_t len)
{
    FUZZ_CHECK(l->n_pairs > 0 && l->n_pairs <= l->cap_pairs);
    char msg[256];
    for (size_t i = 0; i < l->n_pairs; i++) {
        const mlt_proto_pair *p = &l->pairs[i];
        FUZZ_CHECK(p->key >= buf && p->key < buf + len);
        FUZZ_CHECK(p->value >= buf && p->value <= buf + len);
        FUZZ_CHECK(p->key[0] != '\0');
        FUZZ_CHECK(p->key + strlen(p->key) <= buf + len);
        FUZZ_CHECK(p->value + strlen(p->value) <= buf + len);
        FUZZ_CHECK(l->kind == MLT_PROTO_METRIC || p->number == 0);
        /* what `mltrack run` checks before logging the line */
        mlt__kind kind = l->kind == MLT_PROTO_METRIC  ? MLT__METRIC
                         : l->kind == MLT_PROTO_PARAM ? MLT__PARAM
                                                      : MLT__TAG;
        mlt_err e = mlt__errbuf(msg, sizeof msg, mlt__validate_key(kind, p->key));
        if (e == MLT_OK && l->kind == MLT_PROTO_PARAM) {
            e = mlt__errbuf(msg, sizeof msg, mlt__validate_param_value(p->key, p->value));
        } else if (e == MLT_OK && l->kind == MLT_PROTO_TAG) {
            e = mlt__errbuf(msg, sizeof msg, mlt__validate_tag_value(p->key, p->value));
        }
        FUZZ_CHECK(e == MLT_OK || memchr(msg, '\0', sizeof msg) != NULL);
    }
}

/* Parses the first max collected lines, reusing one parsed-line struct as mltrack run does. */
static void parse_all(const lines *ls, size_t max)
{
    mlt_proto_line l;
    memset(&l, 0, sizeof l);
    const char *p = ls->text.data;
    for (size_t i = 0; i < ls->n && i < max; i++) {
        size_t len;
        bool too_long;
        memcpy(&len, p, sizeof len);
        memcpy(&too_long, p + sizeof len, sizeof too_long);
        p += sizeof len + sizeof too_long + sizeof(uint64_t);
        if (too_long) {
            continue;
        }
        char *buf = malloc(len + 1); /* the line and the parser's NUL, nothing more */
        FUZZ_CHECK(buf != NULL);
        memcpy(buf, p, len);
        p += len;
        char why[256];
        why[0] = '\0';
        int rc = mlt_proto_parse(buf, len, &l, why, sizeof why);
        FUZZ_CHECK(rc >= -1 && rc <= 1);
        if (rc == 1) {
            check_pairs(&l, buf, len);
        } else if (rc == -1) {
            FUZZ_CHECK(why[0] != '\0' && memchr(why, '\0', sizeof why) != NULL);
        }
        free(buf);
    }
    mlt_proto_line_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned seed = data[0] & 0x0f;
    bool repeat = (data[0] & 0xf0) == 0xf0;
    const char *stream = (const char *)data + 1;
    size_t n = size - 1;
    char *big = NULL;
    if (repeat && n > 0) {
        size_t times = MLT_PROTO_MAX_LINE / n + 2;
        big = malloc(times * n);
        FUZZ_CHECK(big != NULL);
        for (size_t i = 0; i < times; i++) {
            memcpy(big + i * n, stream, n);
        }
        stream = big;
        n *= times;
    }
    lines whole, chunked;
    split(stream, n, 0, false, &whole);
    split(stream, n, seed ? seed : 1, big != NULL, &chunked);
    FUZZ_CHECK(whole.n == chunked.n);
    FUZZ_CHECK(whole.text.len == chunked.text.len);
    FUZZ_CHECK(whole.text.len == 0 ||
               memcmp(whole.text.data, chunked.text.data, whole.text.len) == 0);
    parse_all(&whole, big ? 512 : SIZE_MAX); /* a repeated stream repeats its lines */
    mlt__buf_free(&whole.text);
    mlt__buf_free(&chunked.text);
    free(big);
    return 0;
}
