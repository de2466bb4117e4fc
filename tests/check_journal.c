/* check_journal.c - placeholder, replaced by the journal's tests. */
#include "testutil.h"

START_TEST(placeholder)
{
    ck_assert_int_eq(1, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("journal");
    MLT_ADD_TEST(s, placeholder);
    return mlt_test_run_suite(s);
}
