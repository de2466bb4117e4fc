/*
 * metric.c - metric keys and the metric hot path: a key is validated once and registered on the
 * tracker (numbered, told to the sinks); a point with a registered key goes into the only sink's
 * ring with no lock and no system call (ring.h), or to every callback.
 */
#include "config.h"

#include "tracker.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ring.h"
#include "validate.h"

/* A hash of a key's n bytes, eight at a time (FxHash's step, then a final mix so that the low
 * bits, which pick the bucket, depend on all of them): keys built at run time are hashed at
 * every call, so this is on their hot path. */
static inline uint64_t load64(const char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}

#define KEY_MIX(h, w) ((((h) << 5) | ((h) >> 59)) ^ (w)) * 0x517cc1b727220a95ull

static inline uint32_t key_hash(const char *s, size_t n)
{
    uint64_t h = n;
    if (n >= 8) {
        /* whole words, then the last 8 bytes (overlapping the one before: no byte loop); the
         * first two by hand, as most keys are 9 to 24 bytes */
        if (n > 8) {
            h = KEY_MIX(h, load64(s));
            if (n > 16) {
                h = KEY_MIX(h, load64(s + 8));
                for (size_t i = 16; i + 8 < n; i += 8) {
                    h = KEY_MIX(h, load64(s + i));
                }
            }
        }
        h = KEY_MIX(h, load64(s + n - 8));
    } else {
        uint64_t w = 0;
        for (size_t i = 0; i < n; i++) {
            w |= (uint64_t)(unsigned char)s[i] << (8 * i);
        }
        h = KEY_MIX(h, w);
    }
    h ^= h >> 32;
    return (uint32_t)(h ^ (h >> 16));
}

/* Whether the n bytes at a and b are equal (n >= 8: words, the last one overlapping). */
static inline bool same_bytes(const char *a, const char *b, size_t n)
{
    if (n < 8) {
        if (n >= 4) { /* the first four and the last four, overlapping */
            uint32_t x, y, z, w;
            memcpy(&x, a, 4);
            memcpy(&y, b, 4);
            memcpy(&z, a + n - 4, 4);
            memcpy(&w, b + n - 4, 4);
            return ((x ^ y) | (z ^ w)) == 0;
        }
        return memcmp(a, b, n) == 0;
    }
    uint64_t diff = load64(a + n - 8) ^ load64(b + n - 8);
    if (n > 8) {
        diff |= load64(a) ^ load64(b);
        for (size_t i = 8; i + 8 < n; i += 8) {
            diff |= load64(a + i) ^ load64(b + i);
        }
    }
    return diff == 0;
}

/*
 * The address cache: a slot per address of the caller's key string holds
 *   0                 nothing seen there yet;
 *   a key             the text there was that key's name last time (strcmp says if it still is);
 *   a key | CHANGING  the text there keeps changing (keys formatted into one buffer at run
 *                     time): the key is the one logged there last, and the key logged after it
 *                     last time (its `then`) is tried first, as loops log their keys in the same
 *                     order at every step. A wrong guess costs one strcmp; the key is then found
 *                     by its text (a hash), never validated again.
 * Every guess is checked against the text, so a stale or racing slot costs time, never a
 * wrong key. Keys live until the tracker is closed.
 */
#define CHANGING ((uintptr_t)1)

static inline _Atomic(uintptr_t) *cache_slot(mlt_tracker *t, const char *key)
{
    uintptr_t a = (uintptr_t)key;
    return &t->key_cache[((a >> 3) ^ (a >> 13)) & (MLT__KEY_CACHE - 1)];
}

/* The registered key whose name the caller's string last was at this address, if it still is. */
static inline const mlt_key *cached_key(mlt_tracker *t, const char *key)
{
    uintptr_t v = atomic_load_explicit(cache_slot(t, key), memory_order_acquire);
    const mlt_key *k = (const mlt_key *)v;
    return v && !(v & CHANGING) && strcmp(k->name, key) == 0 ? k : NULL;
}

static inline mlt_key *find_key(mlt_tracker *t, const char *key, size_t len, uint32_t h);

/* The slot of an address after k was found there by its text: a new address remembers k; one
 * that held another key becomes CHANGING (and stays so), and the key logged there before k
 * learns that k came next. */
static inline void remember(_Atomic(uintptr_t) *slot, mlt_key *k)
{
    uintptr_t was = atomic_load_explicit(slot, memory_order_relaxed);
    if (was == (uintptr_t)k) {
        return;
    }
    if (was & CHANGING) {
        mlt_key *last = (mlt_key *)(was & ~CHANGING);
        atomic_store_explicit(&last->then, k, memory_order_release);
    }
    atomic_store_explicit(slot, was ? (uintptr_t)k | CHANGING : (uintptr_t)k, memory_order_release);
}

/* A key registered already, found by its text (a key built at run time into a reused buffer
 * misses the address cache): it was validated when registered, so it is not again. NULL for a
 * key not registered yet. */
static inline mlt_key *key_by_text(mlt_tracker *t, const char *key)
{
    size_t len = strlen(key);
    return find_key(t, key, len, key_hash(key, len));
}

static inline mlt_key *find_key(mlt_tracker *t, const char *key, size_t len, uint32_t h)
{
    mlt_key *k =
        atomic_load_explicit(&t->key_buckets[h & (MLT__KEY_BUCKETS - 1)], memory_order_acquire);
    for (; k; k = atomic_load_explicit(&k->next, memory_order_acquire)) {
        if (k->hash == h && k->len == len && same_bytes(k->name, key, len)) {
            return k;
        }
    }
    return NULL;
}

/* The key registered for a valid key name, registering it (and telling the sinks) if new. */
static MLT__MUST_USE mlt_err intern_key(mlt_tracker *t, const char *key, const mlt_key **out)
{
    size_t len = strlen(key);
    uint32_t h = key_hash(key, len);
    mlt_key *k = find_key(t, key, len, h);
    mlt_err err = MLT_OK;
    if (!k) {
        pthread_mutex_lock(&t->keys_lock);
        k = find_key(t, key, len, h);
        if (!k) {
            k = malloc(sizeof *k + len + 1);
            if (!k) {
                err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
            } else {
                k->tracker = t;
                k->id = t->n_keys;
                k->hash = h;
                k->len = (uint32_t)len; /* at most 250 characters: validated */
                memcpy(k->name, key, len + 1);
                _Atomic(mlt_key *) *bucket = &t->key_buckets[h & (MLT__KEY_BUCKETS - 1)];
                atomic_init(&k->next, atomic_load_explicit(bucket, memory_order_relaxed));
                atomic_init(&k->then, NULL);
                pthread_mutex_lock(&t->lock);
                for (size_t i = 0; i < t->n_cbs && err == MLT_OK; i++) {
                    if (t->cbs[i].ext.on_key) {
                        err = t->cbs[i].ext.on_key(t->cbs[i].userdata, k);
                    }
                }
                pthread_mutex_unlock(&t->lock);
                if (err != MLT_OK) {
                    free(k);
                    k = NULL;
                } else {
                    t->n_keys++;
                    k->all_next = t->all_keys;
                    t->all_keys = k;
                    atomic_store_explicit(bucket, k, memory_order_release);
                }
            }
        }
        pthread_mutex_unlock(&t->keys_lock);
    }
    if (k) {
        remember(cache_slot(t, key), k);
        *out = k;
    }
    return err;
}

mlt_err mlt_metric_key(const mlt_key **out, mlt_tracker *tracker, const char *key)
{
    if (!tracker || !out) {
        return mlt__tracker_counted(tracker,
                                    mlt__fail(MLT_ERR_INVALID_ARG, "tracker and out are required"));
    }
    if (tracker->forked) {
        return mlt__tracker_forked_err();
    }
    mlt_err err = mlt__validate_key(MLT__METRIC, key);
    if (err == MLT_OK) {
        err = intern_key(tracker, key, out);
    }
    return mlt__tracker_counted(tracker, err);
}

/* Every callback, when the ring cannot take the point directly. */
static MLT__MUST_USE mlt_err dispatch_metric(mlt_run *run, const mlt_key *k, double value,
                                             int64_t step, int64_t ts)
{
    mlt_tracker *t = run->tracker;
    if (t->forked) {
        return mlt__tracker_forked_err();
    }
    if (mlt__run_has_ended(run)) {
        return mlt__tracker_counted(t, mlt__run_ended_err(run, "log_metric"));
    }
    if (t->fast_metric) {
        mlt_err err = t->fast_metric(t->fast_ud, run, k, value, step, ts);
        return err == MLT_OK ? MLT_OK : mlt__tracker_counted(t, err);
    }
    mlt__first_err fe = {MLT_OK, ""};
    mlt_run_info info;
    bool have_info = false;
    for (size_t i = 0; i < t->n_cbs; i++) {
        const mlt__cb_entry *e = &t->cbs[i];
        mlt__fail_clear();
        if (e->ext.fast_metric) {
            mlt__note_err(&fe, e->ext.fast_metric(e->userdata, run, k, value, step, ts),
                          "on_metric failed");
        } else if (e->cb.on_metric) {
            if (!have_info) {
                mlt__run_info(run, &info, mlt__run_parent_key(run));
                have_info = true;
            }
            mlt__note_err(&fe, e->cb.on_metric(&info, k->name, value, step, ts, e->userdata),
                          "on_metric failed");
        }
    }
    return mlt__tracker_counted(run->tracker, mlt__finish_err(&fe));
}

static inline __attribute__((always_inline)) mlt_err
log_metric_k(mlt_run *run, const mlt_key *k, double value, int64_t step, int64_t ts)
{
    mlt__ring *r = atomic_load_explicit(&run->ring, memory_order_relaxed);
    if (mlt__ring_admits(r)) {
        mlt_err err = mlt__ring_put(r, run->ring_run, k->id | MLT__RING_MS, value, ts, step);
        return err == MLT_OK ? MLT_OK : mlt__tracker_counted(run->tracker, err);
    }
    return dispatch_metric(run, k, value, step, ts);
}

/* The hot path's slow ends, out of line so that the hot path itself needs no stack frame. */
static __attribute__((noinline)) mlt_err ring_slow(mlt_run *run, mlt__ring *r, int rc,
                                                   uint32_t key_id, double value, int64_t ts,
                                                   int64_t step)
{
    if (rc > 0) {
        mlt__ring_wake(r);
        return MLT_OK;
    }
    mlt_err err = mlt__ring_full(r, run->ring_run, key_id, value, ts, step);
    return err == MLT_OK ? MLT_OK : mlt__tracker_counted(run->tracker, err);
}

static __attribute__((noinline)) mlt_err log_metric_now_slow(mlt_run *run, const mlt_key *k,
                                                             double value, int64_t step)
{
    return log_metric_k(run, k, value, step, mlt__now_ms());
}

/* As log_metric_k, stamped now: the hot path. */
static inline MLT__MUST_USE mlt_err log_metric_now(mlt_run *run, const mlt_key *k, double value,
                                                   int64_t step)
{
#ifdef MLT__HAVE_TSC
    mlt__ring *r = atomic_load_explicit(&run->ring, memory_order_relaxed);
    if (mlt__ring_admits(r) && r->tsc) {
        int64_t ts = mlt__tsc();
        int rc = mlt__ring_try(r, run->ring_run, k->id, value, ts, step);
        return rc == 0 ? MLT_OK : ring_slow(run, r, rc, k->id, value, ts, step);
    }
#endif
    return log_metric_now_slow(run, k, value, step);
}

/* A key not seen at this address yet, or bad arguments: validate, register, log. */
static MLT__MUST_USE mlt_err log_metric_slow(mlt_run *run, const char *key, double value,
                                             int64_t step, int64_t ts)
{
    mlt_key *found = run && key ? key_by_text(run->tracker, key) : NULL;
    if (found) {
        remember(cache_slot(run->tracker, key), found);
        return log_metric_k(run, found, value, step, ts);
    }
    const mlt_key *k;
    mlt_err err = mlt__run_check_entry(run, MLT__METRIC, key, NULL);
    if (err != MLT_OK) {
        return err;
    }
    err = intern_key(run->tracker, key, &k);
    if (err != MLT_OK) {
        return mlt__tracker_counted(run->tracker, err);
    }
    return log_metric_k(run, k, value, step, ts);
}

mlt_err mlt_log_metric_at(mlt_run *run, const char *key, double value, int64_t step,
                          int64_t timestamp_ms)
{
    if (timestamp_ms < 0) {
        mlt_err err = mlt__run_check_entry(run, MLT__METRIC, key, NULL);
        if (err == MLT_OK) {
            err = mlt__validate_timestamp(timestamp_ms);
            err = mlt__tracker_counted(run->tracker,
                                       mlt__fail(err, "metric '%s': %s", key, mlt_last_error()));
        }
        return err;
    }
    const mlt_key *k;
    if (run && key && (k = cached_key(run->tracker, key))) {
        return log_metric_k(run, k, value, step, timestamp_ms);
    }
    return log_metric_slow(run, key, value, step, timestamp_ms);
}

/* A key not registered yet, or bad arguments: validate, register, log (or refuse). */
static __attribute__((noinline)) mlt_err log_metric_new(mlt_run *run, const char *key, double value,
                                                        int64_t step)
{
    return log_metric_slow(run, key, value, step, mlt__now_ms());
}

/* A key the address cache did not give: found by its text (remembered), or new. */
static __attribute__((noinline)) mlt_err log_metric_text(mlt_run *run, const char *key,
                                                         double value, int64_t step)
{
    mlt_key *k = key_by_text(run->tracker, key);
    if (!k) {
        return log_metric_new(run, key, value, step);
    }
    remember(cache_slot(run->tracker, key), k);
    return log_metric_now(run, k, value, step);
}

/* At an address whose text keeps changing: the key that came after the last one there, if it
 * is the one now (a jump from mlt_log_metric(), so that the string hot path keeps a small
 * stack frame). */
static __attribute__((noinline)) mlt_err log_metric_then(mlt_run *run, const char *key,
                                                         double value, int64_t step, mlt_key *last)
{
    const mlt_key *k = atomic_load_explicit(&last->then, memory_order_acquire);
    if (!k || strcmp(k->name, key) != 0) {
        return log_metric_text(run, key, value, step); /* another order: learnt there */
    }
    atomic_store_explicit(cache_slot(run->tracker, key), (uintptr_t)k | CHANGING,
                          memory_order_release);
    return log_metric_now(run, k, value, step);
}

/* The hot path for a key string at a fixed address (the key there last time), and for keys
 * formatted at run time into one buffer (the key that came after the last one there). */
mlt_err mlt_log_metric(mlt_run *run, const char *key, double value, int64_t step)
{
    if (!run || !key) {
        return log_metric_new(run, key, value, step);
    }
    uintptr_t v = atomic_load_explicit(cache_slot(run->tracker, key), memory_order_acquire);
    if (v & CHANGING) {
        return log_metric_then(run, key, value, step, (mlt_key *)(v & ~CHANGING));
    }
    const mlt_key *k = (const mlt_key *)v;
    if (!k || strcmp(k->name, key) != 0) {
        return log_metric_text(run, key, value, step);
    }
    return log_metric_now(run, k, value, step);
}

mlt_err mlt_log_metric_key(mlt_run *run, const mlt_key *key, double value, int64_t step)
{
    if (!run || !key) {
        return mlt__tracker_counted(run ? run->tracker : NULL,
                                    mlt__fail(MLT_ERR_INVALID_ARG, "run and key are required"));
    }
    if (key->tracker != run->tracker) {
        return mlt__tracker_counted(
            run->tracker, mlt__fail(MLT_ERR_INVALID_ARG,
                                    "metric key '%s' belongs to another tracker", key->name));
    }
    return log_metric_now(run, key, value, step);
}
