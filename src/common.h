/*
 * common.h - the ground floor shared by every module: growable arrays and buffers, the JSON writer,
 * clocks and the one timed wait (CLOCK_MONOTONIC), the library's one error channel (mlt__fail,
 * mlt_last_error, mlt__errbuf at public functions), UUIDs and diagnostics. Not installed.
 */
#ifndef MLT_COMMON_H
#define MLT_COMMON_H

#include "mltrack.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#if defined(__GNUC__) || defined(__clang__)
#define MLT__PRINTF(f, a) __attribute__((format(printf, f, a)))
/* On internal functions that return mlt_err: a result is handled, or an empty if-block's
 * comment says why it may be dropped. */
#define MLT__MUST_USE __attribute__((warn_unused_result))
#else
#define MLT__PRINTF(f, a)
#define MLT__MUST_USE
#endif

/* ---- growable byte buffer (always NUL-terminated when data != NULL) ---- */
typedef struct mlt__buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom; /* set once an append failed: later appends do nothing; check at the end */
} mlt__buf;

void mlt__buf_init(mlt__buf *b);
void mlt__buf_free(mlt__buf *b);
void mlt__buf_reset(mlt__buf *b); /* len = 0, keeps the allocation, clears oom */
bool mlt__buf_reserve(mlt__buf *b, size_t extra);
void mlt__buf_append(mlt__buf *b, const void *data, size_t len);
void mlt__buf_puts(mlt__buf *b, const char *s);
void mlt__buf_putc(mlt__buf *b, char c);
void mlt__buf_printf(mlt__buf *b, const char *fmt, ...) MLT__PRINTF(2, 3);
/* Detaches the data (caller frees); returns NULL if an append failed. */
char *mlt__buf_steal(mlt__buf *b);

/* ---- growable arrays ---- */
/*
 * Makes room for need items of elem_size bytes in an array: when need > *cap, reallocates the
 * array to its capacity doubled as often as need asks (an empty one starts with room for 8 items,
 * or for as many as 64 bytes hold when that is more; a doubling past the largest array takes need
 * itself). items is the address of the array's pointer (a T **, taken as void * so that any T
 * converts without a cast). Returns MLT_ERR_NOMEM, with *items and *cap as they were, when
 * need * elem_size does not fit in a ptrdiff_t or realloc fails (MLT_ERR_INVALID_ARG for an
 * elem_size of 0); sets no mlt__fail() detail.
 */
MLT__MUST_USE mlt_err mlt__grow(void *items, size_t *cap, size_t need, size_t elem_size);
/* mlt__grow() for an array arr with capacity cap, both lvalues:
 * MLT__GROW(m->live, m->cap_live, m->n_live + 1). */
#define MLT__GROW(arr, cap, need) mlt__grow(&(arr), &(cap), (need), sizeof *(arr))

/* ---- JSON writer: appends JSON text to a buffer ---- */
void mlt__json_str(mlt__buf *b, const char *s); /* "..." with escapes */
void mlt__json_strn(mlt__buf *b, const char *s, size_t len);
void mlt__json_i64(mlt__buf *b, int64_t v); /* exact decimal */
/* A double the MLflow way: finite values as the shortest decimal that reads back to the same
 * double; NaN, +Inf, -Inf as the strings "NaN", "Infinity", "-Infinity". */
void mlt__json_double(mlt__buf *b, double v);
/* The shortest "%.*g" text of finite v that strtod() (strtof()) reads back to v, except that an
 * integral value below 1e16 (1e9 for floats) is written in full ("100", not "1e+02").
 * Returns the length, as snprintf. */
int mlt__fmt_double(char *out, size_t len, double v);
int mlt__fmt_float(char *out, size_t len, float v);

/* ---- strings ---- */
char *mlt__strdup(const char *s); /* NULL for NULL */
char *mlt__strndup(const char *s, size_t n);
/*
 * Where to cut s[0..len) to keep at most max bytes without splitting a UTF-8 character: n =
 * min(len, max), less the last character's bytes when they are incomplete before n (its lead
 * byte announces more bytes than stand there) or go on past it (s[n] is a continuation byte,
 * n < len). A lead byte is any byte >= 0xC0 and announces 2 (0xC0-0xDF), 3 (0xE0-0xEF) or 4
 * bytes (0xF0-0xFF); at most 3 continuation bytes are looked back over. Only the last character
 * is looked at: the text before it is kept as it is, valid or not.
 */
size_t mlt__utf8_cut(const char *s, size_t len, size_t max);
/* Formats into a new string; NULL on out of memory. */
char *mlt__aprintf(const char *fmt, ...) MLT__PRINTF(1, 2);

/* ---- the library's one error channel: the thread-local detail of the last failure ----
 * Internal functions report a failure with mlt__fail() (the message, read with
 * mlt_last_error()) and return its code. Only a public function that takes an errbuf copies the
 * message there, on its way out: return mlt__errbuf(errbuf, errlen, err). */
mlt_err mlt__fail(mlt_err err, const char *fmt, ...) MLT__PRINTF(2, 3);
/* Returns err; when it is not MLT_OK, copies mlt_last_error() into errbuf (may be NULL or errlen
 * 0), NUL-terminated and cut at a UTF-8 character boundary when it does not fit. For a public
 * function's errbuf, or a message kept as data (the sender's answers, dead letters). */
mlt_err mlt__errbuf(char *errbuf, size_t errlen, mlt_err err);
void mlt__fail_set(const char *msg); /* copies msg */
void mlt__fail_clear(void);

/* ---- clocks ---- */
/* wall clock, ms since the epoch (inline: the metric hot path stamps every point) */
static inline int64_t mlt__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
int64_t mlt__mono_ns(void); /* monotonic */
void mlt__sleep_ms(int64_t ms);

/* ---- timed waits: every deadline of the library is on CLOCK_MONOTONIC ---- */
/* Initializes a condition variable for mlt__cond_wait_until(): its timed waits measure the
 * monotonic clock, so that a step of the wall clock (NTP correcting a node) neither stretches
 * nor cuts a flush's, a close's or a thread's deadline. */
void mlt__cond_init(pthread_cond_t *cv);
/* Waits on cv (mu held) until it is signalled or mlt__mono_ns() reaches deadline_ns. Returns
 * false once the deadline passed (true may be a spurious wakeup: callers loop on their
 * condition). */
bool mlt__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns);
/* The deadline ms from now. */
static inline int64_t mlt__deadline_ms(int64_t ms)
{
    return mlt__mono_ns() + ms * 1000000;
}

/* ---- identifiers ---- */
/* 36-character RFC 4122 version 4 UUID into out[37]. Uses getrandom(), falls back to a clock-
 * seeded generator when the kernel has none. */
void mlt__uuid4(char out[37]);
/* Uniform random double in [0, 1) for retry jitter (thread-safe). */
double mlt__rand01(void);

/* ---- diagnostics ---- */
typedef struct mlt__logger {
    mlt_log_fn fn;
    void *userdata;
} mlt__logger;
void mlt__log(const mlt__logger *lg, int level, const char *fmt, ...) MLT__PRINTF(3, 4);

#endif
