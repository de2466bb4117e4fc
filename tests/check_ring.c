/*
 * check_ring.c - unit tests of the metric hot path: the ring (a mapped file in each journal,
 * src/journal.h) and its drain into POINT records (src/journal.c), the saving of a dead
 * process's ring at open (crashes simulated with fork() and _exit(), holes and rewound tails
 * made by hand), TSC stamps turned into ms, the registered metric keys, and the public API on
 * top of it (mlt_metric_key, mlt_log_metric_key, mlt_log_metric in src/tracker.c) with user
 * callbacks and with the MLflow callback, whose journal is read back after the tracker closed.
 *
 * Every point put is made from its index by gen_point(), so that what is read back is checked
 * against what was put one by one: bit-exact values, steps, timestamps, keys, order, and that no
 * point is missing or doubled.
 */
#include "testutil.h"

#include "common.h"
#include "journal.h"
#include "mltrack.h"
#include "record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif
#endif

/* ---- helpers -------------------------------------------------------------------------------- */

/* In a forked child: no Check assertions (the child is not a test), a message and an exit
 * status the parent reports. */
#define CHILD_REQUIRE(cond)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child: %s:%d: %s failed (%s)\n", __FILE__, __LINE__, #cond,           \
                    mlt_last_error());                                                             \
            _exit(10);                                                                             \
        }                                                                                          \
    } while (0)

#define DIR_LEN 512
#define SLOTS ((uint64_t)MLT__RING_SLOTS)

static bool under_valgrind(void)
{
    const char *v = getenv("MLTRACK_UNDER_VALGRIND");
    if (v && *v && strcmp(v, "0") != 0) {
        return true;
    }
#ifdef HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND != 0;
#else
    return false;
#endif
}

static void append_to(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    mlt_test_path(p, dir, name);
    mlt_test_write_file(p, "ab", text, strlen(text));
}

/* A fresh journal directory path (not created) under a fresh temporary directory. */
typedef mlt_test_jdir fixture;

static void fixture_init(fixture *f)
{
    mlt_test_jdir_init(f, "ring");
}

static void fixture_done(fixture *f)
{
    mlt_test_jdir_done(f);
}

static mlt__journal *create_j(const char *dir)
{
    mlt__journal *j = NULL;
    char err[256] = "";
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__journal_create(&j, dir, MLT__FSYNC_NONE));
    ck_assert_msg(e == MLT_OK, "create %s: %s (%s)", dir, mlt_strerror(e), err);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(mlt__journal_ring(j));
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

/* The metric keys of the journals made here: id i names KEYS[i]. */
static const char *const KEYS[3] = {"loss", "metrics/acc.top-1", "lr with spaces:x"};

static void put_keys(mlt__journal *j)
{
    for (uint32_t i = 0; i < 3; i++) {
        mlt_err e = mlt__journal_put_key(j, i, KEYS[i]);
        ck_assert_msg(e == MLT_OK, "put key %u: %s", i, mlt_last_error());
    }
}

/* ---- the points: each made from its index ---------------------------------------------------- */

typedef struct pt {
    uint32_t run;
    uint32_t key;
    uint64_t bits; /* the value's */
    int64_t ts;
    int64_t step;
} pt;

static uint64_t mix64(uint64_t x)
{
    return mlt_test_rng_next(&x); /* splitmix64 of x */
}

/* Values that a codec gets wrong first: NaNs (quiet, negative, signalling, with payloads),
 * -0.0, infinities, the extremes and the subnormals. */
static const uint64_t SPECIAL_BITS[] = {
    0x7FF8000000000000ull, /* NaN */
    0xFFF8000000000001ull, /* -NaN with a payload */
    0x7FF0000000000001ull, /* signalling NaN */
    0x7FFFFFFFFFFFFFFFull, /* NaN, every payload bit */
    0x8000000000000000ull, /* -0.0 */
    0x7FF0000000000000ull, /* +Inf */
    0xFFF0000000000000ull, /* -Inf */
    0x7FEFFFFFFFFFFFFFull, /* DBL_MAX */
    0xFFEFFFFFFFFFFFFFull, /* -DBL_MAX */
    0x0000000000000001ull, /* denorm_min */
    0x8000000000000001ull, /* -denorm_min */
    0x000FFFFFFFFFFFFFull, /* largest subnormal */
    0x0010000000000000ull, /* DBL_MIN */
    0x0000000000000000ull, /* 0.0 */
    0x3FF0000000000000ull, /* 1.0 */
};
#define N_SPECIAL (sizeof SPECIAL_BITS / sizeof SPECIAL_BITS[0])

static void gen_point(uint64_t seed, uint64_t i, pt *p)
{
    uint64_t h = mix64(seed * 0x100000001B3ull ^ i);
    uint64_t h2 = mix64(h);
    p->run = i % 7 == 3 ? UINT32_MAX : i % 11 == 5 ? 0 : (uint32_t)(1 + h2 % 3);
    p->key = (uint32_t)((h2 >> 20) % 3);
    p->bits = i % 5 == 0 ? SPECIAL_BITS[(i / 5) % N_SPECIAL] : h;
    switch (i % 9) {
    case 0:
        p->step = INT64_MIN;
        break;
    case 1:
        p->step = INT64_MAX;
        break;
    case 2:
        p->step = -(int64_t)i - 1;
        break;
    case 3:
        p->step = (int64_t)i;
        break;
    case 4:
        p->step = 0;
        break;
    case 5:
        p->step = -1;
        break;
    default:
        p->step = (int64_t)h2;
        break;
    }
    p->ts = i % 97 == 0 ? 0 : i % 89 == 0 ? INT64_MAX : 1700000000000 + (int64_t)i;
}

/* Puts point i of seed (timestamp in ms). */
static mlt_err put_gen(mlt__ring *r, uint64_t seed, uint64_t i)
{
    pt p;
    gen_point(seed, i, &p);
    return mlt__ring_put(r, p.run, p.key | MLT__RING_MS, mlt_test_double_of(p.bits), p.ts, p.step);
}

static void put_gen_range(mlt__ring *r, uint64_t seed, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i < to; i++) {
        mlt_err e = put_gen(r, seed, i);
        REQUIRE(e == MLT_OK, "put %" PRIu64 ": %s (%s)", i, mlt_strerror(e), mlt_last_error());
    }
}

/* Reads the next record, which must be point i of seed, the record after *cursor. */
static void expect_gen_point(mlt__journal *j, uint64_t *cursor, mlt__buf *scratch, uint64_t seed,
                             uint64_t i)
{
    pt p;
    gen_point(seed, i, &p);
    mlt__rec r;
    memset(&r, 0, sizeof r);
    uint64_t before = *cursor;
    mlt_err e = mlt__journal_next(j, cursor, scratch, &r);
    REQUIRE(e == MLT_OK, "point %" PRIu64 " (after seq %" PRIu64 "): %s (%s)", i, before,
            mlt_strerror(e), mlt_last_error());
    REQUIRE(r.seq == before + 1 && *cursor == r.seq,
            "point %" PRIu64 ": seq %" PRIu64 ", cursor %" PRIu64 " after %" PRIu64, i, r.seq,
            *cursor, before);
    REQUIRE(r.type == MLT__REC_METRIC, "point %" PRIu64 ": type %d", i, (int)r.type);
    REQUIRE(r.run_no == p.run, "point %" PRIu64 ": run %" PRIu32 " where %" PRIu32, i, r.run_no,
            p.run);
    REQUIRE(r.key && strcmp(r.key, KEYS[p.key]) == 0, "point %" PRIu64 ": key %s where %s", i,
            r.key ? r.key : "(null)", KEYS[p.key]);
    REQUIRE(memcmp(&r.num, &p.bits, sizeof p.bits) == 0,
            "point %" PRIu64 ": value bits %016" PRIx64 " where %016" PRIx64, i,
            mlt_test_bits_of(r.num), p.bits);
    REQUIRE(r.time_ms == p.ts, "point %" PRIu64 ": time %" PRId64 " where %" PRId64, i, r.time_ms,
            p.ts);
    REQUIRE(r.step == p.step, "point %" PRIu64 ": step %" PRId64 " where %" PRId64, i, r.step,
            p.step);
}

/* Reads points from..to-1 of seed, in order, after *cursor. */
static void expect_gen_range(mlt__journal *j, uint64_t *cursor, uint64_t seed, uint64_t from,
                             uint64_t to)
{
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    for (uint64_t i = from; i < to; i++) {
        expect_gen_point(j, cursor, &scratch, seed, i);
    }
    mlt__buf_free(&scratch);
}

/* Nothing follows *cursor. */
static void expect_end(mlt__journal *j, uint64_t *cursor)
{
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    uint64_t c = *cursor;
    mlt_err e = mlt__journal_next(j, cursor, &scratch, &r);
    ck_assert_msg(e == MLT_ERR_NOT_FOUND,
                  "a record follows seq %" PRIu64 ": %s (seq %" PRIu64 ", type %d)", c,
                  mlt_strerror(e), r.seq, (int)r.type);
    ck_assert_uint_eq(*cursor, c);
    mlt__buf_free(&scratch);
}

/* The journal at dir holds exactly points 0..n-1 of seed and nothing else. */
static void expect_journal_points(const char *dir, uint64_t seed, uint64_t n)
{
    mlt__journal *j = open_j(dir, true, NULL);
    uint64_t cursor = 0;
    expect_gen_range(j, &cursor, seed, 0, n);
    expect_end(j, &cursor);
    ck_assert_uint_eq(mlt__journal_last_seq(j), n);
    mlt__journal_close(j, false);
}

/* What a read-only open (status) finds: the records of the segments and the points the ring
 * holds past them, moving none. */
static mlt__recovery status_of(const char *dir)
{
    mlt__recovery rec;
    mlt__journal *j = open_j(dir, true, &rec);
    mlt__journal_close(j, false);
    return rec;
}

/* Opens dir as its next owner and closes it: what the ring holds is moved into the segments
 * (points put into an adopted journal wait for this, see
 * a_point_put_into_an_adopted_journal_is_drained_or_refused). */
static void settle(const char *dir)
{
    mlt__journal *j = open_j(dir, false, NULL);
    mlt__journal_close(j, false);
}

/* ---- forked children (a process that dies without closing its journal) ---------------------- */

/* The child's journal, left open on purpose (kept reachable from here). */
static mlt__journal *child_j;

typedef void (*child_fn)(const char *dir, void *arg);

/* Runs fn(dir, arg) in a child process that then dies (_exit) without closing anything; checks
 * that it got there. */
static void run_child(child_fn fn, const char *dir, void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(dir, arg);
        if (under_valgrind()) {
            /* dies all the same, without valgrind's leak check at exit, which would report
             * what the parent had allocated (and the journal left open on purpose) */
            raise(SIGKILL);
        }
        _exit(0);
    }
    int st = 0;
    pid_t w;
    do {
        w = waitpid(pid, &st, 0);
    } while (w < 0 && errno == EINTR);
    ck_assert_int_eq(w, pid);
    ck_assert_msg((WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
                      (under_valgrind() && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL),
                  "the child did not finish its work (status %d, signal %d)",
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static mlt__journal *child_create(const char *dir)
{
    char err[256] = "";
    mlt_err e = mlt__errbuf(err, sizeof err, mlt__journal_create(&child_j, dir, MLT__FSYNC_NONE));
    if (e != MLT_OK) {
        fprintf(stderr, "child: create %s: %s\n", dir, err);
        _exit(11);
    }
    for (uint32_t i = 0; i < 3; i++) {
        CHILD_REQUIRE(mlt__journal_put_key(child_j, i, KEYS[i]) == MLT_OK);
    }
    return child_j;
}

static void child_put(mlt__ring *r, uint64_t seed, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i < to; i++) {
        CHILD_REQUIRE(put_gen(r, seed, i) == MLT_OK);
    }
}

/* ---- the ring in one process ------------------------------------------------------------------
 */

START_TEST(ring_points_read_back_exactly)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    mlt__ring *r = mlt__journal_ring(j);
    const uint64_t seed = 1;
    const uint64_t total = 200000;
    ck_assert_uint_gt(total, 2 * SLOTS);
    uint64_t rng = 12345, i = 0, drains = 0;
    /* one stretch of exactly a full ring, then stretches of random length */
    put_gen_range(r, seed, 0, SLOTS);
    i = SLOTS;
    ck_assert_int_eq(mlt__journal_drain(j), MLT_OK);
    ck_assert_int_eq(mlt__journal_drain(j), MLT_OK); /* nothing to move */
    ck_assert_uint_eq(mlt__journal_last_seq(j), SLOTS);
    while (i < total) {
        rng = mix64(rng);
        uint64_t n = 1 + rng % 40000;
        if (rng >> 60 == 0) {
            n = 1;
        }
        if (n > total - i) {
            n = total - i;
        }
        put_gen_range(r, seed, i, i + n);
        i += n;
        ck_assert_int_eq(mlt__journal_drain(j), MLT_OK);
        ck_assert_uint_eq(mlt__journal_last_seq(j), i);
        drains++;
    }
    ck_assert_uint_gt(drains, 3);
    /* a last stretch left for the sync to move */
    put_gen_range(r, seed, total, total + 777);
    ck_assert_uint_eq(mlt__journal_last_seq(j), total);
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    ck_assert_uint_eq(mlt__journal_last_seq(j), total + 777);
    ck_assert_uint_eq(atomic_load(&r->hdr->head), total + 777);
    ck_assert_uint_eq(atomic_load(&r->hdr->tail), total + 777);

    uint64_t cursor = 0;
    expect_gen_range(j, &cursor, seed, 0, total + 777);
    expect_end(j, &cursor);
    /* and once more from another reader after a clean close */
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, seed, total + 777);
    /* a clean close leaves nothing to save */
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.records, total + 777);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

typedef struct late_drain {
    mlt__journal *j;
    int delay_ms;
    mlt_err err;
} late_drain;

static void *late_drain_main(void *arg)
{
    late_drain *d = arg;
    struct timespec ts = {0, (long)d->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    d->err = mlt__journal_drain(d->j);
    return NULL;
}

START_TEST(ring_wraps_and_blocks_when_full_without_a_writer)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    mlt__ring *r = mlt__journal_ring(j);
    const uint64_t seed = 2;
    r->full_block_ms = 0;

    /* a full ring takes nothing more */
    put_gen_range(r, seed, 0, SLOTS);
    ck_assert_uint_eq(atomic_load(&r->hdr->head), SLOTS);
    mlt__fail_clear();
    ck_assert_int_eq(mlt__ring_put(r, 1, 0 | MLT__RING_MS, 42.0, 1, 1), MLT_ERR_QUEUE_FULL);
    ck_assert_msg(strlen(mlt_last_error()) > 0, "no message for a full ring");
    ck_assert_uint_eq(atomic_load(&r->hdr->head), SLOTS); /* nothing was put */
    ck_assert_int_eq(mlt__ring_try(r, 1, 0 | MLT__RING_MS, 42.0, 1, 1), -1);
    ck_assert_uint_eq(atomic_load(&r->hdr->head), SLOTS);

    /* drained, it takes a whole ring again (every slot reused) */
    ck_assert_int_eq(mlt__journal_drain(j), MLT_OK);
    ck_assert_uint_eq(atomic_load(&r->hdr->tail), SLOTS);
    put_gen_range(r, seed, SLOTS, 2 * SLOTS);
    ck_assert_int_eq(mlt__ring_put(r, 1, 0 | MLT__RING_MS, 43.0, 1, 1), MLT_ERR_QUEUE_FULL);

    /* blocking: a put on a full ring waits until another thread drains */
    r->full_block_ms = under_valgrind() ? 2000 : 200;
    late_drain d = {j, 50, MLT_ERR_STATE};
    pthread_t th;
    int64_t t0 = mlt__mono_ns();
    ck_assert_int_eq(pthread_create(&th, NULL, late_drain_main, &d), 0);
    mlt_err e = put_gen(r, seed, 2 * SLOTS);
    int64_t waited_ms = (mlt__mono_ns() - t0) / 1000000;
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(e == MLT_OK, "a blocked put failed: %s (%s)", mlt_strerror(e), mlt_last_error());
    ck_assert_int_eq(d.err, MLT_OK);
    ck_assert_msg(waited_ms >= 40 && waited_ms < r->full_block_ms, "the put waited %" PRId64 " ms",
                  waited_ms);

    /* fill up again (the late drain may also have moved the blocked point: fill what is
     * free), then with nobody draining, the put waits full_block_ms and fails */
    uint64_t used = atomic_load(&r->hdr->head) - atomic_load(&r->hdr->tail);
    ck_assert_uint_le(used, 1);
    const uint64_t end = 2 * SLOTS + 1 + (SLOTS - used);
    put_gen_range(r, seed, 2 * SLOTS + 1, end);
    ck_assert_uint_eq(atomic_load(&r->hdr->head) - atomic_load(&r->hdr->tail), SLOTS);
    r->full_block_ms = 200;
    t0 = mlt__mono_ns();
    mlt__fail_clear();
    ck_assert_int_eq(mlt__ring_put(r, 2, 1 | MLT__RING_MS, 44.0, 1, 1), MLT_ERR_QUEUE_FULL);
    waited_ms = (mlt__mono_ns() - t0) / 1000000;
    ck_assert_msg(waited_ms >= 195 && waited_ms < 5000, "the put waited %" PRId64 " ms", waited_ms);
    ck_assert_msg(strlen(mlt_last_error()) > 0, "no message for a full ring");

    /* every point that was taken, once and in order; none that was refused */
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    uint64_t cursor = 0;
    expect_gen_range(j, &cursor, seed, 0, end);
    expect_end(j, &cursor);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* ---- a writer thread and concurrent producers ----------------------------------------------- */

#define PRODUCERS 4

typedef struct producer {
    mlt__ring *r;
    uint32_t key;
    uint64_t n;
    uint64_t failed;
} producer;

static void *producer_main(void *arg)
{
    producer *p = arg;
    for (uint64_t k = 0; k < p->n; k++) {
        double v = (double)p->key * 1e9 + (double)k;
        if (mlt__ring_put(p->r, 7, p->key | MLT__RING_MS, v, 1700000000000 + (int64_t)k,
                          (int64_t)k) != MLT_OK) {
            p->failed++;
        }
    }
    return NULL;
}

static void count_write(void *ud)
{
    atomic_fetch_add((_Atomic uint64_t *)ud, 1);
}

START_TEST(concurrent_producers_and_the_writer_thread_lose_nothing)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    static const char *const names[PRODUCERS] = {"p0", "p1", "p2", "p3"};
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        ck_assert_int_eq(mlt__journal_put_key(j, i, names[i]), MLT_OK);
    }
    mlt__ring *r = mlt__journal_ring(j);
    r->full_block_ms = 10000; /* the writer makes room */
    _Atomic uint64_t writes;
    atomic_init(&writes, 0);
    ck_assert_int_eq(mlt__journal_start_writer(j, count_write, (void *)&writes, 100), MLT_OK);
    const uint64_t per = under_valgrind() ? 20000 : 60000;
    producer p[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        p[i] = (producer){r, i, per, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, producer_main, &p[i]), 0);
    }
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_uint_eq(p[i].failed, 0);
    }
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    ck_assert_uint_eq(mlt__journal_last_seq(j), PRODUCERS * per);
    ck_assert_uint_gt(atomic_load(&writes), 0);

    /* each producer's points in its own order, none missing or doubled */
    uint64_t next[PRODUCERS] = {0};
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    for (uint64_t n = 0; n < PRODUCERS * per; n++) {
        mlt__rec rec;
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &rec);
        REQUIRE(e == MLT_OK, "record %" PRIu64 ": %s (%s)", n + 1, mlt_strerror(e),
                mlt_last_error());
        REQUIRE(rec.type == MLT__REC_METRIC && rec.run_no == 7, "record %" PRIu64, n + 1);
        uint32_t k = PRODUCERS;
        for (uint32_t i = 0; i < PRODUCERS; i++) {
            if (strcmp(rec.key, names[i]) == 0) {
                k = i;
            }
        }
        REQUIRE(k < PRODUCERS, "record %" PRIu64 ": key %s", n + 1, rec.key);
        uint64_t s = next[k]++;
        REQUIRE(rec.step == (int64_t)s && rec.num == (double)k * 1e9 + (double)s &&
                    rec.time_ms == 1700000000000 + (int64_t)s,
                "record %" PRIu64 ": %s step %" PRId64 " value %.17g where step %" PRIu64, n + 1,
                rec.key, rec.step, rec.num, s);
    }
    mlt__buf_free(&scratch);
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        ck_assert_uint_eq(next[i], per);
    }
    expect_end(j, &cursor);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* ---- a dead process's ring --------------------------------------------------------------------
 */

typedef struct dead_args {
    uint64_t seed, n1, n2, n3;
} dead_args;

/* Puts n1 points (draining as it goes, the ring wraps), drains, puts n2 more and dies. */
static void child_puts_and_dies(const char *dir, void *arg)
{
    const dead_args *a = arg;
    mlt__journal *j = child_create(dir);
    mlt__ring *r = mlt__journal_ring(j);
    for (uint64_t i = 0; i < a->n1; i += 30000) {
        uint64_t to = i + 30000 < a->n1 ? i + 30000 : a->n1;
        child_put(r, a->seed, i, to);
        CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    }
    CHILD_REQUIRE(mlt__journal_last_seq(j) == a->n1);
    child_put(r, a->seed, a->n1, a->n1 + a->n2);
}

START_TEST(dead_process_ring_is_saved_once)
{
    fixture f;
    fixture_init(&f);
    dead_args a = {3, 100000, 50000, 0};
    if (under_valgrind()) {
        a.n1 = 70000;
        a.n2 = 20000;
    }
    run_child(child_puts_and_dies, f.dir, &a);

    /* status sees the points left in the ring and moves none */
    for (int k = 0; k < 2; k++) {
        mlt__recovery st = status_of(f.dir);
        ck_assert_uint_eq(st.records, a.n1);
        ck_assert_uint_eq(st.ring_points, a.n2);
    }
    expect_journal_points(f.dir, a.seed, a.n1);

    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, a.n1);
    ck_assert_uint_eq(rec.ring_points, a.n2);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    uint64_t cursor = 0;
    expect_gen_range(j, &cursor, a.seed, 0, a.n1 + a.n2);
    expect_end(j, &cursor);
    /* the adopting process goes on putting into the same ring */
    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_ptr_nonnull(r);
    put_gen_range(r, a.seed, a.n1 + a.n2, a.n1 + a.n2 + 1000);
    mlt__journal_close(j, false);

    /* a second open moves nothing again */
    ck_assert_uint_eq(status_of(f.dir).ring_points, 0);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    ck_assert_uint_eq(rec.records, a.n1 + a.n2 + 1000);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + 1000);

    /* a third, after the second died in turn without closing */
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + 1000);
    fixture_done(&f);
}
END_TEST

/* Puts n1 points and drains; puts n2 more and drains, then puts the tail back to where it was
 * before that drain (as if the process died between the segment write and the tail store);
 * then puts n3 more and dies. */
static void child_rewinds_the_tail(const char *dir, void *arg)
{
    const dead_args *a = arg;
    mlt__journal *j = child_create(dir);
    mlt__ring *r = mlt__journal_ring(j);
    child_put(r, a->seed, 0, a->n1);
    CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    uint64_t old_tail = atomic_load(&r->hdr->tail);
    CHILD_REQUIRE(old_tail == a->n1);
    child_put(r, a->seed, a->n1, a->n1 + a->n2);
    CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    CHILD_REQUIRE(mlt__journal_last_seq(j) == a->n1 + a->n2);
    atomic_store(&r->hdr->tail, old_tail);
    child_put(r, a->seed, a->n1 + a->n2, a->n1 + a->n2 + a->n3);
}

START_TEST(crash_between_segment_write_and_tail_store_moves_nothing_twice)
{
    fixture f;
    fixture_init(&f);
    /* n2 spans several groups (the drainer writes 8192 points per group) */
    dead_args a = {4, 30000, 20000, 5000};
    run_child(child_rewinds_the_tail, f.dir, &a);
    mlt__recovery st = status_of(f.dir);
    ck_assert_uint_eq(st.records, a.n1 + a.n2);
    ck_assert_uint_eq(st.ring_points, a.n3);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, a.n1 + a.n2);
    ck_assert_uint_eq(rec.ring_points, a.n3);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + a.n3);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + a.n3);
    fixture_done(&f);
}
END_TEST

/* The newest segment file of dir (its name into out). */
static void last_segment(const char *dir, char *out, size_t len)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "seg-", 4) == 0 && strcmp(e->d_name, out) > 0) {
            snprintf(out, len, "%s", e->d_name);
        }
    }
    closedir(d);
    ck_assert_msg(out[0], "no segment in %s", dir);
}

START_TEST(crash_in_the_middle_of_a_group_write_moves_each_point_once)
{
    /* As above, and the last group's write was torn too: the segment ends inside a frame of
     * the last group. Recovery cuts the torn frame and moves from the ring exactly the points
     * the segments do not hold. */
    fixture f;
    fixture_init(&f);
    dead_args a = {5, 30000, 20000, 5000};
    run_child(child_rewinds_the_tail, f.dir, &a);
    char seg[NAME_MAX + 1], path[PATH_MAX];
    last_segment(f.dir, seg, sizeof seg);
    mlt_test_path(path, f.dir, seg);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    /* about 100 points before the end, inside a frame */
    ck_assert_int_eq(truncate(path, st.st_size - 3001), 0);

    mlt__recovery ro = status_of(f.dir);
    ck_assert_uint_gt(ro.cut_bytes, 0);
    ck_assert_uint_eq(ro.records + ro.ring_points, a.n1 + a.n2 + a.n3);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_gt(rec.cut_bytes, 0);
    ck_assert_uint_lt(rec.records, a.n1 + a.n2);
    ck_assert_uint_gt(rec.records, a.n1);
    ck_assert_uint_eq(rec.records + rec.ring_points, a.n1 + a.n2 + a.n3);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + a.n3);
    fixture_done(&f);
}
END_TEST

/* Puts n1 points (the ring wraps), drains; takes a ticket and never fills its slot (a thread
 * that died in mlt__ring_try); puts n2 more; a drain stops at the hole; dies. */
static void child_leaves_a_hole(const char *dir, void *arg)
{
    const dead_args *a = arg;
    mlt__journal *j = child_create(dir);
    mlt__ring *r = mlt__journal_ring(j);
    for (uint64_t i = 0; i < a->n1; i += 40000) {
        uint64_t to = i + 40000 < a->n1 ? i + 40000 : a->n1;
        child_put(r, a->seed, i, to);
        CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    }
    CHILD_REQUIRE(mlt__journal_last_seq(j) == a->n1);
    uint64_t hole = atomic_fetch_add(&r->hdr->head, 1);
    CHILD_REQUIRE(hole == a->n1);
    child_put(r, a->seed, a->n1, a->n1 + a->n2);
    /* a live drainer waits for the slot: it moves nothing past it */
    CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    CHILD_REQUIRE(mlt__journal_last_seq(j) == a->n1);
    CHILD_REQUIRE(atomic_load(&r->hdr->tail) == hole);
}

START_TEST(a_slot_a_dead_thread_never_finished_is_skipped)
{
    fixture f;
    fixture_init(&f);
    dead_args a = {6, 80000, 20000, 0};
    run_child(child_leaves_a_hole, f.dir, &a);
    mlt__recovery st = status_of(f.dir);
    ck_assert_uint_eq(st.records, a.n1);
    ck_assert_uint_eq(st.ring_points, a.n2); /* the hole is no point */
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, a.n1);
    ck_assert_uint_eq(rec.ring_points, a.n2);
    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(atomic_load(&r->hdr->head), a.n1 + 1 + a.n2);
    ck_assert_uint_eq(atomic_load(&r->hdr->tail), a.n1 + 1 + a.n2);
    /* the ring goes on after the hole */
    put_gen_range(r, a.seed, a.n1 + a.n2, a.n1 + a.n2 + 3000);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2 + 3000);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    ck_assert_uint_eq(rec.records, a.n1 + a.n2 + 3000);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* Opens the journal whose ring file was damaged (the segments hold n1 points), puts n2 points
 * and dies. */
static void child_adopts_a_damaged_ring(const char *dir, void *arg)
{
    const dead_args *a = arg;
    mlt__recovery rec;
    char err[256] = "";
    CHILD_REQUIRE(mlt__errbuf(err, sizeof err,
                              mlt__journal_open(&child_j, dir, false, MLT__FSYNC_NONE, &rec)) ==
                  MLT_OK);
    CHILD_REQUIRE(rec.ring_points == 0);
    CHILD_REQUIRE(rec.records == a->n1);
    CHILD_REQUIRE(strstr(rec.why, "ring") != NULL);
    mlt__ring *r = mlt__journal_ring(child_j);
    CHILD_REQUIRE(r != NULL);
    /* the new ring's tickets follow those the segments hold */
    CHILD_REQUIRE(atomic_load(&r->hdr->head) >= a->n1);
    CHILD_REQUIRE(atomic_load(&r->hdr->tail) == atomic_load(&r->hdr->head));
    child_put(r, a->seed, a->n1, a->n1 + a->n2);
}

START_TEST(a_ring_file_of_the_wrong_size_is_started_afresh)
{
    fixture f;
    fixture_init(&f);
    dead_args a = {7, 5000, 3000, 0};
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    put_gen_range(mlt__journal_ring(j), a.seed, 0, a.n1);
    mlt__journal_close(j, false);
    char path[PATH_MAX];
    mlt_test_path(path, f.dir, "ring");
    ck_assert_int_eq(truncate(path, 100), 0);

    /* a process adopts the journal with its new ring, puts points and dies; the next owner
     * finds those points in the ring (tickets past the segments' own: not taken for points
     * already moved) */
    run_child(child_adopts_a_damaged_ring, f.dir, &a);
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, a.n1);
    ck_assert_uint_eq(rec.ring_points, a.n2);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.ring_points, 0);
    mlt__journal_close(j, false);
    expect_journal_points(f.dir, a.seed, a.n1 + a.n2);
    fixture_done(&f);
}
END_TEST

START_TEST(status_counts_no_ring_points_of_a_ring_the_next_open_starts_afresh)
{
    /* found by fuzzing: a ring with the right magic but slots of another size was counted by
     * a read-only open (mltrack status said the points would be saved), while the next
     * read-write open starts such a ring afresh and saves none */
    fixture f;
    fixture_init(&f);
    dead_args a = {8, 2000, 700, 0};
    run_child(child_puts_and_dies, f.dir, &a);
    ck_assert_uint_eq(status_of(f.dir).ring_points, a.n2);
    char path[PATH_MAX];
    mlt_test_path(path, f.dir, "ring");
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    uint32_t slot_size = sizeof(mlt__ring_slot) + 8;
    ck_assert_int_eq(pwrite(fd, &slot_size, sizeof slot_size, offsetof(mlt__ring_hdr, slot_size)),
                     (ssize_t)sizeof slot_size);
    close(fd);

    mlt__recovery st = status_of(f.dir);
    ck_assert_uint_eq(st.records, a.n1);
    ck_assert_uint_eq(st.ring_points, 0);
    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, a.n1);
    ck_assert_uint_eq(rec.ring_points, st.ring_points);
    ck_assert_ptr_nonnull(strstr(rec.why, "ring"));
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(points_after_an_acked_cursor_past_the_segments_are_numbered_after_it)
{
    /* found by fuzzing: when the acked cursor was past the segments' last record (a tail that
     * had been acked was cut, e.g. after a power failure with fsync=none), the points saved
     * from a dead process's ring were numbered after the segments, at or below the cursor, so
     * they read as delivered and were never sent; and points put later were numbered after the
     * cursor but appended to the same segment, so the next open cut them as out of sequence */
    fixture f;
    fixture_init(&f);
    dead_args a = {9, 1000, 300, 0};
    run_child(child_puts_and_dies, f.dir, &a);
    char path[PATH_MAX];
    mlt_test_path(path, f.dir, "acked");
    FILE *af = fopen(path, "w");
    ck_assert_ptr_nonnull(af);
    fprintf(af, "%" PRIu64 "\n", a.n1 + 50);
    ck_assert_int_eq(fclose(af), 0);

    mlt__recovery rec;
    mlt__journal *j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.ring_points, a.n2);
    ck_assert_uint_eq(mlt__journal_last_seq(j), a.n1 + 50 + a.n2);
    uint64_t cursor = mlt__journal_acked_seq(j);
    expect_gen_range(j, &cursor, a.seed, a.n1, a.n1 + a.n2);
    expect_end(j, &cursor);
    /* the owner puts more */
    put_gen_range(mlt__journal_ring(j), a.seed, a.n1 + a.n2, a.n1 + a.n2 + 100);
    mlt__journal_close(j, false);

    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.records, a.n2 + 100);
    cursor = mlt__journal_acked_seq(j);
    expect_gen_range(j, &cursor, a.seed, a.n1, a.n1 + a.n2 + 100);
    expect_end(j, &cursor);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(points_into_a_segment_cut_to_its_magic_follow_its_name)
{
    /* found by fuzzing: the only segment held no record (cut to its magic) and its name was
     * not the next number: points went into it numbered from 1, and the next open cut them */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    mlt__journal_close(j, false);
    char from[PATH_MAX], to[PATH_MAX];
    mlt_test_path(from, f.dir, "seg-00000000000000000001.log");
    mlt_test_path(to, f.dir, "seg-00000000000000000004.log");
    ck_assert_int_eq(rename(from, to), 0);

    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    put_gen_range(mlt__journal_ring(j), 10, 0, 20);
    mlt__journal_close(j, false);
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.cut_bytes, 0);
    ck_assert_uint_eq(rec.records, 20);
    uint64_t cursor = 0;
    expect_gen_range(j, &cursor, 10, 0, 20);
    expect_end(j, &cursor);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

/* Writes v as a varint at p; returns the end. */
static unsigned char *varint_at(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

START_TEST(ring_tickets_near_the_wrap_of_64_bits_are_not_taken)
{
    /* found by fuzzing: a ring header whose tail was 2^64 - 1 (or a POINT record with such a
     * ticket) was taken as it was: the next point's ticket wrapped to a stamp of 0, which reads
     * as an empty slot, so it was never drained (lost, and a writer thread would spin on it) */
    fixture f;
    for (int variant = 0; variant < 2; variant++) {
        fixture_init(&f);
        mlt__journal *j = create_j(f.dir);
        put_keys(j);
        mlt__journal_close(j, false);
        uint64_t want = 20;
        if (variant == 0) {
            /* the ring's tail at the last ticket */
            char path[PATH_MAX];
            mlt_test_path(path, f.dir, "ring");
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            ck_assert_int_ge(fd, 0);
            uint64_t tail = UINT64_MAX, head = 0;
            ck_assert_int_eq(pwrite(fd, &tail, 8, offsetof(mlt__ring_hdr, tail)), 8);
            ck_assert_int_eq(pwrite(fd, &head, 8, offsetof(mlt__ring_hdr, head)), 8);
            close(fd);
        } else {
            /* a segment whose POINT names ticket 2^64 - 2 */
            unsigned char seg[64] = "MLTJRNL1";
            unsigned char *f0 = seg + 8, *p = f0 + MLT__FRAME_HEADER;
            p = varint_at(p, 1u << 1 | 1);
            p = varint_at(p, UINT64_MAX - 1);
            p = varint_at(p, 0);
            double v = 1.5;
            memcpy(p, &v, 8);
            p += 8;
            p = varint_at(p, 1700000000000);
            p = varint_at(p, 0);
            uint32_t len = (uint32_t)(p - f0 - MLT__FRAME_HEADER);
            memcpy(f0, &len, 4);
            uint64_t seq = 1;
            memcpy(f0 + 8, &seq, 8);
            f0[16] = MLT__REC_POINT;
            uint32_t crc = mlt__crc32c(mlt__crc32c(0, f0 + 8, 9), f0 + MLT__FRAME_HEADER, len);
            memcpy(f0 + 4, &crc, 4);
            char path[PATH_MAX];
            mlt_test_path(path, f.dir, "seg-00000000000000000001.log");
            mlt_test_write_file(path, "wb", seg, (size_t)(p - seg));
            want++;
        }
        mlt__recovery rec;
        j = open_j(f.dir, false, &rec);
        mlt__ring *r = mlt__journal_ring(j);
        ck_assert_uint_lt(atomic_load(&r->hdr->head), UINT64_C(1) << 62);
        put_gen_range(r, 11, 0, 20);
        ck_assert_int_eq(mlt__journal_drain(j), MLT_OK);
        ck_assert_uint_eq(mlt__journal_last_seq(j), want);
        mlt__journal_close(j, false);
        j = open_j(f.dir, false, &rec);
        ck_assert_uint_eq(rec.cut_bytes, 0);
        ck_assert_uint_eq(rec.records, want);
        uint64_t cursor = want - 20;
        expect_gen_range(j, &cursor, 11, 0, 20);
        expect_end(j, &cursor);
        mlt__journal_close(j, false);
        fixture_done(&f);
    }
}
END_TEST

START_TEST(record_numbers_never_wrap_past_an_acked_cursor_at_the_last_number)
{
    /* found by fuzzing: with the acked cursor at 2^64 - 1 (a damaged file), the next record
     * was numbered 0, in a segment named 0, which the next open cut: the point was lost without
     * a word. Now the journal takes no more records, and says so. */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    mlt__journal_close(j, false);
    char path[PATH_MAX];
    mlt_test_path(path, f.dir, "acked");
    FILE *af = fopen(path, "w");
    ck_assert_ptr_nonnull(af);
    fprintf(af, "%" PRIu64 "\n", UINT64_MAX);
    ck_assert_int_eq(fclose(af), 0);

    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(mlt__journal_last_seq(j), UINT64_MAX);
    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_int_eq(put_gen(r, 12, 0), MLT_OK);
    ck_assert_int_eq(mlt__journal_drain(j), MLT_ERR_QUEUE_FULL);
    ck_assert_ptr_nonnull(strstr(mlt_last_error(), "used up"));
    mlt__journal_close(j, false);
    ck_assert(access(path, F_OK) == 0);
    mlt_test_path(path, f.dir, "seg-00000000000000000000.log");
    ck_assert(access(path, F_OK) != 0);

    /* the point waits in the ring; status sees it, an owner is told */
    mlt__recovery st = status_of(f.dir);
    ck_assert_uint_eq(st.cut_bytes, 0);
    ck_assert_uint_eq(st.ring_points, 1);
    char err[256] = "";
    ck_assert_int_eq(
        mlt__errbuf(err, sizeof err, mlt__journal_open(&j, f.dir, false, MLT__FSYNC_NONE, &rec)),
        MLT_ERR_QUEUE_FULL);
    ck_assert_ptr_nonnull(strstr(err, "used up"));
    fixture_done(&f);
}
END_TEST

START_TEST(a_point_put_into_an_adopted_journal_is_drained_or_refused)
{
    /* mlt__journal_open gives a ring to a journal it adopts (mlt__journal_ring is NULL only for
     * a read-only one). A point put there must reach the segments at the next drain or sync,
     * as on a created journal, or be refused; not wait, unseen, for the next owner. */
    fixture f;
    fixture_init(&f);
    const uint64_t seed = 8;
    mlt__journal *j = create_j(f.dir);
    put_keys(j);
    put_gen_range(mlt__journal_ring(j), seed, 0, 100);
    mlt__journal_close(j, false);

    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 100);
    ck_assert_uint_eq(rec.ring_points, 0);
    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_ptr_nonnull(r);
    mlt_err e = put_gen(r, seed, 100);
    char failure[256] = "";
    if (e == MLT_OK) {
        ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
        if (mlt__journal_last_seq(j) != 101) {
            snprintf(
                failure, sizeof failure,
                "a point put into the adopted journal was not drained by a sync that "
                "returned MLT_OK (last seq %" PRIu64 ", ring head %" PRIu64 ", tail %" PRIu64 ")",
                mlt__journal_last_seq(j), atomic_load(&r->hdr->head), atomic_load(&r->hdr->tail));
        }
    }
    mlt__journal_close(j, false);
    if (!failure[0]) {
        expect_journal_points(f.dir, seed, e == MLT_OK ? 101 : 100);
    }
    fixture_done(&f);
    ck_assert_msg(!failure[0], "%s", failure);
}
END_TEST

/* ---- TSC stamps --------------------------------------------------------------------------------
 */

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#ifdef MLT__HAVE_TSC

/* Puts n points stamped with the TSC, each with the wall-clock window around it (ms) in
 * lo[i]..hi[i]; naps now and then; drains now and then when drain is set. */
static int put_tsc_points(mlt__journal *j, uint64_t n, int64_t *lo, int64_t *hi, bool drain)
{
    mlt__ring *r = mlt__journal_ring(j);
    uint64_t rng = 99;
    for (uint64_t i = 0; i < n; i++) {
        lo[i] = mlt__now_ms();
        int64_t ts = mlt__tsc();
        mlt_err e = mlt__ring_put(r, 1, (uint32_t)(i % 3), (double)i, ts, (int64_t)i);
        hi[i] = mlt__now_ms();
        if (e != MLT_OK) {
            return -1;
        }
        rng = mix64(rng);
        if (rng % 64 == 0) {
            nap_ms(1 + (int)(rng >> 32) % 20);
        }
        if (drain && rng % 97 == 1 && mlt__journal_drain(j) != MLT_OK) {
            return -2;
        }
    }
    return 0;
}

/* The TSC's real rate in ns per tick, measured over 50 ms. */
static double real_tsc_rate(void)
{
    struct timespec w0, w1;
    clock_gettime(CLOCK_REALTIME, &w0);
    uint64_t c0 = (uint64_t)mlt__tsc();
    nap_ms(50);
    clock_gettime(CLOCK_REALTIME, &w1);
    uint64_t c1 = (uint64_t)mlt__tsc();
    return ((double)(w1.tv_sec - w0.tv_sec) * 1e9 + (double)(w1.tv_nsec - w0.tv_nsec)) /
           (double)(c1 - c0);
}

/* Reads back the n points put by put_tsc_points; scale is the ring's TSC scale (reported when
 * a time is off). */
static void expect_tsc_points(const char *dir, uint64_t n, const int64_t *lo, const int64_t *hi,
                              double scale)
{
    double real = real_tsc_rate();
    mlt__journal *j = open_j(dir, true, NULL);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    for (uint64_t i = 0; i < n; i++) {
        mlt__rec r;
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &r);
        REQUIRE(e == MLT_OK, "point %" PRIu64 ": %s", i, mlt_strerror(e));
        REQUIRE(r.step == (int64_t)i && r.num == (double)i && strcmp(r.key, KEYS[i % 3]) == 0,
                "point %" PRIu64 ": step %" PRId64 " key %s", i, r.step, r.key);
        REQUIRE(r.time_ms >= lo[i] - 1 && r.time_ms <= hi[i] + 1,
                "point %" PRIu64 ": time %" PRId64 " outside the call's window [%" PRId64
                ", %" PRId64 "] (off by %" PRId64 " ms; the ring's TSC scale is %.6f ns per "
                "tick, the real rate %.6f: %+.2f%%)",
                i, r.time_ms, lo[i], hi[i],
                r.time_ms < lo[i] ? r.time_ms - lo[i] : r.time_ms - hi[i], scale, real,
                (scale / real - 1) * 100);
    }
    expect_end(j, &cursor);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
}
#endif

START_TEST(tsc_stamps_become_the_calls_ms)
{
#ifdef MLT__HAVE_TSC
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    if (!mlt__journal_ring(j)->tsc) {
        fprintf(stderr, "tsc_stamps_become_the_calls_ms: skipped (the TSC is not the "
                        "clocksource here)\n");
        mlt__journal_close(j, false);
        fixture_done(&f);
        return;
    }
    put_keys(j);
    const uint64_t n = 3000;
    int64_t *lo = calloc(n, sizeof *lo), *hi = calloc(n, sizeof *hi);
    ck_assert(lo && hi);
    ck_assert_int_eq(put_tsc_points(j, n, lo, hi, true), 0);
    /* the last points wait a while in the ring before the drain converts them */
    nap_ms(30);
    ck_assert_int_eq(mlt__journal_sync(j), MLT_OK);
    double scale = mlt__journal_ring(j)->hdr->ns_per_tick;
    mlt__journal_close(j, false);
    expect_tsc_points(f.dir, n, lo, hi, scale);
    free(lo);
    free(hi);
    fixture_done(&f);
#else
    fprintf(stderr, "tsc_stamps_become_the_calls_ms: skipped (no TSC on this machine)\n");
#endif
}
END_TEST

#ifdef MLT__HAVE_TSC
typedef struct tsc_child {
    uint64_t n;
    int64_t *lo, *hi; /* shared with the parent */
    int skipped;
} tsc_child;

static void child_tsc_dies(const char *dir, void *arg)
{
    tsc_child *c = arg;
    mlt__journal *j = child_create(dir);
    if (!mlt__journal_ring(j)->tsc) {
        c->skipped = 1;
        return;
    }
    /* some points drained, the rest left in the ring */
    CHILD_REQUIRE(put_tsc_points(j, c->n / 2, c->lo, c->hi, true) == 0);
    CHILD_REQUIRE(mlt__journal_drain(j) == MLT_OK);
    nap_ms(10);
    mlt__ring *r = mlt__journal_ring(j);
    for (uint64_t i = c->n / 2; i < c->n; i++) {
        c->lo[i] = mlt__now_ms();
        int64_t ts = mlt__tsc();
        CHILD_REQUIRE(mlt__ring_put(r, 1, (uint32_t)(i % 3), (double)i, ts, (int64_t)i) == MLT_OK);
        c->hi[i] = mlt__now_ms();
        if (i % 300 == 0) {
            nap_ms(3);
        }
    }
}
#endif

START_TEST(tsc_stamps_of_a_dead_process_become_the_calls_ms)
{
#ifdef MLT__HAVE_TSC
    fixture f;
    fixture_init(&f);
    const uint64_t n = 2000;
    size_t bytes = 2 * n * sizeof(int64_t) + sizeof(tsc_child);
    void *shared = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(shared != MAP_FAILED);
    tsc_child *c = shared;
    c->n = n;
    c->lo = (int64_t *)(c + 1);
    c->hi = c->lo + n;
    c->skipped = 0;
    run_child(child_tsc_dies, f.dir, c);
    if (c->skipped) {
        fprintf(stderr, "tsc_stamps_of_a_dead_process_become_the_calls_ms: skipped (the TSC "
                        "is not the clocksource here)\n");
    } else {
        /* the adopter comes later: the dead process's clock anchor still converts */
        nap_ms(50);
        mlt__recovery rec;
        mlt__journal *j = open_j(f.dir, false, &rec);
        ck_assert_uint_eq(rec.ring_points + rec.records, n);
        ck_assert_uint_ge(rec.ring_points, n / 2);
        double scale = mlt__journal_ring(j)->hdr->ns_per_tick;
        mlt__journal_close(j, false);
        expect_tsc_points(f.dir, n, c->lo, c->hi, scale);
    }
    munmap(shared, bytes);
    fixture_done(&f);
#else
    fprintf(stderr, "tsc_stamps_of_a_dead_process_become_the_calls_ms: skipped (no TSC)\n");
#endif
}
END_TEST

#ifdef MLT__HAVE_TSC
static atomic_int hog_stop;

static void *hog_main(void *arg)
{
    (void)arg;
    volatile uint64_t x = 0;
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed)) {
        x++;
    }
    return NULL;
}
#endif

START_TEST(tsc_stamps_stay_the_calls_ms_when_the_ring_was_made_under_load)
{
    /* The ring's TSC scale is measured when the ring is made. Made while the CPUs are busy
     * (the measuring thread may be preempted in the middle of a clock reading), it must still
     * turn a TSC reading into the call's ms, also for a point that waited in the ring. */
#ifdef MLT__HAVE_TSC
    fixture f;
    fixture_init(&f);
    enum { N = 96 };
    mlt__journal *js[N];
    int hogs = under_valgrind() ? 0 : 2 * (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (hogs > 16) {
        hogs = 16;
    }
    pthread_t th[16];
    atomic_store(&hog_stop, 0);
    for (int i = 0; i < hogs; i++) {
        ck_assert_int_eq(pthread_create(&th[i], NULL, hog_main, NULL), 0);
    }
    for (int k = 0; k < N; k++) {
        char dir[DIR_LEN + 32];
        snprintf(dir, sizeof dir, "%s/j-%d", f.tmp, k);
        js[k] = create_j(dir);
    }
    atomic_store(&hog_stop, 1);
    for (int i = 0; i < hogs; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    }
    if (!mlt__journal_ring(js[0])->tsc) {
        fprintf(stderr, "tsc_stamps_stay_the_calls_ms_when_the_ring_was_made_under_load: "
                        "skipped (the TSC is not the clocksource here)\n");
        for (int k = 0; k < N; k++) {
            mlt__journal_close(js[k], false);
        }
        fixture_done(&f);
        return;
    }
    int64_t lo[N], hi[N];
    double scale[N];
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(mlt__journal_put_key(js[k], 0, "loss"), MLT_OK);
        lo[k] = mlt__now_ms();
        int64_t ts = mlt__tsc();
        ck_assert_int_eq(mlt__ring_put(mlt__journal_ring(js[k]), 1, 0, 1.0, ts, 1), MLT_OK);
        hi[k] = mlt__now_ms();
    }
    /* the points wait 100 ms for the drain (a busy disk, a writer behind); meanwhile the real
     * rate of the TSC is measured */
    nap_ms(50);
    double real = real_tsc_rate();
    char failure[512] = "";
    int bad = 0;
    for (int k = 0; k < N; k++) {
        char dir[DIR_LEN + 32];
        snprintf(dir, sizeof dir, "%s/j-%d", f.tmp, k);
        scale[k] = mlt__journal_ring(js[k])->hdr->ns_per_tick;
        ck_assert_int_eq(mlt__journal_drain(js[k]), MLT_OK);
        mlt__journal_close(js[k], false);
        mlt__journal *j = open_j(dir, true, NULL);
        mlt__buf scratch;
        mlt__buf_init(&scratch);
        uint64_t cursor = 0;
        mlt__rec r;
        ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
        if (r.time_ms < lo[k] - 1 || r.time_ms > hi[k] + 1) {
            if (!bad++) {
                snprintf(failure, sizeof failure,
                         "journal %d stamped a point %" PRId64 " ms off the call's window "
                         "[%" PRId64 ", %" PRId64 "]: its TSC scale is %.6f ns per tick, the "
                         "real rate %.6f (%+.2f%%)",
                         k, r.time_ms < lo[k] ? r.time_ms - lo[k] : r.time_ms - hi[k], lo[k], hi[k],
                         scale[k], real, (scale[k] / real - 1) * 100);
            }
        }
        mlt__buf_free(&scratch);
        mlt__journal_close(j, false);
    }
    fixture_done(&f);
    ck_assert_msg(bad == 0, "%d of %d rings made under load: %s", bad, N, failure);
#else
    fprintf(stderr, "tsc_stamps_stay_the_calls_ms_when_the_ring_was_made_under_load: skipped "
                    "(no TSC)\n");
#endif
}
END_TEST

/* ---- metric keys ----------------------------------------------------------------------------- */

START_TEST(keys_are_written_once_and_survive_reopen)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "alpha"), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "alpha"), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "other"), MLT_OK); /* the id is taken */
    ck_assert_int_eq(mlt__journal_put_key(j, 1, "b e t a"), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_key(j, 5000, "far/away"), MLT_OK); /* another page */
    ck_assert_int_eq(mlt__journal_put_key(j, 1, "b e t a"), MLT_OK);
    size_t len;
    char *keys = mlt_test_slurp(f.dir, "keys", &len);
    ck_assert_ptr_nonnull(keys);
    ck_assert_str_eq(keys, "0 alpha\n1 b e t a\n5000 far/away\n");
    free(keys);

    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_int_eq(mlt__ring_put(r, 1, 0 | MLT__RING_MS, 1.5, 10, 1), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(r, 1, 1 | MLT__RING_MS, 2.5, 20, 2), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(r, 1, 5000 | MLT__RING_MS, 3.5, 30, 3), MLT_OK);
    /* an id no key was recorded for */
    ck_assert_int_eq(mlt__ring_put(r, 1, 7 | MLT__RING_MS, 4.5, 40, 4), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(r, 1, 0 | MLT__RING_MS, 5.5, 50, 5), MLT_OK);
    mlt__journal_close(j, false);

    /* reopened: the names come from the keys file */
    mlt__recovery rec;
    j = open_j(f.dir, false, &rec);
    ck_assert_uint_eq(rec.records, 5);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "alpha"), MLT_OK); /* known: nothing written */
    ck_assert_int_eq(mlt__journal_put_key(j, 2, "gamma"), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(mlt__journal_ring(j), 1, 2 | MLT__RING_MS, 6.5, 60, 6), MLT_OK);
    mlt__journal_close(j, false);
    settle(f.dir);
    keys = mlt_test_slurp(f.dir, "keys", &len);
    ck_assert_str_eq(keys, "0 alpha\n1 b e t a\n5000 far/away\n2 gamma\n");
    free(keys);

    j = open_j(f.dir, true, NULL);
    static const char *const want[] = {"alpha", "b e t a", "far/away", NULL, "alpha", "gamma"};
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    for (int i = 0; i < 6; i++) {
        mlt__rec rr;
        memset(&rr, 0, sizeof rr);
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &rr);
        ck_assert_uint_eq(cursor, (uint64_t)i + 1);
        ck_assert_uint_eq(rr.seq, (uint64_t)i + 1);
        if (!want[i]) {
            /* checks out, does not decode: consumed, so the reader can set it aside */
            ck_assert_msg(e == MLT_ERR_CORRUPT, "a point of an unknown key: %s", mlt_strerror(e));
            continue;
        }
        ck_assert_msg(e == MLT_OK, "record %d: %s (%s)", i + 1, mlt_strerror(e), mlt_last_error());
        ck_assert_int_eq(rr.type, MLT__REC_METRIC);
        ck_assert_str_eq(rr.key, want[i]);
        ck_assert(rr.num == i + 1.5);
        ck_assert_int_eq(rr.time_ms, (i + 1) * 10);
        ck_assert_int_eq(rr.step, i + 1);
    }
    expect_end(j, &cursor);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
}
END_TEST

START_TEST(a_key_recorded_after_a_torn_keys_line_reads_back)
{
    /* A process died while writing a line of the keys file (or the disk filled up in the
     * middle of it): that key was never used. The next owner records keys of its own: they
     * must read back under their own names. */
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "alpha"), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(mlt__journal_ring(j), 1, 0 | MLT__RING_MS, 1.0, 1, 1), MLT_OK);
    mlt__journal_close(j, false);
    append_to(f.dir, "keys", "1 tor");

    j = open_j(f.dir, false, NULL);
    ck_assert_int_eq(mlt__journal_put_key(j, 1, "beta"), MLT_OK);
    ck_assert_int_eq(mlt__journal_put_key(j, 2, "gamma"), MLT_OK);
    mlt__ring *r = mlt__journal_ring(j);
    ck_assert_int_eq(mlt__ring_put(r, 1, 1 | MLT__RING_MS, 2.0, 2, 2), MLT_OK);
    ck_assert_int_eq(mlt__ring_put(r, 1, 2 | MLT__RING_MS, 3.0, 3, 3), MLT_OK);
    mlt__journal_close(j, false);
    settle(f.dir);

    /* read back by a later process, from the keys file */
    j = open_j(f.dir, true, NULL);
    static const char *const want[] = {"alpha", "beta", "gamma"};
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    char failure[256] = "";
    for (int i = 0; i < 3 && !failure[0]; i++) {
        mlt__rec rr;
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &rr);
        if (e != MLT_OK) {
            snprintf(failure, sizeof failure, "record %d: %s (%s)", i + 1, mlt_strerror(e),
                     mlt_last_error());
        } else if (strcmp(rr.key, want[i]) != 0) {
            snprintf(failure, sizeof failure, "record %d reads back as key '%s', not '%s'", i + 1,
                     rr.key, want[i]);
        }
    }
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    fixture_done(&f);
    ck_assert_msg(!failure[0], "%s", failure);
}
END_TEST

START_TEST(a_key_id_past_the_limit_is_refused_and_the_journal_still_opens)
{
    fixture f;
    fixture_init(&f);
    mlt__journal *j = create_j(f.dir);
    ck_assert_int_eq(mlt__journal_put_key(j, 0, "alpha"), MLT_OK);
    mlt_err e = mlt__journal_put_key(j, UINT32_MAX, "too/far");
    ck_assert_msg(e != MLT_OK, "key id %u was taken", UINT32_MAX);
    ck_assert_int_eq(mlt__ring_put(mlt__journal_ring(j), 1, 0 | MLT__RING_MS, 1.0, 1, 1), MLT_OK);
    mlt__journal_close(j, false);

    mlt__journal *k = NULL;
    char err[256] = "";
    mlt__recovery rec;
    e = mlt__errbuf(err, sizeof err, mlt__journal_open(&k, f.dir, false, MLT__FSYNC_NONE, &rec));
    uint64_t records = e == MLT_OK ? rec.records : 0;
    mlt__journal_close(k, false);
    fixture_done(&f);
    ck_assert_msg(e == MLT_OK, "the journal no longer opens after a refused key: %s (%s)",
                  mlt_strerror(e), err);
    ck_assert_uint_eq(records, 1);
}
END_TEST

/* ---- the public API with user callbacks -------------------------------------------------------
 */

typedef struct seen_metric {
    char key[64];
    char run_key[40];
    double value;
    int64_t step, ts;
} seen_metric;

typedef struct recorder {
    pthread_mutex_t lock;
    seen_metric *m;
    size_t n, cap;
} recorder;

static mlt_err rec_on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                             int64_t ts, void *ud)
{
    recorder *r = ud;
    pthread_mutex_lock(&r->lock);
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->m = realloc(r->m, r->cap * sizeof *r->m);
    }
    seen_metric *s = &r->m[r->n++];
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->run_key, sizeof s->run_key, "%s", info->run_key);
    s->value = value;
    s->step = step;
    s->ts = ts;
    pthread_mutex_unlock(&r->lock);
    return MLT_OK;
}

static const mlt_callbacks REC_CB = {.version = MLT_CALLBACKS_VERSION, .on_metric = rec_on_metric};

static void recorder_init(recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

static void recorder_free(recorder *r)
{
    free(r->m);
    pthread_mutex_destroy(&r->lock);
}

typedef struct key_racer {
    mlt_tracker *t;
    const mlt_key *got[50];
    int failed;
} key_racer;

static void *key_racer_main(void *arg)
{
    key_racer *k = arg;
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof name, "race/%d", i);
        if (mlt_metric_key(&k->got[i], k->t, name) != MLT_OK) {
            k->failed++;
        }
    }
    return NULL;
}

START_TEST(metric_keys_through_the_public_api_with_user_callbacks)
{
    recorder rec;
    recorder_init(&rec);
    mlt_tracker *t, *t2;
    ck_assert_int_eq(mlt_tracker_new(&t, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_new(&t2, NULL, NULL, 0), MLT_OK);
    ck_assert_int_eq(mlt_tracker_add_callbacks(t, &REC_CB, &rec), MLT_OK);

    const mlt_key *loss = NULL, *again = NULL, *other = NULL;
    ck_assert_int_eq(mlt_metric_key(&loss, t, "loss"), MLT_OK);
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(mlt_metric_key(&again, t, "loss"), MLT_OK);
    ck_assert_ptr_eq(loss, again);
    char copy[] = "loss"; /* the same content at another address */
    ck_assert_int_eq(mlt_metric_key(&again, t, copy), MLT_OK);
    ck_assert_ptr_eq(loss, again);
    ck_assert_int_eq(mlt_metric_key(&other, t2, "loss"), MLT_OK);
    ck_assert_ptr_ne(loss, other);

    /* invalid keys: refused, *out untouched */
    static const char *const bad[] = {"bad key!", "", "../x", "/abs", "a//b", "x/.", "tab\tkey"};
    static const int sentinel;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const mlt_key *k = (const mlt_key *)(const void *)&sentinel;
        mlt_err e = mlt_metric_key(&k, t, bad[i]);
        ck_assert_msg(e == MLT_ERR_INVALID_KEY, "key '%s': %s", bad[i], mlt_err_name(e));
        ck_assert_msg(k == (const mlt_key *)(const void *)&sentinel, "key '%s': *out changed",
                      bad[i]);
        ck_assert_msg(strlen(mlt_last_error()) > 0, "key '%s': no message", bad[i]);
    }
    char longkey[300];
    memset(longkey, 'a', 251);
    longkey[251] = '\0';
    const mlt_key *k = (const mlt_key *)(const void *)&sentinel;
    ck_assert_int_eq(mlt_metric_key(&k, t, longkey), MLT_ERR_VALUE_TOO_LONG);
    ck_assert_ptr_eq(k, (const mlt_key *)(const void *)&sentinel);
    ck_assert_int_eq(mlt_metric_key(&k, t, NULL), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_metric_key(&k, NULL, "loss"), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_metric_key(NULL, t, "loss"), MLT_ERR_INVALID_ARG);
    ck_assert_ptr_eq(k, (const mlt_key *)(const void *)&sentinel);

    /* handles registered from several threads at once: one per name */
    key_racer kr[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&kr[i], 0, sizeof kr[i]);
        kr[i].t = t;
        ck_assert_int_eq(pthread_create(&th[i], NULL, key_racer_main, &kr[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(kr[i].failed, 0);
    }
    for (int n = 0; n < 50; n++) {
        for (int i = 1; i < 4; i++) {
            ck_assert_ptr_eq(kr[i].got[n], kr[0].got[n]);
        }
        for (int m = 0; m < n; m++) {
            ck_assert_ptr_ne(kr[0].got[n], kr[0].got[m]);
        }
        ck_assert_ptr_ne(kr[0].got[n], loss);
    }

    mlt_run *run, *run2;
    ck_assert_int_eq(mlt_run_start(&run, t, "r"), MLT_OK);
    ck_assert_int_eq(mlt_run_start(&run2, t2, "r2"), MLT_OK);
    unsigned long long errs = mlt_tracker_error_count(t);

    int64_t before = mlt__now_ms();
    ck_assert_int_eq(mlt_log_metric_key(run, loss, 0.25, 7), MLT_OK);
    int64_t after = mlt__now_ms();
    ck_assert_uint_eq(rec.n, 1);
    ck_assert_str_eq(rec.m[0].key, "loss");
    ck_assert_str_eq(rec.m[0].run_key, mlt_run_key(run));
    ck_assert(rec.m[0].value == 0.25);
    ck_assert_int_eq(rec.m[0].step, 7);
    ck_assert_msg(rec.m[0].ts >= before && rec.m[0].ts <= after,
                  "timestamp %" PRId64 " outside [%" PRId64 ", %" PRId64 "]", rec.m[0].ts, before,
                  after);
    /* special values pass unchanged */
    ck_assert_int_eq(mlt_log_metric_key(run, kr[0].got[3], -0.0, INT64_MIN), MLT_OK);
    ck_assert_int_eq(mlt_log_metric_key(run, kr[0].got[3], NAN, INT64_MAX), MLT_OK);
    ck_assert_uint_eq(rec.n, 3);
    ck_assert_str_eq(rec.m[1].key, "race/3");
    ck_assert_uint_eq(mlt_test_bits_of(rec.m[1].value), mlt_test_bits_of(-0.0));
    ck_assert_int_eq(rec.m[1].step, INT64_MIN);
    ck_assert(isnan(rec.m[2].value));
    ck_assert_int_eq(rec.m[2].step, INT64_MAX);

    /* bad arguments: nothing reaches the callback */
    ck_assert_int_eq(mlt_log_metric_key(run, other, 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_msg(strlen(mlt_last_error()) > 0, "no message");
    ck_assert_int_eq(mlt_log_metric_key(run2, loss, 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric_key(NULL, loss, 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric_key(run, NULL, 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric(NULL, "loss", 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric(run, NULL, 1.0, 1), MLT_ERR_INVALID_ARG);
    ck_assert_int_eq(mlt_log_metric(run, "bad key!", 1.0, 1), MLT_ERR_INVALID_KEY);
    ck_assert_uint_eq(rec.n, 3);
    ck_assert_uint_ge(mlt_tracker_error_count(t), errs + 3);

    /* a key string in a buffer whose content changes: each call logs what the buffer holds */
    char buf[16];
    size_t base = rec.n;
    for (int i = 0; i < 200; i++) {
        snprintf(buf, sizeof buf, "k%d", i % 7);
        before = mlt__now_ms();
        ck_assert_int_eq(mlt_log_metric(run, buf, i * 0.5, i), MLT_OK);
        after = mlt__now_ms();
        const seen_metric *s = &rec.m[base + (size_t)i];
        ck_assert_uint_eq(rec.n, base + (size_t)i + 1);
        ck_assert_msg(strcmp(s->key, buf) == 0, "call %d logged '%s' for '%s'", i, s->key, buf);
        ck_assert(s->value == i * 0.5);
        ck_assert_int_eq(s->step, i);
        ck_assert(s->ts >= before && s->ts <= after);
    }
    /* and a buffer that once held a valid key now holds an invalid one */
    snprintf(buf, sizeof buf, "k1");
    ck_assert_int_eq(mlt_log_metric(run, buf, 1.0, 1), MLT_OK);
    snprintf(buf, sizeof buf, "k1!");
    ck_assert_int_eq(mlt_log_metric(run, buf, 1.0, 1), MLT_ERR_INVALID_KEY);
    ck_assert_str_eq(rec.m[rec.n - 1].key, "k1");
    /* a string key and a handle of the same name are the same key */
    ck_assert_int_eq(mlt_log_metric(run, "loss", 9.0, 9), MLT_OK);
    ck_assert_str_eq(rec.m[rec.n - 1].key, "loss");
    ck_assert_int_eq(mlt_log_metric_at(run, "loss", 10.0, 10, 123), MLT_OK);
    ck_assert_int_eq(rec.m[rec.n - 1].ts, 123);

    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_run_end(run2, MLT_RUN_FINISHED), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t, 1000), MLT_OK);
    ck_assert_int_eq(mlt_tracker_close(t2, 1000), MLT_OK);
    recorder_free(&rec);
}
END_TEST

/* ---- the public API with the MLflow callback ---------------------------------------------------
 */

typedef struct logged {
    const char *key; /* static or into names */
    double value;
    int64_t step;
    int64_t lo, hi; /* the call's window; lo == hi == the timestamp when given */
    bool exact;
} logged;

/* The one journal directory under qdir (into out). */
static void only_journal(const char *qdir, char *out, size_t len)
{
    DIR *d = opendir(qdir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "j-", 2) == 0) {
            snprintf(out, len, "%s/%s", qdir, e->d_name);
            n++;
        }
    }
    closedir(d);
    ck_assert_int_eq(n, 1);
}

START_TEST(metric_keys_through_the_public_api_into_the_mlflow_journal)
{
    char tmp[DIR_LEN], qdir[DIR_LEN + 16];
    mlt_test_tmpdir(tmp, sizeof tmp, "ring");
    snprintf(qdir, sizeof qdir, "%s/queue", tmp);
    mlt_options *o = mlt_options_new();
    ck_assert_ptr_nonnull(o);
    char err[256] = "";
    ck_assert_int_eq(mlt_options_set(o, "tracking_uri", "http://127.0.0.1:9", err, sizeof err),
                     MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "queue_dir", qdir, err, sizeof err), MLT_OK);
    ck_assert_int_eq(mlt_options_set(o, "fsync", "none", err, sizeof err), MLT_OK);
    mlt_tracker *t;
    ck_assert_int_eq(mlt_tracker_new(&t, o, err, sizeof err), MLT_OK);
    mlt_options_free(o);

    /* a key registered before the callback: the callback learns of it when added */
    const mlt_key *early = NULL;
    ck_assert_int_eq(mlt_metric_key(&early, t, "early/key"), MLT_OK);
    ck_assert_msg(mlt_tracker_add_mlflow(t, err, sizeof err) == MLT_OK, "add mlflow: %s", err);
    const mlt_key *h[3];
    ck_assert_int_eq(mlt_metric_key(&h[0], t, "loss"), MLT_OK);
    ck_assert_int_eq(mlt_metric_key(&h[1], t, "acc"), MLT_OK);
    ck_assert_int_eq(mlt_metric_key(&h[2], t, "early/key"), MLT_OK);
    ck_assert_ptr_eq(h[2], early);
    static const char *const hname[3] = {"loss", "acc", "early/key"};
    static const char *const kname[7] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6"};
    const mlt_key *bad = (const mlt_key *)(const void *)&err;
    ck_assert_int_eq(mlt_metric_key(&bad, t, "../x"), MLT_ERR_INVALID_KEY);
    ck_assert_ptr_eq(bad, (const mlt_key *)(const void *)&err);

    mlt_run *run;
    ck_assert_int_eq(mlt_run_start(&run, t, "ring-test"), MLT_OK);
    const size_t n = under_valgrind() ? 3000 : 10000;
    logged *want = calloc(n, sizeof *want);
    ck_assert_ptr_nonnull(want);
    char buf[16];
    for (size_t i = 0; i < n; i++) {
        logged *w = &want[i];
        pt p;
        gen_point(9, i, &p);
        w->value = mlt_test_double_of(p.bits);
        w->step = p.step;
        mlt_err e;
        w->lo = mlt__now_ms();
        switch (i % 4) {
        case 0:
        case 1:
            w->key = hname[(i / 4) % 3];
            e = mlt_log_metric_key(run, h[(i / 4) % 3], w->value, w->step);
            break;
        case 2:
            snprintf(buf, sizeof buf, "k%zu", (i / 4) % 7); /* the same buffer each time */
            w->key = kname[(i / 4) % 7];
            e = mlt_log_metric(run, buf, w->value, w->step);
            break;
        default:
            w->key = i % 8 == 3 ? "loss" : kname[(i / 8) % 7];
            w->exact = true;
            e = mlt_log_metric_at(run, w->key, w->value, w->step, 1600000000000 + (int64_t)i);
            w->lo = 1600000000000 + (int64_t)i;
            break;
        }
        if (!w->exact) {
            w->hi = mlt__now_ms();
        } else {
            w->hi = w->lo;
        }
        REQUIRE(e == MLT_OK, "log %zu: %s (%s)", i, mlt_strerror(e), mlt_last_error());
        if (i % 2500 == 1249) {
            nap_ms(3);
        }
    }
    ck_assert_int_eq(mlt_run_end(run, MLT_RUN_FINISHED), MLT_OK);
    mlt_err ce = mlt_tracker_close(t, 0);
    ck_assert_msg(ce == MLT_OK || ce == MLT_ERR_TIMEOUT || ce == MLT_ERR_QUEUED, "close: %s",
                  mlt_err_name(ce));

    char jdir[PATH_MAX];
    only_journal(qdir, jdir, sizeof jdir);
    mlt__journal *j = open_j(jdir, true, NULL);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t cursor = 0;
    mlt__rec r;
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_CREATE);
    uint32_t run_no = r.run_no;
    for (size_t i = 0; i < n; i++) {
        const logged *w = &want[i];
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &r);
        REQUIRE(e == MLT_OK, "metric %zu: %s (%s)", i, mlt_strerror(e), mlt_last_error());
        REQUIRE(r.type == MLT__REC_METRIC && r.run_no == run_no, "metric %zu: type %d run %u", i,
                (int)r.type, r.run_no);
        REQUIRE(strcmp(r.key, w->key) == 0, "metric %zu: key '%s' where '%s'", i, r.key, w->key);
        REQUIRE(mlt_test_bits_of(r.num) == mlt_test_bits_of(w->value),
                "metric %zu: value bits %016" PRIx64 " where %016" PRIx64, i,
                mlt_test_bits_of(r.num), mlt_test_bits_of(w->value));
        REQUIRE(r.step == w->step, "metric %zu: step %" PRId64 " where %" PRId64, i, r.step,
                w->step);
        if (w->exact) {
            REQUIRE(r.time_ms == w->lo, "metric %zu: time %" PRId64 " where %" PRId64, i, r.time_ms,
                    w->lo);
        } else {
            /* stamped with the TSC, converted to ms by the journal's writer */
            REQUIRE(r.time_ms >= w->lo - 1 && r.time_ms <= w->hi + 1,
                    "metric %zu: time %" PRId64 " outside the call's window [%" PRId64 ", %" PRId64
                    "]",
                    i, r.time_ms, w->lo, w->hi);
        }
    }
    ck_assert_int_eq(mlt__journal_next(j, &cursor, &scratch, &r), MLT_OK);
    ck_assert_int_eq(r.type, MLT__REC_END);
    ck_assert_int_eq(r.run_no, run_no);
    expect_end(j, &cursor);
    mlt__buf_free(&scratch);
    mlt__journal_close(j, false);
    free(want);
    mlt_test_remove_tree(tmp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ring");
    MLT_ADD_TEST(s, ring_points_read_back_exactly);
    MLT_ADD_TEST(s, ring_wraps_and_blocks_when_full_without_a_writer);
    MLT_ADD_TEST(s, concurrent_producers_and_the_writer_thread_lose_nothing);
    MLT_ADD_TEST(s, dead_process_ring_is_saved_once);
    MLT_ADD_TEST(s, crash_between_segment_write_and_tail_store_moves_nothing_twice);
    MLT_ADD_TEST(s, crash_in_the_middle_of_a_group_write_moves_each_point_once);
    MLT_ADD_TEST(s, a_slot_a_dead_thread_never_finished_is_skipped);
    MLT_ADD_TEST(s, a_ring_file_of_the_wrong_size_is_started_afresh);
    MLT_ADD_TEST(s, status_counts_no_ring_points_of_a_ring_the_next_open_starts_afresh);
    MLT_ADD_TEST(s, points_after_an_acked_cursor_past_the_segments_are_numbered_after_it);
    MLT_ADD_TEST(s, points_into_a_segment_cut_to_its_magic_follow_its_name);
    MLT_ADD_TEST(s, ring_tickets_near_the_wrap_of_64_bits_are_not_taken);
    MLT_ADD_TEST(s, record_numbers_never_wrap_past_an_acked_cursor_at_the_last_number);
    MLT_ADD_TEST(s, a_point_put_into_an_adopted_journal_is_drained_or_refused);
    MLT_ADD_TEST(s, tsc_stamps_become_the_calls_ms);
    MLT_ADD_TEST(s, tsc_stamps_of_a_dead_process_become_the_calls_ms);
    MLT_ADD_TEST(s, tsc_stamps_stay_the_calls_ms_when_the_ring_was_made_under_load);
    MLT_ADD_TEST(s, keys_are_written_once_and_survive_reopen);
    MLT_ADD_TEST(s, a_key_recorded_after_a_torn_keys_line_reads_back);
    MLT_ADD_TEST(s, a_key_id_past_the_limit_is_refused_and_the_journal_still_opens);
    MLT_ADD_TEST(s, metric_keys_through_the_public_api_with_user_callbacks);
    MLT_ADD_TEST(s, metric_keys_through_the_public_api_into_the_mlflow_journal);
    return mlt_test_run_suite(s);
}
