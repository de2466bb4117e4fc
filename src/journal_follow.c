/*
 * journal_follow.c - a live writer's journal as a relay reads it (follow mode, see
 * mlt__journal_open_follow): the frames committed since the last look, on the last segment and
 * those the writer rolled to; and, for the writer, the delivery another party made meanwhile
 * (its acked cursor, run map and dead letters read again).
 */
#include "config.h"

#include "journal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

mlt_err mlt__journal_open_follow(mlt__journal **out, const char *dir, mlt__recovery *rec)
{
    return mlt__j_open_any(out, dir, true, true, MLT__FSYNC_ALWAYS, rec);
}

bool mlt__journal_following(const mlt__journal *j)
{
    return j->follow;
}

/* A segment first_seq that the writer has rolled to (its magic written): added to the list. */
static bool follow_new_segment(mlt__journal *j, uint64_t first_seq)
{
    char name[64], path[PATH_MAX], magic[8];
    mlt__j_seg_name(first_seq, name);
    if (mlt__j_path_in(j, name, path, sizeof path) != 0) {
        return false;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    bool ok = mlt__j_read_at(fd, magic, 8, 0) == 0 && memcmp(magic, MLT__SEGMENT_MAGIC, 8) == 0;
    close(fd);
    return ok && mlt__j_add_segment(j, first_seq, 8) == MLT_OK;
}

void mlt__j_follow_more(mlt__journal *j)
{
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    rbuf rb = {0};
    pthread_mutex_lock(&j->mu);
    for (int rounds = 0; rounds < 4096; rounds++) {
        if (j->n_segs == 0) {
            if (!follow_new_segment(j, j->last_seq + 1)) {
                break;
            }
            continue;
        }
        segment *sg = &j->segs[j->n_segs - 1];
        char name[64], path[PATH_MAX];
        mlt__j_seg_name(sg->first_seq, name);
        int fd =
            mlt__j_path_in(j, name, path, sizeof path) == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            if (fd >= 0) {
                close(fd);
            }
            break;
        }
        /* only whole frames that check out, numbered on: a frame still being written is not
         * there yet, and is read again after the next commit (never cut) */
        uint64_t fsize = (uint64_t)st.st_size, off = sg->size;
        while (off < fsize) {
            uint64_t seq;
            uint8_t type;
            uint32_t plen;
            char why[120];
            if (mlt__j_read_frame(&rb, fd, off, fsize, &scratch, &seq, &type, &plen, why,
                                  sizeof why) != 0 ||
                seq != j->last_seq + 1) {
                break;
            }
            off += MLT__FRAME_HEADER + (uint64_t)plen;
            j->end_pos += MLT__FRAME_HEADER + (uint64_t)plen;
            j->last_seq = seq;
        }
        close(fd);
        mlt__j_rb_reset(&rb);
        sg->size = off;
        if (off < fsize || !follow_new_segment(j, j->last_seq + 1)) {
            break;
        }
    }
    mlt__j_update_pending(j);
    pthread_mutex_unlock(&j->mu);
    free(rb.data);
    mlt__buf_free(&scratch);
}

mlt_err mlt__journal_reload_delivery(mlt__journal *j)
{
    mlt__buf b;
    mlt__buf_init(&b);
    mlt_err err = mlt__j_read_small_file(j, "acked", &b);
    uint64_t acked = err == MLT_OK ? strtoull(b.data ? b.data : "0", NULL, 10) : 0;
    mlt__buf_free(&b);
    if (err != MLT_OK && err != MLT_ERR_NOT_FOUND) {
        return mlt__j_sys_err("cannot read the acked cursor of", j->dir);
    }
    if (mlt__j_load_runs(j) != MLT_OK) {
        return mlt__j_sys_err("cannot read the run map of", j->dir);
    }
    j->dead = mlt__j_count_lines(j, "dead.jsonl");
    uint64_t cur = atomic_load(&j->acked_seq);
    if (acked <= cur || acked > mlt__journal_last_seq(j)) {
        return MLT_OK; /* nothing new (or not a cursor of this journal: left alone) */
    }
    /* walk to it, for its position (what is pending is counted in bytes) */
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    uint64_t c = cur;
    mlt__rec r;
    memset(&r, 0, sizeof r);
    while (c < acked) {
        uint64_t before = c;
        mlt_err e = mlt__journal_next(j, &c, &scratch, &r);
        if (e != MLT_OK && (e != MLT_ERR_CORRUPT || c == before)) {
            break;
        }
    }
    mlt__buf_free(&scratch);
    if (c != acked) {
        return mlt__fail(MLT_ERR_CORRUPT, "journal %s: its acked cursor %" PRIu64 " was not found",
                         j->dir, acked);
    }
    return mlt__j_acked_to(j, &r);
}
