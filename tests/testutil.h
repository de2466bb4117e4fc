/*
 * testutil.h - small helpers shared by the Check unit tests: running a suite, assertions that
 * record nothing when they hold, temporary directories, files, JSON getters, clocks, strings and
 * a fixed "random" sequence.
 */
#ifndef MLT_TESTUTIL_H
#define MLT_TESTUTIL_H

#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Runs one suite; returns the process exit status. CK_FORK=no is honoured by Check itself. */
static inline int mlt_test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* An assertion that records nothing when it holds (ck_assert marks a point each time, which is
 * slow in loops of 100k checks under valgrind). */
#define REQUIRE(cond, ...)                                                                       \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            ck_abort_msg(__VA_ARGS__);                                                           \
        }                                                                                        \
    } while (0)

/* Adds test function fn to a new tcase named after it. */
#define MLT_ADD_TEST(suite, fn)                                                                  \
    do {                                                                                         \
        TCase *tc_ = tcase_create(#fn);                                                          \
        tcase_set_timeout(tc_, 30);                                                              \
        tcase_add_test(tc_, fn);                                                                 \
        suite_add_tcase((suite), tc_);                                                           \
    } while (0)

/* The figures of a fault test that passed, one line on stdout (in the test's .log), read by
 * scripts/reliability-report.py: what was injected, how often, and the points checked after it
 * (lost and duplicated are 0: the test asserted so before calling this). fault is plain text
 * without quotes or backslashes. */
static inline void mlt_test_reliability(const char *test, const char *fault, long trials,
                                        long faults, long points)
{
    printf("reliability: {\"test\":\"%s\",\"fault\":\"%s\",\"trials\":%ld,\"faults\":%ld,"
           "\"runs\":%d,\"points\":%ld,\"lost\":0,\"duplicated\":0}\n",
           test, fault, trials, faults, points > 0, points);
    fflush(stdout);
}

/* Makes a fresh directory $TMPDIR/mlt-<tag>-XXXXXX (or under /tmp) into out. */
static inline void mlt_test_tmpdir(char *out, size_t len, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, len, "%s/mlt-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* Removes path and everything under it (nothing if it does not exist). */
static inline void mlt_test_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        ck_assert_ptr_nonnull(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            mlt_test_remove_tree(sub);
        }
        closedir(d);
        ck_assert_int_eq(rmdir(path), 0);
    } else {
        ck_assert_int_eq(unlink(path), 0);
    }
}

/* ---- files ---- */

/* dir/name into out (PATH_MAX bytes). */
static inline void mlt_test_path(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    ck_assert(n > 0 && n < PATH_MAX);
}

/* The whole file, NUL-terminated (caller frees), its length in *len (len may be NULL); NULL (and
 * a length of 0) when it cannot be opened. */
static inline char *mlt_test_read_file(const char *path, size_t *len)
{
    if (len) {
        *len = 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len) {
        *len = n;
    }
    return buf;
}

/* The whole file dir/name as mlt_test_read_file() reads it. */
static inline char *mlt_test_slurp(const char *dir, const char *name, size_t *len)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    return mlt_test_read_file(p, len);
}

/* Writes data[0..len) to path, opened with mode ("wb" replaces, "ab" appends). */
static inline void mlt_test_write_file(const char *path, const char *mode, const void *data,
                                       size_t len)
{
    FILE *f = fopen(path, mode);
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* A fresh journal directory path, dir (not created), under a fresh temporary directory, tmp. */
#define MLT_TEST_DIR_LEN 512
typedef struct mlt_test_jdir {
    char tmp[MLT_TEST_DIR_LEN];
    char dir[MLT_TEST_DIR_LEN + 16];
} mlt_test_jdir;

static inline void mlt_test_jdir_init(mlt_test_jdir *f, const char *tag)
{
    mlt_test_tmpdir(f->tmp, sizeof f->tmp, tag);
    snprintf(f->dir, sizeof f->dir, "%s/j-test", f->tmp);
}

static inline void mlt_test_jdir_done(mlt_test_jdir *f)
{
    mlt_test_remove_tree(f->tmp);
}

/* ---- JSON ---- */

/* Member name of o, which must be a string. */
static inline const char *mlt_test_jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    REQUIRE(cJSON_IsString(v), "%s is not a string", name);
    return v->valuestring;
}

/* Member name of o, which must be a number. */
static inline double mlt_test_jnum(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    REQUIRE(cJSON_IsNumber(v), "%s is not a number", name);
    return v->valuedouble;
}

/* ---- clocks, strings, numbers ---- */

/* The wall clock, ms since the epoch. */
static inline int64_t mlt_test_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The monotonic clock, in ms. */
static inline int64_t mlt_test_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* n copies of unit in a new string (caller frees). */
static inline char *mlt_test_repeat(const char *unit, size_t n)
{
    size_t len = strlen(unit);
    char *s = malloc(len * n + 1);
    REQUIRE(s != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        memcpy(s + i * len, unit, len);
    }
    s[len * n] = '\0';
    return s;
}

/* The double whose IEEE 754 bits are b, and the bits of d. */
static inline double mlt_test_double_of(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static inline uint64_t mlt_test_bits_of(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

/* splitmix64: the next of a sequence that a seed fixes (the same "random" values on every run). */
static inline uint64_t mlt_test_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
