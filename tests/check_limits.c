/*
 * check_limits.c - resources over a process's life: 1000 trackers opened, used and closed in turn
 * (their server away, so every piece is made: journal, ring, writer and sender threads, curl
 * handles) leave no file descriptor and no thread behind. MLT_TEST_CYCLES sets the count
 * (make check-valgrind uses fewer; leaks of memory are valgrind's to find).
 */
#include "config.h"

#include "testutil.h"

#include "mltrack.h"

#include <dirent.h>

/* Entries of a /proc directory (file descriptors, threads), "." and ".." aside. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - (strcmp(dir, "/proc/self/fd") == 0); /* the one opendir holds */
}

/* One tracker's life: open, a run with a param and points, close at once (nothing delivered). */
static void one_cycle(const char *queue, int i)
{
    char err[256] = "", dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/%d", queue, i);
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    static const char *const kv[][2] = {
        {"tracking_uri", "http://127.0.0.1:1"}, /* refused at once */
        {"max_retries", "0"},
        {"linger_ms", "0"},
    };
    for (size_t k = 0; k < sizeof kv / sizeof kv[0]; k++) {
        ck_assert_int_eq(mlt_options_set(o, kv[k][0], kv[k][1], err, sizeof err), MLT_OK);
    }
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", dir, err, sizeof err), MLT_OK);
    mlt_tracker *t = NULL;
    ck_assert_msg(mlt_tracker_new(&t, o, err, sizeof err) == MLT_OK, "%s", err);
    mlt_options_free(o);
    ck_assert_msg(mlt_tracker_add_mlflow(t, err, sizeof err) == MLT_OK, "%s", err);
    mlt_run *run = NULL;
    ck_assert_int_eq(mlt_run_start(t, "cycle", &run), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "i", "x"), MLT_OK);
    for (int s = 0; s < 10; s++) {
        ck_assert_int_eq(mlt_log_metric(run, "m", s * 0.5, s), MLT_OK);
    }
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_err rc = mlt_tracker_close(t, 0);
    ck_assert_msg(rc == MLT_OK || rc == MLT_ERR_TIMEOUT, "close: %s", mlt_err_name(rc));
    mlt_test_remove_tree(dir);
}

START_TEST(a_thousand_tracker_lives_leave_no_fd_and_no_thread)
{
    const char *env = getenv("MLT_TEST_CYCLES");
    int cycles = env && atoi(env) > 0 ? atoi(env) : 1000;
    char queue[PATH_MAX];
    mlt_test_tmpdir(queue, sizeof queue, "limits");
    int warm = cycles < 10 ? 1 : 10; /* libcurl's and libc's one-time set-up comes first */
    int fds = -1, threads = -1;
    for (int i = 0; i < cycles; i++) {
        one_cycle(queue, i);
        if (i + 1 == warm) {
            fds = count_entries("/proc/self/fd");
            threads = count_entries("/proc/self/task");
        }
    }
    int fds_after = count_entries("/proc/self/fd");
    int threads_after = count_entries("/proc/self/task");
    mlt_test_remove_tree(queue);
    ck_assert_msg(fds_after == fds, "%d file descriptors open after %d cycles, %d after %d",
                  fds_after, cycles, fds, warm);
    ck_assert_msg(threads_after == threads, "%d threads after %d cycles, %d after %d",
                  threads_after, cycles, threads, warm);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("cycles");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, a_thousand_tracker_lives_leave_no_fd_and_no_thread);
    suite_add_tcase(s, tc);
    return mlt_test_run_suite(s);
}
