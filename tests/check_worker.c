/*
 * check_worker.c - the library's threads against the system: every deadline is on the monotonic
 * clock (a step of the wall clock moves none), and who syncs the disk (fsync=none: nothing while
 * a program logs; fsync=interval: the journal's writer).
 *
 * This program defines clock_gettime, fdatasync, fsync and flock itself, so that the library
 * (linked statically into it) calls these: CLOCK_REALTIME reads are shifted by wall_step_ns,
 * syncs are counted, and flock fails with flock_errno when set (a file system without locks).
 * Each forwards to the kernel.
 */
#include "testutil.h"

#include "mltrack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic long long wall_step_ns; /* added to CLOCK_REALTIME: a step of the wall clock */
static atomic_long syncs;              /* fdatasync and fsync calls */

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, id, ts);
    long long step = atomic_load(&wall_step_ns);
    if (rc == 0 && step != 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + step;
        ts->tv_sec = (time_t)(ns / 1000000000LL);
        ts->tv_nsec = (long)(ns % 1000000000LL);
    }
    return rc;
}

int fdatasync(int fd)
{
    atomic_fetch_add(&syncs, 1);
    return (int)syscall(SYS_fdatasync, fd);
}

static atomic_int flock_errno; /* flock fails with it when not 0 */

int flock(int fd, int op)
{
    int e = atomic_load(&flock_errno);
    if (e) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_flock, fd, op);
}

int fsync(int fd)
{
    atomic_fetch_add(&syncs, 1);
    return (int)syscall(SYS_fsync, fd);
}

/* A tracker with the MLflow callback aimed at uri, its queue in dir. */
static mlt_tracker *tracker_for(const char *uri, const char *dir, const char *fsync_mode)
{
    char err[256] = "";
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", uri, err, sizeof err), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", dir, err, sizeof err), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "fsync", fsync_mode, err, sizeof err), MLT_OK);
    mlt_tracker *t = NULL;
    ck_assert_msg(mlt_tracker_new(&t, o, err, sizeof err) == MLT_OK, "%s", err);
    mlt_options_free(o);
    ck_assert_msg(mlt_tracker_add_mlflow(t, err, sizeof err) == MLT_OK, "%s", err);
    return t;
}

/* A server that takes connections and never answers: a listening socket nobody accepts on
 * (the kernel completes the connections). Its URI into uri. */
static int silent_server(char *uri, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    socklen_t alen = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(uri, len, "http://127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

/* How long a flush of 300 ms takes with the wall clock stepped by step_s seconds just before. */
static int64_t flush_ms_after_a_step(mlt_tracker *t, long long step_s)
{
    atomic_store(&wall_step_ns, step_s * 1000000000LL);
    int64_t t0 = mlt_test_mono_ms();
    mlt_err rc = mlt_tracker_flush(t, 300);
    int64_t took = mlt_test_mono_ms() - t0;
    ck_assert_msg(rc == MLT_ERR_TIMEOUT, "flush: %s: %s", mlt_err_name(rc), mlt_last_error());
    return took;
}

START_TEST(a_wall_clock_step_moves_no_deadline)
{
    char tmp[PATH_MAX], uri[64];
    mlt_test_tmpdir(tmp, sizeof tmp, "clock");
    int srv = silent_server(uri, sizeof uri);
    mlt_tracker *t = tracker_for(uri, tmp, "interval");
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "clock"), MLT_OK);
    ck_assert_int_eq(mlt_log_metric(run, "m", 1.0, 0), MLT_OK);
    /* the server took the connection: not away, so the flush waits its whole deadline, on the
     * monotonic clock whatever the wall clock does (a realtime deadline would wait an hour, or
     * not at all) */
    long long steps[] = {3600, -3600, 0};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int64_t took = flush_ms_after_a_step(t, steps[i]);
        ck_assert_msg(took >= 280 && took < 5000, "flush(300) took %lld ms after a %+lld s step",
                      (long long)took, steps[i]);
    }
    /* the run's end is stamped with the wall clock (the step is kept in its time, as MLflow's
     * Python client would), but the close's deadline is not moved by it either */
    atomic_store(&wall_step_ns, 3600LL * 1000000000LL);
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    int64_t t0 = mlt_test_mono_ms();
    mlt_err rc = mlt_tracker_close(t, 300);
    int64_t took = mlt_test_mono_ms() - t0;
    atomic_store(&wall_step_ns, 0);
    ck_assert_int_eq(rc, MLT_ERR_TIMEOUT);
    ck_assert_msg(took >= 280 && took < 5000, "close(300) took %lld ms", (long long)took);
    close(srv);
    mlt_test_remove_tree(tmp);
}
END_TEST

/* Logs points, params and tags for about 2.5 s, and returns how many syncs were made meanwhile
 * (the run already started: the journal's creation is not counted). */
static long syncs_while_logging(const char *fsync_mode)
{
    char tmp[PATH_MAX];
    mlt_test_tmpdir(tmp, sizeof tmp, "fsync");
    mlt_tracker *t = tracker_for("http://127.0.0.1:1", tmp, fsync_mode); /* refused at once */
    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "fsync"), MLT_OK);
    long before = atomic_load(&syncs);
    for (int i = 0; i < 2500; i++) {
        ck_assert_int_eq(mlt_log_metric(run, "loss", 1.0 / (i + 1), i), MLT_OK);
        if (i % 250 == 0) {
            char key[32];
            snprintf(key, sizeof key, "p%d", i);
            ck_assert_int_eq(mlt_log_param(run, key, "1"), MLT_OK);
            ck_assert_int_eq(mlt_set_tag(run, "progress", key), MLT_OK);
        }
        if (i % 100 == 0) {
            usleep(100000);
        }
    }
    long during = atomic_load(&syncs) - before;
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_tracker_close(t, 0);
    mlt_test_remove_tree(tmp);
    return during;
}

START_TEST(fsync_none_syncs_nothing_while_a_program_logs)
{
    long none = syncs_while_logging("none");
    ck_assert_msg(none == 0, "fsync=none: %ld syncs while logging", none);
    /* the count is real: the group commit of fsync=interval (every 100 ms) syncs meanwhile */
    long interval = syncs_while_logging("interval");
    ck_assert_msg(interval >= 5, "fsync=interval: only %ld syncs in 2.5 s of logging", interval);
}
END_TEST

/* Lustre mounted without -o flock answers ENOSYS to flock(): the tracker says what to do about
 * it, rather than that a running process owns its new journal. */
START_TEST(a_queue_without_flock_is_a_clear_error)
{
    char dir[512];
    mlt_test_tmpdir(dir, sizeof dir, "noflock");
    atomic_store(&flock_errno, ENOSYS);
    char err[1024] = "";
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://127.0.0.1:9", NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", dir, NULL, 0), MLT_OK);
    mlt_tracker *t = NULL;
    ck_assert_int_eq(mlt_tracker_new(&t, o, err, sizeof err), MLT_OK);
    mlt_err e = mlt_tracker_add_mlflow(t, err, sizeof err);
    atomic_store(&flock_errno, 0);
    ck_assert_int_eq(e, MLT_ERR_IO);
    ck_assert_msg(strstr(err, "flock") && strstr(err, "-o flock") && !strstr(err, "owned by"),
                  "message '%s'", err);
    mlt_tracker_close(t, 0);
    mlt_options_free(o);
    mlt_test_remove_tree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("worker");
    MLT_ADD_TEST(s, a_queue_without_flock_is_a_clear_error);
    MLT_ADD_TEST(s, a_wall_clock_step_moves_no_deadline);
    MLT_ADD_TEST(s, fsync_none_syncs_nothing_while_a_program_logs);
    return mlt_test_run_suite(s);
}
