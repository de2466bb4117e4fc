/*
 * fuzz_journal.c - fuzz target: a journal directory as found on disk after any crash or
 * tampering. The input is the directory's files:
 *
 *   ==NAME\n<content>[\n==NAME\n<content>]...
 *
 * (a file's content ends where "\n==" starts the next one). NAME is any file name (printable, no
 * '/'): seg-<20 digits>.log, acked, runs, keys, target, dead.jsonl, ring, or anything else;
 * "art:NAME" is NAME in the art/ directory (artifact snapshots: <20 digits>, dead-<20 digits>,
 * tmp-...).
 * "ring*" writes the ring file at its full size from a short description: up to 4096 bytes of
 * header, then groups of a 2-byte slot index (little-endian) and a 40-byte slot. A NAME ending in
 * '!' is written without the '!', with the checksum of each whole frame made right (a segment's
 * frames start after its 8-byte magic), so that mutated payloads get past the checksum.
 *
 * Each input is written into a fresh directory, then opened the ways mltrack does: read-only and
 * read to the end (mltrack status, sync's peek; nothing may change), read-write and read to the
 * end (sync, adoption: the torn tail is cut, the ring saved, undecodable and some rejected
 * records set aside as dead letters, the last record read acked, the dead letters requeued
 * into a new journal as `mltrack requeue` does), and read-write once more (nothing is left to
 * cut). Besides the sanitizers' findings, it checks that the read-only and
 * the read-write opens agree, that a second open finds a clean journal, and that nothing is
 * written outside the directory. The directory is removed after each input.
 */
#include "config.h"

#include "fuzz.h"
#include "journal.h"
#include "requeue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILES 32
#define MAX_READS 100000 /* records read per open: far more than an input can hold */
#define MAX_SEEN 4096    /* records compared between the opens */
#define RING_FILE_BYTES (sizeof(mlt__ring_hdr) + (size_t)MLT__RING_SLOTS * sizeof(mlt__ring_slot))

static char base_dir[PATH_MAX]; /* this process's scratch directory: holds only jdir */
static char jdir[PATH_MAX];

/* dir/name into out (PATH_MAX bytes). */
static void path_of(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    FUZZ_CHECK(n > 0 && n < PATH_MAX);
}

static void remove_base(void)
{
    rmdir(base_dir);
}

static void setup(void)
{
    if (base_dir[0]) {
        return;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(base_dir, sizeof base_dir, "%s/mlt-fuzz-journal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        abort();
    }
    path_of(jdir, base_dir, "j");
    atexit(remove_base);
}

/* Removes path and what is under it. */
static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char sub[PATH_MAX];
                path_of(sub, path, e->d_name);
                remove_tree(sub);
            }
        }
        if (d) {
            closedir(d);
        }
        FUZZ_CHECK(rmdir(path) == 0);
    } else {
        FUZZ_CHECK(unlink(path) == 0);
    }
}

static bool good_name(const char *name)
{
    if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (*p <= ' ' || *p > '~' || *p == '/') {
            return false;
        }
    }
    return true;
}

static void write_file(const char *name, const uint8_t *data, size_t len)
{
    char path[PATH_MAX];
    path_of(path, jdir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(len == 0 || write(fd, data, len) == (ssize_t)len);
    close(fd);
}

/* The ring at its full size: header, then (index, slot) groups. */
static void write_ring(const uint8_t *data, size_t len)
{
    char path[PATH_MAX];
    path_of(path, jdir, "ring");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(ftruncate(fd, (off_t)RING_FILE_BYTES) == 0);
    size_t h = len < sizeof(mlt__ring_hdr) ? len : sizeof(mlt__ring_hdr);
    FUZZ_CHECK(pwrite(fd, data, h, 0) == (ssize_t)h);
    data += h;
    len -= h;
    const size_t group = 2 + sizeof(mlt__ring_slot);
    for (; len >= group; data += group, len -= group) {
        size_t idx = (size_t)(data[0] | data[1] << 8) % MLT__RING_SLOTS;
        off_t off = (off_t)(sizeof(mlt__ring_hdr) + idx * sizeof(mlt__ring_slot));
        FUZZ_CHECK(pwrite(fd, data + 2, sizeof(mlt__ring_slot), off) ==
                   (ssize_t)sizeof(mlt__ring_slot));
    }
    close(fd);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A copy of a segment's bytes with the checksum of every whole frame made right (caller frees). */
static uint8_t *with_good_crcs(const uint8_t *data, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    FUZZ_CHECK(c != NULL);
    if (len) {
        memcpy(c, data, len);
    }
    for (size_t off = 8; off + MLT__FRAME_HEADER <= len;) {
        uint8_t *f = c + off;
        uint32_t plen = get_le32(f);
        if (plen > len - off - MLT__FRAME_HEADER) {
            break;
        }
        uint32_t crc = mlt__crc32c(mlt__crc32c(0, f + 8, 9), f + MLT__FRAME_HEADER, plen);
        for (int i = 0; i < 4; i++) {
            f[4 + i] = (uint8_t)(crc >> (8 * i));
        }
        off += MLT__FRAME_HEADER + (size_t)plen;
    }
    return c;
}

/* Writes the files of the input into jdir (made fresh). */
static void write_input(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(mkdir(jdir, 0700) == 0);
    if (size < 2 || memcmp(data, "==", 2) != 0) {
        return;
    }
    data += 2;
    size -= 2;
    for (int files = 0; size > 0 && files < MAX_FILES; files++) {
        const uint8_t *part;
        size_t n = fuzz_next_part(&data, &size, "\n==", &part);
        const uint8_t *nl = memchr(part, '\n', n);
        size_t name_len = nl ? (size_t)(nl - part) : n;
        char name[65];
        if (name_len >= sizeof name) {
            continue;
        }
        memcpy(name, part, name_len);
        name[name_len] = '\0';
        const uint8_t *content = nl ? nl + 1 : part + n;
        size_t content_len = nl ? n - name_len - 1 : 0;
        if (strcmp(name, "ring*") == 0) {
            write_ring(content, content_len);
        } else if (name_len > 1 && name[name_len - 1] == '!') {
            name[name_len - 1] = '\0';
            if (good_name(name)) {
                uint8_t *fixed = with_good_crcs(content, content_len);
                write_file(name, fixed, content_len);
                free(fixed);
            }
        } else if (strncmp(name, "art:", 4) == 0 && good_name(name + 4)) {
            char art[PATH_MAX], sub[80];
            path_of(art, jdir, "art");
            FUZZ_CHECK(mkdir(art, 0700) == 0 || errno == EEXIST);
            snprintf(sub, sizeof sub, "art/%s", name + 4);
            write_file(sub, content, content_len);
        } else if (good_name(name)) {
            write_file(name, content, content_len);
        }
    }
}

/* ---- what a directory looks like, to see that a read-only open changes nothing ---- */

typedef struct entry {
    char name[256];
    off_t size;
    struct timespec mtime;
    mode_t mode;
    uint64_t hash; /* of the content, for files up to 1 MB */
} entry;

typedef struct snapshot {
    entry e[MAX_FILES + 8];
    size_t n;
    bool overflow;
} snapshot;

static uint64_t hash_file(const char *path)
{
    uint64_t h = 14695981039346656037ull;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    unsigned char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            h = (h ^ buf[i]) * 1099511628211ull;
        }
    }
    close(fd);
    return h;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static void snap(snapshot *s)
{
    memset(s, 0, sizeof *s);
    DIR *d = opendir(jdir);
    FUZZ_CHECK(d != NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        if (s->n == sizeof s->e / sizeof s->e[0]) {
            s->overflow = true;
            break;
        }
        entry *e = &s->e[s->n++];
        snprintf(e->name, sizeof e->name, "%s", de->d_name);
        char path[PATH_MAX];
        path_of(path, jdir, de->d_name);
        struct stat st;
        FUZZ_CHECK(lstat(path, &st) == 0);
        e->size = st.st_size;
        e->mtime = st.st_mtim;
        e->mode = st.st_mode;
        e->hash = S_ISREG(st.st_mode) && st.st_size <= (1 << 20) ? hash_file(path) : 0;
    }
    closedir(d);
    qsort(s->e, s->n, sizeof s->e[0], cmp_entry);
}

static void check_same(const snapshot *a, const snapshot *b)
{
    FUZZ_CHECK(a->n == b->n && a->overflow == b->overflow);
    for (size_t i = 0; i < a->n; i++) {
        FUZZ_CHECK(strcmp(a->e[i].name, b->e[i].name) == 0);
        FUZZ_CHECK(a->e[i].size == b->e[i].size && a->e[i].mode == b->e[i].mode);
        FUZZ_CHECK(a->e[i].hash == b->e[i].hash);
        FUZZ_CHECK(a->e[i].mtime.tv_sec == b->e[i].mtime.tv_sec &&
                   a->e[i].mtime.tv_nsec == b->e[i].mtime.tv_nsec);
    }
}

/* ---- reading ---- */

typedef struct seen {
    uint64_t seq[MAX_SEEN];
    int what[MAX_SEEN]; /* the record type, or -1 for one that does not decode */
    size_t n;
    mlt__rec last; /* the last record read that decodes (strings copied below) */
    bool have_last;
    char last_key[64];
} seen;

static void touch(const char *s)
{
    if (s) {
        (void)strlen(s);
    }
}

/* Every string a decoded record holds is readable. */
static void touch_rec(const mlt__rec *r)
{
    touch(r->key);
    touch(r->run_id);
    touch(r->value);
    touch(r->parent_key);
    touch(r->run_name);
    touch(r->experiment_name);
    touch(r->experiment_id);
    FUZZ_CHECK(r->n_tags <= MLT__REC_MAX_TAGS);
    for (size_t i = 0; i < r->n_tags; i++) {
        touch(r->tag_keys[i]);
        touch(r->tag_values[i]);
    }
}

/*
 * Reads every record after the acked cursor, as the sender does: a record that checks out but
 * does not decode is set aside (with deliver, as a dead letter) and reading goes on. With
 * deliver, a few records are rejected as dead letters too, and the last one read is acked.
 */
static void read_all(mlt__journal *j, seen *out, bool deliver)
{
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec last;
    bool have_last = false;
    out->n = 0;
    out->have_last = false;
    mlt_err err = MLT_ERR_NOT_FOUND;
    for (int i = 0; i < MAX_READS; i++) {
        uint64_t c = cursor;
        mlt__rec r;
        err = mlt__journal_next(j, &c, &scratch, &r);
        if (err == MLT_ERR_CORRUPT && c > cursor) {
            FUZZ_CHECK(r.seq == c);
            mlt__rec bad = {.seq = r.seq, .end_pos = r.end_pos, .size = r.size, .key = ""};
            if (deliver) {
                FUZZ_CHECK(mlt__journal_dead_letter(j, &bad, "the record could not be decoded") ==
                           MLT_OK);
            }
            if (out->n < MAX_SEEN) {
                out->seq[out->n] = c;
                out->what[out->n++] = -1;
            }
            cursor = c;
            last = bad;
            have_last = true;
            continue;
        }
        if (err != MLT_OK) {
            break;
        }
        FUZZ_CHECK(c > cursor && r.seq == c);
        touch_rec(&r);
        if (deliver && (r.type == MLT__REC_PARAM || r.type == MLT__REC_TAG) && c % 4 == 0) {
            /* rejected for good: the value stands in for the server's answer */
            FUZZ_CHECK(mlt__journal_dead_letter(j, &r, r.value) == MLT_OK);
        }
        if (out->n < MAX_SEEN) {
            out->seq[out->n] = c;
            out->what[out->n++] = (int)r.type;
        }
        out->last = r;
        out->have_last = true;
        snprintf(out->last_key, sizeof out->last_key, "%s", r.key ? r.key : "");
        cursor = c;
        last = r;
        have_last = true;
    }
    /* what the open kept reads back to the end: no I/O error, no frame that does not read back */
    if (err != MLT_ERR_NOT_FOUND && err != MLT_OK) {
        fprintf(stderr, "reading %s: %s (%s)\n", deliver ? "to deliver" : "read-only",
                mlt_err_name(err), mlt_last_error());
    }
    FUZZ_CHECK(err == MLT_ERR_NOT_FOUND || err == MLT_OK);
    if (deliver && have_last) {
        FUZZ_CHECK(mlt__journal_ack(j, &last) == MLT_OK);
    }
    mlt__buf_free(&scratch);
    size_t n_runs;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n_runs);
    for (size_t i = 0; i < n_runs; i++) {
        FUZZ_CHECK(memchr(runs[i].key, '\0', sizeof runs[i].key) != NULL);
        touch(runs[i].run_id);
        touch(runs[i].experiment_id);
        FUZZ_CHECK(mlt__journal_run(j, runs[i].run_no) != NULL);
    }
    touch(mlt__journal_target(j));
    (void)mlt__journal_is_for(j, "http://127.0.0.1:5000");
    (void)mlt__journal_pending_bytes(j);
    (void)mlt__journal_dead_count(j);
}

static seen ro_seen; /* what the read-only open read (static: large) */

/*
 * mltrack requeue: the dead letters of j (the input's and those the delivery just made) into a
 * new journal beside it. Either every requeued letter is a record of the new journal that reads
 * back, or (a line that is not mltrack's) nothing changes; the new journal is removed after.
 */
static void requeue_into_new(mlt__journal *j)
{
    char to_dir[PATH_MAX], errbuf[256];
    path_of(to_dir, base_dir, "j-requeued");
    mlt__journal *to = NULL;
    if (mlt__errbuf(errbuf, sizeof errbuf, mlt__journal_create(&to, to_dir, MLT__FSYNC_NONE)) !=
        MLT_OK) {
        remove_tree(to_dir);
        return;
    }
    uint64_t before = mlt__journal_dead_count(j);
    mlt__requeue_stats st;
    mlt_err err = mlt__requeue(j, to, &st);
    FUZZ_CHECK(err == MLT_OK || err == MLT_ERR_CORRUPT || err == MLT_ERR_NOMEM);
    if (err == MLT_OK) {
        FUZZ_CHECK(mlt__journal_last_seq(to) == st.requeued);
        FUZZ_CHECK(mlt__journal_dead_count(j) <= before);
        mlt__buf scratch;
        mlt__buf_init(&scratch);
        uint64_t c = 0, n = 0;
        mlt__rec r;
        while (mlt__journal_next(to, &c, &scratch, &r) == MLT_OK) {
            touch_rec(&r);
            n++;
        }
        mlt__buf_free(&scratch);
        FUZZ_CHECK(n == st.requeued);
    } else {
        FUZZ_CHECK(mlt__journal_dead_count(j) == before);
    }
    mlt__journal_discard(to);
}

/*
 * The journal j opened read-write (rec), as read-only before (ro, NULL if that failed): the
 * same records; delivered; a point put into its ring by the adopting process; then closed and
 * opened once more, when nothing is left to cut or to save and the point reads back.
 */
static void adopt(mlt__journal *j, const mlt__recovery *ro, const mlt__recovery *rec,
                  const uint8_t *data, size_t size)
{
    static seen rw_seen;
    if (ro) {
        FUZZ_CHECK(rec->records == ro->records);
        FUZZ_CHECK(rec->cut_bytes == ro->cut_bytes);
        FUZZ_CHECK(rec->first_seq == ro->first_seq);
        FUZZ_CHECK(rec->last_seq == ro->last_seq);
        FUZZ_CHECK(rec->ring_points == ro->ring_points);
    }
    read_all(j, &rw_seen, true);
    if (ro) {
        /* the same records, then those saved from the ring */
        FUZZ_CHECK(rw_seen.n >= ro_seen.n);
        for (size_t i = 0; i < ro_seen.n; i++) {
            FUZZ_CHECK(rw_seen.seq[i] == ro_seen.seq[i]);
            FUZZ_CHECK(rw_seen.what[i] == ro_seen.what[i]);
        }
    }
    /* the adopting process goes on logging points into the journal's ring, with a key of its
     * own (unless the input names that key id already) */
    mlt__ring *ring = mlt__journal_ring(j);
    bool own_key = !memmem(data, size, "16777215", 8);
    bool put = ring && mlt__journal_put_key(j, 16777215, "fuzz/adopted") == MLT_OK &&
               mlt__ring_put(ring, 1, 16777215 | MLT__RING_MS, 0.5, 1764547200000, 7) == MLT_OK &&
               mlt__journal_drain(j) == MLT_OK;
    uint64_t last = mlt__journal_last_seq(j);
    /* the one journal that takes no point: its record numbers are used up (the point stays in
     * the ring, and the next owner is told) */
    bool used_up = last == UINT64_MAX;
    FUZZ_CHECK(!ring || put || used_up);
    requeue_into_new(j);
    mlt__journal_close(j, false);

    /* once more: nothing left to cut or to save */
    mlt__recovery again;
    char errbuf[512];
    j = NULL;
    mlt_err err = mlt__errbuf(errbuf, sizeof errbuf,
                              mlt__journal_open(&j, jdir, false, MLT__FSYNC_NONE, &again));
    FUZZ_CHECK(err == MLT_OK || (used_up && !put && err == MLT_ERR_QUEUE_FULL));
    if (err != MLT_OK) {
        return;
    }
    if (again.cut_bytes != 0) {
        fprintf(stderr, "second open cut %llu bytes: %s\n", (unsigned long long)again.cut_bytes,
                again.why);
    }
    FUZZ_CHECK(again.cut_bytes == 0);
    FUZZ_CHECK(again.ring_points == 0);
    FUZZ_CHECK(mlt__journal_last_seq(j) == last);
    read_all(j, &rw_seen, false);
    if (put) {
        /* the point, last, with its key */
        if (!(rw_seen.have_last && rw_seen.last.seq == last)) {
            fprintf(stderr, "the point put as %llu: last read %llu (%d records)\n",
                    (unsigned long long)last,
                    (unsigned long long)(rw_seen.have_last ? rw_seen.last.seq : 0), (int)rw_seen.n);
        }
        FUZZ_CHECK(rw_seen.have_last && rw_seen.last.seq == last);
        FUZZ_CHECK(rw_seen.last.type == MLT__REC_METRIC && rw_seen.last.step == 7 &&
                   rw_seen.last.num == 0.5 && rw_seen.last.time_ms == 1764547200000);
        FUZZ_CHECK(!own_key || strcmp(rw_seen.last_key, "fuzz/adopted") == 0);
    }
    mlt__journal_close(j, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    write_input(data, size);
    char errbuf[512];

    /* read-only, as mltrack status: reports, changes nothing */
    snapshot before, after;
    snap(&before);
    mlt__recovery ro_rec;
    mlt__journal *j = NULL;
    mlt_err ro_err = mlt__errbuf(errbuf, sizeof errbuf,
                                 mlt__journal_open(&j, jdir, true, MLT__FSYNC_NONE, &ro_rec));
    if (ro_err == MLT_OK) {
        FUZZ_CHECK(mlt__journal_last_seq(j) >= mlt__journal_acked_seq(j));
        read_all(j, &ro_seen, false);
        mlt__journal_close(j, false);
    }
    snap(&after);
    check_same(&before, &after);

    /* read-write, as mltrack sync: cuts, saves the ring, delivers */
    mlt__recovery rw_rec;
    j = NULL;
    mlt_err err = mlt__errbuf(errbuf, sizeof errbuf,
                              mlt__journal_open(&j, jdir, false, MLT__FSYNC_NONE, &rw_rec));
    if (err == MLT_OK) {
        adopt(j, ro_err == MLT_OK ? &ro_rec : NULL, &rw_rec, data, size);
    }

    remove_tree(jdir);
    /* nothing was written beside the journal's directory */
    DIR *d = opendir(base_dir);
    FUZZ_CHECK(d != NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        FUZZ_CHECK(!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."));
    }
    closedir(d);
    return 0;
}
