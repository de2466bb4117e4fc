/*
 * check_limits.c - resources over a process's life.
 * - 1000 trackers opened, used and closed in turn (their server away, so every piece is made:
 *   journal, ring, writer and sender threads, curl handles) leave no file descriptor and no
 *   thread behind. MLT_TEST_CYCLES sets the count (make check-valgrind uses fewer; leaks of
 *   memory are valgrind's to find).
 * - A full disk (a file size cap, RLIMIT_FSIZE, which any process may set on itself): calls fail
 *   with the writer's reason, nothing journaled is lost or doubled, and logging resumes when
 *   room comes back.
 * - An artifact snapshot on a full disk: the call fails with the reason, nothing of it is left
 *   in the queue (no snapshot, no record), and the same call succeeds once there is room.
 * - fork() while threads log: the child's copies of the trackers refuse every call at once
 *   (MLT_ERR_STATE, no hang on a lock a parent thread held), the child may make a tracker of its
 *   own, and the parent's journal holds only the parent's points.
 */
#include "config.h"

#include "testutil.h"

#include "journal.h"
#include "mltrack.h"
#include "queue.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

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
    ck_assert_int_eq(mlt_run_start(&run, t, "cycle"), MLT_OK);
    ck_assert_int_eq(mlt_log_param(run, "i", "x"), MLT_OK);
    for (int s = 0; s < 10; s++) {
        ck_assert_int_eq(mlt_log_metric(run, "m", s * 0.5, s), MLT_OK);
    }
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_err rc = mlt_tracker_close(t, 0);
    ck_assert_msg(rc == MLT_OK || rc == MLT_ERR_TIMEOUT || rc == MLT_ERR_QUEUED, "close: %s",
                  mlt_err_name(rc));
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
    mlt_test_reliability("check_limits",
                         "tracker opened and closed again and again: no file "
                         "descriptor or thread left behind",
                         cycles, 0, 0);
}
END_TEST

/* The only journal directory under queue. */
static void journal_dir(const char *queue, char *out, size_t len)
{
    char **dirs = NULL;
    size_t n = 0;
    ck_assert_int_eq(mlt__queue_list(queue, &dirs, &n), MLT_OK);
    ck_assert_uint_eq(n, 1);
    snprintf(out, len, "%s", dirs[0]);
    free(dirs[0]);
    free(dirs);
}

#define FULL_POINTS 100000 /* about 3.7 MB of journal: well past the 1 MiB cap */
#define AFTER_POINTS 1000

/* A tracker on queue with the MLflow callback, its server away (a closed port), and one more
 * option (name NULL: none); its run `name` started into *run. */
static mlt_tracker *away_run(const char *queue, const char *opt, const char *value,
                             const char *name, mlt_run **run)
{
    char err[256] = "";
    mlt_options *o = mlt_options_new();
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://127.0.0.1:1", err, sizeof err),
                     MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", queue, err, sizeof err), MLT_OK);
    if (opt) {
        ck_assert_int_eq(mlt_options_set(o, opt, value, err, sizeof err), MLT_OK);
    }
    mlt_tracker *t = NULL;
    ck_assert_msg(mlt_tracker_new(&t, o, err, sizeof err) == MLT_OK, "%s", err);
    mlt_options_free(o);
    ck_assert_msg(mlt_tracker_add_mlflow(t, err, sizeof err) == MLT_OK, "%s", err);
    ck_assert_int_eq(mlt_run_start(run, t, name), MLT_OK);
    return t;
}

/* The files in dir/art (0 when there is no such directory). */
static int art_files(const char *queue)
{
    char dir[PATH_MAX], art[PATH_MAX + 8];
    journal_dir(queue, dir, sizeof dir);
    snprintf(art, sizeof art, "%s/art", dir);
    DIR *d = opendir(art);
    if (!d) {
        return 0;
    }
    closedir(d);
    return count_entries(art);
}

START_TEST(an_artifact_on_a_full_disk_fails_leaves_nothing_and_goes_once_there_is_room)
{
    signal(SIGXFSZ, SIG_IGN);
    char queue[PATH_MAX], file[PATH_MAX + 16];
    mlt_test_tmpdir(queue, sizeof queue, "full-art");
    snprintf(file, sizeof file, "%s/model.bin", queue);
    FILE *f = fopen(file, "wb");
    ck_assert_ptr_nonnull(f);
    static char block[1 << 16];
    memset(block, 'w', sizeof block);
    for (int i = 0; i < 32; i++) { /* 2 MiB */
        ck_assert_uint_eq(fwrite(block, 1, sizeof block, f), sizeof block);
    }
    ck_assert_int_eq(fclose(f), 0);
    mlt_run *run = NULL;
    mlt_tracker *t = away_run(queue, NULL, NULL, "full", &run);
    struct rlimit old, cap;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    cap = old;
    cap.rlim_cur = 1 << 20; /* no file may grow past 1 MiB */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &cap), 0);
    mlt_err during = mlt_log_artifact(run, file, NULL);
    char why[512];
    snprintf(why, sizeof why, "%s", mlt_last_error());
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    ck_assert_int_eq(during, MLT_ERR_IO);
    ck_assert_msg(strstr(why, "File too large") && strstr(why, "snapshot"), "%s", why);
    ck_assert_int_eq(art_files(queue), 0); /* the half-made snapshot is gone */
    mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
    ck_assert_int_eq(mlt_tracker_queue_stats(&st, t), MLT_OK);
    uint64_t queued = st.queued;
    /* room again: the same call goes, once */
    ck_assert_int_eq(mlt_log_artifact(run, file, NULL), MLT_OK);
    ck_assert_int_eq(art_files(queue), 1);
    ck_assert_int_eq(mlt_tracker_queue_stats(&st, t), MLT_OK);
    ck_assert_uint_eq(st.queued, queued + 1);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_tracker_close(t, 0);
    mlt_test_remove_tree(queue);
    mlt_test_reliability(
        "check_limits",
        "disk full at an artifact's snapshot (a 1 MiB file size cap, a 2 MiB "
        "file): the call fails, nothing is left queued, it goes once there is room",
        1, 1, 0);
}
END_TEST

START_TEST(an_artifact_larger_than_the_queue_cap_is_refused_at_once)
{
    char queue[PATH_MAX];
    mlt_test_tmpdir(queue, sizeof queue, "cap-art");
    mlt_run *run = NULL;
    mlt_tracker *t = away_run(queue, "queue_max_bytes", "65536", "cap", &run);
    static char data[100000];
    int64_t t0 = mlt_test_mono_ms();
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "big.bin", data, sizeof data), MLT_ERR_QUEUE_FULL);
    ck_assert_int_lt(mlt_test_mono_ms() - t0, 500); /* not waited for: it would never fit */
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), "larger than the queue's cap"));
    ck_assert_int_eq(art_files(queue), 0);
    ck_assert_int_eq(mlt_log_artifact_bytes(run, "small.bin", data, 1000), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_tracker_close(t, 0);
    mlt_test_remove_tree(queue);
}
END_TEST

START_TEST(a_full_disk_fails_calls_keeps_what_was_journaled_and_resumes)
{
    signal(SIGXFSZ, SIG_IGN); /* past the cap a write fails with EFBIG instead */
    char queue[PATH_MAX], err[256] = "";
    mlt_test_tmpdir(queue, sizeof queue, "full");
    mlt_run *run = NULL;
    mlt_tracker *t = away_run(queue, "queue_full", "fail", "full", &run);
    ck_assert_int_eq(mlt_log_param(run, "before", "1"), MLT_OK);

    /* the disk fills: no file of the queue may grow past 1 MiB */
    struct rlimit old, cap;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    cap = old;
    cap.rlim_cur = 1 << 20;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &cap), 0);
    static bool ok[FULL_POINTS + AFTER_POINTS];
    int failed = 0;
    char first_failure[512] = "";
    for (int i = 0; i < FULL_POINTS; i++) {
        mlt_err rc = mlt_log_metric(run, "m", (double)i, i);
        ok[i] = rc == MLT_OK;
        if (!ok[i] && failed++ == 0) {
            snprintf(first_failure, sizeof first_failure, "%s: %s", mlt_err_name(rc),
                     mlt_last_error());
        }
    }
    mlt_err during = mlt_log_param(run, "during", "1");
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0); /* room comes back */

    ck_assert_msg(failed > 0, "the cap was never reached");
    ck_assert_msg(strstr(first_failure, "MLT_ERR_QUEUE_FULL") &&
                      strstr(first_failure, "File too large"),
                  "the failure does not say why: %s", first_failure);
    ck_assert_int_ne(during, MLT_OK);

    /* logging resumes: the writer retries and drains the ring */
    int64_t until = mlt_test_mono_ms() + 10000;
    mlt_err rc;
    while ((rc = mlt_log_metric(run, "m", (double)FULL_POINTS, FULL_POINTS)) != MLT_OK &&
           mlt_test_mono_ms() < until) {
        usleep(20 * 1000);
    }
    ck_assert_msg(rc == MLT_OK, "logging did not resume: %s", mlt_last_error());
    ok[FULL_POINTS] = true;
    for (int i = FULL_POINTS + 1; i < FULL_POINTS + AFTER_POINTS; i++) {
        ck_assert_int_eq(mlt_log_metric(run, "m", (double)i, i), MLT_OK);
        ok[i] = true;
    }
    ck_assert_int_eq(mlt_log_param(run, "after", "1"), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_tracker_close(t, 0); /* the server is away: everything stays queued */

    /* every point whose call returned MLT_OK is journaled once, and no other */
    char dir[PATH_MAX];
    journal_dir(queue, dir, sizeof dir);
    mlt__journal *j = NULL;
    mlt__recovery recov;
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, dir, false, MLT__FSYNC_NONE, &recov)),
        MLT_OK);
    static unsigned char seen[FULL_POINTS + AFTER_POINTS];
    memset(seen, 0, sizeof seen);
    bool params[3] = {false, false, false};
    int ended = 0;
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    mlt__rec r;
    while ((rc = mlt__journal_next(j, &cursor, &scratch, &r)) == MLT_OK) {
        if (r.type == MLT__REC_METRIC) {
            ck_assert_str_eq(r.key, "m");
            int i = (int)r.num;
            ck_assert(i >= 0 && i < FULL_POINTS + AFTER_POINTS && r.step == i);
            ck_assert_msg(ok[i], "point %d was journaled though its call failed", i);
            ck_assert_msg(seen[i]++ == 0, "point %d journaled twice", i);
        } else if (r.type == MLT__REC_PARAM) {
            params[0] |= strcmp(r.key, "before") == 0;
            params[1] |= strcmp(r.key, "during") == 0;
            params[2] |= strcmp(r.key, "after") == 0;
        } else if (r.type == MLT__REC_END) {
            ended++;
        }
    }
    ck_assert_int_eq(rc, MLT_ERR_NOT_FOUND);
    for (int i = 0; i < FULL_POINTS + AFTER_POINTS; i++) {
        ck_assert_msg(!ok[i] || seen[i] == 1, "point %d was logged but is not in the journal", i);
    }
    ck_assert(params[0] && !params[1] && params[2]);
    ck_assert_int_eq(ended, 1);
    long journaled = 0;
    for (int i = 0; i < FULL_POINTS + AFTER_POINTS; i++) {
        journaled += seen[i];
    }
    mlt_test_reliability("check_limits",
                         "disk full while logging (a 1 MiB file size cap), "
                         "policy fail: calls refused, logging resumes when room comes back",
                         1, failed, journaled);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    mlt_test_remove_tree(queue);
}
END_TEST

/* A tracker aimed at a refused port, queue in dir. */
static mlt_tracker *away_tracker(const char *dir)
{
    char err[256] = "";
    mlt_options *o = mlt_options_new();
    if (!o || mlt_options_set(o, "tracking_uri", "http://127.0.0.1:1", err, sizeof err) ||
        mlt_options_set(o, "queue_dir", dir, err, sizeof err)) {
        mlt_options_free(o);
        return NULL;
    }
    mlt_tracker *t = NULL;
    if (mlt_tracker_new(&t, o, err, sizeof err) != MLT_OK ||
        mlt_tracker_add_mlflow(t, err, sizeof err) != MLT_OK) {
        mlt_tracker_close(t, 0);
        t = NULL;
    }
    mlt_options_free(o);
    return t;
}

typedef struct logger_arg {
    mlt_run *run;
    atomic_bool stop;
    long ok;
} logger_arg;

static void *logger_main(void *arg)
{
    logger_arg *a = arg;
    for (long i = 0; !atomic_load(&a->stop); i++) {
        a->ok += mlt_log_metric(a->run, "m", (double)i, i) == MLT_OK;
        if (i % 64 == 0) {
            mlt_set_tag(a->run, "progress", "x"); /* journal appends: its lock taken often */
        }
    }
    return NULL;
}

/* In the child: every call on the parent's tracker fails at once; a tracker of its own works.
 * Returns the exit status: 0, or the number of the first check that failed. */
static int child_checks(mlt_tracker *t, mlt_run *run, const mlt_key *k, const char *own_dir)
{
    mlt_run *r2 = NULL;
    const mlt_key *k2 = NULL;
    const mlt_err got[] = {
        mlt_log_metric(run, "m", 1.0, 1),       mlt_log_metric_key(run, k, 1.0, 1),
        mlt_log_metric_at(run, "m", 1.0, 1, 5), mlt_log_param(run, "child", "1"),
        mlt_set_tag(run, "child", "1"),         mlt_metric_key(&k2, t, "other"),
        mlt_run_start(&r2, t, "child"),         mlt_tracker_flush(t, 1000),
        mlt_run_end(run, MLT_RUN_FINISHED),     mlt_tracker_close(t, 1000),
    };
    for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) {
        if (got[i] != MLT_ERR_STATE) {
            return (int)i + 1;
        }
    }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* the sanitizers' runtimes cannot allocate or start threads in a child forked while other
     * threads ran (ASan's allocator locks, TSan refuses): the child's own tracker is for the
     * plain build and valgrind */
    (void)own_dir;
    return 0;
#endif
    mlt_tracker *own = away_tracker(own_dir);
    mlt_run *mine = NULL;
    if (!own || mlt_run_start(&mine, own, "child's own") != MLT_OK ||
        mlt_log_metric(mine, "c", 1.0, 0) != MLT_OK || mlt_run_end(mine, 0) != MLT_OK) {
        return 50;
    }
    mlt_err rc = mlt_tracker_close(own, 0);
    return rc == MLT_OK || rc == MLT_ERR_TIMEOUT || rc == MLT_ERR_QUEUED ? 0 : 51;
}

START_TEST(a_forked_child_is_refused_the_parents_tracker_and_never_hangs)
{
    char queue[PATH_MAX], own[PATH_MAX];
    mlt_test_tmpdir(queue, sizeof queue, "fork");
    mlt_test_tmpdir(own, sizeof own, "fork-child");
    mlt_tracker *t = away_tracker(queue);
    ck_assert_ptr_nonnull(t);
    mlt_run *run = NULL;
    const mlt_key *k = NULL;
    ck_assert_int_eq(mlt_run_start(&run, t, "parent"), MLT_OK);
    ck_assert_int_eq(mlt_metric_key(&k, t, "m"), MLT_OK);
    logger_arg la = {.run = run, .ok = 0};
    atomic_init(&la.stop, false);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, logger_main, &la), 0);
    for (int n = 0; n < 20; n++) {
        usleep(5000);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            alarm(20); /* a hang ends the child by SIGALRM, which the parent sees */
            char code[16];
            snprintf(code, sizeof code, "exit %d", child_checks(t, run, k, own));
            /* what a child may do: exec (valgrind then checks no leak in the parent's image,
             * whose threads' buffers the child sees as lost) */
            execl("/bin/sh", "sh", "-c", code, (char *)NULL);
            _exit(99);
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status), "fork %d: the child died of signal %d (a hang?)", n,
                      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        ck_assert_msg(WEXITSTATUS(status) == 0, "fork %d: check %d failed in the child", n,
                      WEXITSTATUS(status));
    }
    atomic_store(&la.stop, true);
    pthread_join(th, NULL);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_tracker_close(t, 0);

    /* the parent's journal: its points only, every one of them */
    char dir[PATH_MAX], err[256];
    journal_dir(queue, dir, sizeof dir);
    mlt__journal *j = NULL;
    mlt__recovery recov;
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, dir, false, MLT__FSYNC_NONE, &recov)),
        MLT_OK);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    mlt__rec r;
    long points = 0;
    mlt_err rc;
    while ((rc = mlt__journal_next(j, &cursor, &scratch, &r)) == MLT_OK) {
        if (r.type == MLT__REC_METRIC) {
            ck_assert_str_eq(r.key, "m");
            points++;
        }
        ck_assert(r.type != MLT__REC_PARAM); /* the child's param never got in */
    }
    ck_assert_int_eq(rc, MLT_ERR_NOT_FOUND);
    ck_assert_int_eq(points, la.ok);
    mlt_test_reliability("check_limits",
                         "fork() while a thread logs: the child is refused the "
                         "parent's tracker",
                         20, 20, points);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    mlt_test_remove_tree(queue);
    mlt_test_remove_tree(own);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("cycles");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, a_thousand_tracker_lives_leave_no_fd_and_no_thread);
    suite_add_tcase(s, tc);
    MLT_ADD_TEST(s, a_full_disk_fails_calls_keeps_what_was_journaled_and_resumes);
    MLT_ADD_TEST(s, an_artifact_on_a_full_disk_fails_leaves_nothing_and_goes_once_there_is_room);
    MLT_ADD_TEST(s, an_artifact_larger_than_the_queue_cap_is_refused_at_once);
    MLT_ADD_TEST(s, a_forked_child_is_refused_the_parents_tracker_and_never_hangs);
    return mlt_test_run_suite(s);
}
