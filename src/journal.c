/*
 * journal.c - the durable journal: its directory and lock, segment files of framed records,
 * recovery of a torn or corrupt tail at open, thread-safe appends with the fsync policy, and
 * close (see journal.h; journal_int.h has what its files share).
 *
 * Frame: u32 payload length, u32 CRC32C of (seq, type, payload), u64 seq, u8 type, payload.
 * Positions: bytes of frames counted from the first record that was unacked at open, so that
 * "bytes pending" is the appended position minus the acked one.
 */
#include "config.h"

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
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- structure ---- */

mlt_err mlt__j_sys_err(const char *what, const char *path)
{
    int e = errno;
    return mlt__fail(MLT_ERR_IO, "%s %s: %s", what, path, strerror(e));
}

/* Record numbers never wrap (0 is "nothing acked"): a journal whose last number is 2^64 - 1
 * (a damaged acked cursor) takes no more records. */
mlt_err mlt__j_used_up(const mlt__journal *j)
{
    return mlt__fail(MLT_ERR_QUEUE_FULL, "journal %s: its record numbers are used up", j->dir);
}

int mlt__j_path_in(const mlt__journal *j, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", j->dir, name);
    return FITS(n, len) ? 0 : -1;
}

void mlt__j_seg_name(uint64_t first_seq, char out[64])
{
    snprintf(out, 64, "seg-%020" PRIu64 ".log", first_seq);
}

int mlt__j_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int mlt__j_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Replaces dir/name with data: temp file, fsync, rename, fsync the directory (without sync:
 * temp file and rename only, atomic but not yet durable). */
mlt_err mlt__j_replace_file_opt(const mlt__journal *j, const char *name, const char *data,
                                size_t len, bool sync)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!FITS(n, sizeof tmp)) {
        return MLT_ERR_IO;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return MLT_ERR_IO;
    }
    if (mlt__j_write_all(fd, data, len) != 0 || (sync && fsync(fd) != 0)) {
        close(fd);
        unlink(tmp);
        return MLT_ERR_IO;
    }
    close(fd);
    if (rename(tmp, path) != 0 || (sync && mlt__j_fsync_dir(j->dir) != 0)) {
        return MLT_ERR_IO;
    }
    return MLT_OK;
}

mlt_err mlt__j_replace_file(const mlt__journal *j, const char *name, const char *data, size_t len)
{
    return mlt__j_replace_file_opt(j, name, data, len, true);
}

mlt_err mlt__j_add_segment(mlt__journal *j, uint64_t first_seq, uint64_t size)
{
    if (MLT__GROW(j->segs, j->cap_segs, j->n_segs + 1) != MLT_OK) {
        return MLT_ERR_NOMEM;
    }
    j->segs[j->n_segs++] = (segment){first_seq, size};
    return MLT_OK;
}

/* Starts a new segment whose first record will be first_seq, and makes it the append target. */
mlt_err mlt__j_open_new_segment(mlt__journal *j, uint64_t first_seq)
{
    char name[64], path[PATH_MAX];
    mlt__j_seg_name(first_seq, name);
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        return MLT_ERR_IO;
    }
    if (mlt__j_write_all(fd, MLT__SEGMENT_MAGIC, 8) != 0 || fsync(fd) != 0 ||
        mlt__j_fsync_dir(j->dir) != 0) {
        close(fd);
        return MLT_ERR_IO;
    }
    mlt_err err = mlt__j_add_segment(j, first_seq, 8);
    if (err != MLT_OK) {
        close(fd);
        return err;
    }
    if (j->wfd >= 0) {
        if (j->dirty) {
            fdatasync(j->wfd);
        }
        close(j->wfd);
    }
    j->wfd = fd;
    j->dirty = false;
    return MLT_OK;
}

static mlt__journal *alloc_journal(const char *dir, bool read_only, mlt__fsync_mode mode)
{
    mlt__journal *j = calloc(1, sizeof *j);
    if (!j || !(j->dir = mlt__strdup(dir))) {
        free(j);
        return NULL;
    }
    j->read_only = read_only;
    j->mode = mode;
    j->seg_bytes = MLT__SEGMENT_BYTES;
    j->lock_fd = -1;
    j->wfd = -1;
    j->rfd = -1;
    j->rseg = SIZE_MAX;
    j->keys_fd = -1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->wmu, NULL);
    mlt__cond_init(&j->wcv);
    atomic_init(&j->ring.idle, 0);
    atomic_init(&j->ring.writer_failing, false);
    atomic_init(&j->ring.pending, 0);
    mlt__buf_init(&j->group);
    mlt__buf_init(&j->frame);
    atomic_init(&j->acked_seq, 0);
    atomic_init(&j->acked_pos, 0);
    j->interval_ms = 100; /* the option's default, until mlt__journal_set_interval */
    j->synced_ms = mlt__mono_ns() / 1000000;
    return j;
}

static void free_journal(mlt__journal *j)
{
    mlt__j_stop_writer(j);
    if (j->ring.hdr) {
        munmap(j->ring.hdr, j->ring_len);
    }
    for (size_t p = 0; p < KEY_PAGES; p++) {
        if (j->key_pages[p]) {
            for (size_t i = 0; i < KEY_PAGE; i++) {
                free(j->key_pages[p][i]);
            }
            free(j->key_pages[p]);
        }
    }
    if (j->keys_fd >= 0) {
        close(j->keys_fd);
    }
    free(j->rb.data);
    free(j->target);
    mlt__buf_free(&j->group);
    pthread_cond_destroy(&j->wcv);
    pthread_mutex_destroy(&j->wmu);
    if (j->wfd >= 0) {
        close(j->wfd);
    }
    if (j->rfd >= 0) {
        close(j->rfd);
    }
    if (j->lock_fd >= 0) {
        close(j->lock_fd); /* releases the flock */
    }
    for (size_t i = 0; i < j->n_runs; i++) {
        free(j->runs[i].run_id);
        free(j->runs[i].experiment_id);
    }
    free(j->runs);
    free(j->art_done);
    free(j->segs);
    mlt__buf_free(&j->frame);
    pthread_mutex_destroy(&j->mu);
    free(j->dir);
    free(j);
}

/* Takes the journal's flock: MLT_ERR_LOCKED when a live process holds it. */
static MLT__MUST_USE mlt_err take_lock(mlt__journal *j)
{
    char path[PATH_MAX];
    if (mlt__j_path_in(j, "lock", path, sizeof path) != 0) {
        return mlt__fail(MLT_ERR_IO, "journal path too long: %s", j->dir);
    }
    /* O_CREAT on open too: a crash between mkdir and the lock's creation leaves an empty
     * journal directory, which is adopted (and then removed) like any other. */
    j->lock_fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT, 0600);
    if (j->lock_fd < 0) {
        return mlt__j_sys_err("cannot open", path);
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            return mlt__fail(MLT_ERR_LOCKED, "journal %s is owned by a running process", j->dir);
        }
        /* Lustre mounted without -o flock answers ENOSYS; an NFS mount with nolock, ENOLCK */
        return mlt__fail(MLT_ERR_IO,
                         "cannot lock journal %s: %s. The queue's file system must support "
                         "flock() (Lustre: mount with -o flock; NFS: not -o nolock), or put "
                         "MLTRACK_QUEUE_DIR on one that does",
                         j->dir, strerror(errno));
    }
    return MLT_OK;
}

/* The lock of a journal directory just made: only a look at whether it is owned (a shared lock
 * held for a moment by mlt__journal_owned(), from `mltrack status` or a relay) can be in the
 * way, and is waited out (up to a second). */
static MLT__MUST_USE mlt_err take_new_lock(mlt__journal *j)
{
    mlt_err err = take_lock(j);
    for (int i = 0; err == MLT_ERR_LOCKED && i < 1000; i++) {
        close(j->lock_fd);
        j->lock_fd = -1;
        mlt__sleep_ms(1);
        err = take_lock(j);
    }
    return err;
}

static MLT__MUST_USE mlt_err mkdirs(const char *dir)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s", dir);
    if (!FITS(n, sizeof tmp)) {
        return MLT_ERR_IO;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
                return MLT_ERR_IO;
            }
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? MLT_ERR_IO : MLT_OK;
}

static void remove_dir(mlt__journal *j);

/*
 * A new journal is made under a name no listing takes for a journal (".new-j-<uuid>"), locked
 * and filled there, then renamed into place: a process adopting the queue's journals (a tracker
 * starting, a relay) never meets a journal directory whose lock is not held yet, and never takes
 * over (and removes, as delivered) a journal being made.
 */
mlt_err mlt__journal_create(mlt__journal **out, const char *dir, mlt__fsync_mode mode)
{
    char parent[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(parent, sizeof parent, "%s", dir);
    char *slash = FITS(n, sizeof parent) ? strrchr(parent, '/') : NULL;
    const char *base = slash ? dir + (slash - parent) + 1 : dir;
    if (!slash) {
        snprintf(parent, sizeof parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0'; /* "/" */
    } else {
        *slash = '\0';
    }
    int tn = snprintf(tmp, sizeof tmp, "%.*s.new-%s", (int)(base - dir), dir, base);
    if (!FITS(n, sizeof parent) || !FITS(tn, sizeof tmp)) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "journal path too long: %s", dir);
    }
    mlt__journal *j = alloc_journal(tmp, false, mode);
    if (!j) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = MLT_OK;
    bool made = false;
    struct stat st;
    /* the journal's own directory must be new: never write over another journal */
    if (mkdirs(parent) != MLT_OK) {
        err = mlt__j_sys_err("cannot create the journal directory", dir);
    } else if (stat(dir, &st) == 0) {
        mlt__journal *old = alloc_journal(dir, false, mode);
        errno = EEXIST;
        err = mlt__j_sys_err("cannot create the journal directory", dir);
        if (old && take_lock(old) == MLT_ERR_LOCKED) {
            err = mlt__fail(MLT_ERR_LOCKED, "journal %s is owned by a running process", dir);
        }
        if (old) {
            free_journal(old);
        }
    } else if (mkdir(tmp, 0700) != 0) {
        err = mlt__j_sys_err("cannot create the journal directory", tmp);
    } else if ((made = true, err = take_new_lock(j)) == MLT_OK) {
        if (mlt__j_replace_file(j, "acked", "0\n", 2) != MLT_OK ||
            mlt__j_replace_file(j, "runs", "", 0) != MLT_OK) {
            err = mlt__j_sys_err("cannot write the state of journal", dir);
        } else if ((err = mlt__j_open_new_segment(j, 1)) != MLT_OK) {
            err = mlt__j_sys_err("cannot create a segment in", dir);
        } else if (mlt__j_open_keys(j) != MLT_OK) {
            err = mlt__j_sys_err("cannot create the metric keys of", dir);
        } else {
            char why[120];
            if (mlt__j_ring_map(j, why, sizeof why) != MLT_OK) {
                err = mlt__j_sys_err("cannot create the ring of", dir);
            } else {
                j->ring.tsc = mlt__j_tsc_usable();
            }
        }
    }
    /* into place: its lock is held, its files are there */
    char *final = err == MLT_OK ? mlt__strdup(dir) : NULL;
    if (err == MLT_OK && !final) {
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
    } else if (err == MLT_OK && rename(tmp, dir) != 0) {
        err = mlt__j_sys_err("cannot create the journal directory", dir);
    } else if (err == MLT_OK) {
        free(j->dir);
        j->dir = final;
        final = NULL;
        mlt__j_fsync_dir(parent);
    }
    free(final);
    if (err != MLT_OK) {
        if (made) {
            remove_dir(j); /* the half-made one, under its temporary name */
        }
        free_journal(j);
        return err;
    }
    *out = j;
    return MLT_OK;
}

/* ---- open and recovery ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir that keep() accepts, sorted; as dir/name with full. A missing dir (with
 * missing_ok) has none. */
mlt_err mlt__j_list_names(const char *dir, bool (*keep)(const char *name), bool full,
                          bool missing_ok, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        return missing_ok && errno == ENOENT ? MLT_OK : MLT_ERR_IO;
    }
    char **names = NULL;
    size_t cap = 0;
    struct dirent *e;
    mlt_err err = MLT_OK;
    while ((e = readdir(d))) {
        if (!keep(e->d_name)) {
            continue;
        }
        if (MLT__GROW(names, cap, *n + 1) != MLT_OK) {
            err = MLT_ERR_NOMEM;
            break;
        }
        names[*n] = full ? mlt__aprintf("%s/%s", dir, e->d_name) : mlt__strdup(e->d_name);
        if (!names[*n]) {
            err = MLT_ERR_NOMEM;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n > 1) {
        qsort(names, *n, sizeof *names, cmp_str);
    }
    *out = names;
    return err;
}

/* Only the names mlt__j_seg_name() gives are segments: the reader, the appender and acks find a
 * segment again by the name of its number, so "seg-+000...1.log" or a number past 64 bits would
 * name another file (or none). Other names are foreign files, left alone. */
static bool is_segment(const char *name)
{
    if (strncmp(name, "seg-", 4) != 0 || strlen(name) != 28) {
        return false;
    }
    char canonical[64];
    mlt__j_seg_name(strtoull(name + 4, NULL, 10), canonical);
    return strcmp(name, canonical) == 0;
}

/* The segment file names of dir, sorted (so by first seq). */
static MLT__MUST_USE mlt_err list_segments(const char *dir, char ***out, size_t *n)
{
    return mlt__j_list_names(dir, is_segment, false, false, out, n);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

mlt_err mlt__j_read_small_file(const mlt__journal *j, const char *name, mlt__buf *out)
{
    char path[PATH_MAX];
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        return errno == ENOENT ? MLT_ERR_NOT_FOUND : MLT_ERR_IO;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        mlt__buf_append(out, buf, n);
    }
    int bad = ferror(f);
    fclose(f);
    return bad || out->oom ? MLT_ERR_IO : MLT_OK;
}

mlt_err mlt__j_load_runs(mlt__journal *j)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt_err err = mlt__j_read_small_file(j, "runs", &b);
    if (err == MLT_ERR_NOT_FOUND) {
        err = MLT_OK;
    }
    for (char *line = b.data; err == MLT_OK && line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
        }
        unsigned run_no;
        char key[40], id[128], exp[128], state[16];
        if (sscanf(line, "%u %39s %127s %127s %15s", &run_no, key, id, exp, state) == 5) {
            mlt__run_state st = strcmp(state, "ended") == 0      ? MLT__RUN_ENDED
                                : strcmp(state, "dead") == 0     ? MLT__RUN_DEAD
                                : strcmp(state, "attached") == 0 ? MLT__RUN_ATTACHED
                                                                 : MLT__RUN_OPEN;
            err = mlt__j_put_run(j, run_no, key, strcmp(id, "-") ? id : NULL,
                                 strcmp(exp, "-") ? exp : NULL, st);
        }
        line = nl ? nl + 1 : NULL;
    }
    mlt__buf_free(&b);
    return err;
}

uint64_t mlt__j_count_lines(const mlt__journal *j, const char *name)
{
    mlt__buf b;
    mlt__buf_init(&b);
    uint64_t n = 0;
    if (mlt__j_read_small_file(j, name, &b) == MLT_OK) {
        for (size_t i = 0; i < b.len; i++) {
            n += b.data[i] == '\n';
        }
    }
    mlt__buf_free(&b);
    return n;
}

/*
 * Scans every segment: checks each frame, finds the last record and the first unacked one,
 * cuts a torn or corrupt tail (and any later segment) unless read-only.
 */
static MLT__MUST_USE mlt_err scan(mlt__journal *j, mlt__recovery *rec)
{
    char **names;
    size_t n;
    mlt_err err = list_segments(j->dir, &names, &n);
    if (err != MLT_OK) {
        free_names(names, n);
        return mlt__j_sys_err("cannot list", j->dir);
    }
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    rbuf rb = {0};
    uint64_t acked = atomic_load(&j->acked_seq);
    uint64_t pos = 0, expect = 0;
    bool cut = false;
    for (size_t i = 0; i < n && err == MLT_OK; i++) {
        char path[PATH_MAX];
        if (mlt__j_path_in(j, names[i], path, sizeof path) != 0) {
            err = MLT_ERR_IO;
            break;
        }
        uint64_t first = strtoull(names[i] + 4, NULL, 10);
        if (cut) { /* nothing after a bad record is trusted */
            struct stat st;
            if (stat(path, &st) == 0) {
                rec->cut_bytes += (uint64_t)st.st_size;
            }
            if (!j->read_only) {
                unlink(path);
            }
            continue;
        }
        int fd = open(path, (j->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0 && j->follow && errno == ENOENT && j->n_segs == 0) {
            continue; /* delivered and deleted by its writer since the listing */
        }
        if (fd < 0) {
            err = mlt__j_sys_err("cannot open", path);
            break;
        }
        struct stat st;
        fstat(fd, &st);
        uint64_t fsize = (uint64_t)st.st_size, off = 8;
        char magic[8];
        if (fsize < 8 || mlt__j_read_at(fd, magic, 8, 0) != 0 ||
            memcmp(magic, MLT__SEGMENT_MAGIC, 8)) {
            snprintf(rec->why, sizeof rec->why, "%s: not a journal segment", names[i]);
            cut = true;
            rec->cut_bytes += fsize;
            close(fd);
            if (!j->read_only) {
                unlink(path);
            }
            continue;
        }
        /* numbers run from 1: 0 is "nothing acked", and a record 0 could never be acked */
        if (first == 0 || (expect && first != expect)) {
            if (first == 0) {
                snprintf(rec->why, sizeof rec->why, "%s: sequence numbers start at 1", names[i]);
            } else {
                snprintf(rec->why, sizeof rec->why, "%s: expected a segment starting at %" PRIu64,
                         names[i], expect);
            }
            cut = true;
            rec->cut_bytes += fsize;
            close(fd);
            if (!j->read_only) {
                unlink(path);
            }
            continue;
        }
        expect = first;
        while (off < fsize) {
            uint64_t seq = 0;
            uint8_t type;
            uint32_t plen;
            char why[120] = "";
            if (mlt__j_read_frame(&rb, fd, off, fsize, &scratch, &seq, &type, &plen, why,
                                  sizeof why) != 0 ||
                seq != expect || seq == 0) { /* 0: past the last number */
                if (!why[0]) {
                    snprintf(why, sizeof why, "sequence %" PRIu64 " where %" PRIu64 " was due", seq,
                             expect);
                }
                snprintf(rec->why, sizeof rec->why, "%s: %s", names[i], why);
                rec->cut_bytes += fsize - off;
                if (!j->read_only && ftruncate(fd, (off_t)off) == 0) {
                    fdatasync(fd);
                }
                fsize = off;
                cut = true;
                break;
            }
            uint64_t size = MLT__FRAME_HEADER + (uint64_t)plen;
            if (type == MLT__REC_POINT) {
                mlt__j_note_ticket(j, (const unsigned char *)scratch.data, plen);
            }
            if (seq > acked) {
                if (!rec->first_seq) {
                    rec->first_seq = seq;
                }
                pos += size; /* positions count the frames unacked at open */
                rec->records++;
            }
            off += size;
            j->last_seq = seq;
            expect = seq + 1;
        }
        close(fd);
        mlt__j_rb_reset(&rb);
        err = mlt__j_add_segment(j, first, fsize);
    }
    free(rb.data);
    mlt__buf_free(&scratch);
    free_names(names, n);
    rec->last_seq = j->last_seq;
    j->end_pos = pos;
    return err;
}

/* Deletes segment i of the list (the caller owns j alone). */
static void drop_segment(mlt__journal *j, size_t i)
{
    char name[64], path[PATH_MAX];
    mlt__j_seg_name(j->segs[i].first_seq, name);
    if (mlt__j_path_in(j, name, path, sizeof path) == 0) {
        unlink(path);
    }
    memmove(j->segs + i, j->segs + i + 1, (j->n_segs - i - 1) * sizeof *j->segs);
    j->n_segs--;
}

/*
 * After the scan, makes the number of the next record follow on: from the acked cursor when it
 * is past the last record (every segment was delivered and deleted, or a tail that had been
 * acked was cut), else the next record would read as delivered; and from the last segment,
 * which it is appended to, whose first record it may be (a segment cut to its magic). A
 * segment must follow on from the one before it, so segments that hold only delivered records,
 * or no record and the wrong name, go (unless read-only): the next record starts its own.
 */
static void follow_on(mlt__journal *j)
{
    uint64_t acked = atomic_load(&j->acked_seq);
    size_t before = j->n_segs;
    if (j->last_seq < acked) {
        j->last_seq = acked;
        while (!j->read_only && j->n_segs > 0) {
            drop_segment(j, j->n_segs - 1);
        }
    } else if (!j->read_only && j->n_segs > 0 && j->segs[j->n_segs - 1].size <= 8 &&
               j->segs[j->n_segs - 1].first_seq != j->last_seq + 1) {
        drop_segment(j, j->n_segs - 1);
    }
    if (j->n_segs != before) {
        mlt__j_fsync_dir(j->dir); /* gone before the next segment is made */
    }
}

mlt_err mlt__j_open_any(mlt__journal **out, const char *dir, bool read_only, bool follow,
                        mlt__fsync_mode mode, mlt__recovery *rec)
{
    mlt__recovery local;
    if (!rec) {
        rec = &local;
    }
    memset(rec, 0, sizeof *rec);
    mlt__journal *j = alloc_journal(dir, read_only, mode);
    if (!j) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    j->follow = follow;
    mlt_err err = read_only ? MLT_OK : take_lock(j);
    if (err == MLT_OK) {
        mlt__buf b;
        mlt__buf_init(&b);
        mlt_err rerr = mlt__j_read_small_file(j, "acked", &b);
        if (rerr == MLT_OK) {
            atomic_store(&j->acked_seq, strtoull(b.data ? b.data : "0", NULL, 10));
        } else if (rerr != MLT_ERR_NOT_FOUND) {
            err = mlt__j_sys_err("cannot read the acked cursor of", dir);
        }
        mlt__buf_free(&b);
    }
    if (err == MLT_OK && mlt__j_load_runs(j) != MLT_OK) {
        err = mlt__j_sys_err("cannot read the run map of", dir);
    }
    if (err == MLT_OK && mlt__j_load_keys(j) != MLT_OK) {
        err = mlt__j_sys_err("cannot read the metric keys of", dir);
    }
    if (err == MLT_OK) {
        mlt__buf b;
        mlt__buf_init(&b);
        if (mlt__j_read_small_file(j, "target", &b) == MLT_OK && b.len && !b.oom) {
            b.data[strcspn(b.data, "\n")] = '\0';
            j->target = mlt__strdup(b.data);
        }
        mlt__buf_free(&b);
    }
    if (err == MLT_OK) {
        err = scan(j, rec);
    }
    if (err == MLT_OK) {
        follow_on(j);
    }
    if (err == MLT_OK) {
        /* before the ring's points take the numbers after the last record */
        err = mlt__j_art_recover(j);
    }
    if (err == MLT_OK && !read_only) {
        err = mlt__j_ring_recover(j, rec);
    } else if (err == MLT_OK && !follow) {
        mlt__j_ring_count(j, rec); /* a follower never reads the writer's ring (docs/hpc.md) */
    }
    if (err != MLT_OK) {
        free_journal(j);
        return err;
    }
    uint64_t acked = atomic_load(&j->acked_seq);
    j->dead = mlt__j_count_lines(j, "dead.jsonl");
    mlt__j_update_pending(j);
    j->rseq = acked;
    j->rseg = SIZE_MAX;
    *out = j;
    return MLT_OK;
}

mlt_err mlt__journal_open(mlt__journal **out, const char *dir, bool read_only, mlt__fsync_mode mode,
                          mlt__recovery *rec)
{
    return mlt__j_open_any(out, dir, read_only, false, mode, rec);
}

const char *mlt__journal_dir(const mlt__journal *j)
{
    return j->dir;
}

uint64_t mlt__journal_last_seq(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t v = j->last_seq;
    pthread_mutex_unlock(&j->mu);
    return v;
}

uint64_t mlt__journal_acked_seq(mlt__journal *j)
{
    return atomic_load(&j->acked_seq);
}

uint64_t mlt__journal_pending_bytes(mlt__journal *j)
{
    return atomic_load_explicit(&j->ring.pending, memory_order_relaxed);
}

/* ---- appending ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

void mlt__journal_appended(mlt__journal *j, uint64_t *runs, uint64_t *points)
{
    pthread_mutex_lock(&j->mu);
    *runs = j->appended_runs;
    *points = j->appended_points;
    pthread_mutex_unlock(&j->mu);
}

uint64_t mlt__journal_appended_artifacts(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t n = j->appended_artifacts;
    pthread_mutex_unlock(&j->mu);
    return n;
}

mlt_err mlt__j_append_locked(mlt__journal *j, mlt__rec_type type, const void *payload, size_t len,
                             bool drain, uint64_t *seq_out)
{
    if (len > MLT__FRAME_MAX_PAYLOAD) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "journal record of %zu bytes is too large", len);
    }
    mlt_err err = MLT_OK;
    if (j->read_only || j->wfd < 0) {
        return mlt__fail(MLT_ERR_STATE, "journal %s does not take appends", j->dir);
    }
    /* the ring's points were made before this record */
    if (drain && (err = mlt__j_drain_locked(j, false, NULL, NULL)) != MLT_OK) {
        return err;
    }
    if (j->last_seq == UINT64_MAX) {
        return mlt__j_used_up(j);
    }
    if ((err = mlt__j_roll_segment(j)) != MLT_OK) {
        return err;
    }
    uint64_t seq = j->last_seq + 1;
    unsigned char h[MLT__FRAME_HEADER];
    put_le32(h, (uint32_t)len);
    put_le32(h + 8, (uint32_t)seq);
    put_le32(h + 12, (uint32_t)(seq >> 32));
    h[16] = (unsigned char)type;
    uint32_t crc = mlt__crc32c(0, h + 8, 9);
    put_le32(h + 4, mlt__crc32c(crc, payload, len));
    mlt__buf_reset(&j->frame);
    mlt__buf_append(&j->frame, h, sizeof h);
    mlt__buf_append(&j->frame, payload, len);
    if (j->frame.oom) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if ((err = mlt__j_write_frames(j, &j->frame, seq)) != MLT_OK) {
        return err;
    }
    j->appended_runs += type == MLT__REC_CREATE;
    j->appended_points += type == MLT__REC_METRIC;
    j->appended_artifacts += type == MLT__REC_ARTIFACT;
    if (j->mode == MLT__FSYNC_ALWAYS) {
        if (fdatasync(j->wfd) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot sync journal %s: %s", j->dir, strerror(errno));
        }
        j->dirty = false;
    }
    if (seq_out) {
        *seq_out = seq;
    }
    return MLT_OK;
}

mlt_err mlt__journal_append(mlt__journal *j, mlt__rec_type type, const void *payload, size_t len,
                            uint64_t *seq_out)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = mlt__j_append_locked(j, type, payload, len, true, seq_out);
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* Makes what was written durable: the keys, the segment, then the acked cursor (caller holds
 * mu). */
void mlt__journal_set_interval(mlt__journal *j, int interval_ms)
{
    pthread_mutex_lock(&j->mu);
    j->interval_ms = interval_ms > 0 ? interval_ms : 100;
    pthread_mutex_unlock(&j->mu);
}

mlt_err mlt__j_sync_locked(mlt__journal *j)
{
    mlt_err aerr = mlt__j_art_sync_locked(j); /* snapshots before the records that name them */
    if (aerr != MLT_OK) {
        return aerr;
    }
    if (j->keys_dirty && j->keys_fd >= 0) { /* before the points that name them */
        if (fdatasync(j->keys_fd) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot sync the keys of journal %s: %s", j->dir,
                             strerror(errno));
        }
        j->keys_dirty = false;
    }
    if (j->dirty && j->wfd >= 0) {
        if (fdatasync(j->wfd) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot sync journal %s: %s", j->dir, strerror(errno));
        }
        j->dirty = false;
    }
    if (j->acked_dirty) {
        char path[PATH_MAX];
        int fd = mlt__j_path_in(j, "acked", path, sizeof path) == 0
                     ? open(path, O_RDONLY | O_CLOEXEC)
                     : -1;
        int rc = fd >= 0 ? fsync(fd) : -1;
        if (fd >= 0) {
            close(fd);
        }
        if (rc != 0 || mlt__j_fsync_dir(j->dir) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot sync the acked cursor of %s: %s", j->dir,
                             strerror(errno));
        }
        j->acked_dirty = false;
    }
    mlt__j_art_acked_locked(j); /* delivered snapshots go once their ack is on disk */
    j->synced_ms = mlt__mono_ns() / 1000000;
    return MLT_OK;
}

mlt_err mlt__journal_sync(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = mlt__j_drain_locked(j, false, NULL, NULL);
    if (err == MLT_OK) {
        err = mlt__j_sync_locked(j);
    }
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* ---- close ---- */

static bool all_done(mlt__journal *j)
{
    if (atomic_load(&j->acked_seq) < j->last_seq || j->dead > 0) {
        return false;
    }
    for (size_t i = 0; i < j->n_runs; i++) {
        if (j->runs[i].state == MLT__RUN_OPEN) {
            return false;
        }
    }
    return true;
}

static void remove_dir(mlt__journal *j)
{
    mlt__j_art_remove(j);
    DIR *d = opendir(j->dir);
    if (!d) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock")) {
            char path[PATH_MAX];
            if (mlt__j_path_in(j, e->d_name, path, sizeof path) == 0) {
                unlink(path);
            }
        }
    }
    closedir(d);
    char path[PATH_MAX];
    /* The lock goes last, while still held: no other process adopts a half-removed journal. */
    if (mlt__j_path_in(j, "lock", path, sizeof path) == 0) {
        unlink(path);
    }
    rmdir(j->dir);
}

void mlt__journal_forget_after_fork(mlt__journal *j)
{
    if (j && j->lock_fd >= 0) {
        close(j->lock_fd); /* the flock is the open file's: the parent's descriptor keeps it */
        j->lock_fd = -1;
    }
}

void mlt__journal_close(mlt__journal *j, bool remove_if_done)
{
    if (!j) {
        return;
    }
    mlt__j_stop_writer(j);
    if (!j->read_only) {
        if (mlt__journal_sync(j) != MLT_OK) {
            /* Nothing more can be done here: what did not reach the disk is in the file
             * system's cache, and the next open recovers what did (a torn tail is cut). */
        }
        if (remove_if_done && all_done(j)) {
            remove_dir(j);
        }
    }
    free_journal(j);
}

void mlt__journal_discard(mlt__journal *j)
{
    if (!j) {
        return;
    }
    mlt__j_stop_writer(j);
    if (!j->read_only) {
        remove_dir(j); /* with the lock held to the end, as at a close */
    }
    free_journal(j);
}
