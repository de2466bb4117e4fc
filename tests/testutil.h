/* testutil.h - small helpers shared by the Check unit tests. */
#ifndef MLT_TESTUTIL_H
#define MLT_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
