/*
 * journal_art.c - a journal's artifact snapshots: the bytes an ARTIFACT record names, kept in
 * art/<seq> from the call until the upload is acknowledged. Made under a temporary name (a
 * reflink or a copy, hashed as it is made), synced as the fsync mode says, renamed to the number
 * its record gets and only then is the record written, all under the journal's lock. At open,
 * temporary and delivered snapshots go; the others count towards the queue's size.
 */
#include "config.h"

#include "digest.h"
#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/fs.h>
#endif

#define ART_DIR "art"
#define COPY_CHUNK (1u << 20)
#define PARALLEL_BYTES                                                                             \
    (8u << 20) /* a copy at least this large is hashed on a thread of its own                      \
                */

static uint64_t name_seq(const char *name);

static int art_path(const mlt__journal *j, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/" ART_DIR "/%s", j->dir, name);
    return FITS(n, len) ? 0 : -1;
}

static void seq_name(uint64_t seq, char out[32])
{
    snprintf(out, 32, "%020" PRIu64, seq);
}

/* The art directory, made once (durable under fsync interval and always). */
static MLT__MUST_USE mlt_err art_dir(mlt__journal *j)
{
    if (j->art_dir_made) {
        return MLT_OK;
    }
    char path[PATH_MAX];
    if (mlt__j_path_in(j, ART_DIR, path, sizeof path) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        return mlt__j_sys_err("cannot create the artifact directory", path);
    }
    if (j->mode != MLT__FSYNC_NONE && mlt__j_fsync_dir(j->dir) != 0) {
        return mlt__j_sys_err("cannot sync the journal directory", j->dir);
    }
    j->art_dir_made = true;
    return MLT_OK;
}

/* ---- the snapshot: a copy, hashed as it is made ---- */

/* The hasher of a large copy: a thread that reads the copy (never the source, which may change)
 * behind the copier and hashes it, so that copying and hashing take one core each. */
typedef struct hasher {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;          /* the copy */
    uint64_t copied; /* bytes the copier has written (under mu) */
    bool done;       /* the copier is finished, copied is the size (under mu) */
    mlt__sha256 *sha;
    mlt_err err;
    char why[200];
} hasher;

static void *hash_main(void *arg)
{
    hasher *h = arg;
    unsigned char *buf = malloc(COPY_CHUNK);
    uint64_t at = 0;
    if (!buf) {
        h->err = MLT_ERR_NOMEM;
        snprintf(h->why, sizeof h->why, "out of memory");
    }
    while (h->err == MLT_OK) {
        pthread_mutex_lock(&h->mu);
        while (h->copied == at && !h->done) {
            pthread_cond_wait(&h->cv, &h->mu);
        }
        uint64_t upto = h->copied;
        bool last = h->done && upto == at;
        pthread_mutex_unlock(&h->mu);
        if (last) {
            break;
        }
        while (at < upto && h->err == MLT_OK) {
            size_t want = upto - at < COPY_CHUNK ? (size_t)(upto - at) : COPY_CHUNK;
            ssize_t n = pread(h->fd, buf, want, (off_t)at);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                h->err = MLT_ERR_IO;
                snprintf(h->why, sizeof h->why, "cannot read the artifact snapshot back: %s",
                         n < 0 ? strerror(errno) : "it is shorter than written");
                break;
            }
            mlt__sha256_update(h->sha, buf, (size_t)n);
            at += (uint64_t)n;
        }
    }
    free(buf);
    return NULL;
}

static void hasher_advance(hasher *h, uint64_t copied, bool done)
{
    if (!h) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->copied = copied;
    h->done = done;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Copies the file src_fd (from its offset to its end) into dst: in the kernel
 * (copy_file_range: no bytes through this process; a server-side copy on NFS) where it can,
 * else by read and write. *copied follows; h (may be NULL) is told. */
static MLT__MUST_USE mlt_err copy_file(int dst, int src_fd, uint64_t expect, const char *tmp,
                                       hasher *h, uint64_t *copied)
{
    bool kernel = true;
    unsigned char *buf = NULL;
    mlt_err err = MLT_OK;
    for (;;) {
        ssize_t n;
        if (kernel) {
            n = copy_file_range(src_fd, NULL, dst, NULL, COPY_CHUNK * 16, 0);
            if (n < 0 &&
                (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                 errno == EBADF) &&
                *copied == 0) {
                kernel = false; /* not between these files: by hand */
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(COPY_CHUNK))) {
                err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
                break;
            }
            n = read(src_fd, buf, COPY_CHUNK);
            if (n > 0 && mlt__j_write_all(dst, buf, (size_t)n) != 0) {
                err = mlt__j_sys_err("cannot write the artifact snapshot", tmp);
                break;
            }
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int e = errno;
            err = e == EFBIG || e == ENOSPC || e == EDQUOT
                      ? mlt__fail(MLT_ERR_IO, "cannot write the artifact snapshot %s: %s", tmp,
                                  strerror(e))
                      : mlt__fail(MLT_ERR_IO, "cannot read the file: %s", strerror(e));
            break;
        }
        if (n == 0 && kernel && *copied == 0 && expect > 0) {
            kernel = false; /* a file the kernel copies as empty (some FUSE, /proc): by hand */
            continue;
        }
        if (n == 0) {
            break;
        }
        *copied += (uint64_t)n;
        hasher_advance(h, *copied, false);
    }
    free(buf);
    return err;
}

/* Makes dst a copy of src and its SHA-256: bytes in memory are hashed as they are written; a
 * large file is copied while a hasher thread reads the copy behind; a small one is copied,
 * then hashed. */
static MLT__MUST_USE mlt_err copy_into(int dst, const mlt__art_src *src, const char *tmp,
                                       uint64_t *bytes, char sha[65])
{
    mlt__sha256 *c = mlt__sha256_new();
    if (!c) {
        return MLT_ERR_NOMEM;
    }
    if (src->fd < 0) {
        mlt__sha256_update(c, src->data, (size_t)src->len);
        if (src->len && mlt__j_write_all(dst, src->data, (size_t)src->len) != 0) {
            mlt__sha256_free(c);
            return mlt__j_sys_err("cannot write the artifact snapshot", tmp);
        }
        *bytes = src->len;
        mlt__sha256_hex(c, sha);
        return MLT_OK;
    }
    uint64_t copied = 0;
    if (src->len < PARALLEL_BYTES) {
        mlt__sha256_free(c);
        mlt_err err = copy_file(dst, src->fd, src->len, tmp, NULL, &copied);
        *bytes = copied;
        return err == MLT_OK ? mlt__sha256_fd(dst, 0, copied, sha) : err;
    }
    hasher h = {.fd = dst, .sha = c, .err = MLT_OK};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    bool threaded = pthread_create(&h.thread, NULL, hash_main, &h) == 0;
    mlt_err err = copy_file(dst, src->fd, src->len, tmp, threaded ? &h : NULL, &copied);
    if (threaded) {
        hasher_advance(&h, copied, true);
        pthread_join(h.thread, NULL);
    }
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    if (err == MLT_OK && h.err != MLT_OK) {
        err = mlt__fail(h.err, "%s", h.why);
    }
    *bytes = copied;
    if (err == MLT_OK && threaded) {
        mlt__sha256_hex(c, sha); /* frees c */
        return MLT_OK;
    }
    mlt__sha256_free(c);
    return err != MLT_OK ? err : mlt__sha256_fd(dst, 0, copied, sha);
}

/* A reflink of the whole of src->fd into dst, hashed by reading the clone (which nothing
 * else writes): MLT_OK, or MLT_ERR_NOT_FOUND when the file system makes no reflink here. */
static MLT__MUST_USE mlt_err clone_into(int dst, const mlt__art_src *src, uint64_t *bytes,
                                        char sha[65])
{
#ifdef FICLONE
    off_t at = src->fd >= 0 ? lseek(src->fd, 0, SEEK_CUR) : -1;
    if (src->fd < 0 || at != 0 || ioctl(dst, FICLONE, src->fd) != 0) {
        return MLT_ERR_NOT_FOUND;
    }
    struct stat st;
    if (fstat(dst, &st) != 0) {
        return mlt__fail(MLT_ERR_IO, "cannot read the artifact snapshot: %s", strerror(errno));
    }
    *bytes = (uint64_t)st.st_size;
    return mlt__sha256_fd(dst, 0, *bytes, sha);
#else
    (void)dst;
    (void)src;
    (void)bytes;
    (void)sha;
    return MLT_ERR_NOT_FOUND;
#endif
}

mlt_err mlt__journal_put_artifact(mlt__journal *j, uint32_t run_no, const char *path,
                                  const mlt__art_src *src, int64_t time_ms, uint64_t *bytes,
                                  char sha[65])
{
    static _Atomic uint64_t counter;
    if (j->read_only) {
        return mlt__fail(MLT_ERR_STATE, "journal %s does not take appends", j->dir);
    }
    pthread_mutex_lock(&j->mu);
    mlt_err err = art_dir(j);
    pthread_mutex_unlock(&j->mu);
    if (err != MLT_OK) {
        return err;
    }
    char name[64], tmp[PATH_MAX];
    snprintf(name, sizeof name, "tmp-%ld-%" PRIu64, (long)getpid(), atomic_fetch_add(&counter, 1));
    if (art_path(j, name, tmp, sizeof tmp) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    int dst = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600); /* read back: hashed */
    if (dst < 0) {
        return mlt__j_sys_err("cannot create the artifact snapshot", tmp);
    }
    /* the snapshot, outside the journal's lock: appends go on meanwhile */
    err = clone_into(dst, src, bytes, sha);
    if (err == MLT_ERR_NOT_FOUND && ftruncate(dst, 0) != 0) { /* a clone may stop half way */
        err = mlt__j_sys_err("cannot write the artifact snapshot", tmp);
    } else if (err == MLT_ERR_NOT_FOUND) {
        err = copy_into(dst, src, tmp, bytes, sha);
    }
    if (err == MLT_OK && j->mode == MLT__FSYNC_ALWAYS && fdatasync(dst) != 0) {
        err = mlt__j_sys_err("cannot sync the artifact snapshot", tmp);
    } else if (err == MLT_OK && j->mode == MLT__FSYNC_INTERVAL) {
        /* handed to the disk now, not waited for; the next group commit syncs it (and the art
         * directory) before the segment, as for records: a power loss before then loses it
         * with the records of that interval, and a torn one is never uploaded as if whole */
        (void)sync_file_range(dst, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    close(dst);
    if (err != MLT_OK) {
        unlink(tmp);
        return err;
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_artifact(&b, run_no, path, *bytes, sha, time_ms);
    if (b.oom) {
        unlink(tmp);
        mlt__buf_free(&b);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    /* The snapshot takes the number its record will have: the ring is drained first (its
     * points come before), then nothing else appends until the record is written. */
    pthread_mutex_lock(&j->mu);
    char final[PATH_MAX], seqs[32];
    err = j->wfd < 0 ? mlt__fail(MLT_ERR_STATE, "journal %s does not take appends", j->dir)
                     : mlt__j_drain_locked(j, false, NULL, NULL);
    if (err == MLT_OK && j->last_seq == UINT64_MAX) {
        err = mlt__j_used_up(j);
    }
    uint64_t seq = j->last_seq + 1;
    seq_name(seq, seqs);
    if (err == MLT_OK && art_path(j, seqs, final, sizeof final) != 0) {
        err = mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    bool renamed = false;
    if (err == MLT_OK && rename(tmp, final) != 0) {
        err = mlt__j_sys_err("cannot name the artifact snapshot", final);
    }
    renamed = err == MLT_OK;
    if (err == MLT_OK && j->mode == MLT__FSYNC_ALWAYS) {
        char dir[PATH_MAX];
        if (mlt__j_path_in(j, ART_DIR, dir, sizeof dir) != 0 || mlt__j_fsync_dir(dir) != 0) {
            err = mlt__j_sys_err("cannot sync the artifact directory of", j->dir);
        }
    }
    uint64_t got = 0;
    if (err == MLT_OK) {
        err = mlt__j_append_locked(j, MLT__REC_ARTIFACT, b.data, b.len, false, &got);
        if (err == MLT_OK && got != seq) {
            /* cannot happen: nothing appended between; said rather than uploaded wrong */
            err = mlt__fail(MLT_ERR_CORRUPT,
                            "journal %s: artifact record %" PRIu64 " is not %" PRIu64, j->dir, got,
                            seq);
        }
        if (err != MLT_OK) {
            unlink(final);
        }
    } else {
        unlink(renamed ? final : tmp);
    }
    if (err == MLT_OK) {
        j->art_bytes += *bytes;
        j->art_unsynced = j->mode == MLT__FSYNC_INTERVAL;
        mlt__j_update_pending(j);
    }
    pthread_mutex_unlock(&j->mu);
    mlt__buf_free(&b);
    return err;
}

mlt_err mlt__journal_open_artifact(mlt__journal *j, const mlt__rec *r, bool verify, int *fd)
{
    char seqs[32], path[PATH_MAX];
    seq_name(r->seq, seqs);
    if (art_path(j, seqs, path, sizeof path) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        int e = errno;
        return mlt__fail(e == ENOENT ? MLT_ERR_NOT_FOUND : MLT_ERR_IO,
                         "the snapshot of artifact '%s' (%s): %s", r->key, path, strerror(e));
    }
    struct stat st;
    if (fstat(f, &st) != 0) {
        int e = errno;
        close(f);
        return mlt__fail(MLT_ERR_IO, "the snapshot of artifact '%s' (%s): %s", r->key, path,
                         strerror(e));
    }
    if ((uint64_t)st.st_size != r->bytes) {
        close(f);
        return mlt__fail(MLT_ERR_CORRUPT,
                         "the snapshot of artifact '%s' (%s) holds %lld bytes, not the %" PRIu64
                         " logged: it was torn by a crash",
                         r->key, path, (long long)st.st_size, r->bytes);
    }
    if (verify) {
        char sha[MLT__SHA256_HEX];
        mlt_err err = mlt__sha256_fd(f, 0, r->bytes, sha);
        if (err == MLT_OK && strcmp(sha, r->value) != 0) {
            err = mlt__fail(MLT_ERR_CORRUPT,
                            "the snapshot of artifact '%s' (%s) has SHA-256 %s, not the %s "
                            "logged: it was torn by a crash",
                            r->key, path, sha, r->value);
        }
        if (err != MLT_OK) {
            close(f);
            return err;
        }
    }
    *fd = f;
    return MLT_OK;
}

static void forget_bytes(mlt__journal *j, uint64_t bytes)
{
    pthread_mutex_lock(&j->mu);
    j->art_bytes = j->art_bytes > bytes ? j->art_bytes - bytes : 0;
    mlt__j_update_pending(j);
    pthread_mutex_unlock(&j->mu);
}

uint64_t mlt__journal_artifact_bytes(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t n = j->art_bytes;
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* Removes the snapshot of record seq (bytes long). Caller holds mu. */
static void remove_snapshot(mlt__journal *j, uint64_t seq, uint64_t bytes)
{
    char seqs[32], path[PATH_MAX];
    seq_name(seq, seqs);
    if (art_path(j, seqs, path, sizeof path) == 0 && unlink(path) == 0) {
        j->art_bytes = j->art_bytes > bytes ? j->art_bytes - bytes : 0;
        mlt__j_update_pending(j);
    }
    /* else gone already; one left by a failure here goes at the next open */
}

void mlt__journal_artifact_done(mlt__journal *j, const mlt__rec *r)
{
    pthread_mutex_lock(&j->mu);
    if (!j->acked_dirty || j->mode == MLT__FSYNC_NONE) { /* none: nothing waits for a sync */
        remove_snapshot(j, r->seq, r->bytes);
    } else if (MLT__GROW(j->art_done, j->cap_art_done, j->n_art_done + 1) == MLT_OK) {
        /* the ack is not on disk yet: a power loss would deliver the record again, and its
         * snapshot must still be there; it goes once the ack is synced */
        j->art_done[j->n_art_done++] = (mlt__art_done){r->seq, r->bytes};
    }
    pthread_mutex_unlock(&j->mu);
}

mlt_err mlt__j_art_sync_locked(mlt__journal *j)
{
    if (!j->art_unsynced) {
        return MLT_OK;
    }
    /* every snapshot not yet acked: the journal holds few at a time */
    char dir[PATH_MAX];
    if (mlt__j_path_in(j, ART_DIR, dir, sizeof dir) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    DIR *d = opendir(dir);
    if (!d) {
        return mlt__j_sys_err("cannot read", dir);
    }
    mlt_err err = MLT_OK;
    struct dirent *e;
    while (err == MLT_OK && (e = readdir(d))) {
        char path[PATH_MAX];
        if (!name_seq(e->d_name) || art_path(j, e->d_name, path, sizeof path) != 0) {
            continue;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && fdatasync(fd) != 0) {
            err = mlt__j_sys_err("cannot sync the artifact snapshot", path);
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    closedir(d);
    if (err == MLT_OK && mlt__j_fsync_dir(dir) != 0) {
        err = mlt__j_sys_err("cannot sync the artifact directory of", j->dir);
    }
    if (err == MLT_OK) {
        j->art_unsynced = false;
    }
    return err;
}

void mlt__j_art_acked_locked(mlt__journal *j)
{
    for (size_t i = 0; i < j->n_art_done; i++) {
        remove_snapshot(j, j->art_done[i].seq, j->art_done[i].bytes);
    }
    j->n_art_done = 0;
}

void mlt__j_art_set_aside(mlt__journal *j, uint64_t seq, uint64_t bytes, char *name_out, size_t len)
{
    char seqs[32], from[PATH_MAX], to[PATH_MAX], dead[48];
    seq_name(seq, seqs);
    snprintf(dead, sizeof dead, "dead-%s", seqs);
    name_out[0] = '\0';
    if (art_path(j, seqs, from, sizeof from) == 0 && art_path(j, dead, to, sizeof to) == 0 &&
        rename(from, to) == 0) {
        forget_bytes(j, bytes);
        snprintf(name_out, len, ART_DIR "/%s", dead);
    } else if (access(to, F_OK) == 0) {
        snprintf(name_out, len, ART_DIR "/%s", dead); /* set aside by an earlier try */
    }
}

/* Whether name is "art/dead-<20 digits>", the only name a dead letter gives its snapshot. */
static bool dead_name(const char *name)
{
    static const char pre[] = ART_DIR "/dead-";
    return strncmp(name, pre, sizeof pre - 1) == 0 && strlen(name) == sizeof pre - 1 + 20 &&
           strspn(name + sizeof pre - 1, "0123456789") == 20;
}

mlt_err mlt__journal_open_dead_artifact(mlt__journal *j, const char *snapshot, int *fd)
{
    char path[PATH_MAX];
    if (!dead_name(snapshot)) {
        return mlt__fail(MLT_ERR_NOT_FOUND, "'%.80s' is not the name of a snapshot set aside",
                         snapshot);
    }
    if (mlt__j_path_in(j, snapshot, path, sizeof path) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
        int e = errno;
        return mlt__fail(e == ENOENT ? MLT_ERR_NOT_FOUND : MLT_ERR_IO, "%s: %s", path, strerror(e));
    }
    *fd = f;
    return MLT_OK;
}

void mlt__journal_forget_dead_artifact(mlt__journal *j, const char *snapshot)
{
    char path[PATH_MAX];
    if (dead_name(snapshot) && mlt__j_path_in(j, snapshot, path, sizeof path) == 0) {
        unlink(path);
    }
}

/* A snapshot's number from its name, 0 when the name is not a number. */
static uint64_t name_seq(const char *name)
{
    if (strlen(name) != 20 || strspn(name, "0123456789") != 20) {
        return 0;
    }
    return strtoull(name, NULL, 10);
}

mlt_err mlt__j_art_recover(mlt__journal *j)
{
    char dir[PATH_MAX];
    if (mlt__j_path_in(j, ART_DIR, dir, sizeof dir) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path %s is too long", j->dir);
    }
    DIR *d = opendir(dir);
    if (!d) {
        return errno == ENOENT ? MLT_OK : mlt__j_sys_err("cannot read", dir);
    }
    j->art_dir_made = true;
    uint64_t acked = atomic_load(&j->acked_seq);
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        if (e->d_name[0] == '.' || strncmp(e->d_name, "dead-", 5) == 0 ||
            art_path(j, e->d_name, path, sizeof path) != 0) {
            continue;
        }
        uint64_t seq = name_seq(e->d_name);
        bool stale =
            strncmp(e->d_name, "tmp-", 4) == 0 || (seq && (seq <= acked || seq > j->last_seq));
        struct stat st;
        if (stale && !j->read_only) {
            unlink(path); /* made for a record never written, or delivered */
        } else if (!stale && seq && stat(path, &st) == 0) {
            j->art_bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return MLT_OK;
}

/* Removes the files of art/ whose names start with prefix ("": all of them, and art/ too). */
static void remove_in_art(mlt__journal *j, const char *prefix)
{
    char dir[PATH_MAX];
    if (mlt__j_path_in(j, ART_DIR, dir, sizeof dir) != 0) {
        return;
    }
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0 &&
            art_path(j, e->d_name, path, sizeof path) == 0) {
            unlink(path);
        }
    }
    closedir(d);
    if (!prefix[0]) {
        rmdir(dir);
    }
}

void mlt__j_art_forget_dead(mlt__journal *j)
{
    remove_in_art(j, "dead-");
}

void mlt__j_art_remove(mlt__journal *j)
{
    remove_in_art(j, "");
}
