/*
 * journal.c - the durable journal: segment files of framed records, recovery of a torn or
 * corrupt tail, thread-safe appends with the fsync policy, the sender's reading and acking, the
 * run map and dead letters, all in one directory owned under flock (see journal.h).
 *
 * Frame: u32 payload length, u32 CRC32C of (seq, type, payload), u64 seq, u8 type, payload.
 * Positions: bytes of frames counted from the first record that was unacked at open, so that
 * "bytes pending" is the appended position minus the acked one.
 */
#include "config.h"

#include "journal.h"

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
#include <sys/stat.h>
#include <unistd.h>

/* ---- CRC32C ---- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][i];
            crc_table[t][i] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
    }
}

uint32_t mlt__crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (len >= 8) { /* slicing by 8 */
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    }
    return ~crc;
}

/* ---- structure ---- */

typedef struct segment {
    uint64_t first_seq;
    uint64_t size; /* file size, magic included */
} segment;

struct mlt__journal {
    char *dir;
    bool read_only;
    mlt__fsync_mode mode;
    int lock_fd;
    pthread_mutex_t mu; /* guards the append side and the segment list */
    segment *segs;
    size_t n_segs, cap_segs;
    int wfd;            /* the last segment, for appends */
    uint64_t last_seq;  /* last appended */
    uint64_t end_pos;   /* position after the last appended frame */
    bool dirty;         /* appended since the last fdatasync */
    mlt__buf frame;     /* append scratch */
    /* the reader (sender thread) */
    _Atomic uint64_t acked_seq;
    _Atomic uint64_t acked_pos;
    int rfd;
    size_t rseg; /* index of the segment rfd reads */
    uint64_t rseq; /* last record read */
    uint64_t roff; /* offset in segment rseg after it */
    uint64_t rpos; /* position after it */
    /* run map and dead letters */
    mlt__run_entry *runs;
    size_t n_runs, cap_runs;
    uint64_t dead;
};

#define FITS(n, size) ((n) >= 0 && (size_t)(n) < (size))

static mlt_err put_run(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                       const char *experiment_id, mlt__run_state state);

static mlt_err sys_err(char *errbuf, size_t errlen, const char *what, const char *path)
{
    int e = errno;
    return mlt__errf(errbuf, errlen, MLT_ERR_IO, "%s %s: %s", what, path, strerror(e));
}

static int path_in(const mlt__journal *j, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", j->dir, name);
    return FITS(n, len) ? 0 : -1;
}

static void seg_name(uint64_t first_seq, char out[64])
{
    snprintf(out, 64, "seg-%020" PRIu64 ".log", first_seq);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
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

/* Replaces dir/name with data: temp file, fsync, rename, fsync the directory. */
static mlt_err replace_file(const mlt__journal *j, const char *name, const char *data,
                            size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (path_in(j, name, path, sizeof path) != 0) {
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
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return MLT_ERR_IO;
    }
    close(fd);
    if (rename(tmp, path) != 0 || fsync_dir(j->dir) != 0) {
        return MLT_ERR_IO;
    }
    return MLT_OK;
}

static mlt_err add_segment(mlt__journal *j, uint64_t first_seq, uint64_t size)
{
    if (j->n_segs == j->cap_segs) {
        size_t cap = j->cap_segs ? j->cap_segs * 2 : 8;
        segment *n = realloc(j->segs, cap * sizeof *n);
        if (!n) {
            return MLT_ERR_NOMEM;
        }
        j->segs = n;
        j->cap_segs = cap;
    }
    j->segs[j->n_segs++] = (segment){first_seq, size};
    return MLT_OK;
}

/* Starts a new segment whose first record will be first_seq, and makes it the append target. */
static mlt_err open_new_segment(mlt__journal *j, uint64_t first_seq)
{
    char name[64], path[PATH_MAX];
    seg_name(first_seq, name);
    if (path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        return MLT_ERR_IO;
    }
    if (write_all(fd, MLT__SEGMENT_MAGIC, 8) != 0 || fsync(fd) != 0 || fsync_dir(j->dir) != 0) {
        close(fd);
        return MLT_ERR_IO;
    }
    mlt_err err = add_segment(j, first_seq, 8);
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
    j->lock_fd = -1;
    j->wfd = -1;
    j->rfd = -1;
    j->rseg = SIZE_MAX;
    pthread_mutex_init(&j->mu, NULL);
    mlt__buf_init(&j->frame);
    atomic_init(&j->acked_seq, 0);
    atomic_init(&j->acked_pos, 0);
    return j;
}

static void free_journal(mlt__journal *j)
{
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
    free(j->segs);
    mlt__buf_free(&j->frame);
    pthread_mutex_destroy(&j->mu);
    free(j->dir);
    free(j);
}

/* Takes the journal's flock: MLT_ERR_LOCKED when a live process holds it. */
static mlt_err take_lock(mlt__journal *j, char *errbuf, size_t errlen)
{
    char path[PATH_MAX];
    if (path_in(j, "lock", path, sizeof path) != 0) {
        return mlt__errf(errbuf, errlen, MLT_ERR_IO, "journal path too long: %s", j->dir);
    }
    /* O_CREAT on open too: a crash between mkdir and the lock's creation leaves an empty
     * journal directory, which is adopted (and then removed) like any other. */
    j->lock_fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT, 0600);
    if (j->lock_fd < 0) {
        return sys_err(errbuf, errlen, "cannot open", path);
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        return mlt__errf(errbuf, errlen, errno == EWOULDBLOCK ? MLT_ERR_LOCKED : MLT_ERR_IO,
                         "journal %s is owned by a running process", j->dir);
    }
    return MLT_OK;
}

static mlt_err mkdirs(const char *dir)
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

mlt_err mlt__journal_create(mlt__journal **out, const char *dir, mlt__fsync_mode mode,
                            char *errbuf, size_t errlen)
{
    mlt__journal *j = alloc_journal(dir, false, mode);
    if (!j) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = MLT_OK;
    char parent[PATH_MAX];
    int n = snprintf(parent, sizeof parent, "%s", dir);
    char *slash = FITS(n, sizeof parent) ? strrchr(parent, '/') : NULL;
    if (!slash) {
        snprintf(parent, sizeof parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0'; /* "/" */
    } else {
        *slash = '\0';
    }
    errno = FITS(n, sizeof parent) ? 0 : ENAMETOOLONG;
    /* the journal's own directory must be new: never write over another journal */
    if (errno || mkdirs(parent) != MLT_OK || mkdir(dir, 0700) != 0) {
        bool exists = errno == EEXIST;
        err = sys_err(errbuf, errlen, "cannot create the journal directory", dir);
        if (exists && take_lock(j, errbuf, errlen) == MLT_ERR_LOCKED) {
            err = MLT_ERR_LOCKED;
        }
    } else if ((err = take_lock(j, errbuf, errlen)) == MLT_OK) {
        if (replace_file(j, "acked", "0\n", 2) != MLT_OK ||
            replace_file(j, "runs", "", 0) != MLT_OK) {
            err = sys_err(errbuf, errlen, "cannot write the state of journal", dir);
        } else if ((err = open_new_segment(j, 1)) != MLT_OK) {
            err = sys_err(errbuf, errlen, "cannot create a segment in", dir);
        }
    }
    if (err != MLT_OK) {
        free_journal(j);
        return err;
    }
    *out = j;
    return MLT_OK;
}

/* ---- reading frames ---- */

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/*
 * Reads and checks the frame at off of fd (file size fsize): fills *seq, *type and the payload
 * into scratch. Returns 0, or -1 with why set when the frame is torn or corrupt.
 */
static int read_frame(int fd, uint64_t off, uint64_t fsize, mlt__buf *scratch, uint64_t *seq,
                      uint8_t *type, uint32_t *plen, char *why, size_t whylen)
{
    unsigned char h[MLT__FRAME_HEADER];
    if (off + MLT__FRAME_HEADER > fsize) {
        snprintf(why, whylen, "torn frame header at offset %" PRIu64, off);
        return -1;
    }
    if (read_at(fd, h, sizeof h, off) != 0) {
        snprintf(why, whylen, "unreadable frame at offset %" PRIu64, off);
        return -1;
    }
    uint32_t len = le32(h);
    if (len > MLT__FRAME_MAX_PAYLOAD) {
        snprintf(why, whylen, "bad frame length %" PRIu32 " at offset %" PRIu64, len, off);
        return -1;
    }
    if (off + MLT__FRAME_HEADER + len > fsize) {
        snprintf(why, whylen, "torn frame at offset %" PRIu64 " (%" PRIu32 " bytes announced)",
                 off, len);
        return -1;
    }
    mlt__buf_reset(scratch);
    if (!mlt__buf_reserve(scratch, len)) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    if (len && read_at(fd, scratch->data, len, off + MLT__FRAME_HEADER) != 0) {
        snprintf(why, whylen, "unreadable frame at offset %" PRIu64, off);
        return -1;
    }
    scratch->len = len;
    scratch->data[len] = '\0';
    uint32_t crc = mlt__crc32c(0, h + 8, 9);
    crc = mlt__crc32c(crc, scratch->data, len);
    if (crc != le32(h + 4)) {
        snprintf(why, whylen, "checksum mismatch at offset %" PRIu64, off);
        return -1;
    }
    *seq = le64(h + 8);
    *type = h[16];
    *plen = len;
    return 0;
}

/* ---- open and recovery ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir that keep() accepts, sorted; as dir/name with full. A missing dir (with
 * missing_ok) has none. */
static mlt_err list_names(const char *dir, bool (*keep)(const char *name), bool full,
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
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                err = MLT_ERR_NOMEM;
                break;
            }
            names = nn;
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

static bool is_segment(const char *name)
{
    return strncmp(name, "seg-", 4) == 0 && strlen(name) == 28 && strcmp(name + 24, ".log") == 0;
}

static bool is_journal(const char *name)
{
    return strncmp(name, "j-", 2) == 0;
}

/* The segment file names of dir, sorted (so by first seq). */
static mlt_err list_segments(const char *dir, char ***out, size_t *n)
{
    return list_names(dir, is_segment, false, false, out, n);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

static mlt_err read_small_file(const mlt__journal *j, const char *name, mlt__buf *out)
{
    char path[PATH_MAX];
    if (path_in(j, name, path, sizeof path) != 0) {
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

static mlt_err load_runs(mlt__journal *j)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt_err err = read_small_file(j, "runs", &b);
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
            mlt__run_state st = strcmp(state, "ended") == 0  ? MLT__RUN_ENDED
                                : strcmp(state, "dead") == 0 ? MLT__RUN_DEAD
                                                             : MLT__RUN_OPEN;
            err = put_run(j, run_no, key, strcmp(id, "-") ? id : NULL,
                          strcmp(exp, "-") ? exp : NULL, st);
        }
        line = nl ? nl + 1 : NULL;
    }
    mlt__buf_free(&b);
    return err;
}

static uint64_t count_lines(const mlt__journal *j, const char *name)
{
    mlt__buf b;
    mlt__buf_init(&b);
    uint64_t n = 0;
    if (read_small_file(j, name, &b) == MLT_OK) {
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
static mlt_err scan(mlt__journal *j, mlt__recovery *rec, char *errbuf, size_t errlen)
{
    char **names;
    size_t n;
    mlt_err err = list_segments(j->dir, &names, &n);
    if (err != MLT_OK) {
        free_names(names, n);
        return sys_err(errbuf, errlen, "cannot list", j->dir);
    }
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t acked = atomic_load(&j->acked_seq);
    uint64_t pos = 0, expect = 0;
    bool cut = false;
    for (size_t i = 0; i < n && err == MLT_OK; i++) {
        char path[PATH_MAX];
        if (path_in(j, names[i], path, sizeof path) != 0) {
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
        if (fd < 0) {
            err = sys_err(errbuf, errlen, "cannot open", path);
            break;
        }
        struct stat st;
        fstat(fd, &st);
        uint64_t fsize = (uint64_t)st.st_size, off = 8;
        char magic[8];
        if (fsize < 8 || read_at(fd, magic, 8, 0) != 0 || memcmp(magic, MLT__SEGMENT_MAGIC, 8)) {
            snprintf(rec->why, sizeof rec->why, "%s: not a journal segment", names[i]);
            cut = true;
            rec->cut_bytes += fsize;
            close(fd);
            if (!j->read_only) {
                unlink(path);
            }
            continue;
        }
        if (expect && first != expect) {
            snprintf(rec->why, sizeof rec->why, "%s: expected a segment starting at %" PRIu64,
                     names[i], expect);
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
            if (read_frame(fd, off, fsize, &scratch, &seq, &type, &plen, why, sizeof why) != 0 ||
                seq != expect) {
                if (!why[0]) {
                    snprintf(why, sizeof why, "sequence %" PRIu64 " where %" PRIu64 " was due",
                             seq, expect);
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
        err = add_segment(j, first, fsize);
    }
    mlt__buf_free(&scratch);
    free_names(names, n);
    rec->last_seq = j->last_seq;
    j->end_pos = pos;
    return err;
}

mlt_err mlt__journal_open(mlt__journal **out, const char *dir, bool read_only,
                          mlt__fsync_mode mode, mlt__recovery *rec, char *errbuf, size_t errlen)
{
    mlt__recovery local;
    if (!rec) {
        rec = &local;
    }
    memset(rec, 0, sizeof *rec);
    mlt__journal *j = alloc_journal(dir, read_only, mode);
    if (!j) {
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = read_only ? MLT_OK : take_lock(j, errbuf, errlen);
    if (err == MLT_OK) {
        mlt__buf b;
        mlt__buf_init(&b);
        mlt_err rerr = read_small_file(j, "acked", &b);
        if (rerr == MLT_OK) {
            atomic_store(&j->acked_seq, strtoull(b.data ? b.data : "0", NULL, 10));
        } else if (rerr != MLT_ERR_NOT_FOUND) {
            err = sys_err(errbuf, errlen, "cannot read the acked cursor of", dir);
        }
        mlt__buf_free(&b);
    }
    if (err == MLT_OK && load_runs(j) != MLT_OK) {
        err = sys_err(errbuf, errlen, "cannot read the run map of", dir);
    }
    if (err == MLT_OK) {
        err = scan(j, rec, errbuf, errlen);
    }
    if (err != MLT_OK) {
        free_journal(j);
        return err;
    }
    uint64_t acked = atomic_load(&j->acked_seq);
    if (j->last_seq < acked) {
        j->last_seq = acked; /* every segment was delivered and deleted */
    }
    j->dead = count_lines(j, "dead.jsonl");
    j->rseq = acked;
    j->rseg = SIZE_MAX;
    *out = j;
    return MLT_OK;
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
    pthread_mutex_lock(&j->mu);
    uint64_t end = j->end_pos;
    pthread_mutex_unlock(&j->mu);
    uint64_t acked = atomic_load(&j->acked_pos);
    return end > acked ? end - acked : 0;
}

/* ---- appending ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

mlt_err mlt__journal_append(mlt__journal *j, mlt__rec_type type, const void *payload,
                            size_t len, uint64_t *seq_out)
{
    if (len > MLT__FRAME_MAX_PAYLOAD) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "journal record of %zu bytes is too large",
                         len);
    }
    pthread_mutex_lock(&j->mu);
    mlt_err err = MLT_OK;
    if (j->read_only || j->wfd < 0) {
        err = mlt__fail(MLT_ERR_STATE, "journal %s does not take appends", j->dir);
        goto out;
    }
    if (j->segs[j->n_segs - 1].size >= MLT__SEGMENT_BYTES &&
        open_new_segment(j, j->last_seq + 1) != MLT_OK) {
        err = mlt__fail(MLT_ERR_IO, "cannot start a new segment in %s: %s", j->dir,
                        strerror(errno));
        goto out;
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
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* One write per frame: a crash leaves at most one torn frame, at the tail. */
    off_t before = lseek(j->wfd, 0, SEEK_END);
    if (write_all(j->wfd, j->frame.data, j->frame.len) != 0) {
        int e = errno;
        if (before >= 0 && ftruncate(j->wfd, before) != 0) {
            /* the torn frame will be cut at the next open */
        }
        err = mlt__fail(MLT_ERR_IO, "cannot append to journal %s: %s", j->dir, strerror(e));
        goto out;
    }
    if (j->mode == MLT__FSYNC_ALWAYS && fdatasync(j->wfd) != 0) {
        err = mlt__fail(MLT_ERR_IO, "cannot sync journal %s: %s", j->dir, strerror(errno));
        goto out;
    }
    j->dirty = j->mode != MLT__FSYNC_ALWAYS;
    j->segs[j->n_segs - 1].size += j->frame.len;
    j->last_seq = seq;
    j->end_pos += j->frame.len;
    if (seq_out) {
        *seq_out = seq;
    }
out:
    pthread_mutex_unlock(&j->mu);
    return err;
}

mlt_err mlt__journal_sync(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = MLT_OK;
    if (j->dirty && j->wfd >= 0) {
        if (fdatasync(j->wfd) != 0) {
            err = mlt__fail(MLT_ERR_IO, "cannot sync journal %s: %s", j->dir, strerror(errno));
        } else {
            j->dirty = false;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* ---- reading and acking (sender thread) ---- */

/* Opens segment index i for reading. */
static int open_read_seg(mlt__journal *j, size_t i)
{
    char name[64], path[PATH_MAX];
    pthread_mutex_lock(&j->mu); /* an append may move the segment list */
    uint64_t first = j->segs[i].first_seq;
    pthread_mutex_unlock(&j->mu);
    seg_name(first, name);
    if (path_in(j, name, path, sizeof path) != 0) {
        return -1;
    }
    if (j->rfd >= 0) {
        close(j->rfd);
    }
    j->rfd = open(path, O_RDONLY | O_CLOEXEC);
    j->rseg = i;
    j->roff = 8;
    return j->rfd >= 0 ? 0 : -1;
}

mlt_err mlt__journal_next(mlt__journal *j, uint64_t *cursor, mlt__buf *scratch, mlt__rec *r)
{
    pthread_mutex_lock(&j->mu);
    uint64_t last = j->last_seq;
    size_t n_segs = j->n_segs;
    pthread_mutex_unlock(&j->mu);
    if (*cursor >= last) {
        return MLT_ERR_NOT_FOUND;
    }
    if (*cursor != j->rseq || j->rseg == SIZE_MAX) {
        /* Restart from the acked cursor and skip forward to *cursor. */
        if (*cursor < atomic_load(&j->acked_seq)) {
            return MLT_ERR_STATE;
        }
        if (n_segs == 0 || open_read_seg(j, 0) != 0) {
            return MLT_ERR_IO;
        }
        pthread_mutex_lock(&j->mu);
        j->rseq = j->segs[0].first_seq - 1;
        pthread_mutex_unlock(&j->mu);
        j->rpos = atomic_load(&j->acked_pos);
        while (j->rseq < *cursor) {
            mlt__rec skip;
            uint64_t c = j->rseq;
            mlt_err err = mlt__journal_next(j, &c, scratch, &skip);
            if (err != MLT_OK) {
                return err;
            }
            if (c <= atomic_load(&j->acked_seq)) {
                j->rpos = atomic_load(&j->acked_pos); /* acked frames are not counted */
            }
        }
    }
    for (;;) {
        pthread_mutex_lock(&j->mu);
        uint64_t seg_size = j->segs[j->rseg].size;
        bool has_next = j->rseg + 1 < j->n_segs;
        pthread_mutex_unlock(&j->mu);
        if (j->roff < seg_size) {
            uint64_t seq;
            uint8_t type;
            uint32_t plen;
            char why[120];
            if (read_frame(j->rfd, j->roff, seg_size, scratch, &seq, &type, &plen, why,
                           sizeof why) != 0 ||
                seq != j->rseq + 1) {
                return mlt__fail(MLT_ERR_CORRUPT, "journal %s: %s", j->dir, why);
            }
            uint32_t size = MLT__FRAME_HEADER + plen;
            r->seq = seq;
            r->size = size;
            r->end_pos = j->rpos + size;
            mlt_err err = mlt__rec_decode((mlt__rec_type)type, scratch->data, plen, r);
            /* A record that checks out but does not decode is consumed all the same: the caller
             * can set it aside and go on. */
            j->roff += size;
            j->rpos += size;
            j->rseq = seq;
            *cursor = seq;
            if (err != MLT_OK) {
                r->seq = seq;
                r->size = size;
                r->end_pos = j->rpos;
                return mlt__fail(err, "journal %s: record %" PRIu64 " does not decode", j->dir,
                                 seq);
            }
            return MLT_OK;
        }
        if (!has_next || open_read_seg(j, j->rseg + 1) != 0) {
            return has_next ? MLT_ERR_IO : MLT_ERR_NOT_FOUND;
        }
    }
}

mlt_err mlt__journal_ack(mlt__journal *j, const mlt__rec *last)
{
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRIu64 "\n", last->seq);
    mlt_err err = replace_file(j, "acked", text, (size_t)n);
    if (err != MLT_OK) {
        return mlt__fail(err, "cannot record delivery in %s: %s", j->dir, strerror(errno));
    }
    atomic_store(&j->acked_seq, last->seq);
    atomic_store(&j->acked_pos, last->end_pos);
    /* Delete segments that hold only acked records (never the one being appended to, nor the
     * one being read). */
    pthread_mutex_lock(&j->mu);
    size_t drop = 0;
    while (drop + 1 < j->n_segs && j->segs[drop + 1].first_seq - 1 <= last->seq &&
           drop + 1 <= j->rseg) {
        char name[64], path[PATH_MAX];
        seg_name(j->segs[drop].first_seq, name);
        if (path_in(j, name, path, sizeof path) == 0) {
            unlink(path);
        }
        drop++;
    }
    if (drop) {
        memmove(j->segs, j->segs + drop, (j->n_segs - drop) * sizeof *j->segs);
        j->n_segs -= drop;
        j->rseg -= drop;
    }
    pthread_mutex_unlock(&j->mu);
    return MLT_OK;
}

/* ---- run map ---- */

mlt__run_entry *mlt__journal_run(mlt__journal *j, uint32_t run_no)
{
    for (size_t i = 0; i < j->n_runs; i++) {
        if (j->runs[i].run_no == run_no) {
            return &j->runs[i];
        }
    }
    return NULL;
}

const mlt__run_entry *mlt__journal_runs(mlt__journal *j, size_t *n)
{
    *n = j->n_runs;
    return j->runs;
}

static mlt_err save_runs(mlt__journal *j)
{
    static const char *const states[] = {"open", "ended", "dead"};
    mlt__buf b;
    mlt__buf_init(&b);
    for (size_t i = 0; i < j->n_runs; i++) {
        const mlt__run_entry *e = &j->runs[i];
        mlt__buf_printf(&b, "%" PRIu32 " %s %s %s %s\n", e->run_no, e->key,
                        e->run_id ? e->run_id : "-", e->experiment_id ? e->experiment_id : "-",
                        states[e->state]);
    }
    mlt_err err = b.oom ? MLT_ERR_NOMEM : replace_file(j, "runs", b.data ? b.data : "", b.len);
    mlt__buf_free(&b);
    return err;
}

mlt_err mlt__journal_put_run(mlt__journal *j, uint32_t run_no, const char *key,
                             const char *run_id, const char *experiment_id,
                             mlt__run_state state)
{
    mlt_err err = put_run(j, run_no, key, run_id, experiment_id, state);
    return err != MLT_OK || j->read_only ? err : save_runs(j);
}

/* Adds or updates an entry in memory. */
static mlt_err put_run(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                       const char *experiment_id, mlt__run_state state)
{
    mlt__run_entry *e = mlt__journal_run(j, run_no);
    if (!e) {
        if (j->n_runs == j->cap_runs) {
            size_t cap = j->cap_runs ? j->cap_runs * 2 : 8;
            mlt__run_entry *n = realloc(j->runs, cap * sizeof *n);
            if (!n) {
                return MLT_ERR_NOMEM;
            }
            j->runs = n;
            j->cap_runs = cap;
        }
        e = &j->runs[j->n_runs++];
        memset(e, 0, sizeof *e);
        e->run_no = run_no;
    }
    snprintf(e->key, sizeof e->key, "%s", key);
    if (run_id && (!e->run_id || strcmp(e->run_id, run_id))) {
        free(e->run_id);
        e->run_id = mlt__strdup(run_id);
    }
    if (experiment_id && (!e->experiment_id || strcmp(e->experiment_id, experiment_id))) {
        free(e->experiment_id);
        e->experiment_id = mlt__strdup(experiment_id);
    }
    e->state = state;
    if ((run_id && !e->run_id) || (experiment_id && !e->experiment_id)) {
        return MLT_ERR_NOMEM;
    }
    return MLT_OK;
}

/* ---- dead letters ---- */

mlt_err mlt__journal_dead_letter(mlt__journal *j, const mlt__rec *r, const char *answer)
{
    static const char *const types[] = {"?", "create_run", "param", "metric", "tag", "end_run"};
    const mlt__run_entry *e = mlt__journal_run(j, r->run_no);
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_printf(&b, "{\"seq\":%" PRIu64 ",\"type\":\"%s\",\"run_key\":", r->seq,
                    r->type <= MLT__REC_END ? types[r->type] : "?");
    mlt__json_str(&b, r->type == MLT__REC_CREATE ? r->key : e ? e->key : "");
    if (r->type == MLT__REC_PARAM || r->type == MLT__REC_TAG || r->type == MLT__REC_METRIC) {
        mlt__buf_puts(&b, ",\"key\":");
        mlt__json_str(&b, r->key);
        mlt__buf_puts(&b, ",\"value\":");
        if (r->type == MLT__REC_METRIC) {
            mlt__json_double(&b, r->num);
            mlt__buf_printf(&b, ",\"timestamp\":%" PRId64 ",\"step\":%" PRId64, r->time_ms,
                            r->step);
        } else {
            mlt__json_str(&b, r->value);
        }
    }
    mlt__buf_puts(&b, ",\"answer\":");
    /* answers may have been cut to a buffer inside a UTF-8 character: keep the file UTF-8 */
    size_t keep = answer ? strlen(answer) : 0;
    size_t i = keep;
    while (i > 0 && keep - i < 4 && ((unsigned char)answer[i - 1] & 0xC0) == 0x80) {
        i--;
    }
    if (i > 0 && (unsigned char)answer[i - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)answer[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (keep - (i - 1) < need) {
            keep = i - 1; /* drop the incomplete last character */
        }
    }
    mlt__json_strn(&b, answer ? answer : "", keep);
    mlt__buf_puts(&b, "}\n");
    char path[PATH_MAX];
    mlt_err err = MLT_OK;
    if (b.oom || path_in(j, "dead.jsonl", path, sizeof path) != 0) {
        err = MLT_ERR_NOMEM;
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || write_all(fd, b.data, b.len) != 0 || fdatasync(fd) != 0) {
            err = MLT_ERR_IO;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    if (err == MLT_OK) {
        j->dead++;
    }
    mlt__buf_free(&b);
    return err;
}

uint64_t mlt__journal_dead_count(mlt__journal *j)
{
    return j->dead;
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
    DIR *d = opendir(j->dir);
    if (!d) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lock")) {
            char path[PATH_MAX];
            if (path_in(j, e->d_name, path, sizeof path) == 0) {
                unlink(path);
            }
        }
    }
    closedir(d);
    char path[PATH_MAX];
    /* The lock goes last, while still held: no other process adopts a half-removed journal. */
    if (path_in(j, "lock", path, sizeof path) == 0) {
        unlink(path);
    }
    rmdir(j->dir);
}

void mlt__journal_close(mlt__journal *j, bool remove_if_done)
{
    if (!j) {
        return;
    }
    if (!j->read_only) {
        mlt__journal_sync(j);
        if (remove_if_done && all_done(j)) {
            remove_dir(j);
        }
    }
    free_journal(j);
}

/* ---- the queue directory ---- */

mlt_err mlt__queue_dir(const mlt_options *o, char *out, size_t len)
{
    const char *dir = mlt__opt_str(o, MLT__OPT_QUEUE_DIR);
    int n;
    if (dir) {
        n = snprintf(out, len, "%s", dir);
    } else if (getenv("XDG_STATE_HOME") && getenv("XDG_STATE_HOME")[0] == '/') {
        n = snprintf(out, len, "%s/mltrack/queue", getenv("XDG_STATE_HOME"));
    } else if (getenv("HOME") && getenv("HOME")[0] == '/') {
        n = snprintf(out, len, "%s/.local/state/mltrack/queue", getenv("HOME"));
    } else {
        return mlt__fail(MLT_ERR_BAD_OPTION,
                         "no queue directory: set queue_dir, MLTRACK_QUEUE_DIR or HOME");
    }
    return FITS(n, len) ? MLT_OK : mlt__fail(MLT_ERR_VALUE_TOO_LONG, "queue path too long");
}

mlt_err mlt__queue_list(const char *queue_dir, char ***out, size_t *n)
{
    mlt_err err = list_names(queue_dir, is_journal, true, true, out, n);
    return err == MLT_ERR_IO ? mlt__fail(err, "cannot read %s: %s", queue_dir, strerror(errno))
                             : err;
}
