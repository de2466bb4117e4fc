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
 */
#ifndef MLT_JOURNAL_H
#define MLT_JOURNAL_H

#include "common.h"
#include "options.h"
#include "record.h"

#include <stdint.h>

typedef enum mlt__fsync_mode {
    MLT__FSYNC_NONE,
    MLT__FSYNC_INTERVAL,
    MLT__FSYNC_ALWAYS
} mlt__fsync_mode;

#define MLT__FRAME_HEADER 17          /* u32 len, u32 crc, u64 seq, u8 type */
#define MLT__FRAME_MAX_PAYLOAD (8u << 20)
#define MLT__SEGMENT_MAGIC "MLTJRNL1"  /* 8 bytes at the start of every segment */
#define MLT__SEGMENT_BYTES (64u << 20) /* a new segment starts past this size */

typedef struct mlt__journal mlt__journal;

/* What opening found: a torn or corrupt tail that was cut. */
typedef struct mlt__recovery {
    uint64_t records;     /* valid records kept */
    uint64_t cut_bytes;   /* bytes cut from the tail (0 when clean) */
    uint64_t first_seq;   /* first unacked record, 0 if none */
    uint64_t last_seq;    /* last valid record, 0 if none */
    char why[160];        /* what was wrong at the cut */
} mlt__recovery;

/* Creates a new journal directory dir (0700) and locks it. */
mlt_err mlt__journal_create(mlt__journal **out, const char *dir, mlt__fsync_mode mode,
                            char *errbuf, size_t errlen);

/* Opens an existing journal: locks it (MLT_ERR_LOCKED when a live process holds it), checks
 * every record after the acked cursor and cuts a torn or corrupt tail (reported in *rec). With
 * read_only, nothing is locked or cut (for status). */
mlt_err mlt__journal_open(mlt__journal **out, const char *dir, bool read_only,
                          mlt__fsync_mode mode, mlt__recovery *rec, char *errbuf, size_t errlen);

/* Syncs (unless read-only) and closes. With remove_if_done, a journal whose records are all
 * acked and whose runs all ended is deleted. NULL does nothing. */
void mlt__journal_close(mlt__journal *j, bool remove_if_done);

const char *mlt__journal_dir(const mlt__journal *j);

/* Appends one record; *seq_out (may be NULL) gets its sequence number. Thread-safe. With
 * fsync=always the record is on disk when this returns. */
mlt_err mlt__journal_append(mlt__journal *j, mlt__rec_type type, const void *payload,
                            size_t len, uint64_t *seq_out);

/* Makes every appended record durable (fdatasync) if any is not yet. Thread-safe. */
mlt_err mlt__journal_sync(mlt__journal *j);

/* Sequence numbers: the last appended, the last acked. Thread-safe. */
uint64_t mlt__journal_last_seq(mlt__journal *j);
uint64_t mlt__journal_acked_seq(mlt__journal *j);
/* Bytes of records appended and not yet acked. */
uint64_t mlt__journal_pending_bytes(mlt__journal *j);

/*
 * Reads the next record after *cursor (a sequence number; start from the acked one) into r,
 * whose strings point into *scratch (kept until the next call with it). Returns MLT_OK,
 * MLT_ERR_NOT_FOUND when no record follows, MLT_ERR_IO, or MLT_ERR_CORRUPT: a frame that does
 * not read back (the cursor stays), or one whose checksum holds but whose payload does not
 * decode (consumed: the cursor and r->seq/end_pos name it, so it can be set aside).
 */
mlt_err mlt__journal_next(mlt__journal *j, uint64_t *cursor, mlt__buf *scratch, mlt__rec *r);

/* Records that every record up to and including last (a record read with mlt__journal_next) is
 * delivered: durable (atomic replace of `acked`), then segments that hold only acked records
 * are deleted. */
mlt_err mlt__journal_ack(mlt__journal *j, const mlt__rec *last);

/* ---- the run map ---- */
typedef enum mlt__run_state { MLT__RUN_OPEN, MLT__RUN_ENDED, MLT__RUN_DEAD } mlt__run_state;

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
mlt_err mlt__journal_put_run(mlt__journal *j, uint32_t run_no, const char *key,
                             const char *run_id, const char *experiment_id,
                             mlt__run_state state);
/* Every entry, for status. */
const mlt__run_entry *mlt__journal_runs(mlt__journal *j, size_t *n);

/* Appends a dead letter: the record (as JSON) and the server's answer. */
mlt_err mlt__journal_dead_letter(mlt__journal *j, const mlt__rec *r, const char *answer);
/* Number of dead letters in the journal's dead.jsonl. */
uint64_t mlt__journal_dead_count(mlt__journal *j);

/* ---- the queue directory ---- */
/* The queue directory for opts: option queue_dir, else $XDG_STATE_HOME/mltrack/queue, else
 * ~/.local/state/mltrack/queue. */
mlt_err mlt__queue_dir(const mlt_options *opts, char *out, size_t len);
/* The journal directories under queue_dir (absolute paths, sorted; caller frees each and the
 * array). A missing queue_dir has none. */
mlt_err mlt__queue_list(const char *queue_dir, char ***out, size_t *n);

/* CRC32C (Castagnoli) of data, continuing from crc (0 to start). */
uint32_t mlt__crc32c(uint32_t crc, const void *data, size_t len);

#endif
