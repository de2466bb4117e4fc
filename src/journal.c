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
#include "http.h"

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
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- CRC32C ---- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static void crc_hw_detect(void);

static void crc_init(void)
{
    crc_hw_detect();
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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_CRC_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const void *data,
                                                         size_t len)
{
    const unsigned char *p = data;
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    }
    return ~c32;
}
static int crc_hw_ok;
#endif

static void crc_hw_detect(void)
{
#ifdef HAVE_CRC_HW
    __builtin_cpu_init();
    crc_hw_ok = __builtin_cpu_supports("sse4.2") && !getenv("MLTRACK_NO_CRC_HW");
#endif
}

uint32_t mlt__crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
#ifdef HAVE_CRC_HW
    if (crc_hw_ok) {
        return crc_hw(crc, data, len);
    }
#endif
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

#define KEY_PAGE 4096
#define KEY_PAGES 4096 /* 16M keys */
#define RB_WINDOW (256u << 10)

/* A read window on one file: bytes [off, off + len) of it. */
typedef struct rbuf {
    unsigned char *data;
    uint64_t off;
    size_t len, cap;
} rbuf;

typedef struct segment {
    uint64_t first_seq;
    uint64_t size; /* file size, magic included */
} segment;

struct mlt__journal {
    char *dir;
    uint64_t seg_bytes; /* a new segment starts past this size (mlt__journal_set_segment_bytes) */
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
    rbuf rb;       /* the reader's window on segment rseg */
    /* run map and dead letters */
    mlt__run_entry *runs;
    size_t n_runs, cap_runs;
    uint64_t dead;
    /* metric keys by id: pages of KEY_PAGE names, never moved (read without the lock by the
     * reader, which only meets an id after its key was put) */
    char **key_pages[KEY_PAGES];
    int keys_fd;
    size_t keys_good_len; /* bytes of whole lines in the keys file */
    bool keys_dirty;      /* keys written since the last sync */
    bool acked_dirty;    /* the acked cursor was replaced without a sync */
    /* the ring, its writer thread, and where the segments' tickets end (found at open) */
    mlt__ring ring;
    size_t ring_len;
    uint64_t ring_seen;  /* first ticket not yet in the segments, per the segments */
    bool ring_seen_set;
    mlt__buf group;      /* the writer's scratch */
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t wmu; /* guards wstop and the writer's sleep */
    pthread_cond_t wcv;
    bool wstop;
    void (*on_write)(void *ud);
    void *on_write_ud;
    int interval_ms;
    char werr[256];      /* the writer's last failure */
    char *target;        /* the tracking URI it is for (credentials removed), or NULL */
    /* records appended through this handle, by type (under mu): runs and points it holds */
    uint64_t appended_runs, appended_points;
};

#define FITS(n, size) ((n) >= 0 && (size_t)(n) < (size))

static void stop_writer(mlt__journal *j);
static mlt_err sync_locked(mlt__journal *j);
static bool tsc_usable(void);
static mlt_err open_keys(mlt__journal *j);
static mlt_err ensure_wfd(mlt__journal *j);
static mlt_err ring_map(mlt__journal *j, char *why, size_t whylen);

static mlt_err put_run(mlt__journal *j, uint32_t run_no, const char *key, const char *run_id,
                       const char *experiment_id, mlt__run_state state);

static mlt_err sys_err(char *errbuf, size_t errlen, const char *what, const char *path)
{
    int e = errno;
    return mlt__errf(errbuf, errlen, MLT_ERR_IO, "%s %s: %s", what, path, strerror(e));
}

/* Record numbers never wrap (0 is "nothing acked"): a journal whose last number is 2^64 - 1
 * (a damaged acked cursor) takes no more records. */
static mlt_err used_up(const mlt__journal *j)
{
    return mlt__fail(MLT_ERR_QUEUE_FULL, "journal %s: its record numbers are used up", j->dir);
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

/* Replaces dir/name with data: temp file, fsync, rename, fsync the directory (without sync:
 * temp file and rename only, atomic but not yet durable). */
static mlt_err replace_file_opt(const mlt__journal *j, const char *name, const char *data,
                                size_t len, bool sync)
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
    if (write_all(fd, data, len) != 0 || (sync && fsync(fd) != 0)) {
        close(fd);
        unlink(tmp);
        return MLT_ERR_IO;
    }
    close(fd);
    if (rename(tmp, path) != 0 || (sync && fsync_dir(j->dir) != 0)) {
        return MLT_ERR_IO;
    }
    return MLT_OK;
}

static mlt_err replace_file(const mlt__journal *j, const char *name, const char *data,
                            size_t len)
{
    return replace_file_opt(j, name, data, len, true);
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
    j->seg_bytes = MLT__SEGMENT_BYTES;
    j->lock_fd = -1;
    j->wfd = -1;
    j->rfd = -1;
    j->rseg = SIZE_MAX;
    j->keys_fd = -1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->wmu, NULL);
    pthread_cond_init(&j->wcv, NULL);
    atomic_init(&j->ring.idle, 0);
    atomic_init(&j->ring.writer_failing, false);
    atomic_init(&j->ring.pending, 0);
    mlt__buf_init(&j->group);
    mlt__buf_init(&j->frame);
    atomic_init(&j->acked_seq, 0);
    atomic_init(&j->acked_pos, 0);
    return j;
}

static void free_journal(mlt__journal *j)
{
    stop_writer(j);
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
        } else if (open_keys(j) != MLT_OK) {
            err = sys_err(errbuf, errlen, "cannot create the metric keys of", dir);
        } else {
            char why[120];
            if (ring_map(j, why, sizeof why) != MLT_OK) {
                err = sys_err(errbuf, errlen, "cannot create the ring of", dir);
            } else {
                j->ring.tsc = tsc_usable();
            }
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

/* The n bytes at off of fd (whose size is fsize), through the window rb: NULL if unreadable. */
static const unsigned char *rb_at(rbuf *rb, int fd, uint64_t off, size_t n, uint64_t fsize)
{
    if (off >= rb->off && off + n <= rb->off + rb->len) {
        return rb->data + (off - rb->off);
    }
    size_t want = n > RB_WINDOW ? n : RB_WINDOW;
    if (off + want > fsize) {
        want = (size_t)(fsize - off);
    }
    if (want < n) {
        return NULL;
    }
    if (rb->cap < want) {
        unsigned char *d = realloc(rb->data, want);
        if (!d) {
            return NULL;
        }
        rb->data = d;
        rb->cap = want;
    }
    rb->len = 0;
    if (read_at(fd, rb->data, want, off) != 0) {
        return NULL;
    }
    rb->off = off;
    rb->len = want;
    return rb->data;
}

static void rb_reset(rbuf *rb)
{
    rb->off = 0;
    rb->len = 0;
}

/*
 * Reads and checks the frame at off of fd (file size fsize) through rb: fills *seq, *type and
 * the payload into scratch. Returns 0, or -1 with why set when the frame is torn or corrupt.
 */
static int read_frame(rbuf *rb, int fd, uint64_t off, uint64_t fsize, mlt__buf *scratch,
                      uint64_t *seq, uint8_t *type, uint32_t *plen, char *why, size_t whylen)
{
    if (off + MLT__FRAME_HEADER > fsize) {
        snprintf(why, whylen, "torn frame header at offset %" PRIu64, off);
        return -1;
    }
    const unsigned char *h = rb_at(rb, fd, off, MLT__FRAME_HEADER, fsize);
    if (!h) {
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
    h = rb_at(rb, fd, off, MLT__FRAME_HEADER + (size_t)len, fsize);
    mlt__buf_reset(scratch);
    if (!h) {
        snprintf(why, whylen, "unreadable frame at offset %" PRIu64, off);
        return -1;
    }
    if (!mlt__buf_reserve(scratch, len)) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    memcpy(scratch->data, h + MLT__FRAME_HEADER, len);
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

/* ---- POINT records ----
 * Payload: varint (run_no << 1 | has_ticket), [varint ticket: the ring ticket of this point,
 * on the first point of each group], varint key id, u64 value bits, varint timestamp, varint
 * zigzag step. */

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static bool get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char c = *(*p)++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

static const char *key_name(const mlt__journal *j, uint64_t id)
{
    if (id >= (uint64_t)KEY_PAGE * KEY_PAGES) {
        return NULL;
    }
    char **page = j->key_pages[id / KEY_PAGE];
    return page ? page[id % KEY_PAGE] : NULL;
}

/* Ring tickets stay below this (2^62 points: centuries at a billion a second): past it, a
 * ticket (in a damaged ring header or POINT record) would run into the wrap of 64 bits, where a
 * slot's stamp (ticket + 1) reads as empty, and no point put would ever be drained. */
#define RING_TICKET_LIMIT (UINT64_C(1) << 62)

/* Where the ring ticket count stands after a POINT record read at open (a ticket past the
 * limit is no ticket of ours: ignored). */
static void note_ticket(mlt__journal *j, const unsigned char *p, size_t len)
{
    uint64_t head, ticket;
    const unsigned char *end = p + len;
    if (!get_varint(&p, end, &head)) {
        return;
    }
    if (head & 1) {
        if (get_varint(&p, end, &ticket) && ticket < RING_TICKET_LIMIT) {
            j->ring_seen = ticket + 1;
            j->ring_seen_set = true;
        }
    } else if (j->ring_seen_set) {
        j->ring_seen++;
    }
}

static mlt_err decode_point(const mlt__journal *j, const unsigned char *p, size_t len,
                            mlt__rec *out)
{
    mlt__rec_clear(out, MLT__REC_METRIC);
    const unsigned char *end = p + len;
    uint64_t head, ticket, id, ts, zz;
    if (!get_varint(&p, end, &head) || ((head & 1) && !get_varint(&p, end, &ticket)) ||
        !get_varint(&p, end, &id) || end - p < 8) {
        return MLT_ERR_CORRUPT;
    }
    uint64_t bits = le64(p);
    p += 8;
    if (!get_varint(&p, end, &ts) || !get_varint(&p, end, &zz) || p != end ||
        head >> 1 > UINT32_MAX || !(out->key = key_name(j, id))) {
        return MLT_ERR_CORRUPT;
    }
    out->run_no = (uint32_t)(head >> 1);
    memcpy(&out->num, &bits, sizeof bits);
    out->time_ms = (int64_t)ts;
    out->step = (int64_t)((zz >> 1) ^ -(zz & 1));
    return MLT_OK;
}

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
static bool tsc_usable(void)
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
    p = put_varint(p, (uint64_t)s->run_no << 1 | (ticket >= 0));
    if (ticket >= 0) {
        p = put_varint(p, (uint64_t)ticket);
    }
    p = put_varint(p, s->key_id & ~MLT__RING_MS);
    int64_t ts = s->key_id & MLT__RING_MS ? s->ts : tsc_to_ms(h, (uint64_t)s->ts);
    uint64_t bits;
    memcpy(&bits, &s->value, sizeof bits);
    for (int i = 0; i < 8; i++) {
        *p++ = (unsigned char)(bits >> (8 * i));
    }
    p = put_varint(p, (uint64_t)ts);
    p = put_varint(p, ((uint64_t)s->step << 1) ^ (uint64_t)(s->step >> 63));
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

/* ---- metric keys ---- */

static mlt_err read_small_file(const mlt__journal *j, const char *name, mlt__buf *out);

/* Records id -> key in memory (the caller holds mu or owns j alone). */
static mlt_err remember_key(mlt__journal *j, uint64_t id, const char *key)
{
    if (id >= (uint64_t)KEY_PAGE * KEY_PAGES) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "more than %u metric keys in one journal",
                         KEY_PAGE * KEY_PAGES);
    }
    char ***page = &j->key_pages[id / KEY_PAGE];
    if (!*page && !(*page = calloc(KEY_PAGE, sizeof **page))) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    char *copy = (*page)[id % KEY_PAGE] ? NULL : mlt__strdup(key);
    if (!(*page)[id % KEY_PAGE] && !copy) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (copy) {
        (*page)[id % KEY_PAGE] = copy;
    }
    return MLT_OK;
}

static mlt_err load_keys(mlt__journal *j)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt_err err = read_small_file(j, "keys", &b);
    if (err == MLT_ERR_NOT_FOUND) {
        err = MLT_OK;
    }
    j->keys_good_len = 0;
    for (char *line = b.data; err == MLT_OK && line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            break; /* a torn last line (cut when the file is next appended to): never used */
        }
        *nl = '\0';
        j->keys_good_len = (size_t)(nl + 1 - b.data);
        char *sp = strchr(line, ' '), *end;
        if (sp) {
            *sp = '\0';
            errno = 0;
            unsigned long long id = strtoull(line, &end, 10);
            /* a line that does not parse names no key: points naming it will not decode */
            if (!errno && end != line && !*end && id < (unsigned long long)KEY_PAGE * KEY_PAGES) {
                err = remember_key(j, id, sp + 1);
            }
        }
        line = nl + 1;
    }
    mlt__buf_free(&b);
    return err;
}

static mlt_err open_keys(mlt__journal *j)
{
    char path[PATH_MAX];
    if (path_in(j, "keys", path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    j->keys_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (j->keys_fd >= 0 && fstat(j->keys_fd, &st) == 0 && (size_t)st.st_size > j->keys_good_len &&
        ftruncate(j->keys_fd, (off_t)j->keys_good_len) != 0) {
        close(j->keys_fd); /* a torn last line must not prefix the next one */
        j->keys_fd = -1;
    }
    return j->keys_fd >= 0 ? MLT_OK : MLT_ERR_IO;
}

mlt_err mlt__journal_put_key(mlt__journal *j, uint32_t id, const char *key)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = MLT_OK;
    if (key_name(j, id)) {
        goto out;
    }
    if (id >= (uint64_t)KEY_PAGE * KEY_PAGES) {
        err = mlt__fail(MLT_ERR_VALUE_TOO_LONG, "more than %u metric keys in one journal",
                        KEY_PAGE * KEY_PAGES);
        goto out;
    }
    if (j->keys_fd < 0 && open_keys(j) != MLT_OK) {
        err = mlt__fail(MLT_ERR_IO, "cannot open the keys of journal %s: %s", j->dir,
                        strerror(errno));
        goto out;
    }
    char *line = mlt__aprintf("%" PRIu32 " %s\n", id, key);
    if (!line) {
        err = mlt__fail(MLT_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* In the file before any point names it; durable with fsync=always at once, else at the
     * next sync, which syncs the keys before the segment. */
    size_t n = strlen(line);
    if (write_all(j->keys_fd, line, n) != 0 ||
        (j->mode == MLT__FSYNC_ALWAYS && fdatasync(j->keys_fd) != 0)) {
        int e = errno;
        if (ftruncate(j->keys_fd, (off_t)j->keys_good_len) != 0) {
            /* cut at the next open */
        }
        err = mlt__fail(MLT_ERR_IO, "cannot record a metric key in journal %s: %s", j->dir,
                        strerror(e));
    } else {
        j->keys_good_len += n;
        j->keys_dirty = j->mode != MLT__FSYNC_ALWAYS;
    }
    free(line);
    if (err == MLT_OK) {
        err = remember_key(j, id, key);
    }
out:
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* ---- the ring ---- */

#define RING_BYTES (sizeof(mlt__ring_hdr) + (size_t)MLT__RING_SLOTS * sizeof(mlt__ring_slot))
#define GROUP_MAX 8192 /* points per write */

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
static mlt_err ring_map(mlt__journal *j, char *why, size_t whylen)
{
    char path[PATH_MAX];
    if (path_in(j, "ring", path, sizeof path) != 0) {
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

/* Recounts the undelivered bytes (caller holds mu or owns j alone): the one count, read by
 * mlt__journal_pending_bytes and by the hot path for the queue's cap. */
static void update_pending(mlt__journal *j)
{
    uint64_t acked = atomic_load(&j->acked_pos);
    atomic_store_explicit(&j->ring.pending, j->end_pos > acked ? j->end_pos - acked : 0,
                          memory_order_relaxed);
}

void mlt__journal_set_segment_bytes(mlt__journal *j, uint64_t bytes)
{
    pthread_mutex_lock(&j->mu);
    j->seg_bytes = bytes;
    pthread_mutex_unlock(&j->mu);
}

/* Starts a new segment when the last one is full (caller holds mu). */
static mlt_err roll_segment(mlt__journal *j)
{
    if (j->segs[j->n_segs - 1].size >= j->seg_bytes &&
        open_new_segment(j, j->last_seq + 1) != MLT_OK) {
        return mlt__fail(MLT_ERR_IO, "cannot start a new segment in %s: %s", j->dir,
                         strerror(errno));
    }
    return MLT_OK;
}

/* Appends whole frames, the last of them numbered last_seq, in one write (caller holds mu): a
 * crash leaves at most one torn frame, at the tail, and a failed write is cut back. */
static mlt_err write_frames(mlt__journal *j, const mlt__buf *frames, uint64_t last_seq)
{
    off_t before = lseek(j->wfd, 0, SEEK_END);
    if (write_all(j->wfd, frames->data, frames->len) != 0) {
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
    update_pending(j);
    return MLT_OK;
}

/*
 * Moves the ring's points into the segments, a group per write (caller holds mu). Stops at a
 * slot still being written, unless skip_holes (at open: a slot a dead thread never finished is
 * skipped; *holes counts them).
 */
static mlt_err drain_locked(mlt__journal *j, bool skip_holes, uint64_t *moved, uint64_t *holes)
{
    mlt__ring *r = &j->ring;
    if (!r->hdr || j->read_only) {
        return MLT_OK;
    }
    if (atomic_load(&r->hdr->head) != atomic_load(&r->hdr->tail) && j->last_seq == UINT64_MAX) {
        return used_up(j);
    }
    if (j->wfd < 0 && atomic_load(&r->hdr->head) != atomic_load(&r->hdr->tail) &&
        ensure_wfd(j) != MLT_OK) {
        return mlt__fail(MLT_ERR_IO, "cannot append to journal %s: %s", j->dir, strerror(errno));
    }
    for (;;) {
        uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
        if (tail == head) {
            return MLT_OK;
        }
        if (j->last_seq == UINT64_MAX) {
            return used_up(j);
        }
        mlt_err err = roll_segment(j);
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
            if ((err = write_frames(j, &j->group, seq)) != MLT_OK) {
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
static mlt_err ensure_wfd(mlt__journal *j)
{
    if (j->wfd >= 0) {
        return MLT_OK;
    }
    if (j->n_segs == 0) {
        return open_new_segment(j, j->last_seq + 1);
    }
    char name[64], path[PATH_MAX];
    seg_name(j->segs[j->n_segs - 1].first_seq, name);
    if (path_in(j, name, path, sizeof path) != 0) {
        return MLT_ERR_IO;
    }
    j->wfd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    return j->wfd >= 0 ? MLT_OK : MLT_ERR_IO;
}

/* At open: moves into the segments what a dead process left in its ring, past what the
 * segments already hold. */
static mlt_err ring_recover(mlt__journal *j, mlt__recovery *rec, char *errbuf, size_t errlen)
{
    char why[120] = "";
    if (ring_map(j, why, sizeof why) != MLT_OK) {
        return sys_err(errbuf, errlen, "cannot map the ring of", j->dir);
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
        return mlt__errf(errbuf, errlen, used_up(j), "%s", mlt_last_error());
    }
    mlt_err err = ensure_wfd(j);
    if (err != MLT_OK) {
        return sys_err(errbuf, errlen, "cannot append to", j->dir);
    }
    err = drain_locked(j, true, &rec->ring_points, &holes);
    if (err == MLT_OK && j->dirty && fdatasync(j->wfd) == 0) {
        j->dirty = false;
    }
    if (err != MLT_OK) {
        return mlt__errf(errbuf, errlen, err, "%s", mlt_last_error());
    }
    return MLT_OK;
}

/* Read-only open: counts the points a ring holds past what the segments hold (status). */
static void ring_count(mlt__journal *j, mlt__recovery *rec)
{
    char path[PATH_MAX];
    int fd = path_in(j, "ring", path, sizeof path) == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
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
    mlt_err err = drain_locked(j, false, NULL, NULL);
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* Is the slot at the ring's tail ready? */
static bool ring_ready(mlt__ring *r)
{
    uint64_t t = atomic_load(&r->hdr->tail);
    return atomic_load(&r->slots[t & (MLT__RING_SLOTS - 1)].stamp) == t + 1;
}

static void timed_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

#define WRITER_POLL_MS 2   /* between groups while points keep coming */
#define WRITER_IDLE_POLLS 5 /* empty polls before the writer sleeps until woken */

static void *writer_main(void *arg)
{
    mlt__journal *j = arg;
    mlt__ring *r = &j->ring;
    int empty = 0;
    int64_t last_sync = mlt__mono_ns() / 1000000;
    pthread_mutex_lock(&j->wmu);
    while (!j->wstop) {
        pthread_mutex_unlock(&j->wmu);
        pthread_mutex_lock(&j->mu);
        uint64_t before = j->last_seq;
        mlt_err err = drain_locked(j, false, NULL, NULL);
        bool wrote = j->last_seq != before;
        if (err != MLT_OK) {
            snprintf(j->werr, sizeof j->werr, "%s", mlt_last_error());
            atomic_store(&r->writer_failing, true);
        } else if (wrote || !ring_ready(r)) {
            j->werr[0] = '\0'; /* it writes again (space came back) */
            atomic_store(&r->writer_failing, false);
        }
        int64_t now = mlt__mono_ns() / 1000000, sync_in = 1000;
        if (j->mode == MLT__FSYNC_INTERVAL && (j->dirty || j->acked_dirty || j->keys_dirty)) {
            if (now - last_sync >= j->interval_ms) {
                if (sync_locked(j) != MLT_OK) {
                    snprintf(j->werr, sizeof j->werr, "%s", mlt_last_error());
                }
                last_sync = now;
            } else {
                sync_in = j->interval_ms - (now - last_sync);
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
            timed_wait_ms(&j->wcv, &j->wmu, WRITER_POLL_MS);
            continue;
        }
        atomic_store(&r->idle, 1);
        if (err == MLT_OK && ring_ready(r)) {
            atomic_store(&r->idle, 0);
            continue;
        }
        timed_wait_ms(&j->wcv, &j->wmu, err != MLT_OK ? 100 : sync_in);
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
    j->interval_ms = interval_ms > 0 ? interval_ms : 100;
    if (pthread_create(&j->writer, NULL, writer_main, j) != 0) {
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the journal's writer thread");
    }
    j->writer_started = true;
    return MLT_OK;
}

static void stop_writer(mlt__journal *j)
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

/* Only the names seg_name() gives are segments: the reader, the appender and acks find a
 * segment again by the name of its number, so "seg-+000...1.log" or a number past 64 bits would
 * name another file (or none). Other names are foreign files, left alone. */
static bool is_segment(const char *name)
{
    if (strncmp(name, "seg-", 4) != 0 || strlen(name) != 28) {
        return false;
    }
    char canonical[64];
    seg_name(strtoull(name + 4, NULL, 10), canonical);
    return strcmp(name, canonical) == 0;
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
            mlt__run_state st = strcmp(state, "ended") == 0      ? MLT__RUN_ENDED
                                : strcmp(state, "dead") == 0     ? MLT__RUN_DEAD
                                : strcmp(state, "attached") == 0 ? MLT__RUN_ATTACHED
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
    rbuf rb = {0};
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
        /* numbers run from 1: 0 is "nothing acked", and a record 0 could never be acked */
        if (first == 0 || (expect && first != expect)) {
            if (first == 0) {
                snprintf(rec->why, sizeof rec->why, "%s: sequence numbers start at 1", names[i]);
            } else {
                snprintf(rec->why, sizeof rec->why,
                         "%s: expected a segment starting at %" PRIu64, names[i], expect);
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
            if (read_frame(&rb, fd, off, fsize, &scratch, &seq, &type, &plen, why, sizeof why) != 0 ||
                seq != expect || seq == 0) { /* 0: past the last number */
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
            if (type == MLT__REC_POINT) {
                note_ticket(j, (const unsigned char *)scratch.data, plen);
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
        rb_reset(&rb);
        err = add_segment(j, first, fsize);
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
    seg_name(j->segs[i].first_seq, name);
    if (path_in(j, name, path, sizeof path) == 0) {
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
        fsync_dir(j->dir); /* gone before the next segment is made */
    }
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
    if (err == MLT_OK && load_keys(j) != MLT_OK) {
        err = sys_err(errbuf, errlen, "cannot read the metric keys of", dir);
    }
    if (err == MLT_OK) {
        mlt__buf b;
        mlt__buf_init(&b);
        if (read_small_file(j, "target", &b) == MLT_OK && b.len && !b.oom) {
            b.data[strcspn(b.data, "\n")] = '\0';
            j->target = mlt__strdup(b.data);
        }
        mlt__buf_free(&b);
    }
    if (err == MLT_OK) {
        err = scan(j, rec, errbuf, errlen);
    }
    if (err == MLT_OK) {
        follow_on(j);
    }
    if (err == MLT_OK && !read_only) {
        err = ring_recover(j, rec, errbuf, errlen);
    } else if (err == MLT_OK) {
        ring_count(j, rec);
    }
    if (err != MLT_OK) {
        free_journal(j);
        return err;
    }
    uint64_t acked = atomic_load(&j->acked_seq);
    j->dead = count_lines(j, "dead.jsonl");
    update_pending(j);
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
    /* the ring's points were made before this record */
    if ((err = drain_locked(j, false, NULL, NULL)) != MLT_OK) {
        goto out;
    }
    if (j->last_seq == UINT64_MAX) {
        err = used_up(j);
        goto out;
    }
    if ((err = roll_segment(j)) != MLT_OK) {
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
    if ((err = write_frames(j, &j->frame, seq)) != MLT_OK) {
        goto out;
    }
    j->appended_runs += type == MLT__REC_CREATE;
    j->appended_points += type == MLT__REC_METRIC;
    if (j->mode == MLT__FSYNC_ALWAYS) {
        if (fdatasync(j->wfd) != 0) {
            err = mlt__fail(MLT_ERR_IO, "cannot sync journal %s: %s", j->dir, strerror(errno));
            goto out;
        }
        j->dirty = false;
    }
    if (seq_out) {
        *seq_out = seq;
    }
out:
    pthread_mutex_unlock(&j->mu);
    return err;
}

/* Makes what was written durable: the keys, the segment, then the acked cursor (caller holds
 * mu). */
static mlt_err sync_locked(mlt__journal *j)
{
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
        int fd = path_in(j, "acked", path, sizeof path) == 0 ? open(path, O_RDONLY | O_CLOEXEC)
                                                             : -1;
        int rc = fd >= 0 ? fsync(fd) : -1;
        if (fd >= 0) {
            close(fd);
        }
        if (rc != 0 || fsync_dir(j->dir) != 0) {
            return mlt__fail(MLT_ERR_IO, "cannot sync the acked cursor of %s: %s", j->dir,
                             strerror(errno));
        }
        j->acked_dirty = false;
    }
    return MLT_OK;
}

mlt_err mlt__journal_sync(mlt__journal *j)
{
    pthread_mutex_lock(&j->mu);
    mlt_err err = drain_locked(j, false, NULL, NULL);
    if (err == MLT_OK) {
        err = sync_locked(j);
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
    rb_reset(&j->rb);
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
            uint64_t c = j->rseq, before = j->rseq;
            mlt_err err = mlt__journal_next(j, &c, scratch, &skip);
            /* a record that checks out but does not decode was consumed: skipped like the rest
             * (the sender set it aside before acking past it) */
            if (err != MLT_OK && (err != MLT_ERR_CORRUPT || c == before)) {
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
            if (read_frame(&j->rb, j->rfd, j->roff, seg_size, scratch, &seq, &type, &plen, why,
                           sizeof why) != 0 ||
                seq != j->rseq + 1) {
                return mlt__fail(MLT_ERR_CORRUPT, "journal %s: %s", j->dir, why);
            }
            uint32_t size = MLT__FRAME_HEADER + plen;
            r->seq = seq;
            r->size = size;
            r->end_pos = j->rpos + size;
            mlt_err err = type == MLT__REC_POINT
                              ? decode_point(j, (const unsigned char *)scratch->data, plen, r)
                              : mlt__rec_decode((mlt__rec_type)type, scratch->data, plen, r);
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
    /* With fsync=always the cursor is durable at once; otherwise it is made durable with the
     * next sync (a power failure may then send again what the last interval delivered: the
     * same points, which MLflow keeps once). A crash of the process loses nothing either way. */
    bool now = j->mode == MLT__FSYNC_ALWAYS;
    mlt_err err = replace_file_opt(j, "acked", text, (size_t)n, now);
    if (err == MLT_OK && !now) {
        pthread_mutex_lock(&j->mu);
        j->acked_dirty = true;
        pthread_mutex_unlock(&j->mu);
    }
    if (err != MLT_OK) {
        return mlt__fail(err, "cannot record delivery in %s: %s", j->dir, strerror(errno));
    }
    atomic_store(&j->acked_seq, last->seq);
    atomic_store(&j->acked_pos, last->end_pos);
    pthread_mutex_lock(&j->mu);
    update_pending(j);
    pthread_mutex_unlock(&j->mu);
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

/* ---- the target ---- */

/* The URI without user:password@ and without trailing slashes, for comparing and storing. */
static char *plain_uri(const char *uri)
{
    char out[2048];
    mlt__redact_url(uri, out, sizeof out);
    /* mlt__redact_url writes "***@" for credentials: drop them altogether */
    char *at = strstr(out, "***@"), *scheme = strstr(out, "://");
    if (at && scheme && at > scheme) {
        memmove(scheme + 3, at + 4, strlen(at + 4) + 1);
    }
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/') {
        out[--n] = '\0';
    }
    return mlt__strdup(out);
}

mlt_err mlt__journal_set_target(mlt__journal *j, const char *uri)
{
    char *t = plain_uri(uri);
    if (!t) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    char *line = mlt__aprintf("%s\n", t);
    mlt_err err = line ? replace_file(j, "target", line, strlen(line)) : MLT_ERR_NOMEM;
    free(line);
    if (err != MLT_OK) {
        free(t);
        return mlt__fail(err, "cannot record the target of journal %s: %s", j->dir,
                         strerror(errno));
    }
    free(j->target);
    j->target = t;
    return MLT_OK;
}

const char *mlt__journal_target(const mlt__journal *j)
{
    return j->target;
}

bool mlt__journal_is_for(const mlt__journal *j, const char *uri)
{
    if (!j->target) {
        return true;
    }
    char *t = plain_uri(uri);
    bool same = t && strcmp(t, j->target) == 0;
    free(t);
    return same;
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
    static const char *const states[] = {"open", "ended", "dead", "attached"};
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

/* ,"name":"value" of a dead letter, when value is set and not empty. */
static void dead_str(mlt__buf *b, const char *name, const char *value)
{
    if (value && value[0]) {
        mlt__buf_printf(b, ",\"%s\":", name);
        mlt__json_str(b, value);
    }
}

mlt_err mlt__journal_dead_letter(mlt__journal *j, const mlt__rec *r, const char *answer)
{
    static const char *const types[] = {"?",   "create_run", "param", "metric",
                                        "tag", "end_run",    "metric", "attach_run"};
    const mlt__run_entry *e = mlt__journal_run(j, r->run_no);
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__buf_printf(&b, "{\"seq\":%" PRIu64 ",\"type\":\"%s\",\"run_key\":", r->seq,
                    r->type <= MLT__REC_ATTACH ? types[r->type] : "?");
    mlt__json_str(&b, r->type == MLT__REC_CREATE || r->type == MLT__REC_ATTACH ? r->key
                      : e                                                      ? e->key
                                                                               : "");
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
    } else if (r->type == MLT__REC_CREATE || r->type == MLT__REC_ATTACH) {
        /* all a run's creation holds, so that it can be made again by hand */
        dead_str(&b, "run_id", r->type == MLT__REC_ATTACH ? r->run_id : NULL);
        dead_str(&b, "run_name", r->run_name);
        dead_str(&b, "parent_run_key", r->parent_key);
        dead_str(&b, "experiment_name", r->experiment_name);
        dead_str(&b, "experiment_id", r->experiment_id);
        if (r->type == MLT__REC_CREATE) {
            mlt__buf_printf(&b, ",\"start_time\":%" PRId64 ",\"tags\":{", r->time_ms);
            for (size_t i = 0; i < r->n_tags && i < MLT__REC_MAX_TAGS; i++) {
                mlt__buf_puts(&b, i ? "," : "");
                mlt__json_str(&b, r->tag_keys[i] ? r->tag_keys[i] : "");
                mlt__buf_puts(&b, ":");
                mlt__json_str(&b, r->tag_values[i] ? r->tag_values[i] : "");
            }
            mlt__buf_puts(&b, "}");
        }
    } else if (r->type == MLT__REC_END) {
        mlt__buf_printf(&b, ",\"status\":\"%s\",\"end_time\":%" PRId64,
                        mlt_run_status_name((mlt_run_status)r->status), r->time_ms);
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

mlt_err mlt__journal_read_dead_letters(mlt__journal *j, mlt__buf *out)
{
    mlt_err err = read_small_file(j, "dead.jsonl", out);
    if (err == MLT_ERR_NOT_FOUND) {
        return MLT_OK;
    }
    return err == MLT_OK ? MLT_OK
                         : mlt__fail(err, "cannot read %s/dead.jsonl: %s", j->dir, strerror(errno));
}

mlt_err mlt__journal_keep_dead_letters(mlt__journal *j, const char *text, size_t len,
                                       uint64_t lines)
{
    char path[PATH_MAX];
    bool ok;
    if (len == 0) {
        ok = path_in(j, "dead.jsonl", path, sizeof path) == 0 &&
             (unlink(path) == 0 || errno == ENOENT) && fsync_dir(j->dir) == 0;
    } else {
        ok = replace_file(j, "dead.jsonl", text, len) == MLT_OK;
    }
    if (!ok) {
        return mlt__fail(MLT_ERR_IO, "cannot rewrite %s/dead.jsonl: %s", j->dir, strerror(errno));
    }
    j->dead = lines;
    return MLT_OK;
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
    stop_writer(j);
    if (!j->read_only) {
        mlt__journal_sync(j);
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
    stop_writer(j);
    if (!j->read_only) {
        remove_dir(j); /* with the lock held to the end, as at a close */
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
