/*
 * journal_int.h - what the journal's own files share (journal.c, journal_read.c, journal_follow.c,
 * ring.c, journal_meta.c, deadletter.c, and the queue directory's listing in queue.c): the
 * journal's structure and the helpers they call across files. Not for the modules above the
 * journal.
 */
#ifndef MLT_JOURNAL_INT_H
#define MLT_JOURNAL_INT_H

#include "journal.h"
#include "url.h"

#include <pthread.h>
#include <stdatomic.h>

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
    bool follow; /* a live writer's journal delivered by a relay: segments read only as far as
                  * whole frames go (mlt__j_follow_more), never locked, cut or deleted, the
                  * ring never read; acked, runs and dead letters written */
    mlt__fsync_mode mode;
    int lock_fd;
    pthread_mutex_t mu; /* guards the append side and the segment list */
    segment *segs;
    size_t n_segs, cap_segs;
    int wfd;           /* the last segment, for appends */
    uint64_t last_seq; /* last appended */
    uint64_t end_pos;  /* position after the last appended frame */
    bool dirty;        /* appended since the last fdatasync */
    mlt__buf frame;    /* append scratch */
    /* the reader (sender thread) */
    _Atomic uint64_t acked_seq;
    _Atomic uint64_t acked_pos;
    int rfd;
    size_t rseg;   /* index of the segment rfd reads */
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
    bool acked_dirty;     /* the acked cursor was replaced without a sync */
    /* the ring, its writer thread, and where the segments' tickets end (found at open) */
    mlt__ring ring;
    size_t ring_len;
    uint64_t ring_seen; /* first ticket not yet in the segments, per the segments */
    bool ring_seen_set;
    mlt__buf group; /* the writer's scratch */
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t wmu; /* guards wstop and the writer's sleep */
    pthread_cond_t wcv;
    bool wstop;
    void (*on_write)(void *ud);
    void *on_write_ud;
    int interval_ms;   /* fsync=interval: the group commit's period */
    int64_t synced_ms; /* monotonic ms of the last sync (under mu) */
    char werr[256];    /* the writer's last failure */
    char *target;      /* the tracking URI it is for (credentials removed), or NULL */
    /* records appended through this handle, by type (under mu): runs and points it holds */
    uint64_t appended_runs, appended_points, appended_artifacts;
    /* artifact snapshots (journal_art.c): bytes of those not yet delivered, whether one is
     * not synced yet (fsync=interval: the group commit does), those delivered whose ack is not
     * on disk yet (removed once it is) (under mu) */
    uint64_t art_bytes;
    bool art_dir_made;
    bool art_unsynced;
    struct mlt__art_done {
        uint64_t seq, bytes;
    } * art_done;
    size_t n_art_done, cap_art_done;
};
typedef struct mlt__art_done mlt__art_done;

#define FITS(n, size) ((n) >= 0 && (size_t)(n) < (size))

#define RING_TICKET_LIMIT (UINT64_C(1) << 62)
#define RING_BYTES (sizeof(mlt__ring_hdr) + (size_t)MLT__RING_SLOTS * sizeof(mlt__ring_slot))
#define GROUP_MAX 8192 /* points per write */

/* Appends one record (caller holds mu); with drain, the ring's points go first. */
MLT__MUST_USE mlt_err mlt__j_append_locked(mlt__journal *j, mlt__rec_type type, const void *payload,
                                           size_t len, bool drain, uint64_t *seq_out);
/* Artifact snapshots (journal_art.c): at open, temporary and delivered snapshots go and the
 * others are counted; at removal, the art directory goes; a refused one is set aside as
 * art/dead-<seq> (its name in name_out). */
MLT__MUST_USE mlt_err mlt__j_art_recover(mlt__journal *j);
void mlt__j_art_remove(mlt__journal *j);
/* The group commit's part (caller holds mu): every snapshot and the art directory synced, when
 * one may not be; then, once the acked cursor is synced, the delivered ones removed. */
MLT__MUST_USE mlt_err mlt__j_art_sync_locked(mlt__journal *j);
void mlt__j_art_acked_locked(mlt__journal *j);
/* Removes every art/dead-<seq> (no dead letter is left to name one). */
void mlt__j_art_forget_dead(mlt__journal *j);
void mlt__j_art_set_aside(mlt__journal *j, uint64_t seq, uint64_t bytes, char *name_out,
                          size_t len);
MLT__MUST_USE mlt_err mlt__j_drain_locked(mlt__journal *j, bool skip_holes, uint64_t *moved,
                                          uint64_t *holes);
MLT__MUST_USE mlt_err mlt__j_ensure_wfd(mlt__journal *j);
/* Opens a journal (journal.c): locked and recovered, read-only, or (follow) a live writer's. */
MLT__MUST_USE mlt_err mlt__j_open_any(mlt__journal **out, const char *dir, bool read_only,
                                      bool follow, mlt__fsync_mode mode, mlt__recovery *rec);
/* The segment list, the run map and dead.jsonl's lines, as read at open (journal.c). */
MLT__MUST_USE mlt_err mlt__j_add_segment(mlt__journal *j, uint64_t first_seq, uint64_t size);
MLT__MUST_USE mlt_err mlt__j_load_runs(mlt__journal *j);
uint64_t mlt__j_count_lines(const mlt__journal *j, const char *name);
/* Follow mode: takes in the frames the writer committed since the last look (reader thread). */
void mlt__j_follow_more(mlt__journal *j);
/* Moves the acked cursor to record r (read with mlt__journal_next; its ack is on disk) and
 * deletes the segments that hold only acked records (a follower drops them from its list
 * only). */
MLT__MUST_USE mlt_err mlt__j_acked_to(mlt__journal *j, const mlt__rec *r);
int mlt__j_fsync_dir(const char *dir);
const char *mlt__j_key_name(const mlt__journal *j, uint64_t id);
MLT__MUST_USE mlt_err mlt__j_list_names(const char *dir, bool (*keep)(const char *name), bool full,
                                        bool missing_ok, char ***out, size_t *n);
MLT__MUST_USE mlt_err mlt__j_load_keys(mlt__journal *j);
void mlt__j_note_ticket(mlt__journal *j, const unsigned char *p, size_t len);
MLT__MUST_USE mlt_err mlt__j_open_keys(mlt__journal *j);
MLT__MUST_USE mlt_err mlt__j_open_new_segment(mlt__journal *j, uint64_t first_seq);
int mlt__j_path_in(const mlt__journal *j, const char *name, char *out, size_t len);
MLT__MUST_USE mlt_err mlt__j_put_run(mlt__journal *j, uint32_t run_no, const char *key,
                                     const char *run_id, const char *experiment_id,
                                     mlt__run_state state);
unsigned char *mlt__j_put_varint(unsigned char *p, uint64_t v);
void mlt__j_rb_reset(rbuf *rb);
int mlt__j_read_at(int fd, void *buf, size_t len, uint64_t off);
int mlt__j_read_frame(rbuf *rb, int fd, uint64_t off, uint64_t fsize, mlt__buf *scratch,
                      uint64_t *seq, uint8_t *type, uint32_t *plen, char *why, size_t whylen);
MLT__MUST_USE mlt_err mlt__j_read_small_file(const mlt__journal *j, const char *name,
                                             mlt__buf *out);
MLT__MUST_USE mlt_err mlt__j_replace_file(const mlt__journal *j, const char *name, const char *data,
                                          size_t len);
MLT__MUST_USE mlt_err mlt__j_replace_file_opt(const mlt__journal *j, const char *name,
                                              const char *data, size_t len, bool sync);
void mlt__j_ring_count(mlt__journal *j, mlt__recovery *rec);
MLT__MUST_USE mlt_err mlt__j_ring_map(mlt__journal *j, char *why, size_t whylen);
MLT__MUST_USE mlt_err mlt__j_ring_recover(mlt__journal *j, mlt__recovery *rec);
MLT__MUST_USE mlt_err mlt__j_roll_segment(mlt__journal *j);
void mlt__j_seg_name(uint64_t first_seq, char out[64]);
void mlt__j_stop_writer(mlt__journal *j);
MLT__MUST_USE mlt_err mlt__j_sync_locked(mlt__journal *j);
mlt_err mlt__j_sys_err(const char *what,
                       const char *path); /* MLT_ERR_IO: "what path: strerror(errno)" */
bool mlt__j_tsc_usable(void);
void mlt__j_update_pending(mlt__journal *j);
mlt_err mlt__j_used_up(const mlt__journal *j);
int mlt__j_write_all(int fd, const void *data, size_t len);
MLT__MUST_USE mlt_err mlt__j_write_frames(mlt__journal *j, const mlt__buf *frames,
                                          uint64_t last_seq);

#endif
