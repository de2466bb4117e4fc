/*
 * journal_read.c - reading the journal's frames back (the sender's cursor, recovery's scan),
 * POINT records (a ring's metric points, keys named by id), and acking what was delivered.
 */
#include "config.h"

#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- reading frames ---- */

int mlt__j_read_at(int fd, void *buf, size_t len, uint64_t off)
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
    if (mlt__j_read_at(fd, rb->data, want, off) != 0) {
        return NULL;
    }
    rb->off = off;
    rb->len = want;
    return rb->data;
}

void mlt__j_rb_reset(rbuf *rb)
{
    rb->off = 0;
    rb->len = 0;
}

/*
 * Reads and checks the frame at off of fd (file size fsize) through rb: fills *seq, *type and
 * the payload into scratch. Returns 0, or -1 with why set when the frame is torn or corrupt.
 */
int mlt__j_read_frame(rbuf *rb, int fd, uint64_t off, uint64_t fsize, mlt__buf *scratch,
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
        snprintf(why, whylen, "torn frame at offset %" PRIu64 " (%" PRIu32 " bytes announced)", off,
                 len);
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

unsigned char *mlt__j_put_varint(unsigned char *p, uint64_t v)
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

const char *mlt__j_key_name(const mlt__journal *j, uint64_t id)
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

/* Where the ring ticket count stands after a POINT record read at open (a ticket past the
 * limit is no ticket of ours: ignored). */
void mlt__j_note_ticket(mlt__journal *j, const unsigned char *p, size_t len)
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

static MLT__MUST_USE mlt_err decode_point(const mlt__journal *j, const unsigned char *p, size_t len,
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
        head >> 1 > UINT32_MAX || !(out->key = mlt__j_key_name(j, id))) {
        return MLT_ERR_CORRUPT;
    }
    out->run_no = (uint32_t)(head >> 1);
    memcpy(&out->num, &bits, sizeof bits);
    out->time_ms = (int64_t)ts;
    out->step = (int64_t)((zz >> 1) ^ -(zz & 1));
    return MLT_OK;
}

/* ---- reading and acking (sender thread) ---- */

/* Opens segment index i for reading. */
static int open_read_seg(mlt__journal *j, size_t i)
{
    char name[64], path[PATH_MAX];
    pthread_mutex_lock(&j->mu); /* an append may move the segment list */
    uint64_t first = j->segs[i].first_seq;
    pthread_mutex_unlock(&j->mu);
    mlt__j_seg_name(first, name);
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return -1;
    }
    if (j->rfd >= 0) {
        close(j->rfd);
    }
    j->rfd = open(path, O_RDONLY | O_CLOEXEC);
    mlt__j_rb_reset(&j->rb);
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
    if (*cursor >= last && j->follow) {
        mlt__j_follow_more(j); /* what the writer committed since */
        pthread_mutex_lock(&j->mu);
        last = j->last_seq;
        n_segs = j->n_segs;
        pthread_mutex_unlock(&j->mu);
    }
    if (*cursor >= last) {
        if (j->follow && j->rb.data) {
            /* a relay follows hundreds of journals, most of them idle: no read window kept */
            free(j->rb.data);
            j->rb = (rbuf){0};
        }
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
            if (mlt__j_read_frame(&j->rb, j->rfd, j->roff, seg_size, scratch, &seq, &type, &plen,
                                  why, sizeof why) != 0 ||
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
            if (err != MLT_OK && type == MLT__REC_POINT && j->follow) {
                /* a key its writer wrote down may not be visible here yet (another host):
                 * read the keys again; still unknown, the point is not there yet either */
                pthread_mutex_lock(&j->mu);
                mlt_err kerr = mlt__j_load_keys(j);
                pthread_mutex_unlock(&j->mu);
                if (kerr != MLT_OK ||
                    decode_point(j, (const unsigned char *)scratch->data, plen, r) != MLT_OK) {
                    return MLT_ERR_NOT_FOUND;
                }
                err = MLT_OK;
            }
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
    mlt_err err = mlt__j_replace_file_opt(j, "acked", text, (size_t)n, now);
    if (err == MLT_OK && !now) {
        pthread_mutex_lock(&j->mu);
        j->acked_dirty = true;
        /* fsync=interval without a writer thread (an adopted journal, mltrack sync's): the
         * group commit comes with the acks */
        if (j->mode == MLT__FSYNC_INTERVAL && !j->writer_started &&
            mlt__mono_ns() / 1000000 - j->synced_ms >= j->interval_ms) {
            err = mlt__j_sync_locked(j);
        }
        pthread_mutex_unlock(&j->mu);
    }
    if (err != MLT_OK) {
        return mlt__fail(err, "cannot record delivery in %s: %s", j->dir, strerror(errno));
    }
    return mlt__j_acked_to(j, last);
}

mlt_err mlt__j_acked_to(mlt__journal *j, const mlt__rec *last)
{
    atomic_store(&j->acked_seq, last->seq);
    atomic_store(&j->acked_pos, last->end_pos);
    /* Delete segments that hold only acked records (never the one being appended to, nor the
     * one being read); a follower leaves them to their writer. */
    pthread_mutex_lock(&j->mu);
    mlt__j_update_pending(j);
    size_t drop = 0;
    while (drop + 1 < j->n_segs && j->segs[drop + 1].first_seq - 1 <= last->seq &&
           drop + 1 <= j->rseg) {
        char name[64], path[PATH_MAX];
        mlt__j_seg_name(j->segs[drop].first_seq, name);
        if (!j->follow && mlt__j_path_in(j, name, path, sizeof path) == 0) {
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
