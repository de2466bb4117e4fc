/*
 * lease.c - the delivery lease of a journal, in files (see lease.h), and the keeper thread that
 * renews leases.
 */
#include "config.h"

#include "lease.h"

#include "crc32c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LEASE_TEXT_MAX 256
#define GEN_LIMIT (UINT64_C(1) << 62) /* generations stay below (one a second: forever) */
#define NAME_PREFIX "lease."

static const char *const role_words[] = {"writer", "relay"};
static const char *const state_words[] = {"delivering", "away", "released"};

struct mlt__lease {
    char *dir;
    mlt__lease_role role;
    int64_t ms;
    uint64_t id;
    char host[64];
    pthread_mutex_t mu; /* everything below but the atomics; held during the lease's I/O */
    uint64_t gen;       /* held, or the newest seen */
    bool held;
    uint64_t beat;
    mlt__lease_state state;
    _Atomic int64_t valid_until_ns; /* monotonic; 0 when not held */
    atomic_bool lost;
    /* another party's generation as first seen unchanged: its text and since when */
    uint64_t seen_gen;
    char seen_text[LEASE_TEXT_MAX];
    size_t seen_len;
    int64_t seen_since_ns;
    bool patient;            /* a lease never taken is left to a live writer for lease_ms */
    int64_t settle_until_ns; /* taken over from a stale holder: not valid before this */
};

/* ---- the file's text ---- */

static int find_word(const char *const *words, size_t n, const char *w)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(words[i], w) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static bool host_ok(const char *h)
{
    if (!*h || strlen(h) >= sizeof((mlt__lease_info *)0)->host) {
        return false;
    }
    for (; *h; h++) {
        if (*h <= ' ' || *h > '~') {
            return false;
        }
    }
    return true;
}

int mlt__lease_format(const mlt__lease_info *in, char *out, size_t len)
{
    if ((unsigned)in->role > MLT__LEASE_RELAY || (unsigned)in->state > MLT__LEASE_RELEASED ||
        !host_ok(in->host)) {
        return -1;
    }
    int n = snprintf(out, len, "%s %" PRIu64 " %016" PRIx64 " %s %ld %" PRIu64 " %s %s",
                     MLT__LEASE_MAGIC, in->gen, in->id, role_words[in->role], in->pid, in->beat,
                     state_words[in->state], in->host);
    if (n < 0 || (size_t)n + 11 > len) {
        return -1;
    }
    uint32_t crc = mlt__crc32c(0, out, (size_t)n);
    n += snprintf(out + n, len - (size_t)n, " %08" PRIx32 "\n", crc);
    return n;
}

int mlt__lease_parse(const char *text, size_t len, mlt__lease_info *out)
{
    char buf[LEASE_TEXT_MAX];
    /* one line: "<fields> <crc>\n", nothing after it */
    if (len < 12 || len >= sizeof buf || text[len - 1] != '\n' || memchr(text, '\0', len) != NULL ||
        memchr(text, '\n', len - 1) != NULL) {
        return -1;
    }
    memcpy(buf, text, len - 1);
    buf[len - 1] = '\0';
    char *sp = strrchr(buf, ' ');
    if (!sp || strlen(sp + 1) != 8) {
        return -1;
    }
    if (strspn(sp + 1, "0123456789abcdef") != 8) {
        return -1;
    }
    unsigned long long crc = strtoull(sp + 1, NULL, 16);
    if (crc != mlt__crc32c(0, buf, (size_t)(sp - buf))) {
        return -1;
    }
    *sp = '\0';
    char magic[32], gens[32], id[32], role[16], pids[16], beats[32], state[16], host[80];
    int used = 0;
    if (sscanf(buf, "%31s %31s %31s %15s %15s %31s %15s %79s%n", magic, gens, id, role, pids, beats,
               state, host, &used) != 8 ||
        (size_t)used != strlen(buf) || strcmp(magic, MLT__LEASE_MAGIC) != 0 || strlen(id) != 16 ||
        strspn(id, "0123456789abcdef") != 16) {
        return -1;
    }
    /* plain decimal numbers: no sign, no leading zero, in range */
    const char *nums[3] = {gens, pids, beats};
    unsigned long long vals[3];
    for (int k = 0; k < 3; k++) {
        size_t nl = strlen(nums[k]);
        if (nl == 0 || nl > 20 || strspn(nums[k], "0123456789") != nl ||
            (nums[k][0] == '0' && nl > 1)) {
            return -1;
        }
        errno = 0;
        vals[k] = strtoull(nums[k], NULL, 10);
        if (errno) {
            return -1;
        }
    }
    unsigned long long gen = vals[0], pid = vals[1], beat = vals[2];
    if (gen == 0 || gen >= GEN_LIMIT || pid == 0 || pid > INT_MAX) {
        return -1;
    }
    int r = find_word(role_words, 2, role), s = find_word(state_words, 3, state);
    if (r < 0 || s < 0 || !host_ok(host)) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->gen = gen;
    out->id = strtoull(id, NULL, 16);
    out->role = (mlt__lease_role)r;
    out->pid = (long)pid;
    out->beat = beat;
    out->state = (mlt__lease_state)s;
    snprintf(out->host, sizeof out->host, "%s", host);
    return 0;
}

/* ---- files ---- */

static int gen_path(const mlt__lease *l, uint64_t gen, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/" NAME_PREFIX "%020" PRIu64, l->dir, gen);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* Reads generation gen's file: 1 with its text in buf (*n bytes), 0 when there is none,
 * -1 when the directory is gone, -2 on another failure (errno). */
static int read_gen(const mlt__lease *l, uint64_t gen, char *buf, size_t *n)
{
    char path[PATH_MAX];
    if (gen_path(l, gen, path, sizeof path) != 0) {
        errno = ENAMETOOLONG;
        return -2;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* a fresh open: close-to-open on NFS */
    if (fd < 0) {
        if (errno != ENOENT) {
            return -2;
        }
        struct stat st;
        return stat(l->dir, &st) == 0 ? 0 : -1;
    }
    ssize_t r;
    do {
        r = read(fd, buf, LEASE_TEXT_MAX);
    } while (r < 0 && errno == EINTR);
    close(fd);
    if (r < 0) {
        return -2;
    }
    *n = (size_t)r;
    return 1;
}

/* The largest generation whose file the directory lists (0: none; -1: cannot list). */
static int64_t scan_max(const mlt__lease *l)
{
    DIR *d = opendir(l->dir);
    if (!d) {
        return -1;
    }
    uint64_t max = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, NAME_PREFIX, strlen(NAME_PREFIX)) == 0 &&
            strlen(nm) == strlen(NAME_PREFIX) + 20 &&
            strspn(nm + strlen(NAME_PREFIX), "0123456789") == 20) {
            uint64_t g = strtoull(nm + strlen(NAME_PREFIX), NULL, 10);
            if (g < GEN_LIMIT) { /* a stray name past it is no generation of ours */
                max = g > max ? g : max;
            }
        }
    }
    closedir(d);
    return (int64_t)max;
}

/* Writes info as a temporary file of ours in the directory: 0 with its path, -1. */
static int write_tmp(const mlt__lease *l, const mlt__lease_info *info, char *tmp, size_t len)
{
    char text[LEASE_TEXT_MAX];
    int n = mlt__lease_format(info, text, sizeof text);
    int m = snprintf(tmp, len, "%s/lease-tmp-%016" PRIx64, l->dir, l->id);
    if (n < 0 || m < 0 || (size_t)m >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    ssize_t w;
    do {
        w = write(fd, text, (size_t)n);
    } while (w < 0 && errno == EINTR);
    /* close, not fsync: the lease is about liveness, and a crash makes it stale anyway; on NFS
     * the close sends the bytes (close-to-open) */
    if (close(fd) != 0 || w != n) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void my_info(const mlt__lease *l, uint64_t gen, mlt__lease_info *out)
{
    memset(out, 0, sizeof *out);
    out->gen = gen;
    out->id = l->id;
    out->role = l->role;
    out->pid = (long)getpid();
    out->beat = l->beat;
    out->state = l->state;
    snprintf(out->host, sizeof out->host, "%s", l->host);
}

/* Whether the holder named by info is a dead process of this host. */
static bool holder_dead(const mlt__lease *l, const mlt__lease_info *info)
{
    if (strcmp(info->host, l->host) != 0 || info->pid == (long)getpid()) {
        return false;
    }
    return kill((pid_t)info->pid, 0) != 0 && errno == ESRCH;
}

static void set_held(mlt__lease *l, bool held, int64_t since_ns)
{
    l->held = held;
    /* after a takeover from a holder that went silent, not before the settle time: were it only
     * paused, its next renewal (every lease_ms / 5) finds the newer generation and it stops */
    bool settled = since_ns >= l->settle_until_ns;
    atomic_store(&l->valid_until_ns, held && settled ? since_ns + l->ms * 1000000 / 2 : 0);
}

/* ---- the lease ---- */

mlt__lease *mlt__lease_new(const char *dir, mlt__lease_role role, long long lease_ms)
{
    mlt__lease *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = mlt__strdup(dir))) {
        free(l);
        return NULL;
    }
    l->role = role;
    l->ms = lease_ms > 0 ? lease_ms : MLT__LEASE_MS;
    char u[37];
    mlt__uuid4(u);
    for (int i = 0, k = 0; u[i] && k < 16; i++) {
        if (u[i] != '-') {
            l->id = l->id << 4 | (uint64_t)(u[i] <= '9' ? u[i] - '0' : u[i] - 'a' + 10);
            k++;
        }
    }
    if (gethostname(l->host, sizeof l->host - 1) != 0 || !host_ok(l->host)) {
        snprintf(l->host, sizeof l->host, "unknown-host");
    }
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->valid_until_ns, 0);
    atomic_init(&l->lost, false);
    return l;
}

void mlt__lease_free(mlt__lease *l)
{
    if (!l) {
        return;
    }
    mlt__lease_release(l);
    pthread_mutex_destroy(&l->mu);
    free(l->dir);
    free(l);
}

void mlt__lease_set_patient(mlt__lease *l, bool patient)
{
    pthread_mutex_lock(&l->mu);
    l->patient = patient;
    pthread_mutex_unlock(&l->mu);
}

bool mlt__lease_valid(const mlt__lease *l)
{
    int64_t until = atomic_load(&((mlt__lease *)l)->valid_until_ns);
    return until != 0 && mlt__mono_ns() < until;
}

bool mlt__lease_lost(const mlt__lease *l)
{
    return atomic_load(&((mlt__lease *)l)->lost);
}

uint64_t mlt__lease_gen(const mlt__lease *l)
{
    pthread_mutex_lock(&((mlt__lease *)l)->mu);
    uint64_t g = l->gen;
    pthread_mutex_unlock(&((mlt__lease *)l)->mu);
    return g;
}

/* Creates generation gen as ours (caller holds mu): TAKEN, OTHER (another made it first: *other
 * filled when it reads), GONE or ERROR. */
static mlt__lease_take_result create_gen(mlt__lease *l, uint64_t gen, mlt__lease_info *other,
                                         bool settle)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    l->beat = 0;
    l->state = MLT__LEASE_DELIVERING;
    mlt__lease_info info;
    my_info(l, gen, &info);
    int64_t start = mlt__mono_ns();
    if (gen_path(l, gen, path, sizeof path) != 0 || write_tmp(l, &info, tmp, sizeof tmp) != 0) {
        if (errno == ENOENT) {
            return MLT__LEASE_GONE;
        }
        mlt__fail(MLT_ERR_IO, "cannot write the delivery lease in %s: %s", l->dir, strerror(errno));
        return MLT__LEASE_ERROR;
    }
    int rc = link(tmp, path), e = errno;
    if (rc != 0 && (e == EPERM || e == ENOTSUP || e == EOPNOTSUPP || e == ENOSYS || e == EMLINK)) {
        /* no hard links here: an exclusive create, written after (a reader meets it empty or
         * torn for a moment: not a lease it can read, so it waits) */
        unlink(tmp);
        char text[LEASE_TEXT_MAX];
        int n = mlt__lease_format(&info, text, sizeof text);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        e = errno;
        rc = fd < 0 ? -1 : 0;
        if (fd >= 0) {
            rc = write(fd, text, (size_t)n) == n ? 0 : -1;
            e = errno;
            close(fd);
        }
    } else {
        unlink(tmp);
    }
    if (rc != 0 && e == EEXIST) {
        /* another made it first, or our own link's reply was lost (NFS): read it back */
        char buf[LEASE_TEXT_MAX];
        size_t n = 0;
        mlt__lease_info got;
        if (other) {
            memset(other, 0, sizeof *other);
            other->gen = gen;
        }
        if (read_gen(l, gen, buf, &n) == 1 && mlt__lease_parse(buf, n, &got) == 0) {
            if (got.id == l->id) {
                rc = 0;
            } else if (other) {
                *other = got;
            }
        }
        if (rc != 0) {
            l->gen = gen;
            return MLT__LEASE_OTHER;
        }
    } else if (rc != 0) {
        if (e == ENOENT) {
            return MLT__LEASE_GONE;
        }
        mlt__fail(MLT_ERR_IO, "cannot take the delivery lease in %s: %s", l->dir, strerror(e));
        return MLT__LEASE_ERROR;
    }
    l->gen = gen;
    l->settle_until_ns = settle ? start + l->ms * 1000000 / 2 : 0;
    set_held(l, true, start);
    atomic_store(&l->lost, false);
    if (gen > 1) {
        char old[PATH_MAX];
        if (gen_path(l, gen - 1, old, sizeof old) == 0) {
            unlink(old); /* the generation taken over */
        }
    }
    return MLT__LEASE_TAKEN;
}

/* The newest generation (caller holds mu): from the one known, upwards; the directory is listed
 * only when nothing is known or the known one is gone. *g gets it (0: none) and buf its text (*n
 * bytes). Returns 1 (read), 0 (none), -1 (the directory is gone), -2 (cannot read). */
static int newest(mlt__lease *l, int64_t *gp, char *buf, size_t *n)
{
    int64_t g = (int64_t)l->gen;
    if (g == 0 && (g = scan_max(l)) < 0) {
        return errno == ENOENT ? -1 : -2;
    }
    for (int tries = 0; tries < 64; tries++) {
        size_t m = 0;
        char nb[LEASE_TEXT_MAX];
        int rn = read_gen(l, (uint64_t)g + 1, nb, &m);
        if (rn == 1) {
            g++;
            continue;
        }
        if (rn < 0) {
            return rn;
        }
        break;
    }
    int r = 0;
    if (g > 0 && (r = read_gen(l, (uint64_t)g, buf, n)) == 0) {
        int64_t s = scan_max(l); /* removed by a newer one: list again */
        g = s > 0 ? s : 0;
        r = g > 0 ? read_gen(l, (uint64_t)g, buf, n) : 0;
    }
    *gp = r == 1 ? g : 0;
    return r;
}

int mlt__lease_peek(mlt__lease *l, mlt__lease_info *holder)
{
    pthread_mutex_lock(&l->mu);
    int64_t g = 0;
    char buf[LEASE_TEXT_MAX];
    size_t n = 0;
    int r = newest(l, &g, buf, &n);
    mlt__lease_info info;
    int res = r == 1 && mlt__lease_parse(buf, n, &info) == 0 && info.gen == (uint64_t)g &&
              info.id != l->id && info.state != MLT__LEASE_RELEASED;
    if (res && holder) {
        *holder = info;
    }
    pthread_mutex_unlock(&l->mu);
    return res;
}

mlt__lease_take_result mlt__lease_take(mlt__lease *l, mlt__lease_info *other, bool *fresh)
{
    if (fresh) {
        *fresh = false;
    }
    pthread_mutex_lock(&l->mu);
    if (l->held && mlt__lease_valid(l)) {
        pthread_mutex_unlock(&l->mu);
        return MLT__LEASE_TAKEN;
    }
    int64_t g = 0;
    char buf[LEASE_TEXT_MAX];
    size_t n = 0;
    int r = newest(l, &g, buf, &n);
    if (r < 0) {
        if (r == -2) {
            mlt__fail(MLT_ERR_IO, "cannot read the delivery lease in %s: %s", l->dir,
                      strerror(errno));
        }
        pthread_mutex_unlock(&l->mu);
        return r == -1 ? MLT__LEASE_GONE : MLT__LEASE_ERROR;
    }
    if (l->held && g > 0 && (uint64_t)g != l->gen) {
        /* ours lapsed and another took a newer generation: lost, and never written again */
        set_held(l, false, 0);
        atomic_store(&l->lost, true);
    }
    mlt__lease_info info;
    bool parsed = r == 1 && mlt__lease_parse(buf, n, &info) == 0 && info.gen == (uint64_t)g;
    int64_t now = mlt__mono_ns();
    mlt__lease_take_result res;
    bool renew = false;
    if ((g == 0 || r == 0) && l->patient) {
        /* never taken, and a live writer may still take it first: only once it has not for
         * lease_ms (it cannot reach the server, or never tries) */
        if (l->seen_gen != 0 || l->seen_since_ns == 0) {
            l->seen_gen = 0;
            l->seen_len = 0;
            l->seen_since_ns = now;
        }
        if (now - l->seen_since_ns >= l->ms * 1000000) {
            res = create_gen(l, (uint64_t)g + 1, other, false);
        } else {
            if (other) {
                memset(other, 0, sizeof *other);
            }
            res = MLT__LEASE_OTHER;
        }
    } else if (g == 0 || r == 0) {
        res = create_gen(l, (uint64_t)g + 1, other, false); /* never taken */
    } else if (parsed && info.id == l->id && info.state != MLT__LEASE_RELEASED &&
               (uint64_t)g == l->gen) {
        /* ours, lapsed in memory only (a renewal late): held again if a renewal finds no newer
         * generation */
        l->beat = info.beat;
        l->held = true; /* valid again once the renewal below finds no newer generation */
        res = MLT__LEASE_TAKEN;
        renew = true;
    } else if (parsed && (info.state == MLT__LEASE_RELEASED || holder_dead(l, &info))) {
        res = create_gen(l, (uint64_t)g + 1, other, false);
        if (res == MLT__LEASE_TAKEN && fresh) {
            *fresh = info.id != l->id;
        }
    } else {
        if ((uint64_t)g != l->seen_gen || n != l->seen_len || memcmp(buf, l->seen_text, n) != 0) {
            l->seen_gen = (uint64_t)g;
            memcpy(l->seen_text, buf, n);
            l->seen_len = n;
            l->seen_since_ns = now;
        }
        if (now - l->seen_since_ns >= l->ms * 1000000) {
            res = create_gen(l, (uint64_t)g + 1, other, true); /* unchanged: stale */
            if (res == MLT__LEASE_TAKEN && fresh) {
                *fresh = true;
            }
        } else {
            l->gen = (uint64_t)g;
            if (other) {
                if (parsed) {
                    *other = info;
                } else {
                    memset(other, 0, sizeof *other);
                    other->gen = (uint64_t)g;
                }
            }
            res = MLT__LEASE_OTHER;
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (renew && (mlt__lease_renew(l) != MLT_OK || !mlt__lease_valid(l))) {
        res = MLT__LEASE_OTHER;
    }
    return res;
}

/* Whether a generation newer than ours exists (caller holds mu): the next one, or any, since the
 * next may have been taken over in its turn and removed. 1, 0, or -1 (cannot list: errno). */
static int newer_exists(const mlt__lease *l)
{
    char next[PATH_MAX];
    struct stat st;
    if (gen_path(l, l->gen + 1, next, sizeof next) == 0 && stat(next, &st) == 0) {
        return 1;
    }
    int64_t max = scan_max(l);
    return max < 0 ? -1 : (uint64_t)max > l->gen;
}

/* Writes our generation's file again (caller holds mu): 0, or -1 when it is lost (errno ESTALE:
 * our file removed by the party that took the next generation, or a newer generation there;
 * ENOENT: the directory gone) or cannot be written. */
static int rewrite(mlt__lease *l)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    struct stat st;
    if (gen_path(l, l->gen, path, sizeof path) != 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) { /* taken over (the taker removes the generation before its own) */
            errno = stat(l->dir, &st) == 0 ? ESTALE : ENOENT;
        }
        return -1;
    }
    mlt__lease_info info;
    my_info(l, l->gen, &info);
    if (write_tmp(l, &info, tmp, sizeof tmp) != 0) {
        return -1;
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    int newer = newer_exists(l);
    if (newer > 0) {
        unlink(path); /* taken over while we were away: ours is no lease any more */
        errno = ESTALE;
    }
    return newer == 0 ? 0 : -1; /* -1 and not listed: it lapses unless a later renewal lists */
}

mlt_err mlt__lease_renew(mlt__lease *l)
{
    pthread_mutex_lock(&l->mu);
    if (!l->held) {
        pthread_mutex_unlock(&l->mu);
        return MLT_OK;
    }
    int64_t start = mlt__mono_ns();
    l->beat++;
    mlt_err err = MLT_OK;
    if (rewrite(l) == 0) {
        set_held(l, true, start);
    } else if (errno == ESTALE || errno == ENOENT) {
        set_held(l, false, 0);
        atomic_store(&l->lost, true);
        err = MLT_ERR_STATE;
    } else {
        err = MLT_ERR_IO; /* the lease lapses unless a later renewal does better */
    }
    pthread_mutex_unlock(&l->mu);
    return err;
}

void mlt__lease_set_state(mlt__lease *l, mlt__lease_state st)
{
    pthread_mutex_lock(&l->mu);
    bool changed = l->state != st;
    l->state = st;
    if (changed && l->held) {
        l->beat++;
        (void)rewrite(l); /* a failure is the next renewal's */
    }
    pthread_mutex_unlock(&l->mu);
}

void mlt__lease_release(mlt__lease *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->held) {
        l->state = MLT__LEASE_RELEASED;
        l->beat++;
        (void)rewrite(l);
        set_held(l, false, 0);
    }
    pthread_mutex_unlock(&l->mu);
}

/* ---- the keeper ---- */

struct mlt__lease_keeper {
    pthread_mutex_t mu; /* the list and stop; held during a round of renewals */
    pthread_cond_t cv;
    mlt__lease **leases;
    size_t n, cap;
    bool stop;
    int period_ms;
    pthread_t thread;
};

static void *keeper_main(void *arg)
{
    mlt__lease_keeper *k = arg;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        for (size_t i = 0; i < k->n; i++) {
            if (mlt__lease_renew(k->leases[i]) != MLT_OK) {
                /* it lapses, unless the next renewal does better: its holder stops at once */
            }
        }
        mlt__cond_wait_until(&k->cv, &k->mu, mlt__deadline_ms(k->period_ms));
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

mlt__lease_keeper *mlt__lease_keeper_new(int period_ms)
{
    mlt__lease_keeper *k = calloc(1, sizeof *k);
    if (!k) {
        return NULL;
    }
    k->period_ms = period_ms > 0 ? period_ms : MLT__LEASE_MS / 5;
    pthread_mutex_init(&k->mu, NULL);
    mlt__cond_init(&k->cv);
    if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return NULL;
    }
    return k;
}

mlt_err mlt__lease_keeper_add(mlt__lease_keeper *k, mlt__lease *l)
{
    pthread_mutex_lock(&k->mu);
    mlt_err err = MLT__GROW(k->leases, k->cap, k->n + 1);
    if (err == MLT_OK) {
        k->leases[k->n++] = l;
    }
    pthread_mutex_unlock(&k->mu);
    return err;
}

void mlt__lease_keeper_remove(mlt__lease_keeper *k, mlt__lease *l)
{
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n; i++) {
        if (k->leases[i] == l) {
            k->leases[i] = k->leases[--k->n];
            break;
        }
    }
    pthread_mutex_unlock(&k->mu);
}

void mlt__lease_keeper_free(mlt__lease_keeper *k)
{
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    free(k->leases);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
