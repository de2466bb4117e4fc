/*
 * journal.h - one durable journal: a directory of segment files of framed records
 * (length, CRC32C, sequence number, type, payload), an acked cursor and a run map, owned by one
 * process under flock. Appends are thread-safe; one reader (the sender) at a time.
 *
 * Files in the journal directory:
 *   lock                 flock'ed by the owner for its lifetime
 *   seg-<seq>.log        segments, named by the first sequence number they hold (20 digits)
 *   acked                "<seq>\n": every record up to seq is delivered (atomic replace)
 *   runs                 "<run_no> <run key> <run id|-> <experiment id|-> <state>\n" lines
 *                        (atomic replace); state is open, ended or dead
 *   dead.jsonl           records the server rejected for good, with its answer (appended)
 *   keys                 "<id> <metric key>\n" lines: the keys that POINT records name by id
 *   target               the tracking URI the journal is for (credentials removed)
 *   ring                 the metric ring (below), mapped shared: survives the process's crash
 *   art/<seq>            the snapshot of the artifact that ARTIFACT record seq names (20
 *                        digits); art/dead-<seq> once the server refused it; art/tmp-* while
 *                        one is made
 *
 * Metric points take a lock-free path: the application thread writes a fixed-size slot of the
 * ring (mlt__ring_put, no syscall, no lock) and the journal's writer thread moves the ring into
 * the segments in groups (one write(2) per group) as compact POINT records, each naming its key
 * by id. Every other record is appended under the journal lock after the ring is drained, so a
 * run's records keep the order they were made in. The ring is a file mapped MAP_SHARED: when
 * the process dies, what it had put in the ring is still in the page cache, and the next open
 * moves it into the segments (POINT records carry the ring ticket of the first point of each
 * group, so nothing is moved twice).
 */
#ifndef MLT_JOURNAL_H
#define MLT_JOURNAL_H

#include "common.h"
#include "crc32c.h"
#include "options.h"
#include "record.h"
#include "ring.h"

#include <stdatomic.h>
#include <stdint.h>

typedef enum mlt__fsync_mode {
    MLT__FSYNC_NONE,
    MLT__FSYNC_INTERVAL,
    MLT__FSYNC_ALWAYS
} mlt__fsync_mode;

#define MLT__FRAME_HEADER 17 /* u32 len, u32 crc, u64 seq, u8 type */
#define MLT__FRAME_MAX_PAYLOAD (8u << 20)
#define MLT__SEGMENT_MAGIC "MLTJRNL1"  /* 8 bytes at the start of every segment */
#define MLT__SEGMENT_BYTES (64u << 20) /* a new segment starts past this size */

typedef struct mlt__journal mlt__journal;

/* The journal's ring (NULL for a read-only journal). */
mlt__ring *mlt__journal_ring(mlt__journal *j);

/* Starts the writer thread that moves the ring into the segments; on_write(ud) is called on it
 * after each group. With fsync=interval it also syncs every interval_ms. */
MLT__MUST_USE mlt_err mlt__journal_start_writer(mlt__journal *j, void (*on_write)(void *ud),
                                                void *ud, int interval_ms);

/* Moves every point in the ring into the segments now (one write). Thread-safe. */
MLT__MUST_USE mlt_err mlt__journal_drain(mlt__journal *j);

/* Records a metric key's id (before any point names it). Ids are small and dense; the same id
 * twice is a no-op. Thread-safe. */
MLT__MUST_USE mlt_err mlt__journal_put_key(mlt__journal *j, uint32_t id, const char *key);

/* What opening found: a torn or corrupt tail that was cut. */
typedef struct mlt__recovery {
    uint64_t records;     /* valid records kept */
    uint64_t cut_bytes;   /* bytes cut from the tail (0 when clean) */
    uint64_t first_seq;   /* first unacked record, 0 if none */
    uint64_t last_seq;    /* last valid record, 0 if none */
    uint64_t ring_points; /* points moved from the ring into the segments (read-only: points
                           * the ring holds that no segment does yet) */
    char why[160];        /* what was wrong at the cut */
} mlt__recovery;

/* Creates a new journal directory dir (0700) and locks it. */
MLT__MUST_USE mlt_err mlt__journal_create(mlt__journal **out, const char *dir,
                                          mlt__fsync_mode mode);

/* Opens an existing journal: locks it (MLT_ERR_LOCKED when a live process holds it), checks
 * every record after the acked cursor and cuts a torn or corrupt tail (reported in *rec). With
 * read_only, nothing is locked or cut (for status). */
MLT__MUST_USE mlt_err mlt__journal_open(mlt__journal **out, const char *dir, bool read_only,
                                        mlt__fsync_mode mode, mlt__recovery *rec);

/*
 * Opens the journal of a live writer for delivery by a relay (docs/hpc.md): nothing is locked,
 * cut or deleted, and the writer's ring is never read (a shared mapping is not coherent between
 * hosts). Its records are those whole frames the writer committed to the segments: at its end,
 * mlt__journal_next() looks again for frames committed since, and treats a frame still being
 * written, or a point whose key is not visible yet, as not there yet. Acks (durable at once),
 * the run map and dead letters are written as by the writer, whose delivery lease the caller
 * holds. Segments are left to the writer to delete. Close it with mlt__journal_close(j, false).
 */
MLT__MUST_USE mlt_err mlt__journal_open_follow(mlt__journal **out, const char *dir,
                                               mlt__recovery *rec);
/* Whether j was opened with mlt__journal_open_follow(). */
bool mlt__journal_following(const mlt__journal *j);

/* After another party delivered the journal for a while (a relay held its lease): reads its
 * acked cursor, run map and dead letters again, and deletes the segments now all delivered.
 * MLT_ERR_IO, or MLT_ERR_CORRUPT when the cursor names no record of the journal. Reader
 * thread. */
MLT__MUST_USE mlt_err mlt__journal_reload_delivery(mlt__journal *j);

/* Syncs (unless read-only) and closes. With remove_if_done, a journal whose records are all
 * acked and whose runs all ended is deleted. NULL does nothing. */
void mlt__journal_close(mlt__journal *j, bool remove_if_done);

const char *mlt__journal_dir(const mlt__journal *j);

/* Deletes the journal's directory with everything in it, then closes it (a journal made for
 * nothing: `mltrack requeue` after a failure). NULL does nothing. */
void mlt__journal_discard(mlt__journal *j);

/* In a forked child that will not use the journal: drops the child's hold on the journal's lock
 * (the parent keeps its own), so that the journal is adopted once the parent is gone even while
 * the child lives on. Takes no lock. */
void mlt__journal_forget_after_fork(mlt__journal *j);

/* Appends one record; *seq_out (may be NULL) gets its sequence number. Thread-safe. With
 * fsync=always the record is on disk when this returns. */
MLT__MUST_USE mlt_err mlt__journal_append(mlt__journal *j, mlt__rec_type type, const void *payload,
                                          size_t len, uint64_t *seq_out);

/* The runs (CREATE records) and metric points appended through this handle since it was made
 * or opened, the ring's points once moved into the segments. Thread-safe. */
void mlt__journal_appended(mlt__journal *j, uint64_t *runs, uint64_t *points);
/* Bytes of the artifact snapshots not delivered yet. Thread-safe. */
uint64_t mlt__journal_artifact_bytes(mlt__journal *j);
/* The ARTIFACT records appended through this handle. Thread-safe. */
uint64_t mlt__journal_appended_artifacts(mlt__journal *j);

/* The group commit period of fsync=interval (default 100 ms): the writer thread, or for a journal
 * without one (adopted, or mltrack sync's) the ack that finds the last sync older, makes the
 * journal durable at most this long after a change. Any thread. */
void mlt__journal_set_interval(mlt__journal *j, int interval_ms);

/* Drains the ring, then makes every appended record durable (fdatasync) if any is not yet.
 * Thread-safe. */
MLT__MUST_USE mlt_err mlt__journal_sync(mlt__journal *j);

/* Sequence numbers: the last appended, the last acked. Thread-safe. */
uint64_t mlt__journal_last_seq(mlt__journal *j);
uint64_t mlt__journal_acked_seq(mlt__journal *j);
/* Bytes of records appended and not yet acked. */
uint64_t mlt__journal_pending_bytes(mlt__journal *j);

/* The size past which a new segment starts (MLT__SEGMENT_BYTES until set; the queue_segment_bytes
 * option). Smaller segments give the disk back sooner: a segment is deleted once every record in
 * it is acknowledged. Any thread. */
void mlt__journal_set_segment_bytes(mlt__journal *j, uint64_t bytes);

/*
 * Reads the next record after *cursor (a sequence number; start from the acked one) into r,
 * whose strings point into *scratch (kept until the next call with it). Returns MLT_OK,
 * MLT_ERR_NOT_FOUND when no record follows, MLT_ERR_IO, or MLT_ERR_CORRUPT: a frame that does
 * not read back (the cursor stays), or one whose checksum holds but whose payload does not
 * decode (consumed: the cursor and r->seq/end_pos name it, so it can be set aside).
 */
MLT__MUST_USE mlt_err mlt__journal_next(mlt__journal *j, uint64_t *cursor, mlt__buf *scratch,
                                        mlt__rec *r);

/* Records that every record up to and including last (a record read with mlt__journal_next) is
 * delivered: durable (atomic replace of `acked`), then segments that hold only acked records
 * are deleted. */
MLT__MUST_USE mlt_err mlt__journal_ack(mlt__journal *j, const mlt__rec *last);

/* Records the tracking URI the journal is written for (uri is stored with any user:password@
 * removed). Durable when it returns. */
MLT__MUST_USE mlt_err mlt__journal_set_target(mlt__journal *j, const char *uri);
/* The tracking URI the journal is for (credentials removed), NULL when it does not say (a
 * journal of an older mltrack). */
const char *mlt__journal_target(const mlt__journal *j);
/* Whether the journal is for uri (or does not say). */
bool mlt__journal_is_for(const mlt__journal *j, const char *uri);

/* ---- the run map ---- */
/* ATTACHED: a run of another process this journal logs into; its owner ends it, so it is
 * never ended from here (not even as an orphan). */
typedef enum mlt__run_state {
    MLT__RUN_OPEN,
    MLT__RUN_ENDED,
    MLT__RUN_DEAD,
    MLT__RUN_ATTACHED
} mlt__run_state;

typedef struct mlt__run_entry {
    uint32_t run_no;
    char key[40];
    char *run_id;        /* NULL until created */
    char *experiment_id; /* NULL until resolved */
    mlt__run_state state;
} mlt__run_entry;

/* The entry of run_no, NULL if unknown. Valid until the map changes; reader thread only. */
mlt__run_entry *mlt__journal_run(mlt__journal *j, uint32_t run_no);
/* Adds or updates an entry and makes the map durable before returning. */
MLT__MUST_USE mlt_err mlt__journal_put_run(mlt__journal *j, uint32_t run_no, const char *key,
                                           const char *run_id, const char *experiment_id,
                                           mlt__run_state state);
/* Every entry, for status. */
const mlt__run_entry *mlt__journal_runs(mlt__journal *j, size_t *n);

/* ---- artifacts ---- */

/* Where an artifact's bytes come from: a file open for reading (fd >= 0, read from its current
 * offset to its end), or len bytes at data (fd < 0). */
typedef struct mlt__art_src {
    int fd;
    const void *data;
    uint64_t len;
} mlt__art_src;

/*
 * Snapshots src into the journal as art/<seq> (a reflink where the file system makes them,
 * else a copy), with its size and SHA-256, then appends the ARTIFACT record seq that names it:
 * later changes to the file do not reach what is uploaded. Under fsync=always the snapshot is
 * synced before its record is written; under interval the group commit syncs it before the
 * segment (a power loss within the interval may lose it, as the interval's records; a snapshot
 * that reached the disk torn is found by its digest, never uploaded as whole). *bytes and sha
 * get the snapshot's size and digest. Thread-safe. A failure
 * (MLT_ERR_IO: cannot read, no room; MLT_ERR_STATE: read-only) leaves nothing behind.
 */
MLT__MUST_USE mlt_err mlt__journal_put_artifact(mlt__journal *j, uint32_t run_no, const char *path,
                                                const mlt__art_src *src, int64_t time_ms,
                                                uint64_t *bytes, char sha[65]);

/* Opens the snapshot of ARTIFACT record r for reading (*fd, the caller closes it): MLT_OK,
 * MLT_ERR_NOT_FOUND when it is gone, MLT_ERR_CORRUPT when its size (with verify, also its
 * SHA-256) is not the record's: torn by a crash. Messages in mlt_last_error(). */
MLT__MUST_USE mlt_err mlt__journal_open_artifact(mlt__journal *j, const mlt__rec *r, bool verify,
                                                 int *fd);

/* The bytes of an artifact set aside with its dead letter: snapshot is the letter's "snapshot"
 * ("art/dead-<20 digits>", nothing else is opened). *fd for reading, the caller closes it.
 * MLT_ERR_NOT_FOUND (gone, or not such a name) or MLT_ERR_IO, with mlt_last_error(). */
MLT__MUST_USE mlt_err mlt__journal_open_dead_artifact(mlt__journal *j, const char *snapshot,
                                                      int *fd);
/* Removes such a snapshot once its letter is requeued (nothing for another name). */
void mlt__journal_forget_dead_artifact(mlt__journal *j, const char *snapshot);

/* The snapshot of ARTIFACT record r is delivered (r is acked): it is removed once the ack is on
 * disk (at the next sync under fsync=interval), so that a record delivered again after a power
 * loss still finds it. Reader thread. */
void mlt__journal_artifact_done(mlt__journal *j, const mlt__rec *r);

/* Appends a dead letter: the record (as JSON) and the server's answer. */
MLT__MUST_USE mlt_err mlt__journal_dead_letter(mlt__journal *j, const mlt__rec *r,
                                               const char *answer);
/* Number of dead letters in the journal's dead.jsonl. */
uint64_t mlt__journal_dead_count(mlt__journal *j);
/* Appends the text of dead.jsonl to out (nothing when there is none). MLT_ERR_IO on failure. */
MLT__MUST_USE mlt_err mlt__journal_read_dead_letters(mlt__journal *j, mlt__buf *out);
/* Replaces dead.jsonl with text (len bytes, `lines` lines; none: the file is removed), durably
 * (temp file, fsync, rename). For `mltrack requeue`, with the journal opened read-write. */
MLT__MUST_USE mlt_err mlt__journal_keep_dead_letters(mlt__journal *j, const char *text, size_t len,
                                                     uint64_t lines);

#endif
