/*
 * common.c - growable arrays and buffers, the JSON writer and number formatting, string helpers,
 * the library's one error channel (the thread-local detail of the last failure), clocks and timed
 * waits, UUIDs and diagnostics.
 */
#include "config.h"

#include "common.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef HAVE_GETRANDOM
#include <sys/random.h>
#endif

/* ---- growable arrays ---- */

mlt_err mlt__grow(void *items, size_t *cap, size_t need, size_t elem_size)
{
    if (need <= *cap) {
        return MLT_OK;
    }
    if (elem_size == 0) {
        return MLT_ERR_INVALID_ARG;
    }
    /* no array over PTRDIFF_MAX bytes: pointer differences inside it must not overflow (and
     * malloc refuses such a size anyway) */
    size_t most = (size_t)PTRDIFF_MAX / elem_size;
    if (need > most) {
        return MLT_ERR_NOMEM;
    }
    size_t n = *cap ? *cap : elem_size < 8 ? 64 / elem_size : 8;
    while (n < need) {
        n = n > most / 2 ? need : n * 2;
    }
    if (n > most) {
        n = need; /* the first capacity alone is too large for elements this big */
    }
    /* items is a T **: its pointer is read and written as bytes, not through a void ** (which
     * would break the aliasing rules) */
    void *old;
    memcpy(&old, items, sizeof old);
    void *p = realloc(old, n * elem_size);
    if (!p) {
        return MLT_ERR_NOMEM;
    }
    memcpy(items, &p, sizeof p);
    *cap = n;
    return MLT_OK;
}

/* ---- buffers ---- */

void mlt__buf_init(mlt__buf *b)
{
    memset(b, 0, sizeof(*b));
}

void mlt__buf_free(mlt__buf *b)
{
    free(b->data);
    mlt__buf_init(b);
}

void mlt__buf_reset(mlt__buf *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data) {
        b->data[0] = '\0';
    }
}

bool mlt__buf_reserve(mlt__buf *b, size_t extra)
{
    if (b->oom) {
        return false;
    }
    if (extra > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        return true;
    }
    bool fresh = b->data == NULL;
    if (MLT__GROW(b->data, b->cap, need) != MLT_OK) {
        b->oom = true;
        return false;
    }
    if (fresh) {
        b->data[0] = '\0';
    }
    return true;
}

void mlt__buf_append(mlt__buf *b, const void *data, size_t len)
{
    if (!mlt__buf_reserve(b, len)) {
        return;
    }
    if (len) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
    b->data[b->len] = '\0';
}

void mlt__buf_puts(mlt__buf *b, const char *s)
{
    mlt__buf_append(b, s, strlen(s));
}

void mlt__buf_putc(mlt__buf *b, char c)
{
    mlt__buf_append(b, &c, 1);
}

void mlt__buf_printf(mlt__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
    } else if (mlt__buf_reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

char *mlt__buf_steal(mlt__buf *b)
{
    if (b->oom) {
        mlt__buf_free(b);
        return NULL;
    }
    if (!b->data && !mlt__buf_reserve(b, 0)) {
        return NULL;
    }
    char *p = b->data;
    if (p && b->len == 0) {
        p[0] = '\0';
    }
    mlt__buf_init(b);
    return p;
}

/* ---- JSON writer ---- */

void mlt__json_strn(mlt__buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!mlt__buf_reserve(b, len + 2)) {
        return;
    }
    mlt__buf_putc(b, '"');
    size_t run = 0; /* start of the pending span that needs no escape */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        mlt__buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            mlt__buf_append(b, esc, 6);
            continue;
        }
        mlt__buf_append(b, esc, 2);
    }
    mlt__buf_append(b, s + run, len - run);
    mlt__buf_putc(b, '"');
}

void mlt__json_str(mlt__buf *b, const char *s)
{
    mlt__json_strn(b, s, strlen(s));
}

void mlt__json_i64(mlt__buf *b, int64_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) {
        *--p = '-';
    }
    mlt__buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

/*
 * Round-tripping is monotonic in the precision (more correctly rounded digits still read back
 * to the same value), and %g drops trailing zeros: the first precision that reads back gives
 * the shortest form. A value that reads back from 15 digits (most of what people log, and
 * every value with fewer digits) is found with one try; the others need 16 or 17 digits.
 */
int mlt__fmt_double(char *out, size_t len, double v)
{
    char tmp[40];
    /* A normal double is within 2^-53 of any decimal that reads back as it, less than half a
     * unit of the 15th digit: so that decimal is its 15-digit rounding. Not so for subnormals
     * (fewer bits), whose shortest precision is found by bisection over [1, 17]. */
    int lo = fabs(v) < DBL_MIN ? 1 : 15, hi = 17, printed = 0;
    while (lo < hi) {
        int mid = lo == 15 ? 15 : (lo + hi) / 2;
        snprintf(tmp, sizeof tmp, "%.*g", mid, v);
        printed = mid;
        if (strtod(tmp, NULL) == v) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (printed != lo) {
        snprintf(tmp, sizeof tmp, "%.*g", lo, v);
    }
    /* %g turns 100 into "1e+02" when 1 digit is enough; an integer below 1e16 reads better in
     * full, as Python's repr writes it. */
    if (strchr(tmp, 'e') && fabs(v) >= 1 && fabs(v) < 1e16) {
        return snprintf(out, len, "%.0f", v);
    }
    return snprintf(out, len, "%s", tmp);
}

int mlt__fmt_float(char *out, size_t len, float v)
{
    int lo = 1, hi = 9;
    char tmp[40];
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        snprintf(tmp, sizeof tmp, "%.*g", mid, (double)v);
        if (strtof(tmp, NULL) == v) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    snprintf(tmp, sizeof tmp, "%.*g", lo, (double)v);
    if (strchr(tmp, 'e') && fabsf(v) >= 1 && fabsf(v) < 1e9f) { /* <= 9 digits, as in %.9g */
        return snprintf(out, len, "%.0f", (double)v);
    }
    return snprintf(out, len, "%s", tmp);
}

void mlt__json_double(mlt__buf *b, double v)
{
    if (isnan(v)) {
        mlt__buf_puts(b, "\"NaN\"");
    } else if (isinf(v)) {
        mlt__buf_puts(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    } else {
        char tmp[32];
        int n = mlt__fmt_double(tmp, sizeof tmp, v);
        mlt__buf_append(b, tmp, (size_t)n);
    }
}

/* ---- strings ---- */

char *mlt__strdup(const char *s)
{
    return s ? mlt__strndup(s, strlen(s)) : NULL;
}

char *mlt__strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

size_t mlt__utf8_cut(const char *s, size_t len, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = len < max ? len : max;
    size_t lead = n; /* back over the last character's continuation bytes (10xxxxxx) */
    while (lead > 0 && n - lead < 3 && (u[lead - 1] & 0xC0) == 0x80) {
        lead--;
    }
    if (lead == 0 || u[lead - 1] < 0xC0) {
        return n; /* it ends with ASCII, or with continuation bytes no lead byte announced */
    }
    lead--;
    size_t announced = u[lead] >= 0xF0 ? 4 : u[lead] >= 0xE0 ? 3 : 2;
    bool goes_on = n < len && (u[n] & 0xC0) == 0x80;
    return n - lead < announced || goes_on ? lead : n;
}

char *mlt__aprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return NULL;
    }
    char *p = malloc((size_t)n + 1);
    if (p) {
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return p;
}

/* ---- thread-local failure detail ---- */

#define MLT__FAIL_LEN 4096 /* what `mltrack sync` says waits for what, one line a journal */
static _Thread_local char fail_msg[MLT__FAIL_LEN];

const char *mlt_last_error(void)
{
    return fail_msg;
}

mlt_err mlt__fail(mlt_err err, const char *fmt, ...)
{
    char tmp[MLT__FAIL_LEN + 1]; /* a message may quote the one it replaces */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    len = mlt__utf8_cut(tmp, len, sizeof fail_msg - 1);
    memcpy(fail_msg, tmp, len);
    fail_msg[len] = '\0';
    return err;
}

mlt_err mlt__errbuf(char *errbuf, size_t errlen, mlt_err err)
{
    if (err != MLT_OK && errbuf && errlen) {
        size_t len = mlt__utf8_cut(fail_msg, strlen(fail_msg), errlen - 1);
        memcpy(errbuf, fail_msg, len);
        errbuf[len] = '\0';
    }
    return err;
}

void mlt__fail_set(const char *msg)
{
    snprintf(fail_msg, sizeof fail_msg, "%s", msg ? msg : "");
}

void mlt__fail_clear(void)
{
    fail_msg[0] = '\0';
}

/* ---- clocks ---- */

int64_t mlt__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mlt__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

bool mlt__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (mlt__mono_ns() >= deadline_ns) {
        return false;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000),
                          .tv_nsec = (long)(deadline_ns % 1000000000)};
    return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

void mlt__sleep_ms(int64_t ms)
{
    if (ms <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---- randomness and UUIDs ---- */

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_state;

/* splitmix64: only a fallback when getrandom() is unavailable, and for jitter. */
static uint64_t rng_next_locked(void)
{
    if (rng_state == 0) {
        rng_state = (uint64_t)mlt__mono_ns() ^ ((uint64_t)mlt__now_ms() << 20) ^
                    (uint64_t)(uintptr_t)&rng_state;
    }
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void random_bytes(unsigned char *out, size_t n)
{
#ifdef HAVE_GETRANDOM
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(out + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)r;
    }
    if (got == n) {
        return;
    }
#endif
    pthread_mutex_lock(&rng_lock);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = rng_next_locked();
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(out + i, &r, k);
    }
    pthread_mutex_unlock(&rng_lock);
}

void mlt__uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    random_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

double mlt__rand01(void)
{
    pthread_mutex_lock(&rng_lock);
    uint64_t r = rng_next_locked();
    pthread_mutex_unlock(&rng_lock);
    return (double)(r >> 11) / 9007199254740992.0;
}

/* ---- diagnostics ---- */

void mlt__log(const mlt__logger *lg, int level, const char *fmt, ...)
{
    if (!lg || !lg->fn) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lg->fn(level, msg, lg->userdata);
}
