/*
 * ring.c - the journal's metric ring: a file of slots mapped shared into the process (the hot
 * path writes a point into a slot, ring.h), the TSC clock that stamps points, and the writer
 * thread that moves the ring into the segments in groups, with the group commit of
 * fsync=interval; at open, what a dead process left in its ring is moved once.
 */
#include "config.h"

#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the TSC clock of the ring ---- */

static inline uint64_t read_tsc(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return __builtin_ia32_rdtsc();
#else
    return 0;
#endif
}

/* Is the TSC the kernel's clocksource (so constant, and in step across CPUs)? */
bool mlt__j_tsc_usable(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (getenv("MLTRACK_NO_TSC")) {
        return false;
    }
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
    char name[32] = "";
    if (f) {
        if (!fgets(name, sizeof name, f)) {
            name[0] = '\0';
        }
        fclose(f);
    }
    return strcmp(name, "tsc\n") == 0;
#else
    return false;
#endif
}

/* One reading of the TSC and of both clocks: the tightest of a few tries, so that a thread
 * preempted in the middle of one does not skew it. */
static void clock_pair(uint64_t *tsc, int64_t *real_ns, int64_t *mono_ns)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        struct timespec r, m;
        uint64_t a = read_tsc();
        clock_gettime(CLOCK_REALTIME, &r);
        clock_gettime(CLOCK_MONOTONIC_RAW, &m);
        uint64_t b = read_tsc();
        if (b - a < best) {
            best = b - a;
            *tsc = a + (b - a) / 2;
            *real_ns = (int64_t)r.tv_sec * 1000000000 + r.tv_nsec;
            *mono_ns = (int64_t)m.tv_sec * 1000000000 + m.tv_nsec;
        }
    }
}

/* Sets the ring's TSC scale: two readings a millisecond apart (refined at every drain). */
static void calibrate(mlt__ring_hdr *h)
{
    uint64_t t0, t1;
    int64_t r0, r1, m0, m1;
    clock_pair(&t0, &r0, &m0);
    do {
        clock_pair(&t1, &r1, &m1);
    } while (m1 - m0 < 1000000);
    h->ns_per_tick = t1 > t0 ? (double)(m1 - m0) / (double)(t1 - t0) : 1.0;
    h->anchor_tsc = t1;
    h->anchor_ns = r1;
    h->anchor_mono = m1;
}

/*
 * A fresh anchor before a drain, and the scale measured again over the time since the last
 * one (on the raw monotonic clock: neither a step nor a slew of the wall clock skews it). The
 * wall clock is read anew at each anchor, so a step of it shows from the next drain on.
 */
static void reanchor(mlt__ring_hdr *h)
{
    uint64_t t;
    int64_t r, m;
    clock_pair(&t, &r, &m);
    if (m - h->anchor_mono < 5000000 || t <= h->anchor_tsc) {
        return;
    }
    h->ns_per_tick = (double)(m - h->anchor_mono) / (double)(t - h->anchor_tsc);
    h->anchor_tsc = t;
    h->anchor_ns = r;
    h->anchor_mono = m;
}

static int64_t tsc_to_ms(const mlt__ring_hdr *h, uint64_t tsc)
{
    double ns = (double)h->anchor_ns + (double)(int64_t)(tsc - h->anchor_tsc) * h->ns_per_tick;
    return ns > 0 && ns < 9e18 ? (int64_t)(ns / 1e6) : h->anchor_ns / 1000000;
}

/* Appends the frame of one POINT (ticket < 0: none) to b; b->oom on failure. */
static void put_point_frame(mlt__buf *b, uint64_t seq, const mlt__ring_slot *s, int64_t ticket,
                            const mlt__ring_hdr *h)
{
    if (!mlt__buf_reserve(b, MLT__FRAME_HEADER + 48)) {
        return;
    }
    unsigned char *f = (unsigned char *)b->data + b->len;
    unsigned char *p = f + MLT__FRAME_HEADER;
    p = mlt__j_put_varint(p, (uint64_t)s->run_no << 1 | (ticket >= 0));
    if (ticket >= 0) {
        p = mlt__j_put_varint(p, (uint64_t)ticket);
    }
    p = mlt__j_put_varint(p, s->key_id & ~MLT__RING_MS);
    int64_t ts = s->key_id & MLT__RING_MS ? s->ts : tsc_to_ms(h, (uint64_t)s->ts);
    uint64_t bits;
    memcpy(&bits, &s->value, sizeof bits);
    for (int i = 0; i < 8; i++) {
        *p++ = (unsigned char)(bits >> (8 * i));
    }
    p = mlt__j_put_varint(p, (uint64_t)ts);
    p = mlt__j_put_varint(p, ((uint64_t)s->step << 1) ^ (uint64_t)(s->step >> 63));
    uint32_t len = (uint32_t)(p - f - MLT__FRAME_HEADER);
    f[0] = (unsigned char)len;
    f[1] = (unsigned char)(len >> 8);
    f[2] = (unsigned char)(len >> 16);
    f[3] = (unsigned char)(len >> 24);
    for (int i = 0; i < 8; i++) {
        f[8 + i] = (unsigned char)(seq >> (8 * i));
    }
    f[16] = MLT__REC_POINT;
    uint32_t crc = mlt__crc32c(mlt__crc32c(0, f + 8, 9), f + MLT__FRAME_HEADER, len);
    f[4] = (unsigned char)crc;
    f[5] = (unsigned char)(crc >> 8);
    f[6] = (unsigned char)(crc >> 16);
    f[7] = (unsigned char)(crc >> 24);
    b->len += (size_t)(p - f);
}

/* ---- the ring ---- */

_Static_assert(sizeof(mlt__ring_hdr) == 4096, "the ring header is one page");
_Static_assert(sizeof(mlt__ring_slot) == 40, "ring slots are 40 bytes");

/* Whether a ring file's header is one this build uses (else the ring is started afresh): its
 * tickets too, which never come near RING_TICKET_LIMIT. */
static bool ring_header_ok(const mlt__ring_hdr *h)
{
    return memcmp(h->magic, MLT__RING_MAGIC, 8) == 0 && h->slot_size == sizeof(mlt__ring_slot) &&
           h->slots == MLT__RING_SLOTS && atomic_load(&h->head) < RING_TICKET_LIMIT &&
           atomic_load(&h->tail) < RING_TICKET_LIMIT;
}

/* Maps dir/ring, creating or re-initializing it when missing or unusable (why says so). */
mlt_err mlt__j_ring_map(mlt__journal *j, char *why, size_t whylen)
{
    char path[PATH_MAX];
    if (mlt__j_path_in(j, "ring", path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return MLT_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return MLT_ERR_IO;
    }
    bool fresh = st.st_size == 0;
    if (!fresh && (uint64_t)st.st_size != RING_BYTES) {
        snprintf(why, whylen, "ring file of %lld bytes, %zu expected: started afresh",
                 (long long)st.st_size, RING_BYTES);
        fresh = ftruncate(fd, 0) == 0;
        if (!fresh) {
            close(fd);
            return MLT_ERR_IO;
        }
    }
    if (fresh) {
        /* Blocks reserved now: a store into a hole of a full disk would be a SIGBUS. */
        int e = posix_fallocate(fd, 0, (off_t)RING_BYTES);
        if (e == EOPNOTSUPP || e == EINVAL) {
            e = ftruncate(fd, (off_t)RING_BYTES) == 0 ? 0 : errno;
        }
        if (e != 0) {
            close(fd);
            errno = e;
            return MLT_ERR_IO;
        }
    }
    void *map = mmap(NULL, RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return MLT_ERR_IO;
    }
    mlt__ring_hdr *h = map;
    if (!fresh && !ring_header_ok(h)) {
        snprintf(why, whylen, "ring file with a bad header: started afresh");
        fresh = true;
        memset(map, 0, RING_BYTES);
    }
    if (fresh) {
        memcpy(h->magic, MLT__RING_MAGIC, 8);
        h->slot_size = sizeof(mlt__ring_slot);
        h->slots = MLT__RING_SLOTS;
        atomic_store(&h->head, 0);
        atomic_store(&h->tail, 0);
        calibrate(h);
    }
    j->ring.hdr = h;
    j->ring.slots = (mlt__ring_slot *)((char *)map + sizeof(mlt__ring_hdr));
    j->ring.j = j;
    j->ring_len = RING_BYTES;
    return MLT_OK;
}

/* Recounts the undelivered bytes, records and artifact snapshots (caller holds mu or owns j
 * alone): the one count, read by mlt__journal_pending_bytes and by the hot path for the queue's
 * cap. */
void mlt__j_update_pending(mlt__journal *j)
{
    uint64_t acked = atomic_load(&j->acked_pos);
    atomic_store_explicit(&j->ring.pending,
                          (j->end_pos > acked ? j->end_pos - acked : 0) + j->art_bytes,
                          memory_order_relaxed);
}

void mlt__journal_set_segment_bytes(mlt__journal *j, uint64_t bytes)
{
    pthread_mutex_lock(&j->mu);
    j->seg_bytes = bytes;
    pthread_mutex_unlock(&j->mu);
}

/* Starts a new segment when the last one is full (caller holds mu). */
mlt_err mlt__j_roll_segment(mlt__journal *j)
{
    if (j->segs[j->n_segs - 1].size >= j->seg_bytes &&
        mlt__j_open_new_segment(j, j->last_seq + 1) != MLT_OK) {
        return mlt__fail(MLT_ERR_IO, "cannot start a new segment in %s: %s", j->dir,
                         strerror(errno));
    }
    return MLT_OK;
}

/* Appends whole frames, the last of them numbered last_seq, in one write (caller holds mu): a
 * crash leaves at most one torn frame, at the tail, and a failed write is cut back. */
mlt_err mlt__j_write_frames(mlt__journal *j, const mlt__buf *frames, uint64_t last_seq)
{
    off_t before = lseek(j->wfd, 0, SEEK_END);
    if (mlt__j_write_all(j->wfd, frames->data, frames->len) != 0) {
        int e = errno;
        if (before >= 0 && ftruncate(j->wfd, before) != 0) {
            /* the torn frame is cut at the next open */
        }
        return mlt__fail(MLT_ERR_IO, "cannot append to journal %s: %s", j->dir, strerror(e));
    }
    j->dirty = true;
    j->segs[j->n_segs - 1].size += frames->len;
    j->last_seq = last_seq;
    j->end_pos += frames->len;
    mlt__j_update_pending(j);
    return MLT_OK;
}

/*
 * Moves the ring's points into the segments, a group per write (caller holds mu). Stops at a
 * slot still being written, unless skip_holes (at open: a slot a dead thread never finished is
 * skipped; *holes counts them).
 */
mlt_err mlt__j_drain_locked(mlt__journal *j, bool skip_holes, uint64_t *moved, uint64_t *holes)
{
    mlt__ring *r = &j->ring;
    if (!r->hdr || j->read_only) {
        return MLT_OK;
    }
    if (atomic_load(&r->hdr->head) != atomic_load(&r->hdr->tail) && j->last_seq == UINT64_MAX) {
        return mlt__j_used_up(j);
    }
    if (j->wfd < 0 && atomic_load(&r->hdr->head) != atomic_load(&r->hdr->tail) &&
        mlt__j_ensure_wfd(j) != MLT_OK) {
        return mlt__fail(MLT_ERR_IO, "cannot append to journal %s: %s", j->dir, strerror(errno));
    }
    for (;;) {
        uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
        if (tail == head) {
            return MLT_OK;
        }
        if (j->last_seq == UINT64_MAX) {
            return mlt__j_used_up(j);
        }
        mlt_err err = mlt__j_roll_segment(j);
        if (err != MLT_OK) {
            return err;
        }
        if (r->tsc) {
            reanchor(r->hdr);
        }
        mlt__buf_reset(&j->group);
        uint64_t t = tail, seq = j->last_seq, n = 0;
        bool mark = true;
        for (; t < head && n < GROUP_MAX && seq < UINT64_MAX; t++) {
            const mlt__ring_slot *sl = &r->slots[t & (MLT__RING_SLOTS - 1)];
            if (atomic_load_explicit(&sl->stamp, memory_order_acquire) != t + 1) {
                if (!skip_holes) {
                    break;
                }
                (*holes)++;
                mark = true;
                continue;
            }
            put_point_frame(&j->group, ++seq, sl, mark ? (int64_t)t : -1, r->hdr);
            mark = false;
            n++;
        }
        if (j->group.oom) {
            return mlt__fail(MLT_ERR_NOMEM, "out of memory");
        }
        if (n) {
            if ((err = mlt__j_write_frames(j, &j->group, seq)) != MLT_OK) {
                return err;
            }
            j->appended_points += n;
            if (moved) {
                *moved += n;
            }
        }
        if (t == tail) {
            return MLT_OK; /* the next slot is still being written */
        }
        atomic_store_explicit(&r->hdr->tail, t, memory_order_release);
    }
}

/* Opens the last segment for appends (an adopted journal, whose ring holds points). */
mlt_err mlt__j_ensure_wfd(mlt__journal *j)
{
    if (j->wfd >= 0) {
        return MLT_OK;
    }
    if (j->n_segs == 0) {
        return mlt__j_open_new_segment(j, j->last_seq + 1);
    }
    char name[64], path[PATH_MAX];
    mlt__j_seg_name(j->segs[j->n_segs - 1].first_seq, name);
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    j->wfd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    return j->wfd >= 0 ? MLT_OK : MLT_ERR_IO;
}

/* At open: moves into the segments what a dead process left in its ring, past what the
 * segments already hold. */
mlt_err mlt__j_ring_recover(mlt__journal *j, mlt__recovery *rec)
{
    char why[120] = "";
    if (mlt__j_ring_map(j, why, sizeof why) != MLT_OK) {
        return mlt__j_sys_err("cannot map the ring of", j->dir);
    }
    if (why[0] && !rec->why[0]) {
        snprintf(rec->why, sizeof rec->why, "%s", why);
    }
    mlt__ring_hdr *h = j->ring.hdr;
    uint64_t head = atomic_load(&h->head), start = atomic_load(&h->tail);
    if (j->ring_seen_set && j->ring_seen > start) {
        start = j->ring_seen;
    }
    if (head < start) {
        head = start;
    }
    if (head - start > MLT__RING_SLOTS) {
        start = head - MLT__RING_SLOTS; /* cannot be: what a ring can hold at most */
    }
    atomic_store(&h->tail, start);
    atomic_store(&h->head, head);
    if (head == start) {
        return MLT_OK;
    }
    uint64_t holes = 0;
    if (j->last_seq == UINT64_MAX) {
        return mlt__j_used_up(j);
    }
    mlt_err err = mlt__j_ensure_wfd(j);
    if (err != MLT_OK) {
        return mlt__j_sys_err("cannot append to", j->dir);
    }
    err = mlt__j_drain_locked(j, true, &rec->ring_points, &holes);
    if (err == MLT_OK && j->dirty && fdatasync(j->wfd) == 0) {
        j->dirty = false;
    }
    return err;
}

/* Read-only open: counts the points a ring holds past what the segments hold (status). */
void mlt__j_ring_count(mlt__journal *j, mlt__recovery *rec)
{
    char path[PATH_MAX];
    int fd =
        mlt__j_path_in(j, "ring", path, sizeof path) == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || (uint64_t)st.st_size != RING_BYTES) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    void *map = mmap(NULL, RING_BYTES, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return;
    }
    mlt__ring_hdr *h = map; /* read only: the mapping is PROT_READ */
    mlt__ring_slot *slots = (mlt__ring_slot *)((char *)map + sizeof *h);
    if (ring_header_ok(h)) { /* else the next open starts the ring afresh: no point is saved */
        uint64_t head = atomic_load(&h->head), start = atomic_load(&h->tail);
        if (j->ring_seen_set && j->ring_seen > start) {
            start = j->ring_seen;
        }
        if (head > start && head - start > MLT__RING_SLOTS) {
            start = head - MLT__RING_SLOTS;
        }
        for (uint64_t t = start; t < head; t++) {
            rec->ring_points += atomic_load(&slots[t % MLT__RING_SLOTS].stamp) == t + 1;
        }
    }
    munmap(map, RING_BYTES);
}

mlt__ring *mlt__journal_ring(mlt__journal *j)
{
    return j->ring.hdr ? &j->ring : NULL;
}

void mlt__ring_wake(mlt__ring *r)
{
    mlt__journal *j = r->j;
    pthread_mutex_lock(&j->wmu);
    atomic_store(&r->idle, 0);
    pthread_cond_signal(&j->wcv);
    pthread_mutex_unlock(&j->wmu);
}

mlt_err mlt__ring_full(mlt__ring *r, uint32_t run_no, uint32_t key_id, double value, int64_t ts,
                       int64_t step)
{
    int64_t deadline = mlt__mono_ns() + (int64_t)r->full_block_ms * 1000000;
    for (;;) {
        int rc = mlt__ring_try(r, run_no, key_id, value, ts, step);
        if (rc >= 0) {
            if (rc > 0) {
                mlt__ring_wake(r);
            }
            return MLT_OK;
        }
        bool failing = atomic_load(&r->writer_failing);
        if (mlt__mono_ns() >= deadline || (failing && r->full_fail_fast)) {
            char werr[256];
            pthread_mutex_lock(&r->j->mu);
            snprintf(werr, sizeof werr, "%s", r->j->werr[0] ? r->j->werr : "no error seen");
            pthread_mutex_unlock(&r->j->mu);
            return mlt__fail(MLT_ERR_QUEUE_FULL,
                             "the journal's writer is %u points behind (%s: %s): the point "
                             "was not logged",
                             MLT__RING_SLOTS, failing ? "it cannot write" : "the disk is slow",
                             werr);
        }
        mlt__ring_wake(r);
        struct timespec d = {0, 200000};
        nanosleep(&d, NULL);
    }
}

mlt_err mlt__journal_drain(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = mlt__j_drain_locked(j, false, NULL, NULL);
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* Is the slot at the ring's tail ready? */
static bool ring_ready(mlt__ring *r)
{
    uint64_t t = atomic_load(&r->hdr->tail);
    return atomic_load(&r->slots[t & (MLT__RING_SLOTS - 1)].stamp) == t + 1;
}

#define WRITER_POLL_MS 2    /* between groups while points keep coming */
#define WRITER_IDLE_POLLS 5 /* empty polls before the writer sleeps until woken */

static void *writer_main(void *arg)
{
    mlt__journal *j = arg;
    mlt__ring *r = &j->ring;
    int empty = 0;
    pthread_mutex_lock(&j->wmu);
    while (!j->wstop) {
        pthread_mutex_unlock(&j->wmu);
        pthread_mutex_lock(&j->mu);
        uint64_t before = j->last_seq;
        mlt_err err = mlt__j_drain_locked(j, false, NULL, NULL);
        bool wrote = j->last_seq != before;
        if (err != MLT_OK) {
            snprintf(j->werr, sizeof j->werr, "%s", mlt_last_error());
            atomic_store(&r->writer_failing, true);
        } else if (wrote || !ring_ready(r)) {
            j->werr[0] = '\0'; /* it writes again (space came back) */
            atomic_store(&r->writer_failing, false);
        }
        int64_t now = mlt__mono_ns() / 1000000, sync_in = 1000;
        /* the group commit of fsync=interval: this thread is its one owner */
        if (j->mode == MLT__FSYNC_INTERVAL && (j->dirty || j->acked_dirty || j->keys_dirty)) {
            if (now - j->synced_ms >= j->interval_ms) {
                if (mlt__j_sync_locked(j) != MLT_OK) {
                    snprintf(j->werr, sizeof j->werr, "%s", mlt_last_error());
                }
            } else {
                sync_in = j->interval_ms - (now - j->synced_ms);
            }
        }
        pthread_mutex_unlock(&j->mu);
        if (wrote && j->on_write) {
            j->on_write(j->on_write_ud);
        }
        empty = wrote ? 0 : empty + 1;
        pthread_mutex_lock(&j->wmu);
        if (j->wstop) {
            break;
        }
        if (err == MLT_OK && empty < WRITER_IDLE_POLLS) {
            mlt__cond_wait_until(&j->wcv, &j->wmu, mlt__deadline_ms(WRITER_POLL_MS));
            continue;
        }
        atomic_store(&r->idle, 1);
        if (err == MLT_OK && ring_ready(r)) {
            atomic_store(&r->idle, 0);
            continue;
        }
        mlt__cond_wait_until(&j->wcv, &j->wmu, mlt__deadline_ms(err != MLT_OK ? 100 : sync_in));
        atomic_store(&r->idle, 0);
    }
    pthread_mutex_unlock(&j->wmu);
    return NULL;
}

mlt_err mlt__journal_start_writer(mlt__journal *j, void (*on_write)(void *ud), void *ud,
                                  int interval_ms)
{
    if (!j->ring.hdr || j->writer_started) {
        return mlt__fail(MLT_ERR_STATE, "journal %s has no ring to write", j->dir);
    }
    j->on_write = on_write;
    j->on_write_ud = ud;
    mlt__journal_set_interval(j, interval_ms);
    if (pthread_create(&j->writer, NULL, writer_main, j) != 0) {
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the journal's writer thread");
    }
    j->writer_started = true;
    return MLT_OK;
}

void mlt__j_stop_writer(mlt__journal *j)
{
    if (!j->writer_started) {
        return;
    }
    pthread_mutex_lock(&j->wmu);
    j->wstop = true;
    pthread_cond_signal(&j->wcv);
    pthread_mutex_unlock(&j->wmu);
    pthread_join(j->writer, NULL);
    j->writer_started = false;
}
