/*
 * check_journal.c - unit tests of the durable queue's internals: the CRC32C (src/journal.c), the
 * record payload codec (src/record.c) and the journal (src/journal.c): segment files, recovery of
 * torn and corrupt tails, the acked cursor, the run map, dead letters, the flock, removal of a
 * delivered journal and the queue directory. Segments are also crafted byte by byte here, with a
 * CRC32C written independently of the library's, so that recovery is tested against the format
 * and not only against the library's own writer.
 */
#include "testutil.h"

#include "common.h"
#include "digest.h"
#include "journal.h"
#include "options.h"
#include "queue.h"
#include "record.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------------------------- */

#define DIR_LEN 512

static const char SEG1[] = "seg-00000000000000000001.log";

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static off_t file_size(const char *dir, const char *name)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    struct stat st;
    ck_assert_msg(stat(p, &st) == 0, "stat %s: %s", p, strerror(errno));
    return st.st_size;
}

/* The whole file as bytes (caller frees), its length in *len; NULL when it does not exist. */
static unsigned char *slurp(const char *dir, const char *name, size_t *len)
{
    return (unsigned char *)mlt_test_slurp(dir, name, len);
}

static void spit(const char *dir, const char *name, const void *data, size_t len)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    mlt_test_write_file(p, "wb", data, len);
}

static void truncate_to(const char *dir, const char *name, off_t size)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    ck_assert_int_eq(truncate(p, size), 0);
}

static void flip_byte(const char *dir, const char *name, size_t off)
{
    size_t len;
    unsigned char *d = slurp(dir, name, &len);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_lt(off, len);
    d[off] ^= 0x5a;
    spit(dir, name, d, len);
    free(d);
}

static mode_t mode_of(const char *dir, const char *name)
{
    char p[PATH_MAX];
    if (name) {
        mlt_test_path(p, dir, name);
    } else {
        snprintf(p, sizeof p, "%s", dir);
    }
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return st.st_mode & 07777;
}

/* The names in dir, sorted, joined by spaces (caller frees). */
static char *listing(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            ck_assert_uint_lt(n, 64);
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    for (size_t i = 1; i < n; i++) { /* insertion sort: a handful of names */
        for (size_t k = i; k > 0 && strcmp(names[k - 1], names[k]) > 0; k--) {
            char *t = names[k];
            names[k] = names[k - 1];
            names[k - 1] = t;
        }
    }
    mlt__buf b;
    mlt__buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        mlt__buf_printf(&b, "%s%s", i ? " " : "", names[i]);
        free(names[i]);
    }
    char *s = mlt__buf_steal(&b);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* CRC32C bit by bit, independent of the library's table-driven code. */
static uint32_t ref_crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static void le32_put(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t le32_get(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64_get(const unsigned char *p)
{
    return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}

/* Appends to b one frame written from the format's description. */
static void craft_frame(mlt__buf *b, uint64_t seq, uint8_t type, const void *payload, size_t len)
{
    unsigned char h[MLT__FRAME_HEADER];
    le32_put(h, (uint32_t)len);
    le32_put(h + 8, (uint32_t)seq);
    le32_put(h + 12, (uint32_t)(seq >> 32));
    h[16] = type;
    uint32_t crc = ref_crc32c(0, h + 8, 9);
    le32_put(h + 4, ref_crc32c(crc, payload, len));
    mlt__buf_append(b, h, sizeof h);
    mlt__buf_append(b, payload, len);
}

/* The payload of PARAM record number seq: run 1, key "k<seq>", value "v<seq>". */
static void param_payload(mlt__buf *p, uint64_t seq)
{
    char k[32], v[32];
    snprintf(k, sizeof k, "k%" PRIu64, seq);
    snprintf(v, sizeof v, "v%" PRIu64, seq);
    mlt__buf_reset(p);
    mlt__rec_put_kv(p, 1, k, v);
    ck_assert(!p->oom);
}

/* Writes the segment named after first with the PARAM records first..last (crafted). */
static void craft_segment(const char *dir, uint64_t first, uint64_t last)
{
    char name[64];
    snprintf(name, sizeof name, "seg-%020" PRIu64 ".log", first);
    mlt__buf b, p;
    mlt__buf_init(&b);
    mlt__buf_init(&p);
    mlt__buf_append(&b, MLT__SEGMENT_MAGIC, 8);
    for (uint64_t s = first; s <= last; s++) {
        param_payload(&p, s);
        craft_frame(&b, s, MLT__REC_PARAM, p.data, p.len);
    }
    ck_assert(!b.oom);
    spit(dir, name, b.data, b.len);
    mlt__buf_free(&b);
    mlt__buf_free(&p);
}

/* Size of the frame of PARAM record seq as param_payload makes it. */
static size_t param_frame_size(uint64_t seq)
{
    mlt__buf p;
    mlt__buf_init(&p);
    param_payload(&p, seq);
    size_t n = MLT__FRAME_HEADER + p.len;
    mlt__buf_free(&p);
    return n;
}

/* A fresh journal directory path (not created) under a fresh temporary directory. */
typedef mlt_test_jdir fixture;

static void fixture_init(fixture *f)
{
    mlt_test_jdir_init(f, "journal");
}

static void fixture_done(fixture *f)
{
    mlt_test_jdir_done(f);
}

static mlt__journal *create_j(const char *dir, mlt__fsync_mode mode)
{
    mlt__journal *j = NULL;
    char err[256] = "";
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__journal_create(&j, dir, mode));
    ck_assert_msg(e == MLT_OK, "create %s: %s (%s)", dir, mlt_strerror(e), err);
    ck_assert_ptr_nonnull(j);
    return j;
}

static mlt__journal *open_j(const char *dir, bool read_only, mlt__recovery *rec)
{
    mlt__journal *j = NULL;
    char err[256] = "";
    mlt_err e =
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, dir, read_only, MLT__FSYNC_NONE, rec));
    ck_assert_msg(e == MLT_OK, "open %s: %s (%s)", dir, mlt_strerror(e), err);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* Appends PARAM record number n ("k<n>" = "v<n>") and checks its sequence number. */
static void append_param(mlt__journal *j, uint64_t n)
{
    mlt__buf p;
    mlt__buf_init(&p);
    param_payload(&p, n);
    uint64_t seq = 0;
    mlt_err e = mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, &seq);
    ck_assert_msg(e == MLT_OK, "append %" PRIu64 ": %s", n, mlt_strerror(e));
    ck_assert_uint_eq(seq, n);
    mlt__buf_free(&p);
}

/* Reads the records after *cursor; checks they are the PARAM records first..last in order and,
 * when last is the journal's last record, that nothing follows. The last record read goes to
 * *last_rec (when not NULL). */
static void expect_params(mlt__journal *j, uint64_t *cursor, uint64_t first, uint64_t last,
                          mlt__rec *last_rec)
{
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    for (uint64_t s = first; s <= last; s++) {
        memset(&r, 0, sizeof r);
        mlt_err e = mlt__journal_next(j, cursor, &scratch, &r);
        REQUIRE(e == MLT_OK, "record %" PRIu64 ": %s (%s)", s, mlt_strerror(e), mlt_last_error());
        REQUIRE(r.seq == s && *cursor == s, "seq %" PRIu64 " cursor %" PRIu64 " where %" PRIu64,
                r.seq, *cursor, s);
        REQUIRE(r.type == MLT__REC_PARAM && r.run_no == 1, "record %" PRIu64 " type %d", s,
                (int)r.type);
        char k[32], v[32];
        snprintf(k, sizeof k, "k%" PRIu64, s);
        snprintf(v, sizeof v, "v%" PRIu64, s);
        REQUIRE(strcmp(r.key, k) == 0 && strcmp(r.value, v) == 0, "record %" PRIu64 ": %s=%s", s,
                r.key, r.value);
        if (last_rec) {
            *last_rec = r;
        }
    }
    if (last == mlt__journal_last_seq(j)) {
        uint64_t c = *cursor;
        ck_assert_int_eq(mlt__journal_next(j, cursor, &scratch, &r), MLT_ERR_NOT_FOUND);
        ck_assert_uint_eq(*cursor, c);
    }
    mlt__buf_free(&scratch);
}

/* ---- CRC32C --------------------------------------------------------------------------------- */

START_TEST(crc32c_matches_known_vectors)
{
    ck_assert_uint_eq(mlt__crc32c(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(mlt__crc32c(0, "", 0), 0u);
    ck_assert_uint_eq(mlt__crc32c(0, NULL, 0), 0u);
    ck_assert_uint_eq(mlt__crc32c(0xE3069283u, "", 0), 0xE3069283u);
    /* RFC 3720 (iSCSI) B.4 test vectors */
    unsigned char buf[32];
    memset(buf, 0, sizeof buf);
    ck_assert_uint_eq(mlt__crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    ck_assert_uint_eq(mlt__crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) {
        buf[i] = (unsigned char)i;
    }
    ck_assert_uint_eq(mlt__crc32c(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) {
        buf[i] = (unsigned char)(31 - i);
    }
    ck_assert_uint_eq(mlt__crc32c(0, buf, 32), 0x113FDB5Cu);
    static const unsigned char iscsi[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    ck_assert_uint_eq(mlt__crc32c(0, iscsi, sizeof iscsi), 0xD9963A56u);
}
END_TEST

START_TEST(crc32c_incremental_equals_one_shot)
{
    unsigned char data[1000];
    uint64_t x = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < sizeof data; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (unsigned char)(x >> 56);
    }
    uint32_t whole = mlt__crc32c(0, data, sizeof data);
    ck_assert_uint_eq(whole, ref_crc32c(0, data, sizeof data));
    for (size_t cut = 0; cut <= sizeof data; cut += 7) {
        uint32_t c = mlt__crc32c(0, data, cut);
        REQUIRE(mlt__crc32c(c, data + cut, sizeof data - cut) == whole, "split at %zu", cut);
    }
    uint32_t c = 0;
    for (size_t i = 0; i < sizeof data; i++) {
        c = mlt__crc32c(c, data + i, 1);
    }
    ck_assert_uint_eq(c, whole);
    ck_assert_uint_eq(mlt__crc32c(mlt__crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}
END_TEST

START_TEST(crc32c_matches_a_bitwise_reference_at_every_alignment)
{
    unsigned char data[64 + 8];
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (unsigned char)(i * 37 + 11);
    }
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 64; len++) {
            REQUIRE(mlt__crc32c(0, data + off, len) == ref_crc32c(0, data + off, len),
                    "offset %zu length %zu", off, len);
            REQUIRE(mlt__crc32c(0x12345678u, data + off, len) ==
                        ref_crc32c(0x12345678u, data + off, len),
                    "seeded, offset %zu length %zu", off, len);
        }
    }
}
END_TEST

/* ---- record codec --------------------------------------------------------------------------- */

static mlt_err decode(mlt__rec_type type, const mlt__buf *b, mlt__rec *r)
{
    memset(r, 0xa5, sizeof *r); /* garbage: decode must set every field it promises */
    r->seq = 0;
    r->end_pos = 0;
    r->size = 0;
    return mlt__rec_decode(type, b->data, b->len, r);
}

START_TEST(record_create_round_trips_with_the_most_tags)
{
    const char *keys[MLT__REC_MAX_TAGS], *vals[MLT__REC_MAX_TAGS];
    char kb[MLT__REC_MAX_TAGS][16], vb[MLT__REC_MAX_TAGS][32];
    for (int i = 0; i < MLT__REC_MAX_TAGS; i++) {
        snprintf(kb[i], sizeof kb[i], "tag.%d", i);
        snprintf(vb[i], sizeof vb[i], "value %d \xc3\xa9\xe2\x82\xac", i);
        keys[i] = kb[i];
        vals[i] = vb[i];
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 4000000000u, "0b3c1f9e-2f43-4d8e-9a51-1b2c3d4e5f60", "parent-key",
                        "r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x9a\x80", "exp name", "42", INT64_MAX, keys,
                        vals, MLT__REC_MAX_TAGS, 0);
    ck_assert(!b.oom);
    mlt__rec r;
    r.seq = 77;
    r.end_pos = 88;
    r.size = 99;
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 77); /* kept, the caller's */
    ck_assert_uint_eq(r.end_pos, 88);
    ck_assert_uint_eq(r.size, 99);
    ck_assert_int_eq(r.type, MLT__REC_CREATE);
    ck_assert_uint_eq(r.run_no, 4000000000u);
    ck_assert_str_eq(r.key, "0b3c1f9e-2f43-4d8e-9a51-1b2c3d4e5f60");
    ck_assert_str_eq(r.parent_key, "parent-key");
    ck_assert_str_eq(r.run_name, "r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x9a\x80");
    ck_assert_str_eq(r.experiment_name, "exp name");
    ck_assert_str_eq(r.experiment_id, "42");
    ck_assert_int_eq(r.time_ms, INT64_MAX);
    ck_assert_uint_eq(r.n_tags, MLT__REC_MAX_TAGS);
    for (int i = 0; i < MLT__REC_MAX_TAGS; i++) {
        ck_assert_str_eq(r.tag_keys[i], kb[i]);
        ck_assert_str_eq(r.tag_values[i], vb[i]);
    }
    /* strings point into the payload */
    ck_assert(r.key > b.data && r.key < b.data + b.len);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_create_refuses_more_than_the_most_tags)
{
    const char *keys[MLT__REC_MAX_TAGS + 1], *vals[MLT__REC_MAX_TAGS + 1];
    for (int i = 0; i <= MLT__REC_MAX_TAGS; i++) {
        keys[i] = "k";
        vals[i] = "v";
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 1, "key", "", "", "", "", 0, keys, vals, MLT__REC_MAX_TAGS + 1, 0);
    ck_assert(b.oom);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_create_round_trips_empty_and_null_strings)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 0, "", NULL, "", NULL, "", INT64_MIN, NULL, NULL, 0, 0);
    ck_assert(!b.oom);
    mlt__rec r;
    ck_assert_int_eq(decode(MLT__REC_CREATE, &b, &r), MLT_OK);
    ck_assert_uint_eq(r.run_no, 0);
    ck_assert_str_eq(r.key, "");
    ck_assert_str_eq(r.parent_key, "");
    ck_assert_str_eq(r.run_name, "");
    ck_assert_str_eq(r.experiment_name, "");
    ck_assert_str_eq(r.experiment_id, "");
    ck_assert_int_eq(r.time_ms, INT64_MIN);
    ck_assert_uint_eq(r.n_tags, 0);
    ck_assert_ptr_null(r.value);
    /* a tag with empty key and value */
    const char *k[1] = {""}, *v[1] = {""};
    mlt__buf_reset(&b);
    mlt__rec_put_create(&b, 5, "x", "", "", "", "", -1, k, v, 1, 0);
    ck_assert_int_eq(decode(MLT__REC_CREATE, &b, &r), MLT_OK);
    ck_assert_uint_eq(r.n_tags, 1);
    ck_assert_str_eq(r.tag_keys[0], "");
    ck_assert_str_eq(r.tag_values[0], "");
    ck_assert_int_eq(r.time_ms, -1);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_param_and_tag_round_trip)
{
    static const mlt__rec_type types[] = {MLT__REC_PARAM, MLT__REC_TAG};
    static const char *const vals[] = {"", "0.001", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
                                       "line\nbreak \"quoted\" \\ tab\t"};
    for (size_t t = 0; t < 2; t++) {
        for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
            mlt__buf b;
            mlt__buf_init(&b);
            mlt__rec_put_kv(&b, UINT32_MAX, vals[(i + 1) % 4], vals[i]);
            mlt__rec r;
            ck_assert_int_eq(decode(types[t], &b, &r), MLT_OK);
            ck_assert_int_eq(r.type, types[t]);
            ck_assert_uint_eq(r.run_no, UINT32_MAX);
            ck_assert_str_eq(r.key, vals[(i + 1) % 4]);
            ck_assert_str_eq(r.value, vals[i]);
            mlt__buf_free(&b);
        }
    }
    /* a value of 1 MiB */
    char *big = malloc((1u << 20) + 1);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 1u << 20);
    big[1u << 20] = '\0';
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_kv(&b, 3, "big", big);
    mlt__rec r;
    ck_assert_int_eq(decode(MLT__REC_PARAM, &b, &r), MLT_OK);
    ck_assert_uint_eq(strlen(r.value), 1u << 20);
    mlt__buf_free(&b);
    free(big);
}
END_TEST

START_TEST(record_metric_round_trips_special_values_bit_exact)
{
    double nan_payload;
    uint64_t np = 0x7ff80000deadbeefull;
    memcpy(&nan_payload, &np, sizeof np);
    const double vals[] = {0.0,  -0.0,     1.0 / 3.0, -1e308,  5e-324,   NAN,
                           -NAN, INFINITY, -INFINITY, DBL_MAX, -DBL_MIN, nan_payload};
    const int64_t ints[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
            mlt__buf b;
            mlt__buf_init(&b);
            int64_t ts = ints[k], step = ints[(k + 2) % 5];
            mlt__rec_put_metric(&b, 9, "loss/val", vals[i], ts, step);
            mlt__rec r;
            ck_assert_int_eq(decode(MLT__REC_METRIC, &b, &r), MLT_OK);
            ck_assert_int_eq(r.type, MLT__REC_METRIC);
            ck_assert_uint_eq(r.run_no, 9);
            ck_assert_str_eq(r.key, "loss/val");
            ck_assert_msg(mlt_test_bits_of(r.num) == mlt_test_bits_of(vals[i]),
                          "value %zu: bits %016" PRIx64, i, mlt_test_bits_of(r.num));
            ck_assert_int_eq(r.time_ms, ts);
            ck_assert_int_eq(r.step, step);
            mlt__buf_free(&b);
        }
    }
}
END_TEST

START_TEST(record_end_round_trips_extreme_times)
{
    const int64_t times[] = {INT64_MIN, 0, 1700000000123, INT64_MAX};
    const int statuses[] = {MLT_RUN_FINISHED, MLT_RUN_FAILED, MLT_RUN_KILLED, -7};
    for (size_t i = 0; i < 4; i++) {
        mlt__buf b;
        mlt__buf_init(&b);
        mlt__rec_put_end(&b, 12, statuses[i], times[i]);
        mlt__rec r;
        ck_assert_int_eq(decode(MLT__REC_END, &b, &r), MLT_OK);
        ck_assert_int_eq(r.type, MLT__REC_END);
        ck_assert_uint_eq(r.run_no, 12);
        ck_assert_int_eq(r.status, statuses[i]);
        ck_assert_int_eq(r.time_ms, times[i]);
        mlt__buf_free(&b);
    }
}
END_TEST

/* One valid payload of each type, for the corruption tests. */
static void sample_payload(mlt__rec_type t, mlt__buf *b)
{
    const char *k[2] = {"a", "bb"}, *v[2] = {"ccc", ""};
    mlt__buf_reset(b);
    switch (t) {
    case MLT__REC_CREATE:
        mlt__rec_put_create(b, 1, "key", "pk", "name", "exp", "7", 123, k, v, 2, 0);
        break;
    case MLT__REC_PARAM:
    case MLT__REC_TAG:
        mlt__rec_put_kv(b, 1, "key", "value");
        break;
    case MLT__REC_METRIC:
        mlt__rec_put_metric(b, 1, "m", 2.5, 1000, 3);
        break;
    case MLT__REC_END:
        mlt__rec_put_end(b, 1, MLT_RUN_FINISHED, 2000);
        break;
    case MLT__REC_ATTACH:
        mlt__rec_put_attach(b, 1, "key", "0123abcd", "exp", "7", 1700000000123);
        break;
    case MLT__REC_ARTIFACT:
        mlt__rec_put_artifact(b, 1, "dir/f.bin", 42,
                              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                              1700000000123);
        break;
    case MLT__REC_POINT:
        ck_abort_msg("POINT records are written from the ring only (check_ring)");
        break;
    }
    ck_assert(!b->oom);
}

/* Every record type of record.h that a record payload encodes (POINT: check_ring). */
static const mlt__rec_type rec_types[] = {MLT__REC_CREATE,  MLT__REC_PARAM, MLT__REC_METRIC,
                                          MLT__REC_TAG,     MLT__REC_END,   MLT__REC_ATTACH,
                                          MLT__REC_ARTIFACT};
#define N_REC_TYPES (sizeof rec_types / sizeof rec_types[0])

START_TEST(record_truncated_payloads_are_corrupt)
{
    for (size_t ti = 0; ti < N_REC_TYPES; ti++) {
        mlt__rec_type t = rec_types[ti];
        mlt__buf b;
        mlt__buf_init(&b);
        sample_payload((mlt__rec_type)t, &b);
        for (size_t len = 0; len < b.len; len++) {
            /* an exact-size copy, so ASan sees any read past the end */
            char *copy = malloc(len ? len : 1);
            ck_assert_ptr_nonnull(copy);
            memcpy(copy, b.data, len);
            mlt__rec r;
            mlt_err e = mlt__rec_decode((mlt__rec_type)t, copy, len, &r);
            /* an ATTACH without its last 8 bytes is one of mltrack 0.1, without its time */
            bool old_attach = t == MLT__REC_ATTACH && len == b.len - 8;
            REQUIRE(e == (old_attach ? MLT_OK : MLT_ERR_CORRUPT),
                    "type %d truncated to %zu of %zu: %s", t, len, b.len, mlt_strerror(e));
            free(copy);
        }
        mlt__buf_free(&b);
    }
    mlt__rec r;
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_PARAM, NULL, 0, &r), MLT_ERR_CORRUPT);
}
END_TEST

START_TEST(record_create_keeps_its_resume_flag_and_reads_old_creates)
{
    const char *k[] = {"t"}, *v[] = {"1"};
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 3, "job-42", "", "train", "exp", "", 7, k, v, 1, MLT__CREATE_RESUME);
    mlt__rec r;
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len, &r), MLT_OK);
    ck_assert_uint_eq(r.flags, MLT__CREATE_RESUME);
    ck_assert_str_eq(r.key, "job-42");
    /* without flags (0, and every CREATE before 0.3): the record is as before, flags 0 */
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len - 4, &r), MLT_OK);
    ck_assert_uint_eq(r.flags, 0);
    /* unknown bits are corrupt, not ignored */
    b.data[b.len - 1] = 0x40;
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len, &r), MLT_ERR_CORRUPT);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_trailing_garbage_is_corrupt)
{
    for (size_t ti = 0; ti < N_REC_TYPES; ti++) {
        mlt__rec_type t = rec_types[ti];
        mlt__buf b;
        mlt__buf_init(&b);
        sample_payload((mlt__rec_type)t, &b);
        mlt__rec r;
        ck_assert_int_eq(mlt__rec_decode((mlt__rec_type)t, b.data, b.len, &r), MLT_OK);
        for (size_t extra = 1; extra <= 9; extra++) {
            mlt__buf_putc(&b, '\0');
            REQUIRE(mlt__rec_decode((mlt__rec_type)t, b.data, b.len, &r) == MLT_ERR_CORRUPT,
                    "type %d with %zu trailing bytes", t, extra);
        }
        mlt__buf_free(&b);
    }
}
END_TEST

START_TEST(record_unknown_types_are_corrupt)
{
    mlt__buf b;
    mlt__buf_init(&b);
    sample_payload(MLT__REC_PARAM, &b);
    mlt__rec r;
    ck_assert_int_eq(mlt__rec_decode((mlt__rec_type)0, b.data, b.len, &r), MLT_ERR_CORRUPT);
    ck_assert_int_eq(mlt__rec_decode((mlt__rec_type)6, b.data, b.len, &r), MLT_ERR_CORRUPT);
    ck_assert_int_eq(mlt__rec_decode((mlt__rec_type)255, b.data, b.len, &r), MLT_ERR_CORRUPT);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_attach_round_trips)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_attach(&b, 9, "the-key", "", "exp name", "", 1700000000123);
    mlt__rec r;
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_ATTACH, b.data, b.len, &r), MLT_OK);
    ck_assert_uint_eq(r.run_no, 9);
    ck_assert_str_eq(r.key, "the-key");
    ck_assert_str_eq(r.run_id, "");
    ck_assert_str_eq(r.experiment_name, "exp name");
    ck_assert_str_eq(r.experiment_id, "");
    ck_assert_int_eq(r.time_ms, 1700000000123);
    /* as mltrack 0.1 wrote it, without the time: read as unknown (0) */
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_ATTACH, b.data, b.len - 8, &r), MLT_OK);
    ck_assert_str_eq(r.experiment_name, "exp name");
    ck_assert_int_eq(r.time_ms, 0);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_malformed_strings_are_corrupt)
{
    mlt__rec r;
    /* run_no, then a string of length 3 whose NUL is missing */
    static const unsigned char no_nul[] = {1,   0,   0,   0, 3, 0, 0, 0,   'a',
                                           'b', 'c', 'd', 1, 0, 0, 0, 'x', 0};
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_PARAM, no_nul, sizeof no_nul, &r), MLT_ERR_CORRUPT);
    /* a NUL inside the string */
    static const unsigned char inner_nul[] = {1, 0,   0, 0, 3, 0, 0, 0,   'a',
                                              0, 'c', 0, 1, 0, 0, 0, 'x', 0};
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_PARAM, inner_nul, sizeof inner_nul, &r),
                     MLT_ERR_CORRUPT);
    /* a length near 4 GiB */
    static const unsigned char huge[] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 'a', 0};
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_TAG, huge, sizeof huge, &r), MLT_ERR_CORRUPT);
    /* well formed, for contrast */
    static const unsigned char good[] = {1,   0,   0, 0, 3, 0, 0, 0,   'a',
                                         'b', 'c', 0, 1, 0, 0, 0, 'x', 0};
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_PARAM, good, sizeof good, &r), MLT_OK);
    ck_assert_str_eq(r.key, "abc");
    ck_assert_str_eq(r.value, "x");
    /* a CREATE announcing MAX_TAGS + 1 tags */
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 1, "k", "", "", "", "", 0, NULL, NULL, 0, 0);
    unsigned char *n_tags = (unsigned char *)b.data + b.len - 4;
    le32_put(n_tags, MLT__REC_MAX_TAGS + 1);
    for (int i = 0; i <= MLT__REC_MAX_TAGS; i++) {
        mlt__buf_append(&b, "\0\0\0\0\0\0\0\0\0\0", 10); /* two empty strings */
    }
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len, &r), MLT_ERR_CORRUPT);
    le32_put((unsigned char *)b.data + b.len - 4 - 10 * (MLT__REC_MAX_TAGS + 1), 0xffffffffu);
    ck_assert_int_eq(mlt__rec_decode(MLT__REC_CREATE, b.data, b.len, &r), MLT_ERR_CORRUPT);
    mlt__buf_free(&b);
}
END_TEST

START_TEST(record_decode_survives_random_bytes)
{
    uint64_t st = 20240601;
    unsigned long ok = 0;
    mlt__buf sample;
    mlt__buf_init(&sample);
    for (int i = 0; i < 100000; i++) {
        uint64_t x = mlt_test_rng_next(&st);
        size_t len = (size_t)(x % 200);
        unsigned char *p;
        if (i % 4 == 0) {
            /* a mutated valid payload: reaches deeper than pure noise */
            sample_payload((mlt__rec_type)(1 + (x >> 8) % 5), &sample);
            len = sample.len - (size_t)((x >> 16) % 3);
            p = malloc(len);
            ck_assert_ptr_nonnull(p);
            memcpy(p, sample.data, len);
            if ((x >> 44) % 4 != 0) { /* a quarter of them unmutated (or merely shortened) */
                p[(x >> 24) % len] ^= (unsigned char)(1u << ((x >> 40) % 8));
            }
        } else {
            p = malloc(len ? len : 1); /* exact size: ASan sees a read past the end */
            ck_assert_ptr_nonnull(p);
            for (size_t k = 0; k < len; k++) {
                p[k] = (unsigned char)(mlt_test_rng_next(&st) >> 56);
            }
            if (len >= 8 && (x & 1)) {
                p[4] = (unsigned char)(x >> 48) & 0x1f; /* small string lengths */
                p[5] = p[6] = p[7] = 0;
            }
        }
        mlt__rec r;
        mlt__rec_type t = (mlt__rec_type)((x >> 32) % 7);
        mlt_err e = mlt__rec_decode(t, p, len, &r);
        REQUIRE(e == MLT_OK || e == MLT_ERR_CORRUPT, "decode returned %d", (int)e);
        if (e == MLT_OK) {
            ok++;
            /* every string it hands out lies inside the payload and ends there */
            const char *strs[] = {r.key,      r.value,           r.parent_key,
                                  r.run_name, r.experiment_name, r.experiment_id};
            for (size_t s = 0; s < sizeof strs / sizeof *strs; s++) {
                if (strs[s]) {
                    REQUIRE((const unsigned char *)strs[s] >= p &&
                                (const unsigned char *)strs[s] + strlen(strs[s]) < p + len,
                            "string outside the payload");
                }
            }
        }
        free(p);
    }
    mlt__buf_free(&sample);
    ck_assert_uint_gt(ok, 0); /* the mutations did produce some valid records */
}
END_TEST

/* ---- journal: files, append, read ----------------------------------------------------------- */

/* ---- artifacts ---- */

START_TEST(record_artifact_round_trips_and_refuses_a_bad_digest)
{
    static const char sha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_artifact(&b, 7, "plots/r\xc3\xa9sum\xc3\xa9 1.png", UINT64_MAX, sha, INT64_MAX);
    mlt__rec r;
    ck_assert_int_eq(decode(MLT__REC_ARTIFACT, &b, &r), MLT_OK);
    ck_assert_uint_eq(r.run_no, 7);
    ck_assert_str_eq(r.key, "plots/r\xc3\xa9sum\xc3\xa9 1.png");
    ck_assert_uint_eq(r.bytes, UINT64_MAX);
    ck_assert_str_eq(r.value, sha);
    ck_assert_int_eq(r.time_ms, INT64_MAX);
    mlt__buf_free(&b);
    mlt__buf_init(&b);
    mlt__rec_put_artifact(&b, 7, "a", 1, "abc", 0); /* not a SHA-256 */
    ck_assert_int_eq(decode(MLT__REC_ARTIFACT, &b, &r), MLT_ERR_CORRUPT);
    mlt__buf_free(&b);
}
END_TEST

/* Logs bytes as artifact path of run 1; returns the record's sequence number. */
static uint64_t put_art(mlt__journal *j, const char *path, const char *data, char sha[65])
{
    mlt__art_src src = {-1, data, strlen(data)};
    uint64_t bytes = 0;
    char err[512] = "";
    mlt_err e = mlt__errbuf(
        err, sizeof err, mlt__journal_put_artifact(j, 1, path, &src, 1700000000000, &bytes, sha));
    ck_assert_msg(e == MLT_OK, "put_artifact: %s", err);
    ck_assert_uint_eq(bytes, strlen(data));
    return mlt__journal_last_seq(j);
}

START_TEST(journal_artifact_snapshot_is_what_was_logged_until_acked)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_INTERVAL);
    append_param(j, 1);
    /* a file changed after the call uploads what was logged */
    char src_path[PATH_MAX + 32];
    snprintf(src_path, sizeof src_path, "%s/model.bin", f.tmp);
    FILE *fp = fopen(src_path, "wb");
    ck_assert_ptr_nonnull(fp);
    fputs("weights v1", fp);
    fclose(fp);
    int fd = open(src_path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    mlt__art_src src = {fd, NULL, 10};
    uint64_t bytes;
    char sha[65];
    uint64_t before = mlt__journal_pending_bytes(j);
    ck_assert_int_eq(mlt__journal_put_artifact(j, 1, "models/model.bin", &src, 5, &bytes, sha),
                     MLT_OK);
    close(fd);
    ck_assert_uint_eq(bytes, 10);
    /* sha256sum of "weights v1" */
    ck_assert_str_eq(sha, "13e35c44395f6cade670c076230362267c5288989d3498e207877d62b859a6d8");
    fp = fopen(src_path, "wb");
    fputs("weights v2, longer", fp);
    fclose(fp);
    ck_assert_uint_ge(mlt__journal_pending_bytes(j), before + 10);
    size_t len;
    char path_only[PATH_MAX + 64];
    snprintf(path_only, sizeof path_only, "art/%020d", 2);
    unsigned char *kept = slurp(f.dir, path_only, &len);
    ck_assert_uint_eq(len, 10);
    ck_assert(memcmp(kept, "weights v1", 10) == 0);
    free(kept);
    /* the record names it */
    uint64_t c = 0;
    mlt__rec r1, r;
    expect_params(j, &c, 1, 1, &r1);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_ARTIFACT);
    ck_assert_uint_eq(r.seq, 2);
    ck_assert_str_eq(r.key, "models/model.bin");
    ck_assert_uint_eq(r.bytes, 10);
    ck_assert_str_eq(r.value, sha);
    int rfd = -1;
    ck_assert_int_eq(mlt__journal_open_artifact(j, &r, true, &rfd), MLT_OK);
    close(rfd);
    /* acked, then done: the snapshot goes once the ack is on disk (the next sync), and the
     * queue's size with it */
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    mlt__journal_artifact_done(j, &r);
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    ck_assert(!exists(f.dir, path_only));
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, true);
    ck_assert(access(f.dir, F_OK) != 0); /* all delivered: removed, art/ with it */
    fixture_done(&f);
}
END_TEST

START_TEST(journal_artifact_snapshot_of_a_large_file_is_copied_and_hashed_whole)
{
    /* past the size where the copy is hashed on a thread of its own, not a multiple of any
     * chunk: the snapshot holds the bytes, and its digest is the file's, hashed in one go */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_INTERVAL);
    size_t len = (9u << 20) + 12345;
    unsigned char *data = malloc(len);
    ck_assert_ptr_nonnull(data);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (unsigned char)x;
    }
    spit(f.tmp, "large.bin", data, len);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/large.bin", f.tmp);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char want[65];
    ck_assert_int_eq(mlt__sha256_fd(fd, 0, len, want), MLT_OK);
    mlt__art_src src = {fd, NULL, len};
    uint64_t bytes;
    char sha[65];
    ck_assert_int_eq(mlt__journal_put_artifact(j, 1, "large.bin", &src, 5, &bytes, sha), MLT_OK);
    close(fd);
    ck_assert_uint_eq(bytes, len);
    ck_assert_str_eq(sha, want);
    size_t got_len;
    char name[64];
    snprintf(name, sizeof name, "art/%020d", 1);
    unsigned char *got = slurp(f.dir, name, &got_len);
    ck_assert_uint_eq(got_len, len);
    ck_assert(memcmp(got, data, len) == 0);
    free(got);
    free(data);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_artifact_snapshot_outlives_an_ack_not_yet_on_disk)
{
    /* fsync=interval: a power loss before the ack's sync would deliver the record again, so
     * its snapshot stays until the ack is on disk */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_INTERVAL);
    mlt__journal_set_interval(j, 60000); /* no sync comes with the ack */
    char sha[65];
    put_art(j, "a.txt", "abc", sha);
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    uint64_t c = 0;
    mlt__rec r;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    mlt__journal_artifact_done(j, &r);
    char name[64];
    snprintf(name, sizeof name, "art/%020d", 1);
    ck_assert(exists(f.dir, name));
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    ck_assert(!exists(f.dir, name));
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_artifact_recovery_keeps_only_what_a_record_needs)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    char sha1[65], sha2[65], sha3[65];
    uint64_t s1 = put_art(j, "one.txt", "first", sha1);
    uint64_t s2 = put_art(j, "two.txt", "second!", sha2);
    uint64_t s3 = put_art(j, "three.txt", "third", sha3);
    ck_assert_uint_eq(s1, 1);
    ck_assert_uint_eq(s3, 3);
    uint64_t c = 0;
    mlt__rec r;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK); /* acked; a crash before its removal */
    mlt__journal_close(j, false);
    /* what a crash leaves: a snapshot half made, one renamed for a record never written */
    char name[PATH_MAX + 64];
    spit(f.dir, "art/tmp-999-1", "half", 4);
    snprintf(name, sizeof name, "art/%020d", 9);
    spit(f.dir, name, "no record", 9);
    j = open_j(f.dir, false, NULL);
    char listed[PATH_MAX + 64];
    snprintf(listed, sizeof listed, "%s/art", f.dir);
    char *names = listing(listed);
    char want[128];
    snprintf(want, sizeof want, "%020d %020d", 2, 3);
    ck_assert_str_eq(names, want);
    free(names);
    /* the queue's size counts the snapshots left, besides the records */
    ck_assert_uint_ge(mlt__journal_pending_bytes(j), strlen("second!") + strlen("third"));
    c = mlt__journal_acked_seq(j);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, s2);
    int fd = -1;
    /* torn: shorter than logged; same size, other bytes (seen only when verified) */
    snprintf(name, sizeof name, "art/%020d", 2);
    truncate_to(f.dir, name, 3);
    ck_assert_int_eq(mlt__journal_open_artifact(j, &r, false, &fd), MLT_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), "torn"));
    spit(f.dir, name, "SECOND!", 7);
    ck_assert_int_eq(mlt__journal_open_artifact(j, &r, true, &fd), MLT_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), sha2));
    ck_assert_int_eq(mlt__journal_open_artifact(j, &r, false, &fd), MLT_OK);
    close(fd);
    /* refused for good: set aside with its bytes, named in the dead letter */
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "HTTP 400: no"), MLT_OK);
    ck_assert(!exists(f.dir, name));
    snprintf(name, sizeof name, "art/dead-%020d", 2);
    ck_assert(exists(f.dir, name));
    size_t len;
    char *dead = (char *)slurp(f.dir, "dead.jsonl", &len);
    cJSON *o = cJSON_Parse(dead);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "artifact");
    ck_assert_str_eq(mlt_test_jstr(o, "path"), "two.txt");
    ck_assert_str_eq(mlt_test_jstr(o, "sha256"), sha2);
    ck_assert_str_eq(mlt_test_jstr(o, "snapshot"), name);
    cJSON_Delete(o);
    free(dead);
    /* a snapshot gone is said so */
    ck_assert_int_eq(mlt__journal_open_artifact(j, &r, false, &fd), MLT_ERR_NOT_FOUND);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_create_makes_private_files_and_a_first_segment)
{
    fixture f;
    fixture_init(&f);
    mode_t old = umask(022);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_INTERVAL);
    umask(old);
    ck_assert_str_eq(mlt__journal_dir(j), f.dir);
    char *names = listing(f.dir);
    ck_assert_str_eq(names, "acked keys lock ring runs seg-00000000000000000001.log");
    free(names);
    ck_assert_uint_eq(mode_of(f.dir, NULL), 0700);
    ck_assert_uint_eq(mode_of(f.dir, "lock"), 0600);
    ck_assert_uint_eq(mode_of(f.dir, "acked"), 0600);
    ck_assert_uint_eq(mode_of(f.dir, "runs"), 0600);
    ck_assert_uint_eq(mode_of(f.dir, SEG1), 0600);
    size_t len;
    unsigned char *seg = slurp(f.dir, SEG1, &len);
    ck_assert_uint_eq(len, 8);
    ck_assert_int_eq(memcmp(seg, "MLTJRNL1", 8), 0);
    free(seg);
    char *acked = (char *)slurp(f.dir, "acked", &len);
    ck_assert_str_eq(acked, "0\n");
    free(acked);
    ck_assert_uint_eq(file_size(f.dir, "runs"), 0);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 0);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), 0);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 0);
    uint64_t cursor = 0;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    mlt__journal_close(NULL, true); /* does nothing */
    fixture_done(&f);
}
END_TEST

START_TEST(journal_create_makes_missing_parent_directories)
{
    fixture f;
    fixture_init(&f);
    char deep[DIR_LEN + 64];
    snprintf(deep, sizeof deep, "%s/a/b/c/j-x", f.tmp);
    mlt__journal *j = create_j(deep, MLT__FSYNC_NONE);
    ck_assert(exists(deep, SEG1));
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_create_takes_a_relative_directory)
{
    fixture f;
    fixture_init(&f);
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(f.tmp), 0);
    mlt__journal *j = NULL, *k = NULL;
    char err1[256] = "", err2[256] = "";
    mlt_err e1 = mlt__errbuf(err1, sizeof err1, mlt__journal_create(&j, "j-rel", MLT__FSYNC_NONE));
    mlt_err e2 =
        mlt__errbuf(err2, sizeof err2, mlt__journal_create(&k, "sub/j-rel", MLT__FSYNC_NONE));
    mlt__journal_close(j, false);
    mlt__journal_close(k, false);
    ck_assert_int_eq(chdir(cwd), 0);
    bool made1 = exists(f.tmp, "j-rel/"
                               "seg-00000000000000000001.log");
    bool made2 = exists(f.tmp, "sub/j-rel/"
                               "seg-00000000000000000001.log");
    fixture_done(&f);
    ck_assert_msg(e1 == MLT_OK && made1, "create(\"j-rel\"): %s (%s)", mlt_strerror(e1), err1);
    ck_assert_msg(e2 == MLT_OK && made2, "create(\"sub/j-rel\"): %s (%s)", mlt_strerror(e2), err2);
}
END_TEST

START_TEST(journal_create_refuses_an_existing_journal)
{
    /* "Creates a new journal directory": a journal already there (its owner gone) holds
     * records that must not be lost by creating over it. */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    for (uint64_t s = 1; s <= 3; s++) {
        append_param(j, s);
    }
    mlt__journal_close(j, false);
    off_t before = file_size(f.dir, SEG1);
    mlt__journal *again = NULL;
    char err[256] = "";
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__journal_create(&again, f.dir, MLT__FSYNC_NONE));
    if (e == MLT_OK) {
        mlt__journal_close(again, false);
    }
    off_t after = file_size(f.dir, SEG1);
    size_t len;
    char *acked = (char *)slurp(f.dir, "acked", &len);
    j = open_j(f.dir, false, NULL);
    uint64_t last = mlt__journal_last_seq(j);
    mlt__journal_close(j, false);
    fixture_done(&f); /* before asserting: no directory left behind without fork */
    char acked_text[16];
    snprintf(acked_text, sizeof acked_text, "%.*s", (int)strcspn(acked, "\n"), acked);
    free(acked);
    ck_assert_msg(e != MLT_OK,
                  "create over an existing journal succeeded: segment %lld -> %lld bytes, "
                  "acked %s, last seq %" PRIu64 " (was 3)",
                  (long long)before, (long long)after, acked_text, last);
    ck_assert_int_eq(after, before);
    ck_assert_uint_eq(last, 3);
}
END_TEST

START_TEST(journal_appends_read_back_in_order)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    /* every type, then params */
    const char *tk[1] = {"mlflow.user"}, *tv[1] = {"me"};
    mlt__buf p;
    mlt__buf_init(&p);
    uint64_t seq;
    mlt__rec_put_create(&p, 1, "run-key-1", "", "train", "exp", "", 1000, tk, tv, 1, 0);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_CREATE, p.data, p.len, &seq), MLT_OK);
    ck_assert_uint_eq(seq, 1);
    mlt__buf_reset(&p);
    mlt__rec_put_kv(&p, 1, "lr", "0.1");
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, &seq), MLT_OK);
    mlt__buf_reset(&p);
    mlt__rec_put_metric(&p, 1, "loss", -0.0, 1001, INT64_MIN);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_METRIC, p.data, p.len, &seq), MLT_OK);
    mlt__buf_reset(&p);
    mlt__rec_put_kv(&p, 1, "t", "v");
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_TAG, p.data, p.len, NULL), MLT_OK);
    mlt__buf_reset(&p);
    mlt__rec_put_end(&p, 1, MLT_RUN_FAILED, 1002);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_END, p.data, p.len, &seq), MLT_OK);
    ck_assert_uint_eq(seq, 5);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 5);

    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    uint64_t cursor = 0;
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(cursor, 1);
    ck_assert_uint_eq(r.seq, 1);
    ck_assert_int_eq(r.type, MLT__REC_CREATE);
    ck_assert_str_eq(r.key, "run-key-1");
    ck_assert_str_eq(r.run_name, "train");
    ck_assert_str_eq(r.experiment_name, "exp");
    ck_assert_uint_eq(r.n_tags, 1);
    ck_assert_str_eq(r.tag_values[0], "me");
    uint64_t pos = r.size;
    ck_assert_uint_eq(r.end_pos, pos);
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 2);
    ck_assert_int_eq(r.type, MLT__REC_PARAM);
    ck_assert_str_eq(r.key, "lr");
    ck_assert_str_eq(r.value, "0.1");
    ck_assert_uint_eq(r.size, MLT__FRAME_HEADER + 4 + 4 + 3 + 4 + 4);
    pos += r.size;
    ck_assert_uint_eq(r.end_pos, pos);
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_METRIC);
    ck_assert_uint_eq(mlt_test_bits_of(r.num), mlt_test_bits_of(-0.0));
    ck_assert_int_eq(r.step, INT64_MIN);
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_TAG);
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_END);
    ck_assert_int_eq(r.status, MLT_RUN_FAILED);
    ck_assert_uint_eq(cursor, 5);
    ck_assert_uint_eq(r.end_pos, mlt__journal_pending_bytes(j));
    ck_assert_uint_eq(r.end_pos + 8, (uint64_t)file_size(f.dir, SEG1));
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_ERR_NOT_FOUND);
    /* appending after the reader caught up: the reader sees the new record */
    mlt__buf_reset(&p);
    mlt__rec_put_kv(&p, 2, "after", "x");
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, &seq), MLT_OK);
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 6);
    ck_assert_str_eq(r.key, "after");
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__buf_free(&scratch);
    mlt__buf_free(&p);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_segment_bytes_match_the_frame_format)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_ALWAYS);
    for (uint64_t s = 1; s <= 3; s++) {
        append_param(j, s);
    }
    mlt__journal_close(j, false);
    /* the library's segment is byte for byte what the format says */
    size_t len;
    unsigned char *seg = slurp(f.dir, SEG1, &len);
    mlt__buf want, p;
    mlt__buf_init(&want);
    mlt__buf_init(&p);
    mlt__buf_append(&want, MLT__SEGMENT_MAGIC, 8);
    for (uint64_t s = 1; s <= 3; s++) {
        param_payload(&p, s);
        craft_frame(&want, s, MLT__REC_PARAM, p.data, p.len);
    }
    ck_assert_uint_eq(len, want.len);
    ck_assert_int_eq(memcmp(seg, want.data, len), 0);
    free(seg);
    mlt__buf_free(&want);
    mlt__buf_free(&p);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_reopen_keeps_records_and_last_seq)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_INTERVAL);
    for (uint64_t s = 1; s <= 50; s++) {
        append_param(j, s);
    }
    uint64_t pending = mlt__journal_pending_bytes(j);
    mlt__journal_close(j, true); /* not delivered: stays */
    ck_assert(exists(f.dir, SEG1));
    mlt__recovery rec;
    memset(&rec, 0x5a, sizeof rec);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 50);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.first_seq, 1);
    ck_assert_uint_eq(rec.last_seq, 50);
    ck_assert_str_eq(rec.why, "");
    ck_assert_uint_eq(mlt__journal_last_seq(j), 50);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), 0);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), pending);
    uint64_t cursor = mlt__journal_acked_seq(j);
    expect_params(j, &cursor, 1, 50, NULL);
    mlt__journal_close(j, false);
    /* a NULL recovery report is allowed */
    mlt__journal *j2 = NULL;
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__journal_open(&j2, f.dir, false, MLT__FSYNC_NONE, NULL)), MLT_OK);
    mlt__journal_close(j2, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_reopened_for_delivery_refuses_appends_cleanly)
{
    /* mlt__journal_open is for taking over a dead owner's journal: the sender reads it, the
     * tracker appends to a journal of its own. An append to it must fail without harm. */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    append_param(j, 1);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, NULL);
    mlt__buf p;
    mlt__buf_init(&p);
    param_payload(&p, 2);
    uint64_t seq = 99;
    mlt_err e = mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, &seq);
    if (e == MLT_OK) {
        /* if it is ever allowed, the record must land after the others */
        ck_assert_uint_eq(seq, 2);
        uint64_t c = 0;
        expect_params(j, &c, 1, 2, NULL);
    } else {
        ck_assert_int_eq(e, MLT_ERR_STATE);
        ck_assert_uint_eq(seq, 99);
        ck_assert_uint_eq(mlt__journal_last_seq(j), 1);
        uint64_t c = 0;
        expect_params(j, &c, 1, 1, NULL);
    }
    mlt__buf_free(&p);
    mlt__journal_close(j, false);
    /* read-only: never */
    j = open_j(f.dir, true, NULL);
    mlt__buf_init(&p);
    param_payload(&p, 2);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, NULL), MLT_ERR_STATE);
    mlt__buf_free(&p);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_a_second_open_of_a_live_journal_is_locked)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    append_param(j, 1);
    /* flock belongs to the open file description: a second open in this process conflicts */
    mlt__journal *j2 = NULL;
    char err[256] = "";
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j2, f.dir, false, MLT__FSYNC_NONE, NULL)),
        MLT_ERR_LOCKED);
    ck_assert_ptr_null(j2);
    ck_assert_ptr_nonnull(strstr(err, f.dir));
    /* creating over it is refused too */
    ck_assert_int_eq(mlt__errbuf(err, sizeof err, mlt__journal_create(&j2, f.dir, MLT__FSYNC_NONE)),
                     MLT_ERR_LOCKED);
    ck_assert_ptr_null(j2);
    /* the live journal still works */
    append_param(j, 2);
    mlt__journal_close(j, false);
    /* freed by close: the next owner takes it */
    j = open_j(f.dir, false, NULL);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 2);
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__journal_open(&j2, f.dir, false, MLT__FSYNC_NONE, NULL)),
        MLT_ERR_LOCKED);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_open_of_a_missing_directory_fails)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = NULL;
    char err[256] = "";
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, f.dir, false, MLT__FSYNC_NONE, NULL)),
        MLT_ERR_IO);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, f.dir, true, MLT__FSYNC_NONE, NULL)),
        MLT_ERR_IO);
    ck_assert_ptr_null(j);
    ck_assert(!exists(f.tmp, "j-test"));
    fixture_done(&f);
}
END_TEST

/* Every file of dir with its bytes, for "nothing changed" checks. */
typedef struct snapshot {
    char *names;
    char *files[16];
    size_t lens[16];
    size_t n;
} snapshot;

static void snap(const char *dir, snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->names = listing(dir);
    char *copy = strdup(s->names), *save = NULL;
    for (char *name = strtok_r(copy, " ", &save); name; name = strtok_r(NULL, " ", &save)) {
        ck_assert_uint_lt(s->n, 16);
        s->files[s->n] = (char *)slurp(dir, name, &s->lens[s->n]);
        ck_assert_ptr_nonnull(s->files[s->n]);
        s->n++;
    }
    free(copy);
}

static void snap_same(const snapshot *a, const snapshot *b)
{
    ck_assert_str_eq(a->names, b->names);
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_uint_eq(a->lens[i], b->lens[i]);
        ck_assert_int_eq(memcmp(a->files[i], b->files[i], a->lens[i]), 0);
    }
}

static void snap_free(snapshot *s)
{
    free(s->names);
    for (size_t i = 0; i < s->n; i++) {
        free(s->files[i]);
    }
}

START_TEST(journal_read_only_open_of_a_locked_journal_changes_nothing)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    for (uint64_t s = 1; s <= 5; s++) {
        append_param(j, s);
    }
    ck_assert_int_eq(mlt__journal_put_run(j, 1, "key-1", "rid", "0", MLT__RUN_OPEN), MLT_OK);
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    snapshot before, after;
    snap(f.dir, &before);
    mlt__recovery rec;
    mlt__journal *ro = open_j(f.dir, true, &rec);
    ck_assert_uint_eq(rec.records, 5);
    ck_assert_uint_eq(rec.last_seq, 5);
    ck_assert_uint_eq(mlt__journal_last_seq(ro), 5);
    size_t n;
    const mlt__run_entry *runs = mlt__journal_runs(ro, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(runs[0].key, "key-1");
    uint64_t c = 0;
    expect_params(ro, &c, 1, 5, NULL);
    /* a read-only put_run changes only memory */
    ck_assert_int_eq(mlt__journal_put_run(ro, 2, "key-2", NULL, NULL, MLT__RUN_OPEN), MLT_OK);
    mlt__journal_close(ro, true);
    snap(f.dir, &after);
    snap_same(&before, &after);
    snap_free(&after);
    /* the owner is undisturbed: still locked, still appending */
    ck_assert_int_eq(
        mlt__errbuf(NULL, 0, mlt__journal_open(&ro, f.dir, false, MLT__FSYNC_NONE, NULL)),
        MLT_ERR_LOCKED);
    append_param(j, 6);
    mlt__journal_close(j, false);
    snap_free(&before);
    fixture_done(&f);
}
END_TEST

/* ---- journal: acks -------------------------------------------------------------------------- */

START_TEST(journal_ack_persists_across_reopen)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    for (uint64_t s = 1; s <= 10; s++) {
        append_param(j, s);
    }
    uint64_t total = mlt__journal_pending_bytes(j);
    ck_assert_uint_eq(total, (uint64_t)file_size(f.dir, SEG1) - 8);
    uint64_t c = 0;
    mlt__rec r4;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    expect_params(j, &c, 1, 4, &r4);
    ck_assert_int_eq(mlt__journal_ack(j, &r4), MLT_OK);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), 4);
    uint64_t four = 0;
    for (uint64_t s = 1; s <= 4; s++) {
        four += param_frame_size(s);
    }
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), total - four);
    size_t len;
    char *acked = (char *)slurp(f.dir, "acked", &len);
    ck_assert_str_eq(acked, "4\n");
    free(acked);
    mlt__journal_close(j, true); /* records 5..10 undelivered: stays */
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), 4);
    ck_assert_uint_eq(rec.first_seq, 5);
    ck_assert_uint_eq(rec.last_seq, 10);
    ck_assert_uint_eq(rec.records, 6);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), total - four);
    /* reading from the acked cursor gives 5.. only; before it is refused */
    c = 3;
    mlt__rec r;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_STATE);
    c = mlt__journal_acked_seq(j);
    mlt__rec rlast;
    expect_params(j, &c, 5, 7, NULL); /* read, not acked: read again after a reopen */
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, &rec);
    c = mlt__journal_acked_seq(j);
    expect_params(j, &c, 5, 10, &rlast);
    ck_assert_int_eq(mlt__journal_ack(j, &rlast), MLT_OK);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 0);
    ck_assert_uint_eq(rec.first_seq, 0);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 10);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), 10);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    c = 10;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__journal_close(j, false);
    mlt__buf_free(&scratch);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_pending_bytes_follow_acks_after_reopen)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    for (uint64_t s = 1; s <= 6; s++) {
        append_param(j, s);
    }
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t c = 0;
    mlt__rec r;
    expect_params(j, &c, 1, 2, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, NULL);
    uint64_t pending = 0;
    for (uint64_t s = 3; s <= 6; s++) {
        pending += param_frame_size(s);
    }
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), pending);
    c = mlt__journal_acked_seq(j);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 3);
    ck_assert_uint_eq(r.end_pos, param_frame_size(3));
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), pending - param_frame_size(3));
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 5);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), param_frame_size(6));
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_next_rereads_from_an_earlier_cursor)
{
    /* After a failed delivery the sender may start again from its last acked record. */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    for (uint64_t s = 1; s <= 8; s++) {
        append_param(j, s);
    }
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t c = 0;
    mlt__rec r, r2;
    expect_params(j, &c, 1, 2, &r2);
    ck_assert_int_eq(mlt__journal_ack(j, &r2), MLT_OK);
    expect_params(j, &c, 3, 8, NULL);
    c = 2; /* back to the acked cursor */
    expect_params(j, &c, 3, 8, &r);
    ck_assert_uint_eq(r.end_pos, mlt__journal_pending_bytes(j) + r2.end_pos);
    c = 5; /* forward jump */
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, 6);
    c = 1; /* before the acked cursor */
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_STATE);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* ---- journal: recovery ---------------------------------------------------------------------- */

/* A closed journal of records 1..n, the offsets of their frames in *offs (n + 1 entries: the
 * last is the end). */
static void journal_of(const char *dir, uint64_t n, size_t *offs)
{
    mlt__journal *j = create_j(dir, MLT__FSYNC_NONE);
    size_t off = 8;
    for (uint64_t s = 1; s <= n; s++) {
        offs[s - 1] = off;
        append_param(j, s);
        off += param_frame_size(s);
    }
    offs[n] = off;
    mlt__journal_close(j, false);
    ck_assert_uint_eq((size_t)file_size(dir, SEG1), off);
}

/* Opens dir read-write and checks that records 1..keep survived a cut of cut bytes. */
static void expect_cut(const char *dir, uint64_t keep, uint64_t cut, const char *why_has)
{
    mlt__recovery rec;
    mlt__journal *j = open_j(dir, false, &rec);
    ck_assert_msg(rec.cut_bytes == cut, "cut %" PRIu64 " bytes, expected %" PRIu64 " (%s)",
                  rec.cut_bytes, cut, rec.why);
    if (cut) {
        ck_assert_msg(rec.why[0] != '\0', "a cut without a reason");
        if (why_has) {
            ck_assert_msg(strstr(rec.why, why_has) != NULL, "why: %s", rec.why);
        }
    } else {
        ck_assert_str_eq(rec.why, "");
    }
    ck_assert_uint_eq(rec.records, keep);
    ck_assert_uint_eq(rec.last_seq, keep);
    ck_assert_uint_eq(rec.first_seq, keep ? 1 : 0);
    ck_assert_uint_eq(mlt__journal_last_seq(j), keep);
    uint64_t c = 0;
    expect_params(j, &c, 1, keep, NULL);
    mlt__journal_close(j, false);
    /* cut for good: a second open finds it clean */
    j = open_j(dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.records, keep);
    mlt__journal_close(j, false);
}

START_TEST(journal_cuts_a_torn_frame_header)
{
    fixture f;
    fixture_init(&f);
    size_t offs[6];
    journal_of(f.dir, 5, offs);
    for (size_t h = 1; h < MLT__FRAME_HEADER; h += 5) {
        truncate_to(f.dir, SEG1, (off_t)(offs[4] + h));
        expect_cut(f.dir, 4, h, "torn");
        ck_assert_uint_eq((size_t)file_size(f.dir, SEG1), offs[4]);
        /* put the tail back for the next size: rebuild */
        mlt_test_remove_tree(f.dir);
        journal_of(f.dir, 5, offs);
    }
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_torn_payload)
{
    fixture f;
    fixture_init(&f);
    size_t offs[6];
    journal_of(f.dir, 5, offs);
    size_t frame = offs[5] - offs[4];
    /* header only, half the payload, all but the last byte */
    size_t keeps[] = {MLT__FRAME_HEADER, MLT__FRAME_HEADER + (frame - MLT__FRAME_HEADER) / 2,
                      frame - 1};
    for (size_t i = 0; i < 3; i++) {
        truncate_to(f.dir, SEG1, (off_t)(offs[4] + keeps[i]));
        expect_cut(f.dir, 4, keeps[i], "torn");
        ck_assert_uint_eq((size_t)file_size(f.dir, SEG1), offs[4]);
        mlt_test_remove_tree(f.dir);
        journal_of(f.dir, 5, offs);
    }
    /* cut at a frame boundary: nothing to cut */
    truncate_to(f.dir, SEG1, (off_t)offs[3]);
    expect_cut(f.dir, 3, 0, NULL);
    /* only the magic left */
    truncate_to(f.dir, SEG1, 8);
    expect_cut(f.dir, 0, 0, NULL);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_flipped_byte_anywhere_in_the_last_record)
{
    fixture f;
    fixture_init(&f);
    size_t offs[6];
    journal_of(f.dir, 5, offs);
    size_t len;
    unsigned char *orig = slurp(f.dir, SEG1, &len);
    for (size_t b = offs[4]; b < offs[5]; b++) {
        spit(f.dir, SEG1, orig, len);
        flip_byte(f.dir, SEG1, b);
        expect_cut(f.dir, 4, offs[5] - offs[4], NULL);
        ck_assert_uint_eq((size_t)file_size(f.dir, SEG1), offs[4]);
    }
    free(orig);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_everything_after_a_bad_middle_record)
{
    fixture f;
    fixture_init(&f);
    size_t offs[11];
    journal_of(f.dir, 10, offs);
    size_t len;
    unsigned char *orig = slurp(f.dir, SEG1, &len);
    /* a byte of the payload, the CRC, the seq, the type, the length of record 4 */
    const size_t where[] = {offs[3] + MLT__FRAME_HEADER + 3, offs[3] + 5, offs[3] + 9, offs[3] + 16,
                            offs[3] + 0};
    for (size_t i = 0; i < sizeof where / sizeof *where; i++) {
        spit(f.dir, SEG1, orig, len);
        flip_byte(f.dir, SEG1, where[i]);
        expect_cut(f.dir, 3, offs[10] - offs[3], NULL);
    }
    free(orig);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_frame_with_a_valid_crc_but_a_wrong_seq)
{
    fixture f;
    fixture_init(&f);
    ck_assert_int_eq(mkdir(f.dir, 0700), 0);
    spit(f.dir, "lock", "", 0);
    spit(f.dir, "acked", "0\n", 2);
    spit(f.dir, "runs", "", 0);
    /* 1, 2, then 2 again (replayed write), then 4 */
    mlt__buf b, p;
    mlt__buf_init(&b);
    mlt__buf_init(&p);
    mlt__buf_append(&b, MLT__SEGMENT_MAGIC, 8);
    const uint64_t seqs[] = {1, 2, 2, 4};
    size_t cut_at = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i == 2) {
            cut_at = b.len;
        }
        param_payload(&p, seqs[i]);
        craft_frame(&b, seqs[i], MLT__REC_PARAM, p.data, p.len);
    }
    spit(f.dir, SEG1, b.data, b.len);
    expect_cut(f.dir, 2, b.len - cut_at, NULL);
    /* a first segment whose first frame is not the seq in its name */
    mlt__buf_reset(&b);
    mlt__buf_append(&b, MLT__SEGMENT_MAGIC, 8);
    param_payload(&p, 2);
    craft_frame(&b, 2, MLT__REC_PARAM, p.data, p.len);
    spit(f.dir, SEG1, b.data, b.len);
    expect_cut(f.dir, 0, b.len - 8, NULL);
    mlt__buf_free(&b);
    mlt__buf_free(&p);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_bad_frame_length)
{
    fixture f;
    fixture_init(&f);
    size_t offs[4];
    journal_of(f.dir, 3, offs);
    size_t len;
    unsigned char *d = slurp(f.dir, SEG1, &len);
    le32_put(d + offs[2], MLT__FRAME_MAX_PAYLOAD + 1);
    spit(f.dir, SEG1, d, len);
    expect_cut(f.dir, 2, offs[3] - offs[2], "length");
    free(d);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_read_only_open_reports_a_torn_tail_but_keeps_it)
{
    fixture f;
    fixture_init(&f);
    size_t offs[4];
    journal_of(f.dir, 3, offs);
    truncate_to(f.dir, SEG1, (off_t)(offs[3] - 2));
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, true, &rec);
    ck_assert_uint_eq(rec.cut_bytes, offs[3] - 2 - offs[2]);
    ck_assert(rec.why[0] != '\0');
    ck_assert_uint_eq(rec.last_seq, 2);
    uint64_t c = 0;
    expect_params(j, &c, 1, 2, NULL);
    mlt__journal_close(j, false);
    ck_assert_uint_eq((size_t)file_size(f.dir, SEG1), offs[3] - 2);
    fixture_done(&f);
}
END_TEST

/* A journal directory written by hand: state files and segments [first, last] each. */
static void craft_journal(const char *dir, uint64_t acked, const uint64_t (*segs)[2], size_t n)
{
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    spit(dir, "lock", "", 0);
    char a[32];
    int l = snprintf(a, sizeof a, "%" PRIu64 "\n", acked);
    spit(dir, "acked", a, (size_t)l);
    spit(dir, "runs", "", 0);
    for (size_t i = 0; i < n; i++) {
        craft_segment(dir, segs[i][0], segs[i][1]);
    }
}

START_TEST(journal_reads_across_segments_and_ack_deletes_delivered_ones)
{
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{1, 4}, {5, 9}, {10, 12}};
    craft_journal(f.dir, 0, segs, 3);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.records, 12);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 12);
    uint64_t pending = 0;
    for (uint64_t s = 1; s <= 12; s++) {
        pending += param_frame_size(s);
    }
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), pending);
    uint64_t c = 0;
    mlt__rec r;
    expect_params(j, &c, 1, 3, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK); /* within the first segment */
    ck_assert(exists(f.dir, "seg-00000000000000000001.log"));
    c = 3;
    expect_params(j, &c, 4, 6, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK); /* past the first segment */
    ck_assert(!exists(f.dir, "seg-00000000000000000001.log"));
    ck_assert(exists(f.dir, "seg-00000000000000000005.log"));
    uint64_t done = 0;
    for (uint64_t s = 1; s <= 6; s++) {
        done += param_frame_size(s);
    }
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), pending - done);
    expect_params(j, &c, 7, 12, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    ck_assert(!exists(f.dir, "seg-00000000000000000005.log"));
    ck_assert(exists(f.dir, "seg-00000000000000000010.log")); /* the last stays */
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test")); /* all delivered, no runs: removed */
    fixture_done(&f);
}
END_TEST

START_TEST(journal_reopen_after_acks_reads_from_a_later_segment)
{
    fixture f;
    fixture_init(&f);
    /* segment 1 was delivered and deleted; the acked cursor is inside segment 5 */
    static const uint64_t segs[][2] = {{5, 9}, {10, 12}};
    craft_journal(f.dir, 7, segs, 2);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.first_seq, 8);
    ck_assert_uint_eq(rec.last_seq, 12);
    ck_assert_uint_eq(rec.records, 5);
    uint64_t c = mlt__journal_acked_seq(j);
    ck_assert_uint_eq(c, 7);
    mlt__rec r;
    expect_params(j, &c, 8, 12, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    mlt__journal_close(j, false);
    /* every segment but the last deleted; the last seq survives through the acked cursor */
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 12);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cut_in_a_middle_segment_drops_every_later_segment)
{
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{1, 4}, {5, 9}, {10, 12}};
    craft_journal(f.dir, 0, segs, 3);
    /* corrupt record 7 (the third of segment 5) */
    size_t off = 8 + param_frame_size(5) + param_frame_size(6) + MLT__FRAME_HEADER + 2;
    flip_byte(f.dir, "seg-00000000000000000005.log", off);
    off_t seg5 = file_size(f.dir, "seg-00000000000000000005.log");
    off_t seg10 = file_size(f.dir, "seg-00000000000000000010.log");
    uint64_t kept5 = 8 + param_frame_size(5) + param_frame_size(6);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, (uint64_t)seg5 - kept5 + (uint64_t)seg10);
    ck_assert(rec.why[0] != '\0');
    ck_assert_uint_eq(rec.last_seq, 6);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 6);
    ck_assert(!exists(f.dir, "seg-00000000000000000010.log"));
    ck_assert_uint_eq((uint64_t)file_size(f.dir, "seg-00000000000000000005.log"), kept5);
    uint64_t c = 0;
    expect_params(j, &c, 1, 6, NULL);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_segment_that_does_not_follow_on)
{
    fixture f;
    fixture_init(&f);
    /* 5..9 was lost: 10.. cannot follow 4 */
    static const uint64_t segs[][2] = {{1, 4}, {10, 12}};
    craft_journal(f.dir, 0, segs, 2);
    off_t seg10 = file_size(f.dir, "seg-00000000000000000010.log");
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, (uint64_t)seg10);
    ck_assert(rec.why[0] != '\0');
    ck_assert_uint_eq(mlt__journal_last_seq(j), 4);
    ck_assert(!exists(f.dir, "seg-00000000000000000010.log"));
    uint64_t c = 0;
    expect_params(j, &c, 1, 4, NULL);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_cuts_a_segment_without_magic)
{
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{1, 4}, {5, 9}};
    craft_journal(f.dir, 0, segs, 2);
    flip_byte(f.dir, "seg-00000000000000000005.log", 3);
    off_t seg5 = file_size(f.dir, "seg-00000000000000000005.log");
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, (uint64_t)seg5);
    ck_assert_ptr_nonnull(strstr(rec.why, "seg-00000000000000000005.log"));
    ck_assert_uint_eq(mlt__journal_last_seq(j), 4);
    ck_assert(!exists(f.dir, "seg-00000000000000000005.log"));
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_ignores_files_named_like_segments_but_not_by_their_number)
{
    /* found by fuzzing: "seg-+0000000000000000001.log" (or a number past 64 bits, or another
     * spelling of it) passed for a segment; the reader and the appender find a segment by the
     * name of its number, so they read another file or none (MLT_ERR_IO), and a copy that sorts
     * first made the real segment look like one that does not follow on: it was cut */
    static const char *const strays[] = {
        "seg-+0000000000000000001.log", "seg- 0000000000000000001.log",
        "seg-0000000000000000001x.log", "seg-99999999999999999999.log"};
    for (size_t i = 0; i < sizeof strays / sizeof strays[0]; i++) {
        fixture f;
        fixture_init(&f);
        size_t offs[4];
        journal_of(f.dir, 3, offs);
        size_t len;
        unsigned char *seg = slurp(f.dir, SEG1, &len);
        spit(f.dir, strays[i], seg, len);
        free(seg);
        expect_cut(f.dir, 3, 0, NULL);
        mlt__recovery rec;
        mlt__journal *j = open_j(f.dir, true, &rec);
        ck_assert_uint_eq(rec.records, 3);
        uint64_t c = 0;
        expect_params(j, &c, 1, 3, NULL);
        mlt__journal_close(j, false);
        ck_assert(exists(f.dir, SEG1));
        ck_assert(exists(f.dir, strays[i]));
        fixture_done(&f);
    }
}
END_TEST

START_TEST(journal_cuts_records_numbered_zero)
{
    /* found with fuzz_journal: a segment named 0 (records 0, 1, ...), or records running past
     * 2^64 - 1 back to 0, were kept; record 0 read back with the cursor staying at 0, and as
     * "acked 0" means nothing delivered, it would be delivered again at every open */
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{0, 3}};
    craft_journal(f.dir, 0, segs, 1);
    const char *seg0 = "seg-00000000000000000000.log";
    off_t size = file_size(f.dir, seg0);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, true, &rec);
    ck_assert_uint_eq(rec.records, 0);
    ck_assert_uint_eq(rec.cut_bytes, (uint64_t)size);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 0);
    ck_assert_uint_eq(rec.cut_bytes, (uint64_t)size);
    ck_assert_ptr_nonnull(strstr(rec.why, "start at 1"));
    ck_assert_uint_eq(mlt__journal_last_seq(j), 0);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    uint64_t c = 0;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__journal_close(j, false);
    ck_assert(!exists(f.dir, seg0));
    fixture_done(&f);

    /* numbers that run past the last one: the record after 2^64 - 1 is cut */
    fixture_init(&f);
    craft_journal(f.dir, 0, segs, 0);
    mlt__buf b, p;
    mlt__buf_init(&b);
    mlt__buf_init(&p);
    mlt__buf_append(&b, MLT__SEGMENT_MAGIC, 8);
    const uint64_t seqs[] = {UINT64_MAX - 1, UINT64_MAX, 0, 1};
    size_t kept = 0;
    for (size_t i = 0; i < 4; i++) {
        param_payload(&p, seqs[i]);
        craft_frame(&b, seqs[i], MLT__REC_PARAM, p.data, p.len);
        kept = i == 1 ? b.len : kept;
    }
    char name[64];
    snprintf(name, sizeof name, "seg-%020" PRIu64 ".log", UINT64_MAX - 1);
    spit(f.dir, name, b.data, b.len);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 2);
    ck_assert_uint_eq(rec.cut_bytes, b.len - kept);
    ck_assert_uint_eq(rec.last_seq, UINT64_MAX);
    c = 0;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, UINT64_MAX - 1);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, UINT64_MAX);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__journal_close(j, false);
    ck_assert_uint_eq((uint64_t)file_size(f.dir, name), kept);
    mlt__buf_free(&scratch);
    mlt__buf_free(&b);
    mlt__buf_free(&p);
    fixture_done(&f);
}
END_TEST

/* Appends PARAM "big<n>" = value as record n; returns its frame size. */
START_TEST(journal_next_reports_a_checksummed_record_that_does_not_decode)
{
    /* A frame whose CRC holds but whose payload is no record (a writer bug, or a newer
     * version's type): next says MLT_ERR_CORRUPT and consumes it (the cursor moves past it,
     * r->seq names it), so that the sender can set it aside and go on. */
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{1, 2}};
    craft_journal(f.dir, 0, segs, 1);
    mlt__buf b;
    mlt__buf_init(&b);
    size_t len;
    unsigned char *seg = slurp(f.dir, SEG1, &len);
    mlt__buf_append(&b, seg, len);
    free(seg);
    craft_frame(&b, 3, 9, "\1\0\0\0", 4);            /* unknown type */
    craft_frame(&b, 4, MLT__REC_PARAM, "\1\0\0", 3); /* truncated payload */
    spit(f.dir, SEG1, b.data, b.len);
    mlt__buf_free(&b);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0); /* the frames are sound */
    ck_assert_uint_eq(mlt__journal_last_seq(j), 4);
    uint64_t c = 0;
    expect_params(j, &c, 1, 2, NULL);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_CORRUPT);
    ck_assert_uint_eq(c, 3);
    ck_assert_uint_eq(r.seq, 3);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_CORRUPT);
    ck_assert_uint_eq(c, 4);
    ck_assert_uint_eq(r.seq, 4);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_reads_on_past_an_acked_record_that_does_not_decode)
{
    /* found by fuzzing: reading from the acked cursor skips the acked records of the first
     * segment, and one that checks out but does not decode (set aside by the sender, then
     * acked past) stopped the skip with MLT_ERR_CORRUPT at every call, the cursor unmoved:
     * nothing after it could be read again after a reopen */
    fixture f;
    fixture_init(&f);
    static const uint64_t segs[][2] = {{1, 2}};
    craft_journal(f.dir, 0, segs, 1);
    mlt__buf b, p;
    mlt__buf_init(&b);
    mlt__buf_init(&p);
    size_t len;
    unsigned char *seg = slurp(f.dir, SEG1, &len);
    mlt__buf_append(&b, seg, len);
    free(seg);
    craft_frame(&b, 3, 9, "\1\0\0\0", 4); /* unknown type */
    for (uint64_t s = 4; s <= 5; s++) {
        param_payload(&p, s);
        craft_frame(&b, s, MLT__REC_PARAM, p.data, p.len);
    }
    spit(f.dir, SEG1, b.data, b.len);
    mlt__buf_free(&b);
    mlt__buf_free(&p);

    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    uint64_t c = 0;
    expect_params(j, &c, 1, 2, NULL);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_CORRUPT);
    ck_assert_uint_eq(c, 3);
    mlt__rec last;
    expect_params(j, &c, 4, 4, &last);
    ck_assert_int_eq(mlt__journal_ack(j, &last), MLT_OK);
    /* read again from an earlier cursor within the same open */
    c = 4;
    expect_params(j, &c, 5, 5, NULL);
    mlt__journal_close(j, false);

    for (int ro = 0; ro < 2; ro++) {
        j = open_j(f.dir, ro, &rec);
        c = mlt__journal_acked_seq(j);
        ck_assert_uint_eq(c, 4);
        expect_params(j, &c, 5, 5, NULL);
        mlt__journal_close(j, false);
    }
    mlt__buf_free(&scratch);
    fixture_done(&f);
}
END_TEST

static uint64_t append_big(mlt__journal *j, uint64_t n, const char *value)
{
    mlt__buf p;
    mlt__buf_init(&p);
    char k[32];
    snprintf(k, sizeof k, "big%" PRIu64, n);
    mlt__rec_put_kv(&p, 1, k, value);
    uint64_t seq;
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, &seq), MLT_OK);
    ck_assert_uint_eq(seq, n);
    uint64_t size = MLT__FRAME_HEADER + p.len;
    mlt__buf_free(&p);
    return size;
}

START_TEST(journal_rotates_segments_past_the_segment_size)
{
    fixture f;
    fixture_init(&f);
    size_t vlen = (1u << 20) - 64;
    char *value = malloc(vlen + 1);
    ck_assert_ptr_nonnull(value);
    memset(value, 'v', vlen);
    value[vlen] = '\0';
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    uint64_t n = 0, first_bytes = 8;
    while (file_size(f.dir, SEG1) < (off_t)MLT__SEGMENT_BYTES) {
        first_bytes += append_big(j, ++n, value);
    }
    uint64_t in_first = n;
    append_big(j, ++n, value);
    append_big(j, ++n, value);
    char second[64];
    snprintf(second, sizeof second, "seg-%020" PRIu64 ".log", in_first + 1);
    ck_assert_msg(exists(f.dir, second), "no %s after %" PRIu64 " records", second, n);
    ck_assert_uint_eq((uint64_t)file_size(f.dir, SEG1), first_bytes); /* nothing more in it */
    size_t len;
    unsigned char *head = slurp(f.dir, second, &len);
    ck_assert_uint_gt(len, 8 + MLT__FRAME_HEADER);
    ck_assert_int_eq(memcmp(head, MLT__SEGMENT_MAGIC, 8), 0);
    ck_assert_uint_eq(le64_get(head + 8 + 8), in_first + 1);
    free(head);
    /* reading crosses the boundary */
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t c = 0;
    mlt__rec r, at;
    memset(&at, 0, sizeof at);
    for (uint64_t s = 1; s <= n; s++) {
        ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
        REQUIRE(r.seq == s && strlen(r.value) == vlen, "record %" PRIu64, s);
        if (s == in_first + 1) {
            at = r;
        }
    }
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    /* ack past the first segment deletes it */
    ck_assert_int_eq(mlt__journal_ack(j, &at), MLT_OK);
    ck_assert(!exists(f.dir, SEG1));
    ck_assert(exists(f.dir, second));
    mlt__journal_close(j, false);
    /* reopen: the second segment alone, cursor inside it */
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.first_seq, in_first + 2);
    ck_assert_uint_eq(rec.last_seq, n);
    c = mlt__journal_acked_seq(j);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(r.seq, in_first + 2);
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_ERR_NOT_FOUND);
    mlt__journal_close(j, false);
    mlt__buf_free(&scratch);
    free(value);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_takes_the_largest_record_and_refuses_a_larger_one)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    /* a PARAM payload of exactly MLT__FRAME_MAX_PAYLOAD bytes */
    size_t vlen = MLT__FRAME_MAX_PAYLOAD - 4 - (4 + 1 + 1) - (4 + 1);
    char *value = malloc(vlen + 1);
    ck_assert_ptr_nonnull(value);
    memset(value, 'z', vlen);
    value[vlen] = '\0';
    mlt__buf p;
    mlt__buf_init(&p);
    mlt__rec_put_kv(&p, 1, "k", value);
    ck_assert_uint_eq(p.len, MLT__FRAME_MAX_PAYLOAD);
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, NULL), MLT_OK);
    mlt__buf_putc(&p, 'x');
    ck_assert_int_eq(mlt__journal_append(j, MLT__REC_PARAM, p.data, p.len, NULL),
                     MLT_ERR_VALUE_TOO_LONG);
    ck_assert_uint_eq(mlt__journal_last_seq(j), 1);
    mlt__journal_close(j, false);
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 1);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    uint64_t c = 0;
    ck_assert_int_eq(mlt__journal_next(j, &c, &scratch, &r), MLT_OK);
    ck_assert_uint_eq(strlen(r.value), vlen);
    mlt__buf_free(&scratch);
    mlt__buf_free(&p);
    free(value);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(journal_accepts_every_fsync_mode)
{
    static const mlt__fsync_mode modes[] = {MLT__FSYNC_NONE, MLT__FSYNC_INTERVAL,
                                            MLT__FSYNC_ALWAYS};
    for (size_t m = 0; m < 3; m++) {
        fixture f;
        fixture_init(&f);
        mlt__journal *j = create_j(f.dir, modes[m]);
        for (uint64_t s = 1; s <= 20; s++) {
            append_param(j, s);
        }
        ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
        ck_assert_int_eq(mlt__journal_sync(j), MLT_OK); /* nothing new: still fine */
        mlt__journal_close(j, false);
        mlt__journal *j2 = NULL;
        mlt__recovery rec;
        ck_assert_int_eq(mlt__errbuf(NULL, 0, mlt__journal_open(&j2, f.dir, false, modes[m], &rec)),
                         MLT_OK);
        ck_assert_uint_eq(rec.records, 20);
        ck_assert_int_eq(mlt__journal_sync(j2), MLT_OK);
        mlt__journal_close(j2, false);
        fixture_done(&f);
    }
}
END_TEST

/* ---- journal: threads ----------------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 10000

typedef struct writer_arg {
    mlt__journal *j;
    int id;
    uint64_t *seqs; /* PER_THREAD */
    int failures;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *a = p;
    mlt__buf b;
    mlt__buf_init(&b);
    char k[32], v[32];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(k, sizeof k, "t%d", a->id);
        snprintf(v, sizeof v, "%d", i);
        mlt__buf_reset(&b);
        mlt__rec_put_kv(&b, (uint32_t)a->id, k, v);
        if (mlt__journal_append(a->j, MLT__REC_TAG, b.data, b.len, &a->seqs[i]) != MLT_OK) {
            a->failures++;
        }
    }
    mlt__buf_free(&b);
    return NULL;
}

/* Checks records 1..THREADS*PER_THREAD: each thread's in its own order, each exactly once. */
static void check_threads_records(mlt__journal *j, uint64_t *cursor, writer_arg *args)
{
    int next_i[THREADS] = {0};
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    for (uint64_t s = 1; s <= (uint64_t)THREADS * PER_THREAD; s++) {
        mlt_err e = mlt__journal_next(j, cursor, &scratch, &r);
        REQUIRE(e == MLT_OK && r.seq == s, "record %" PRIu64 ": %s", s, mlt_strerror(e));
        REQUIRE(r.run_no < THREADS, "run_no %u", (unsigned)r.run_no);
        int t = (int)r.run_no;
        char v[32];
        snprintf(v, sizeof v, "%d", next_i[t]);
        REQUIRE(strcmp(r.value, v) == 0, "thread %d: %s where %s", t, r.value, v);
        if (args) {
            REQUIRE(args[t].seqs[next_i[t]] == s, "thread %d got seq %" PRIu64 " for %" PRIu64, t,
                    args[t].seqs[next_i[t]], s);
        }
        next_i[t]++;
    }
    ck_assert_int_eq(mlt__journal_next(j, cursor, &scratch, &r), MLT_ERR_NOT_FOUND);
    for (int t = 0; t < THREADS; t++) {
        ck_assert_int_eq(next_i[t], PER_THREAD);
    }
    mlt__buf_free(&scratch);
}

START_TEST(journal_concurrent_appends_are_all_present_once)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    pthread_t th[THREADS];
    writer_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (writer_arg){j, t, calloc(PER_THREAD, sizeof(uint64_t)), 0};
        ck_assert_ptr_nonnull(args[t].seqs);
        ck_assert_int_eq(pthread_create(&th[t], NULL, writer, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(args[t].failures, 0);
    }
    ck_assert_uint_eq(mlt__journal_last_seq(j), THREADS * PER_THREAD);
    uint64_t c = 0;
    check_threads_records(j, &c, args);
    mlt__journal_close(j, false);
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, THREADS * PER_THREAD);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    c = 0;
    check_threads_records(j, &c, args);
    mlt__journal_close(j, false);
    for (int t = 0; t < THREADS; t++) {
        free(args[t].seqs);
    }
    fixture_done(&f);
}
END_TEST

typedef struct reader_arg {
    mlt__journal *j;
    atomic_bool *writers_done;
    uint64_t got;
    int bad;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t c = 0;
    mlt__rec r;
    for (;;) {
        mlt_err e = mlt__journal_next(a->j, &c, &scratch, &r);
        if (e == MLT_OK) {
            if (r.seq != a->got + 1) {
                a->bad++;
            }
            a->got = r.seq;
            if (r.seq % 1000 == 0 && mlt__journal_ack(a->j, &r) != MLT_OK) {
                a->bad++;
            }
        } else if (e == MLT_ERR_NOT_FOUND) {
            if (atomic_load(a->writers_done) && a->got == mlt__journal_last_seq(a->j)) {
                break;
            }
            sched_yield();
        } else {
            a->bad++;
            break;
        }
    }
    mlt__buf_free(&scratch);
    return NULL;
}

START_TEST(journal_reader_keeps_up_with_concurrent_appends)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    atomic_bool done;
    atomic_init(&done, false);
    reader_arg ra = {j, &done, 0, 0};
    pthread_t rt, th[THREADS];
    writer_arg args[THREADS];
    ck_assert_int_eq(pthread_create(&rt, NULL, reader, &ra), 0);
    for (int t = 0; t < THREADS; t++) {
        args[t] = (writer_arg){j, t, calloc(PER_THREAD, sizeof(uint64_t)), 0};
        ck_assert_int_eq(pthread_create(&th[t], NULL, writer, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    atomic_store(&done, true);
    pthread_join(rt, NULL);
    ck_assert_int_eq(ra.bad, 0);
    ck_assert_uint_eq(ra.got, THREADS * PER_THREAD);
    ck_assert_uint_eq(mlt__journal_acked_seq(j), THREADS * PER_THREAD);
    ck_assert_uint_eq(mlt__journal_pending_bytes(j), 0);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test"));
    for (int t = 0; t < THREADS; t++) {
        free(args[t].seqs);
    }
    fixture_done(&f);
}
END_TEST

/* ---- journal: run map ----------------------------------------------------------------------- */

START_TEST(journal_run_map_is_durable_and_reloads)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    ck_assert_ptr_null(mlt__journal_run(j, 1));
    size_t n = 99;
    mlt__journal_runs(j, &n);
    ck_assert_uint_eq(n, 0);
    const char *k1 = "11111111-2222-4333-8444-555555555555";
    const char *k2 = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    ck_assert_int_eq(mlt__journal_put_run(j, 1, k1, NULL, NULL, MLT__RUN_OPEN), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_run(j, 2, k2, NULL, "0", MLT__RUN_OPEN), MLT_OK);
    /* durable at once: on disk before put_run returns */
    size_t len;
    char *text = (char *)slurp(f.dir, "runs", &len);
    ck_assert_str_eq(text, "1 11111111-2222-4333-8444-555555555555 - - open\n"
                           "2 aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee - 0 open\n");
    free(text);
    /* updates: id and experiment, then state (NULLs keep what is known) */
    ck_assert_int_eq(
        mlt__journal_put_run(j, 1, k1, "0123456789abcdef0123456789abcdef", "17", MLT__RUN_OPEN),
        MLT_OK);
    ck_assert_int_eq(mlt__journal_put_run(j, 1, k1, NULL, NULL, MLT__RUN_ENDED), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_run(j, 2, k2, NULL, NULL, MLT__RUN_DEAD), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_run(j, 3, "k3", "r3", "4", MLT__RUN_OPEN), MLT_OK);
    mlt__run_entry *e = mlt__journal_run(j, 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->key, k1);
    ck_assert_str_eq(e->run_id, "0123456789abcdef0123456789abcdef");
    ck_assert_str_eq(e->experiment_id, "17");
    ck_assert_int_eq(e->state, MLT__RUN_ENDED);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, NULL);
    const mlt__run_entry *runs = mlt__journal_runs(j, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(runs[0].run_no, 1);
    ck_assert_str_eq(runs[0].key, k1);
    ck_assert_str_eq(runs[0].run_id, "0123456789abcdef0123456789abcdef");
    ck_assert_str_eq(runs[0].experiment_id, "17");
    ck_assert_int_eq(runs[0].state, MLT__RUN_ENDED);
    ck_assert_uint_eq(runs[1].run_no, 2);
    ck_assert_str_eq(runs[1].key, k2);
    ck_assert_ptr_null(runs[1].run_id);
    ck_assert_str_eq(runs[1].experiment_id, "0");
    ck_assert_int_eq(runs[1].state, MLT__RUN_DEAD);
    e = mlt__journal_run(j, 3);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->run_id, "r3");
    ck_assert_int_eq(e->state, MLT__RUN_OPEN);
    ck_assert_ptr_null(mlt__journal_run(j, 4));
    /* reopening rewrote nothing it did not have to: same text */
    text = (char *)slurp(f.dir, "runs", &len);
    ck_assert_str_eq(text, "1 11111111-2222-4333-8444-555555555555 "
                           "0123456789abcdef0123456789abcdef 17 ended\n"
                           "2 aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee - 0 dead\n"
                           "3 k3 r3 4 open\n");
    free(text);
    ck_assert(!exists(f.dir, "runs.tmp"));
    /* many runs: the array grows */
    for (uint32_t r = 10; r < 60; r++) {
        char k[40];
        snprintf(k, sizeof k, "key-%u", (unsigned)r);
        ck_assert_int_eq(mlt__journal_put_run(j, r, k, NULL, NULL, MLT__RUN_OPEN), MLT_OK);
    }
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, NULL);
    mlt__journal_runs(j, &n);
    ck_assert_uint_eq(n, 53);
    ck_assert_str_eq(mlt__journal_run(j, 59)->key, "key-59");
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* ---- journal: dead letters ------------------------------------------------------------------ */

static cJSON *dead_line(const char *text, int i)
{
    const char *p = text;
    for (int k = 0; k < i; k++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    const char *nl = strchr(p, '\n');
    ck_assert_msg(nl != NULL, "dead letter %d has no newline", i);
    char *line = strndup(p, (size_t)(nl - p));
    cJSON *o = cJSON_Parse(line);
    ck_assert_msg(o != NULL, "dead letter %d is not JSON: %s", i, line);
    free(line);
    return o;
}

START_TEST(journal_dead_letters_are_json_lines_with_the_answer)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    ck_assert_int_eq(mlt__journal_put_run(j, 1, "run-key-1", "rid", "0", MLT__RUN_OPEN), MLT_OK);
    ck_assert(!exists(f.dir, "dead.jsonl"));
    mlt__rec r;
    memset(&r, 0, sizeof r);
    r.seq = 7;
    r.type = MLT__REC_PARAM;
    r.run_no = 1;
    r.key = "lr \"quoted\"";
    r.value = "line\nbreak\ttab \x01 \xc3\xa9";
    const char *answer = "{\"error_code\":\"INVALID_PARAMETER_VALUE\",\"message\":\"no\\n\"}";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, answer), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 1);
    memset(&r, 0, sizeof r);
    r.seq = 8;
    r.type = MLT__REC_METRIC;
    r.run_no = 1;
    r.key = "loss";
    r.num = NAN;
    r.time_ms = INT64_MIN;
    r.step = INT64_MAX;
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, NULL), MLT_OK);
    memset(&r, 0, sizeof r);
    r.seq = 9;
    r.type = MLT__REC_METRIC;
    r.run_no = 1;
    r.key = "acc";
    r.num = 0.1;
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "x"), MLT_OK);
    memset(&r, 0, sizeof r);
    r.seq = 10;
    r.type = MLT__REC_CREATE;
    r.run_no = 2;
    r.key = "run-key-2";
    r.parent_key = r.experiment_id = "";
    r.run_name = "train \"7\"";
    r.experiment_name = "sweep";
    r.time_ms = 1700000000123;
    r.n_tags = 2;
    r.tag_keys[0] = "team";
    r.tag_values[0] = "a";
    r.tag_keys[1] = "mlflow.user";
    r.tag_values[1] = "b\n";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "experiment is deleted"), MLT_OK);
    memset(&r, 0, sizeof r);
    r.seq = 11;
    r.type = MLT__REC_END;
    r.run_no = 1;
    r.status = MLT_RUN_FAILED;
    r.time_ms = 1700000000999;
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "gone"), MLT_OK);
    memset(&r, 0, sizeof r);
    r.seq = 12;
    r.type = MLT__REC_TAG;
    r.run_no = 99; /* unknown run */
    r.key = "t";
    r.value = "v";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "unknown"), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 6);
    ck_assert_uint_eq(mode_of(f.dir, "dead.jsonl"), 0600);

    size_t len;
    char *text = (char *)slurp(f.dir, "dead.jsonl", &len);
    cJSON *o = dead_line(text, 0);
    ck_assert_int_eq((int)mlt_test_jnum(o, "seq"), 7);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "param");
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), "run-key-1");
    ck_assert_str_eq(mlt_test_jstr(o, "key"), "lr \"quoted\"");
    ck_assert_str_eq(mlt_test_jstr(o, "value"), "line\nbreak\ttab \x01 \xc3\xa9");
    ck_assert_str_eq(mlt_test_jstr(o, "answer"), answer);
    cJSON_Delete(o);
    o = dead_line(text, 1);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "metric");
    ck_assert_str_eq(mlt_test_jstr(o, "key"), "loss");
    ck_assert_str_eq(mlt_test_jstr(o, "value"), "NaN");
    /* int64 extremes written exactly (cJSON reads them as doubles: compare the text) */
    ck_assert_ptr_nonnull(strstr(text, "\"timestamp\":-9223372036854775808"));
    ck_assert_ptr_nonnull(strstr(text, "\"step\":9223372036854775807"));
    ck_assert_str_eq(mlt_test_jstr(o, "answer"), "");
    cJSON_Delete(o);
    o = dead_line(text, 2);
    ck_assert(mlt_test_jnum(o, "value") == 0.1);
    cJSON_Delete(o);
    o = dead_line(text, 3);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "create_run");
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), "run-key-2");
    ck_assert_str_eq(mlt_test_jstr(o, "answer"), "experiment is deleted");
    /* all the create holds, so that the run can be made again by hand */
    ck_assert_str_eq(mlt_test_jstr(o, "run_name"), "train \"7\"");
    ck_assert_str_eq(mlt_test_jstr(o, "experiment_name"), "sweep");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "experiment_id")); /* "": left out */
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "parent_run_key"));
    ck_assert_ptr_nonnull(strstr(text, "\"start_time\":1700000000123,"));
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(o, "tags");
    ck_assert_int_eq(cJSON_GetArraySize(tags), 2);
    ck_assert_str_eq(mlt_test_jstr(tags, "team"), "a");
    ck_assert_str_eq(mlt_test_jstr(tags, "mlflow.user"), "b\n");
    cJSON_Delete(o);
    o = dead_line(text, 4);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "end_run");
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), "run-key-1");
    ck_assert_str_eq(mlt_test_jstr(o, "status"), "FAILED");
    ck_assert_ptr_nonnull(strstr(text, "\"end_time\":1700000000999,"));
    cJSON_Delete(o);
    o = dead_line(text, 5);
    ck_assert_str_eq(mlt_test_jstr(o, "type"), "tag");
    ck_assert_str_eq(mlt_test_jstr(o, "run_key"), "");
    cJSON_Delete(o);
    ck_assert_uint_eq(len, strlen(text)); /* no NUL bytes */
    ck_assert_int_eq(text[len - 1], '\n');
    free(text);
    mlt__journal_close(j, true); /* dead letters: kept */
    ck_assert(exists(f.dir, "dead.jsonl"));
    j = open_j(f.dir, false, NULL);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 6);
    memset(&r, 0, sizeof r);
    r.seq = 13;
    r.type = MLT__REC_PARAM;
    r.run_no = 1;
    r.key = "a";
    r.value = "b";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "again"), MLT_OK);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 7);
    mlt__journal_close(j, false);
    j = open_j(f.dir, true, NULL);
    ck_assert_uint_eq(mlt__journal_dead_count(j), 7);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* Whether s[0..n) is well-formed UTF-8 (RFC 3629). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        if (len == 0 || (len == 2 && c < 0xc2) || i + len > n) {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
        }
        i += len;
    }
    return true;
}

START_TEST(journal_dead_letters_stay_utf8_when_the_answer_is_cut_mid_character)
{
    /* The sender passes the client's message, cut to its buffer by snprintf: a server message
     * that echoes a non-ASCII value can end in half a character. JSON text is UTF-8 (RFC 8259
     * section 8.1); a line that is not cannot be read by strict readers (Python's json). */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir, MLT__FSYNC_NONE);
    mlt__rec r;
    memset(&r, 0, sizeof r);
    r.seq = 1;
    r.type = MLT__REC_PARAM;
    r.run_no = 1;
    r.key = "k";
    r.value = "v";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "log batch: HTTP 400: value 'caf\xc3"),
                     MLT_OK);
    mlt__journal_close(j, false);
    size_t len;
    unsigned char *text = slurp(f.dir, "dead.jsonl", &len);
    bool valid = utf8_valid(text, len);
    free(text);
    fixture_done(&f);
    ck_assert_msg(valid, "dead.jsonl is not UTF-8");
}
END_TEST

/* ---- journal: removal when delivered -------------------------------------------------------- */

/* A journal with two records read and acked, and run 1 ended. */
static mlt__journal *delivered_journal(const char *dir)
{
    mlt__journal *j = create_j(dir, MLT__FSYNC_NONE);
    append_param(j, 1);
    append_param(j, 2);
    uint64_t c = 0;
    mlt__rec r;
    expect_params(j, &c, 1, 2, &r);
    ck_assert_int_eq(mlt__journal_ack(j, &r), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_run(j, 1, "k1", "rid", "0", MLT__RUN_ENDED), MLT_OK);
    return j;
}

START_TEST(journal_close_removes_a_delivered_journal)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = delivered_journal(f.dir);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test"));
    /* an empty journal is delivered too */
    j = create_j(f.dir, MLT__FSYNC_NONE);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test"));
    /* a dead run with no dead letters (its records were all acked) does not hold it */
    j = delivered_journal(f.dir);
    ck_assert_int_eq(mlt__journal_put_run(j, 2, "k2", NULL, NULL, MLT__RUN_DEAD), MLT_OK);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test"));
    /* and a reopened delivered journal goes as well */
    j = delivered_journal(f.dir);
    mlt__journal_close(j, false);
    ck_assert(exists(f.tmp, "j-test"));
    j = open_j(f.dir, false, NULL);
    mlt__journal_close(j, true);
    ck_assert(!exists(f.tmp, "j-test"));
    fixture_done(&f);
}
END_TEST

START_TEST(journal_close_keeps_a_journal_with_work_left)
{
    fixture f;
    fixture_init(&f);
    /* dead letters */
    mlt__journal *j = delivered_journal(f.dir);
    mlt__rec r;
    memset(&r, 0, sizeof r);
    r.seq = 1;
    r.type = MLT__REC_TAG;
    r.run_no = 1;
    r.key = "k";
    r.value = "v";
    ck_assert_int_eq(mlt__journal_dead_letter(j, &r, "no"), MLT_OK);
    mlt__journal_close(j, true);
    ck_assert(exists(f.dir, "dead.jsonl"));
    ck_assert(exists(f.dir, "lock"));
    mlt_test_remove_tree(f.dir);
    /* an open run */
    j = delivered_journal(f.dir);
    ck_assert_int_eq(mlt__journal_put_run(j, 2, "k2", "rid2", "0", MLT__RUN_OPEN), MLT_OK);
    mlt__journal_close(j, true);
    ck_assert(exists(f.dir, "runs"));
    mlt_test_remove_tree(f.dir);
    /* unacked records */
    j = delivered_journal(f.dir);
    append_param(j, 3);
    mlt__journal_close(j, true);
    ck_assert(exists(f.dir, SEG1));
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.first_seq, 3);
    mlt__journal_close(j, true);
    ck_assert(exists(f.dir, SEG1));
    /* a read-only journal never removes */
    mlt_test_remove_tree(f.dir);
    j = delivered_journal(f.dir);
    mlt__journal_close(j, false);
    j = open_j(f.dir, true, NULL);
    mlt__journal_close(j, true);
    ck_assert(exists(f.dir, "acked"));
    fixture_done(&f);
}
END_TEST

/* ---- the queue directory -------------------------------------------------------------------- */

START_TEST(queue_list_lists_journal_directories_sorted)
{
    char tmp[DIR_LEN];
    mlt_test_tmpdir(tmp, sizeof tmp, "journal");
    char **dirs = (char **)1;
    size_t n = 99;
    char missing[DIR_LEN + 16];
    snprintf(missing, sizeof missing, "%s/none", tmp);
    ck_assert_int_eq(mlt__queue_list(missing, &dirs, &n), MLT_OK);
    ck_assert_uint_eq(n, 0);
    free(dirs);
    ck_assert_int_eq(mlt__queue_list(tmp, &dirs, &n), MLT_OK);
    ck_assert_uint_eq(n, 0);
    free(dirs);
    static const char *const names[] = {"j-c", "j-a", "x-b", "j-b", "lock", "jj-z", "J-d"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        mlt_test_path(path, tmp, names[i]);
        ck_assert_int_eq(mkdir(path, 0700), 0);
    }
    for (int i = 0; i < 20; i++) { /* more than the first allocation */
        char name[16];
        snprintf(name, sizeof name, "j-z%02d", 19 - i);
        mlt_test_path(path, tmp, name);
        ck_assert_int_eq(mkdir(path, 0700), 0);
    }
    ck_assert_int_eq(mlt__queue_list(tmp, &dirs, &n), MLT_OK);
    ck_assert_uint_eq(n, 23);
    char want[PATH_MAX];
    snprintf(want, sizeof want, "%s/j-a", tmp);
    ck_assert_str_eq(dirs[0], want);
    snprintf(want, sizeof want, "%s/j-b", tmp);
    ck_assert_str_eq(dirs[1], want);
    snprintf(want, sizeof want, "%s/j-c", tmp);
    ck_assert_str_eq(dirs[2], want);
    for (size_t i = 3; i < n; i++) {
        snprintf(want, sizeof want, "%s/j-z%02zu", tmp, i - 3);
        ck_assert_str_eq(dirs[i], want);
    }
    for (size_t i = 0; i < n; i++) {
        free(dirs[i]);
    }
    free(dirs);
    mlt_test_remove_tree(tmp);
}
END_TEST

/* Restores an environment variable when the test runs without fork. */
typedef struct saved_env {
    const char *name;
    char *value;
} saved_env;

static saved_env env_save(const char *name)
{
    const char *v = getenv(name);
    return (saved_env){name, v ? strdup(v) : NULL};
}

static void env_restore(saved_env *s)
{
    if (s->value) {
        setenv(s->name, s->value, 1);
    } else {
        unsetenv(s->name);
    }
    free(s->value);
}

START_TEST(queue_dir_prefers_the_option_then_xdg_then_home)
{
    saved_env xdg = env_save("XDG_STATE_HOME"), home = env_save("HOME"),
              mqd = env_save("MLTRACK_QUEUE_DIR");
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    char out[PATH_MAX];
    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    setenv("HOME", "/home/someone", 1);
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/xdg/state/mltrack/queue");
    unsetenv("XDG_STATE_HOME");
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/home/someone/.local/state/mltrack/queue");
    /* a relative XDG_STATE_HOME is to be ignored (XDG base directory spec) */
    setenv("XDG_STATE_HOME", "relative/state", 1);
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/home/someone/.local/state/mltrack/queue");
    setenv("XDG_STATE_HOME", "", 1);
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/home/someone/.local/state/mltrack/queue");
    /* the option wins over both */
    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", "/opt/q", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/opt/q");
    /* too small a buffer */
    char small[5];
    ck_assert_int_eq(mlt__queue_dir(o, small, sizeof small), MLT_ERR_VALUE_TOO_LONG);
    mlt_options_free(o);
    /* MLTRACK_QUEUE_DIR comes in through the environment options */
    o = mlt_options_new();
    setenv("MLTRACK_QUEUE_DIR", "/env/q", 1);
    ck_assert_int_eq(mlt_options_from_env(o, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_OK);
    ck_assert_str_eq(out, "/env/q");
    mlt_options_free(o);
    /* nothing at all */
    o = mlt_options_new();
    unsetenv("XDG_STATE_HOME");
    unsetenv("HOME");
    ck_assert_int_eq(mlt__queue_dir(o, out, sizeof out), MLT_ERR_BAD_OPTION);
    mlt_options_free(o);
    env_restore(&xdg);
    env_restore(&home);
    env_restore(&mqd);
}
END_TEST

/*
 * A relay's view of a live writer's journal (mlt__journal_open_follow), as another host sees it:
 * a copy of the writer's files that lags behind. A frame at the tail not whole yet is "not yet"
 * (never cut, nothing consumed), and read once the rest arrives; segments the writer rolls to
 * are followed; an ack writes the cursor and deletes no segment (the writer's to delete).
 */
START_TEST(journal_follower_reads_whole_committed_frames_and_waits_for_the_rest)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *w = create_j(f.dir, MLT__FSYNC_ALWAYS);
    for (uint64_t n = 1; n <= 3; n++) {
        append_param(w, n);
    }
    char view[MLT_TEST_DIR_LEN + 16];
    snprintf(view, sizeof view, "%s/j-view", f.tmp);
    ck_assert_int_eq(mkdir(view, 0700), 0);
    static const char *const meta[] = {"acked", "runs", "keys"};
    for (size_t i = 0; i < 3; i++) {
        size_t len = 0;
        unsigned char *b = slurp(f.dir, meta[i], &len);
        spit(view, meta[i], b ? b : (const unsigned char *)"", b ? len : 0);
        free(b);
    }
    /* the view has the segment up to 5 bytes short of its third frame's end */
    size_t seg_len = 0;
    unsigned char *seg = slurp(f.dir, SEG1, &seg_len);
    ck_assert_ptr_nonnull(seg);
    spit(view, SEG1, seg, seg_len - 5);
    mlt__journal *r = NULL;
    mlt__recovery rec;
    ck_assert_int_eq(mlt__journal_open_follow(&r, view, &rec), MLT_OK);
    ck_assert(mlt__journal_following(r));
    ck_assert_uint_gt(rec.cut_bytes, 0); /* seen as torn (the frame so far)... */
    ck_assert_uint_eq((uint64_t)file_size(view, SEG1), seg_len - 5); /* ...and never cut */
    uint64_t cursor = 0;
    mlt__rec last;
    expect_params(r, &cursor, 1, 2, &last); /* and "nothing more yet" after 2 */
    /* the rest of the frame arrives: read, and nothing was consumed meanwhile */
    spit(view, SEG1, seg, seg_len);
    expect_params(r, &cursor, 3, 3, &last);
    free(seg);
    /* the writer rolls to new segments: followed */
    mlt__journal_set_segment_bytes(w, 1);
    for (uint64_t n = 4; n <= 6; n++) {
        append_param(w, n);
    }
    mlt__journal_close(w, false);
    DIR *d = opendir(f.dir);
    ck_assert_ptr_nonnull(d);
    int copied = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "seg-", 4) == 0 && strcmp(e->d_name, SEG1) != 0) {
            size_t len = 0;
            unsigned char *b = slurp(f.dir, e->d_name, &len);
            spit(view, e->d_name, b, len);
            free(b);
            copied++;
        }
    }
    closedir(d);
    ck_assert_int_ge(copied, 2);
    expect_params(r, &cursor, 4, 6, &last);
    /* an ack: the cursor is written, every segment stays for the writer */
    ck_assert_int_eq(mlt__journal_ack(r, &last), MLT_OK);
    size_t alen = 0;
    char *acked = (char *)slurp(view, "acked", &alen);
    ck_assert_ptr_nonnull(acked);
    ck_assert_uint_eq(strtoull(acked, NULL, 10), 6);
    free(acked);
    ck_assert(exists(view, SEG1));
    mlt__journal_close(r, true); /* a follower removes nothing, even all delivered */
    ck_assert(exists(view, SEG1));
    fixture_done(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("journal");
    MLT_ADD_TEST(s, crc32c_matches_known_vectors);
    MLT_ADD_TEST(s, crc32c_incremental_equals_one_shot);
    MLT_ADD_TEST(s, crc32c_matches_a_bitwise_reference_at_every_alignment);
    MLT_ADD_TEST(s, record_create_round_trips_with_the_most_tags);
    MLT_ADD_TEST(s, record_create_refuses_more_than_the_most_tags);
    MLT_ADD_TEST(s, record_create_round_trips_empty_and_null_strings);
    MLT_ADD_TEST(s, record_param_and_tag_round_trip);
    MLT_ADD_TEST(s, record_metric_round_trips_special_values_bit_exact);
    MLT_ADD_TEST(s, record_end_round_trips_extreme_times);
    MLT_ADD_TEST(s, record_truncated_payloads_are_corrupt);
    MLT_ADD_TEST(s, record_trailing_garbage_is_corrupt);
    MLT_ADD_TEST(s, record_create_keeps_its_resume_flag_and_reads_old_creates);
    MLT_ADD_TEST(s, record_unknown_types_are_corrupt);
    MLT_ADD_TEST(s, record_attach_round_trips);
    MLT_ADD_TEST(s, record_malformed_strings_are_corrupt);
    MLT_ADD_TEST(s, record_decode_survives_random_bytes);
    MLT_ADD_TEST(s, record_artifact_round_trips_and_refuses_a_bad_digest);
    MLT_ADD_TEST(s, journal_artifact_snapshot_is_what_was_logged_until_acked);
    MLT_ADD_TEST(s, journal_artifact_snapshot_of_a_large_file_is_copied_and_hashed_whole);
    MLT_ADD_TEST(s, journal_artifact_snapshot_outlives_an_ack_not_yet_on_disk);
    MLT_ADD_TEST(s, journal_artifact_recovery_keeps_only_what_a_record_needs);
    MLT_ADD_TEST(s, journal_create_makes_private_files_and_a_first_segment);
    MLT_ADD_TEST(s, journal_create_makes_missing_parent_directories);
    MLT_ADD_TEST(s, journal_create_takes_a_relative_directory);
    MLT_ADD_TEST(s, journal_create_refuses_an_existing_journal);
    MLT_ADD_TEST(s, journal_appends_read_back_in_order);
    MLT_ADD_TEST(s, journal_segment_bytes_match_the_frame_format);
    MLT_ADD_TEST(s, journal_reopen_keeps_records_and_last_seq);
    MLT_ADD_TEST(s, journal_reopened_for_delivery_refuses_appends_cleanly);
    MLT_ADD_TEST(s, journal_a_second_open_of_a_live_journal_is_locked);
    MLT_ADD_TEST(s, journal_open_of_a_missing_directory_fails);
    MLT_ADD_TEST(s, journal_read_only_open_of_a_locked_journal_changes_nothing);
    MLT_ADD_TEST(s, journal_ack_persists_across_reopen);
    MLT_ADD_TEST(s, journal_pending_bytes_follow_acks_after_reopen);
    MLT_ADD_TEST(s, journal_next_rereads_from_an_earlier_cursor);
    MLT_ADD_TEST(s, journal_cuts_a_torn_frame_header);
    MLT_ADD_TEST(s, journal_cuts_a_torn_payload);
    MLT_ADD_TEST(s, journal_cuts_a_flipped_byte_anywhere_in_the_last_record);
    MLT_ADD_TEST(s, journal_cuts_everything_after_a_bad_middle_record);
    MLT_ADD_TEST(s, journal_cuts_a_frame_with_a_valid_crc_but_a_wrong_seq);
    MLT_ADD_TEST(s, journal_cuts_a_bad_frame_length);
    MLT_ADD_TEST(s, journal_read_only_open_reports_a_torn_tail_but_keeps_it);
    MLT_ADD_TEST(s, journal_reads_across_segments_and_ack_deletes_delivered_ones);
    MLT_ADD_TEST(s, journal_reopen_after_acks_reads_from_a_later_segment);
    MLT_ADD_TEST(s, journal_cut_in_a_middle_segment_drops_every_later_segment);
    MLT_ADD_TEST(s, journal_cuts_a_segment_that_does_not_follow_on);
    MLT_ADD_TEST(s, journal_cuts_a_segment_without_magic);
    MLT_ADD_TEST(s, journal_ignores_files_named_like_segments_but_not_by_their_number);
    MLT_ADD_TEST(s, journal_cuts_records_numbered_zero);
    MLT_ADD_TEST(s, journal_next_reports_a_checksummed_record_that_does_not_decode);
    MLT_ADD_TEST(s, journal_reads_on_past_an_acked_record_that_does_not_decode);
    MLT_ADD_TEST(s, journal_rotates_segments_past_the_segment_size);
    MLT_ADD_TEST(s, journal_takes_the_largest_record_and_refuses_a_larger_one);
    MLT_ADD_TEST(s, journal_accepts_every_fsync_mode);
    MLT_ADD_TEST(s, journal_concurrent_appends_are_all_present_once);
    MLT_ADD_TEST(s, journal_reader_keeps_up_with_concurrent_appends);
    MLT_ADD_TEST(s, journal_run_map_is_durable_and_reloads);
    MLT_ADD_TEST(s, journal_dead_letters_are_json_lines_with_the_answer);
    MLT_ADD_TEST(s, journal_dead_letters_stay_utf8_when_the_answer_is_cut_mid_character);
    MLT_ADD_TEST(s, journal_close_removes_a_delivered_journal);
    MLT_ADD_TEST(s, journal_close_keeps_a_journal_with_work_left);
    MLT_ADD_TEST(s, queue_list_lists_journal_directories_sorted);
    MLT_ADD_TEST(s, queue_dir_prefers_the_option_then_xdg_then_home);
    MLT_ADD_TEST(s, journal_follower_reads_whole_committed_frames_and_waits_for_the_rest);
    return mlt_test_run_suite(s);
}
