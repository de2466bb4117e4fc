/*
 * record.h - the journal's record payloads: what the MLflow callback writes and the sender reads.
 * Little-endian fixed-width numbers, strings as a u32 length and bytes. A record names its run
 * by run_no, a number given at run creation and unique within one journal.
 */
#ifndef MLT_RECORD_H
#define MLT_RECORD_H

#include "common.h"

typedef enum mlt__rec_type {
    MLT__REC_CREATE = 1,   /* run_no, key, parent key, name, experiment name/id, start, tags */
    MLT__REC_PARAM = 2,    /* run_no, key, value */
    MLT__REC_METRIC = 3,   /* run_no, key, value, timestamp, step */
    MLT__REC_TAG = 4,      /* run_no, key, value */
    MLT__REC_END = 5,      /* run_no, status, end time */
    MLT__REC_POINT = 6,    /* metric points moved from the ring, their key named by id (ring.c
                            * writes them, journal_read.c reads each back as MLT__REC_METRIC) */
    MLT__REC_ATTACH = 7,   /* run_no, run key, run id ("" unknown), experiment name/id, the time
                            * it was written (absent before mltrack 0.2: 0): log into a run
                            * another process started; never created or ended from here */
    MLT__REC_ARTIFACT = 8, /* run_no, artifact path, size, sha256 (hex), time logged: a file
                            * whose bytes, as the call saw them, are the journal's snapshot
                            * art/<seq> (journal_art.c) */
} mlt__rec_type;

#define MLT__REC_MAX_TAGS 16
/* CREATE's flags */
#define MLT__CREATE_RESUME 1u /* the run of its key is resumed when the server has it */

/* A decoded record. Strings point into the payload it was decoded from (not NUL-terminated
 * copies: each is NUL-terminated in the payload, the encoder writes the NUL). */
typedef struct mlt__rec {
    uint64_t seq;
    uint64_t end_pos; /* journal position just past the record (set by mlt__journal_next) */
    uint32_t size;    /* bytes of the whole frame */
    mlt__rec_type type;
    uint32_t run_no;
    const char *key;    /* CREATE/ATTACH: run key; PARAM/METRIC/TAG: entity key; ARTIFACT: its
                         * path in the run */
    const char *run_id; /* ATTACH: the server's run id, "" when only the key is known */
    const char *value;  /* PARAM/TAG; ARTIFACT: the snapshot's sha256 (hex) */
    uint64_t bytes;     /* ARTIFACT: the snapshot's size */
    double num;         /* METRIC */
    int64_t time_ms;    /* CREATE: start; METRIC: timestamp; END: end; ATTACH: written (0:
                         * unknown); ARTIFACT: logged */
    int64_t step;       /* METRIC */
    int status;         /* END: mlt_run_status */
    uint32_t flags;     /* CREATE: MLT__CREATE_* (0 before mltrack 0.3) */
    /* CREATE (experiment names also ATTACH) */
    const char *parent_key;      /* "" for none */
    const char *run_name;        /* "" for none */
    const char *experiment_name; /* "" for none */
    const char *experiment_id;   /* "" for none */
    size_t n_tags;
    const char *tag_keys[MLT__REC_MAX_TAGS];
    const char *tag_values[MLT__REC_MAX_TAGS];
} mlt__rec;

/* Encoders: append the payload of a record to b (b->oom on failure). */
void mlt__rec_put_create(mlt__buf *b, uint32_t run_no, const char *run_key, const char *parent_key,
                         const char *run_name, const char *experiment_name,
                         const char *experiment_id, int64_t start_ms, const char *const *tag_keys,
                         const char *const *tag_values, size_t n_tags, uint32_t flags);
void mlt__rec_put_kv(mlt__buf *b, uint32_t run_no, const char *key, const char *value);
void mlt__rec_put_metric(mlt__buf *b, uint32_t run_no, const char *key, double value,
                         int64_t timestamp_ms, int64_t step);
void mlt__rec_put_attach(mlt__buf *b, uint32_t run_no, const char *run_key, const char *run_id,
                         const char *experiment_name, const char *experiment_id, int64_t time_ms);
void mlt__rec_put_end(mlt__buf *b, uint32_t run_no, int status, int64_t end_ms);
void mlt__rec_put_artifact(mlt__buf *b, uint32_t run_no, const char *path, uint64_t bytes,
                           const char *sha256_hex, int64_t time_ms);

/* Clears r for a record of the given type, keeping where it is (seq, end_pos, size). */
void mlt__rec_clear(mlt__rec *r, mlt__rec_type type);

/* Decodes a payload of the given type into r (r->seq is left to the caller). Returns MLT_OK or
 * MLT_ERR_CORRUPT when the payload does not parse. The payload must outlive r. */
MLT__MUST_USE mlt_err mlt__rec_decode(mlt__rec_type type, const void *payload, size_t len,
                                      mlt__rec *r);

#endif
