/*
 * seed_journal.c - writes seeds for fuzz_journal: journal directories made by the library itself
 * (as a tracker leaves them when it closes, and as it leaves them when it dies with points still
 * in its ring), packed in fuzz_journal's input format, plus damaged copies: torn and flipped
 * tails, a segment split in two, a segment that does not follow on, a ring of the wrong size.
 * Not built by default:
 *   make tests/fuzz/seed_journal && tests/fuzz/seed_journal OUTDIR
 */
#include "config.h"

#include "journal.h"
#include "record.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING_FILE_BYTES (sizeof(mlt__ring_hdr) + (size_t)MLT__RING_SLOTS * sizeof(mlt__ring_slot))

static const char *outdir;
static char scratch[PATH_MAX];

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s failed (%s)\n", __FILE__, __LINE__, #cond,                  \
                    mlt_last_error());                                                             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void path_of(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    REQUIRE(n > 0 && n < PATH_MAX);
}

/* ---- a journal directory in memory ---- */

typedef struct file {
    char name[256];
    unsigned char *data;
    size_t len;
} file;

typedef struct jdir {
    file f[32];
    size_t n;
} jdir;

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const file *)a)->name, ((const file *)b)->name);
}

/* The files of dir into d (those of its art/ directory named "art:NAME", as the fuzz target
 * reads them). */
static void load_from(jdir *d, const char *dir, const char *prefix)
{
    DIR *dd = opendir(dir);
    REQUIRE(dd != NULL);
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "lock") == 0 || strstr(e->d_name, ".tmp")) {
            continue;
        }
        char p[PATH_MAX];
        path_of(p, dir, e->d_name);
        if (!prefix[0] && strcmp(e->d_name, "art") == 0) {
            load_from(d, p, "art:");
            continue;
        }
        REQUIRE(d->n < sizeof d->f / sizeof d->f[0]);
        file *f = &d->f[d->n++];
        snprintf(f->name, sizeof f->name, "%s%s", prefix, e->d_name);
        FILE *in = fopen(p, "rb");
        REQUIRE(in != NULL);
        struct stat st;
        REQUIRE(fstat(fileno(in), &st) == 0);
        f->len = (size_t)st.st_size;
        f->data = malloc(f->len + 1);
        REQUIRE(f->data != NULL);
        REQUIRE(fread(f->data, 1, f->len, in) == f->len);
        fclose(in);
    }
    closedir(dd);
}

static void load(jdir *d, const char *dir)
{
    memset(d, 0, sizeof *d);
    load_from(d, dir, "");
    qsort(d->f, d->n, sizeof d->f[0], cmp_file);
}

static void unload(jdir *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->f[i].data);
    }
    d->n = 0;
}

static file *find(jdir *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->f[i].name, name) == 0) {
            return &d->f[i];
        }
    }
    return NULL;
}

static file *last_segment(jdir *d)
{
    file *last = NULL;
    for (size_t i = 0; i < d->n; i++) {
        if (strncmp(d->f[i].name, "seg-", 4) == 0) {
            last = &d->f[i];
        }
    }
    REQUIRE(last != NULL);
    return last;
}

static bool fix_crcs; /* pack names segments NAME! (fuzz_journal makes their checksums right) */

/* Writes d as one fuzz_journal input, OUTDIR/NAME. A full-size ring is written in the short
 * "ring*" form: its header, then the slots in use. */
static void pack(const jdir *d, const char *name)
{
    char p[PATH_MAX];
    path_of(p, outdir, name);
    FILE *out = fopen(p, "wb");
    REQUIRE(out != NULL);
    for (size_t i = 0; i < d->n; i++) {
        const file *f = &d->f[i];
        if (i) {
            fputc('\n', out);
        }
        if (strcmp(f->name, "ring") == 0 && f->len == RING_FILE_BYTES) {
            fputs("==ring*\n", out);
            fwrite(f->data, 1, sizeof(mlt__ring_hdr), out);
            for (size_t s = 0; s < MLT__RING_SLOTS; s++) {
                const unsigned char *slot =
                    f->data + sizeof(mlt__ring_hdr) + s * sizeof(mlt__ring_slot);
                uint64_t stamp;
                memcpy(&stamp, slot, sizeof stamp);
                if (stamp) {
                    unsigned char idx[2] = {(unsigned char)s, (unsigned char)(s >> 8)};
                    fwrite(idx, 1, 2, out);
                    fwrite(slot, 1, sizeof(mlt__ring_slot), out);
                }
            }
            continue;
        }
        for (size_t k = 0; k + 3 <= f->len; k++) {
            if (memcmp(f->data + k, "\n==", 3) == 0) {
                fprintf(stderr, "warning: %s of %s holds a separator\n", f->name, name);
            }
        }
        bool seg = strncmp(f->name, "seg-", 4) == 0;
        fprintf(out, "==%s%s\n", f->name, fix_crcs && seg ? "!" : "");
        fwrite(f->data, 1, f->len, out);
    }
    REQUIRE(fclose(out) == 0);
}

/* ---- making journals with the library ---- */

static mlt__journal *create(const char *name, char *dir)
{
    path_of(dir, scratch, name);
    mlt__journal *j = NULL;
    char err[256];
    REQUIRE(mlt__errbuf(err, sizeof err, mlt__journal_create(&j, dir, MLT__FSYNC_NONE)) == MLT_OK);
    return j;
}

static void append(mlt__journal *j, mlt__rec_type type, mlt__buf *b)
{
    REQUIRE(!b->oom);
    REQUIRE(mlt__journal_append(j, type, b->data, b->len, NULL) == MLT_OK);
    mlt__buf_reset(b);
}

/* One run: create, params, a tag, metrics by record and by ring point, end. */
static void log_run(mlt__journal *j, uint32_t run_no, const char *key, bool end, bool points)
{
    mlt__buf b;
    mlt__buf_init(&b);
    const char *tk[] = {"mlflow.user", "mlflow.source.name"};
    const char *tv[] = {"fuzz", "seed_journal.c"};
    mlt__rec_put_create(&b, run_no, key, "", "train", "fuzz-exp", "", 1764547200000, tk, tv, 2, 0);
    append(j, MLT__REC_CREATE, &b);
    mlt__rec_put_kv(&b, run_no, "lr", "0.01");
    append(j, MLT__REC_PARAM, &b);
    mlt__rec_put_kv(&b, run_no, "note", "caf\xc3\xa9 \"quoted\"\n");
    append(j, MLT__REC_TAG, &b);
    mlt__rec_put_metric(&b, run_no, "loss", 0.75, 1764547200001, 0);
    append(j, MLT__REC_METRIC, &b);
    if (points) {
        mlt__ring *r = mlt__journal_ring(j);
        REQUIRE(r != NULL);
        REQUIRE(mlt__journal_put_key(j, 0, "acc") == MLT_OK);
        REQUIRE(mlt__journal_put_key(j, 1, "val loss") == MLT_OK);
        for (int i = 0; i < 4; i++) {
            REQUIRE(mlt__ring_put(r, run_no, (uint32_t)(i & 1) | MLT__RING_MS, 0.5 + i,
                                  1764547200002 + i, i - 1) == MLT_OK);
        }
        REQUIRE(mlt__journal_drain(j) == MLT_OK);
    }
    if (end) {
        mlt__rec_put_end(&b, run_no, MLT_RUN_FINISHED, 1764547260000);
        append(j, MLT__REC_END, &b);
    }
    mlt__buf_free(&b);
}

/* Acks records up to seq (reading them as the sender would). */
static void ack_to(mlt__journal *j, uint64_t seq)
{
    mlt__buf s;
    mlt__buf_init(&s);
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__rec r;
    while (cursor < seq) {
        REQUIRE(mlt__journal_next(j, &cursor, &s, &r) == MLT_OK);
    }
    REQUIRE(mlt__journal_ack(j, &r) == MLT_OK);
    mlt__buf_free(&s);
}

/* A segment's frames end where: the offsets just past each frame. */
static size_t frame_ends(const file *seg, size_t *ends, size_t max)
{
    size_t n = 0, off = 8;
    while (off + MLT__FRAME_HEADER <= seg->len && n < max) {
        const unsigned char *p = seg->data + off;
        uint32_t len =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        off += MLT__FRAME_HEADER + len;
        if (off > seg->len) {
            break;
        }
        ends[n++] = off;
    }
    return n;
}

static uint64_t frame_seq(const unsigned char *frame)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | frame[8 + i];
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    mkdir(outdir, 0755);
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/mlt-seed-journal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    REQUIRE(mkdtemp(scratch) != NULL);
    setenv("MLTRACK_NO_TSC", "1", 1);

    char dir[PATH_MAX];
    jdir d;

    /* a journal just created */
    mlt__journal *j = create("empty", dir);
    load(&d, dir);
    pack(&d, "new-empty");
    unload(&d);
    mlt__journal_close(j, false);

    /* a closed journal with two runs, part of it delivered */
    j = create("closed", dir);
    REQUIRE(mlt__journal_set_target(j, "http://user:secret@127.0.0.1:5000/") == MLT_OK);
    log_run(j, 1, "0f8fad5b-d9cb-469f-a165-70867728950e", true, true);
    log_run(j, 2, "7c9e6679-7425-40de-944b-e07fc1f90ae7", false, false);
    REQUIRE(mlt__journal_put_run(j, 1, "0f8fad5b-d9cb-469f-a165-70867728950e",
                                 "5f3b2f0c9d8e4c1a9b7e6d5c4b3a2f1e", "1", MLT__RUN_OPEN) == MLT_OK);
    ack_to(j, 3);
    mlt__journal_close(j, false);
    load(&d, dir);
    pack(&d, "closed-two-runs");

    /* the same, torn and damaged at its tail */
    file *seg = last_segment(&d);
    size_t ends[64];
    size_t nf = frame_ends(seg, ends, 64);
    REQUIRE(nf >= 4);
    size_t full = seg->len;
    size_t cuts[] = {full - 1, ends[nf - 2] + 5, ends[nf - 2] + MLT__FRAME_HEADER + 1, 9};
    const char *cut_names[] = {"torn-last-byte", "torn-frame-header", "torn-payload",
                               "torn-after-magic"};
    for (size_t i = 0; i < 4; i++) {
        seg->len = cuts[i];
        pack(&d, cut_names[i]);
    }
    seg->len = full;
    seg->data[ends[nf - 3] + 20] ^= 0x40; /* a payload byte of the second last record */
    pack(&d, "flipped-byte");
    /* the same, with checksums that hold: the record does not decode */
    fix_crcs = true;
    pack(&d, "flipped-byte-good-crc");
    fix_crcs = false;
    seg->data[ends[nf - 3] + 20] ^= 0x40;
    fix_crcs = true;
    pack(&d, "closed-two-runs-good-crc");
    fix_crcs = false;

    /* split in two segments at a frame boundary; then one that does not follow on */
    {
        jdir two = d;
        REQUIRE(two.n < 32);
        size_t at = ends[2];
        uint64_t next = frame_seq(seg->data + at);
        file *second = &two.f[two.n++];
        snprintf(second->name, sizeof second->name, "seg-%020" PRIu64 ".log", next);
        second->len = 8 + (full - at);
        second->data = malloc(second->len);
        REQUIRE(second->data != NULL);
        memcpy(second->data, MLT__SEGMENT_MAGIC, 8);
        memcpy(second->data + 8, seg->data + at, full - at);
        file *first = NULL;
        for (size_t i = 0; i < two.n; i++) {
            if (strcmp(two.f[i].name, seg->name) == 0) {
                first = &two.f[i];
            }
        }
        REQUIRE(first != NULL);
        first->len = at;
        qsort(two.f, two.n, sizeof two.f[0], cmp_file);
        pack(&two, "two-segments");
        file *s2 = NULL;
        for (size_t i = 0; i < two.n; i++) {
            if (strncmp(two.f[i].name, "seg-", 4) == 0 && two.f[i].data != seg->data) {
                s2 = &two.f[i];
            }
        }
        REQUIRE(s2 != NULL);
        snprintf(s2->name, sizeof s2->name, "seg-%020" PRIu64 ".log", next + 1);
        pack(&two, "segment-gap");
        free(s2->data);
        first->len = full;
    }

    /* everything acked: the segments were deleted but the last */
    file *acked = find(&d, "acked");
    REQUIRE(acked != NULL);
    char big[] = "99\n";
    unsigned char *keep = acked->data;
    size_t keep_len = acked->len;
    acked->data = (unsigned char *)big;
    acked->len = 3;
    pack(&d, "acked-past-the-end");
    acked->data = keep;
    acked->len = keep_len;

    /* a ring of the wrong size, and one whose header is not a ring's */
    file *ring = find(&d, "ring");
    REQUIRE(ring != NULL && ring->len == RING_FILE_BYTES);
    ring->len = 4096;
    pack(&d, "ring-wrong-size");
    ring->len = RING_FILE_BYTES;
    ring->data[0] ^= 1;
    pack(&d, "ring-bad-magic");
    ring->data[0] ^= 1;
    unload(&d);

    /* a process that died with points in its ring: packed while still open */
    j = create("crashed", dir);
    REQUIRE(mlt__journal_set_target(j, "https://mlflow.example:443") == MLT_OK);
    log_run(j, 1, "1b4e28ba-2fa1-11d2-883f-0060b0daa6e0", false, true);
    mlt__ring *r = mlt__journal_ring(j);
    for (int i = 0; i < 6; i++) {
        REQUIRE(mlt__ring_try(r, 1, (uint32_t)(i % 2) | MLT__RING_MS, -1.5 * i, 1764547300000 + i,
                              100 + i) >= 0);
    }
    load(&d, dir);
    pack(&d, "crashed-points-in-ring");
    /* a slot a dying thread never finished: its stamp is not set */
    ring = find(&d, "ring");
    uint64_t head;
    memcpy(&head, ring->data + offsetof(mlt__ring_hdr, head), sizeof head);
    size_t hole =
        sizeof(mlt__ring_hdr) + (size_t)((head - 3) % MLT__RING_SLOTS) * sizeof(mlt__ring_slot);
    memset(ring->data + hole, 0, 8);
    pack(&d, "crashed-ring-hole");
    /* a ring with the right magic but slots of another size */
    ring->data[offsetof(mlt__ring_hdr, slot_size)] ^= 8;
    pack(&d, "crashed-ring-slot-size");
    unload(&d);
    mlt__journal_close(j, false);

    /* attached runs, dead letters, and every state of the run map */
    j = create("attached", dir);
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_attach(&b, 3, "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d",
                        "0123456789abcdef0123456789abcdef", "", "12", 1764547300000);
    append(j, MLT__REC_ATTACH, &b);
    mlt__rec_put_kv(&b, 3, "from", "child");
    append(j, MLT__REC_PARAM, &b);
    mlt__rec_put_end(&b, 3, MLT_RUN_KILLED, 1764547400000);
    append(j, MLT__REC_END, &b);
    mlt__buf_free(&b);
    REQUIRE(mlt__journal_put_run(j, 3, "2c5ea4c0-4067-11e9-8bad-9b1deb4d3b7d",
                                 "0123456789abcdef0123456789abcdef", "12",
                                 MLT__RUN_ATTACHED) == MLT_OK);
    REQUIRE(mlt__journal_put_run(j, 4, "9b2d3c1a-0000-4000-8000-000000000004", NULL, NULL,
                                 MLT__RUN_DEAD) == MLT_OK);
    REQUIRE(mlt__journal_put_run(j, 5, "9b2d3c1a-0000-4000-8000-000000000005", "abc", "0",
                                 MLT__RUN_ENDED) == MLT_OK);
    mlt__rec bad = {.seq = 2, .type = MLT__REC_PARAM, .run_no = 3, .key = "from", .value = "child"};
    REQUIRE(mlt__journal_dead_letter(j, &bad, "HTTP 400 INVALID_PARAMETER_VALUE: caf\xc3") ==
            MLT_OK);
    mlt__journal_close(j, false);
    load(&d, dir);
    pack(&d, "attached-dead-letters");
    unload(&d);

    /* artifacts: snapshots of records delivered or not, one set aside with its dead letter, one
     * half made, one torn */
    j = create("artifacts", dir);
    mlt__buf_init(&b);
    mlt__rec_put_create(&b, 1, "7d7c1d52-0000-4000-8000-000000000001", "", "train", "exp", "",
                        1764547300000, NULL, NULL, 0, 0);
    append(j, MLT__REC_CREATE, &b);
    mlt__buf_free(&b);
    static const char *const names[] = {"model.bin", "plots/loss curve.png", "empty"};
    static const char *const bytes[] = {"weights", "\x89PNG\r\n", ""};
    for (int i = 0; i < 3; i++) {
        mlt__art_src src = {-1, bytes[i], strlen(bytes[i])};
        uint64_t n;
        char sha[65];
        REQUIRE(mlt__journal_put_artifact(j, 1, names[i], &src, 1764547300001 + i, &n, sha) ==
                MLT_OK);
    }
    mlt__rec art = {.seq = 3,
                    .type = MLT__REC_ARTIFACT,
                    .run_no = 1,
                    .key = "plots/loss curve.png",
                    .bytes = 6,
                    .value = "823ceb99fcef5252333ede1b2202341c3b287b6d47571963e6b0ddf393a24f82",
                    .time_ms = 1764547300002};
    REQUIRE(mlt__journal_dead_letter(j, &art, "HTTP 403 PERMISSION_DENIED: no") == MLT_OK);
    mlt__journal_close(j, false);
    char half_path[PATH_MAX];
    path_of(half_path, dir, "art/tmp-1-0");
    FILE *half = fopen(half_path, "wb");
    REQUIRE(half != NULL && fputs("half", half) >= 0 && fclose(half) == 0);
    load(&d, dir);
    pack(&d, "artifacts");
    file *snap = find(&d, "art:00000000000000000002");
    REQUIRE(snap != NULL && snap->len == 7);
    snap->data[0] ^= 1;
    pack(&d, "artifacts-torn");
    unload(&d);

    /* a directory left by a crash between mkdir and the first files */
    path_of(dir, scratch, "bare");
    REQUIRE(mkdir(dir, 0700) == 0);
    load(&d, dir);
    pack(&d, "bare-directory");
    unload(&d);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    return system(cmd) == 0 ? 0 : 1;
}
