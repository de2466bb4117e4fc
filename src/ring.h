/*
 * ring.h - the metric ring of a journal: a file of fixed-size slots mapped shared into the
 * process, into which the hot path puts a metric point with no lock and no system call
 * (mlt__ring_put, inline here); the journal's writer thread (ring.c) moves the ring into the
 * segments. What the tracker's hot path sees of the MLflow sink, and all it sees.
 */
#ifndef MLT_RING_H
#define MLT_RING_H

#include "common.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct mlt__journal;

#define MLT__RING_MAGIC "MLTRING1"
#define MLT__RING_SLOTS 65536u /* a power of two */

typedef struct mlt__ring_slot {
    _Atomic uint64_t stamp; /* ticket + 1 once the slot holds the ticket's point */
    uint32_t run_no;
    uint32_t key_id; /* | MLT__RING_MS when ts is in ms, else ts is a TSC reading */
    double value;
    int64_t ts;
    int64_t step;
} mlt__ring_slot;

#define MLT__RING_MS 0x80000000u

/* The ring file's first page. */
typedef struct mlt__ring_hdr {
    char magic[8];
    uint32_t slot_size, slots;
    /* TSC -> wall clock (written by the drainer; read when a dead process's ring is saved):
     * ns = anchor_ns + (tsc - anchor_tsc) * ns_per_tick */
    uint64_t anchor_tsc;
    int64_t anchor_ns; /* CLOCK_REALTIME at anchor_tsc */
    double ns_per_tick;
    int64_t anchor_mono; /* CLOCK_MONOTONIC_RAW at anchor_tsc: the scale is measured on it */
    char pad0[16];
    _Atomic uint64_t head; /* next ticket to hand out */
    char pad1[56];
    _Atomic uint64_t tail; /* every ticket below is in the segments */
    char pad2[4096 - 136];
} mlt__ring_hdr;

typedef struct mlt__ring {
    mlt__ring_hdr *hdr;
    mlt__ring_slot *slots;
    atomic_int idle;            /* the writer sleeps until woken */
    bool tsc;                   /* the hot path stamps points with the TSC (see mlt__ring_now) */
    int full_block_ms;          /* a full ring: how long a put waits for the writer to make room */
    bool full_fail_fast;        /* ...unless the writer is failing: then it fails at once */
    atomic_bool writer_failing; /* the writer's last drain failed (werr says why) */
    _Atomic uint64_t pending;   /* undelivered bytes in the segments (mlt__journal_pending_bytes) */
    uint64_t cap;               /* the hot path puts points here while pending is below it (the
                                 * queue's cap; 0: never, as in a forked child) */
    struct mlt__journal *j;
} mlt__ring;

/* Whether the hot path may put a point into r now (r may be NULL): below the queue's cap. */
static inline bool mlt__ring_admits(const mlt__ring *r)
{
    return r && atomic_load_explicit(&((mlt__ring *)r)->pending, memory_order_relaxed) < r->cap;
}

/* The slow paths of mlt__ring_put (ring.c). */
MLT__MUST_USE mlt_err mlt__ring_full(mlt__ring *r, uint32_t run_no, uint32_t key_id, double value,
                                     int64_t ts, int64_t step);
void mlt__ring_wake(mlt__ring *r);

/* The hot path stamps a point with the TSC when r->tsc (x86-64, TSC the kernel's clocksource);
 * the drainer turns the reading into ms by two clock readings around it, so the time is the
 * call's. Otherwise points carry ms, with MLT__RING_MS set in their key id. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLT__HAVE_TSC 1
static inline int64_t mlt__tsc(void)
{
    return (int64_t)__builtin_ia32_rdtsc();
}
#endif

/*
 * Tries to put one point in the ring: lock-free, no syscall. Returns 0 when it is in, 1 when
 * it is in and the writer sleeps (call mlt__ring_wake), -1 when the ring is full (nothing was
 * put: call mlt__ring_full). Any thread.
 */
static inline int mlt__ring_try(mlt__ring *r, uint32_t run_no, uint32_t key_id, double value,
                                int64_t ts, int64_t step)
{
    mlt__ring_hdr *h = r->hdr;
    uint64_t t = atomic_load_explicit(&h->head, memory_order_relaxed);
    do {
        if (t - atomic_load_explicit(&h->tail, memory_order_acquire) >= MLT__RING_SLOTS) {
            return -1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&h->head, &t, t + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    mlt__ring_slot *s = &r->slots[t & (MLT__RING_SLOTS - 1)];
    s->run_no = run_no;
    s->key_id = key_id;
    s->value = value;
    s->ts = ts;
    s->step = step;
    /* seq_cst: the writer sets idle and then looks at the ring; we publish and then look at
     * idle; one of the two sees the other. */
    atomic_store_explicit(&s->stamp, t + 1, memory_order_seq_cst);
    return atomic_load_explicit(&r->idle, memory_order_seq_cst) != 0;
}

/* Puts one point in the ring, waiting for room as r->full_block_ms and r->full_fail_fast say.
 * Returns MLT_OK, or MLT_ERR_QUEUE_FULL when the ring stayed full. Any thread. */
MLT__MUST_USE static inline mlt_err mlt__ring_put(mlt__ring *r, uint32_t run_no, uint32_t key_id,
                                                  double value, int64_t ts, int64_t step)
{
    int rc = mlt__ring_try(r, run_no, key_id, value, ts, step);
    if (rc > 0) {
        mlt__ring_wake(r);
    }
    return rc < 0 ? mlt__ring_full(r, run_no, key_id, value, ts, step) : MLT_OK;
}

#endif
