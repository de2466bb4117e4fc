/* testutil.h - small helpers shared by the Check unit tests. */
#ifndef MLT_TESTUTIL_H
#define MLT_TESTUTIL_H

#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

#endif
