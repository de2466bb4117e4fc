/*
 * tracker.h - the tracker and run structures, shared by the tracker (tracker.c, runs.c,
 * metric.c, sysmetrics.c), the scope/decorator code and the built-in callbacks.
 *
 * Locks: tracker->lock guards the run tree (open runs, children links) and the experiment id;
 * run->lock guards the run's params. Order: tracker->lock before
 * run->lock. No lock is held while a callback runs.
 */
#ifndef MLT_TRACKER_H
#define MLT_TRACKER_H

#include "common.h"
#include "options.h"
#include "validate.h"

#include <pthread.h>
#include <stdatomic.h>

/* Hooks of the built-in sinks beyond mlt_callbacks. */
typedef mlt_err (*mlt__fast_metric_fn)(void *ud, mlt_run *run, const mlt_key *key, double value,
                                       int64_t step, int64_t timestamp_ms);
typedef mlt_err (*mlt__key_fn)(void *ud, const mlt_key *key);
/* An artifact's bytes for a sink that keeps them: the file fd (>= 0, read from offset 0 to its
 * end; the sink may move the offset) or len bytes at data. The sink writes the size and SHA-256
 * (hex) of what it kept. */
typedef mlt_err (*mlt__artifact_fn)(void *ud, const mlt_run_info *info, const char *path, int fd,
                                    const void *data, uint64_t len, uint64_t *bytes,
                                    char sha256[65]);

/* What a built-in sink adds to mlt_callbacks: the one seam between the tracker and a sink's
 * insides. */
typedef struct mlt__sink_ext {
    mlt__fast_metric_fn fast_metric; /* a metric with its registered key (over on_metric) */
    mlt__key_fn on_key;              /* every key registered, before a point names it */
    struct mlt__ring *ring;          /* the fast-put handle: points go straight into this ring
                                      * (mlt__run_use_ring) while mlt__ring_admits() */
    void (*on_fork_child)(void *ud); /* in a forked child, which will never use the sink: let go
                                      * of what the parent must keep alone (no lock, no malloc) */
    mlt_err (*stats)(void *ud, mlt_queue_stats *out); /* mlt_tracker_queue_stats() */
    mlt__artifact_fn artifact; /* keeps an artifact's bytes, before any on_artifact is called */
    /* mlt_run_last_step(): the last step of metric_key in the run of run_key, logged earlier */
    mlt_err (*last_step)(void *ud, const char *run_key, const char *metric_key, int64_t *step);
} mlt__sink_ext;

typedef struct mlt__cb_entry {
    mlt_callbacks cb;
    void *userdata;
    mlt__sink_ext ext;
} mlt__cb_entry;

/* A registered metric key: validated once, numbered densely from 0 per tracker, kept until the
 * tracker is closed. */
struct mlt_key {
    const mlt_tracker *tracker;
    uint32_t id;
    uint32_t hash;
    uint32_t len;            /* of name, in bytes */
    _Atomic(mlt_key *) next; /* in its bucket */
    mlt_key *all_next;
    /* the key logged next at the same address last time, when keys are formatted into one
     * buffer at run time (metric.c): the guess tried first there */
    _Atomic(mlt_key *) then;
    char name[];
};

#define MLT__KEY_BUCKETS 4096 /* the keys by content */
#define MLT__KEY_CACHE 1024   /* the keys by the address of the caller's string */

struct mlt_tracker {
    mlt_options *opts; /* owned copy */
    mlt__cb_entry *cbs;
    size_t n_cbs;
    atomic_bool started; /* a run has started: the callback list is frozen */
    pthread_mutex_t lock;
    mlt_run *runs;        /* open top-level runs (linked through next_sibling) */
    mlt_run *ended;       /* runs that ended: their handles stay valid until close */
    char *experiment_id;  /* resolved by the MLflow callback, for UI addresses */
    atomic_ullong errors; /* calls on the tracker or its runs that failed */
    char last_error[512]; /* the message of the latest of them (under lock) */
    /* metric keys: read lock-free, inserted under keys_lock (taken before lock) */
    pthread_mutex_t keys_lock;
    _Atomic(mlt_key *) key_buckets[MLT__KEY_BUCKETS];
    _Atomic(uintptr_t) key_cache[MLT__KEY_CACHE]; /* metric.c: a key, or one tagged CHANGING */
    mlt_key *all_keys;
    uint32_t n_keys;
    /* the only callback's extension, if it has one: the hot path uses it directly (a run
     * takes the ring once its sink says so: mlt__run_use_ring) */
    struct mlt__ring *ring;
    mlt__fast_metric_fn fast_metric;
    void *fast_ud;
    /* system metrics (option system_metrics): a sampler thread logs into the top-level runs;
     * sys_lock is held while it does, and by mlt_run_end() while it unlinks such a run */
    char *source; /* mlflow.source.name for the MLflow callback, when set (mltrack run) */
    bool forked;  /* this is a forked child's copy: every call fails (see mlt_tracker_new) */
    mlt_tracker *reg_prev, *reg_next; /* every live tracker, for the fork handlers */
    bool sys_started;
    bool sys_stop; /* under sys_lock */
    pthread_t sys_thread;
    pthread_mutex_t sys_lock;
    pthread_cond_t sys_cv;
};

typedef struct mlt__param_rec {
    char *key;
    char *value;
} mlt__param_rec;

struct mlt_run {
    /* the ring the hot path puts this run's points in; NULL: the slow path (no ring, the sink
     * not ready for the run, or the run ended) */
    _Atomic(struct mlt__ring *) ring;
    mlt_tracker *tracker;
    mlt_run *parent;
    mlt_run *children;     /* open children */
    mlt_run *next_sibling; /* in the parent's or tracker's list of open runs, or in the
                            * tracker's list of ended runs */
    atomic_bool ended;     /* mlt_run_end() was called: every call but the getters refuses */
    char key[37];
    char *name;
    int64_t start_ms;
    int64_t start_mono_ns;
    atomic_int failed;
    pthread_mutex_t lock;
    _Atomic(char *) run_id; /* server run id, set once by the MLflow callback */
    mlt__param_rec *params;
    size_t n_params, cap_params;
    mlt_run *active_prev; /* this thread's previously active run, while active */
    uint32_t ring_run;    /* the run's number in the sink's ring (mlt__run_use_ring) */
    bool attached;        /* the run of the options' run_id/run_key, another process's */
    bool resumed;         /* resume=allow: the run of run_key, created if absent, else resumed */
    int64_t sys_step;     /* the next step of its system metrics */
};

/* Registers a built-in sink: callbacks plus its extension (NULL: none); ext->on_key is told at
 * once of the keys registered so far. */
MLT__MUST_USE mlt_err mlt__tracker_add_internal(mlt_tracker *t, const mlt_callbacks *cb,
                                                void *userdata, const mlt__sink_ext *ext);

/* Fills info from run. */
void mlt__run_info(const mlt_run *run, mlt_run_info *info, const char *parent_key);

/* The run is ring_run in the sink's ring (what a point put there names it by); from now on its
 * points go straight into the ring of the tracker's only sink (if it has one and the run is
 * open). Called by that sink once the run's records may follow in its journal. */
void mlt__run_use_ring(mlt_run *run, uint32_t ring_run);

/* The query that opens an MLflow 3 UI address in its "Model training" view. */
#define MLT__UI_VIEW "workflowType=machine_learning"

/* Records the server run id (copied). Called by the MLflow callback. */
MLT__MUST_USE mlt_err mlt__run_set_id(mlt_run *run, const char *run_id);

/* Records the experiment id the tracker logs into (copied). */
MLT__MUST_USE mlt_err mlt__tracker_set_experiment_id(mlt_tracker *t, const char *id);

/* Sets what the MLflow callback added after this call tags as mlflow.source.name (copied), with
 * the git commit of the current directory: for a wrapper that runs another program. */
MLT__MUST_USE mlt_err mlt__tracker_set_source(mlt_tracker *t, const char *program);
const char *mlt__tracker_source(const mlt_tracker *t);

/* The tracker's options (read-only). */
const mlt_options *mlt__tracker_options(const mlt_tracker *t);

/* This thread's active-run stack (runs.c): push a run, pop it (and what is above it), or set
 * the innermost active run (a scope that could not start its run). */
void mlt__active_push(mlt_run *run);
void mlt__active_pop(mlt_run *run);
void mlt__active_set(mlt_run *run);

/* ---- what the tracker's files share (tracker.c, runs.c, metric.c) ---- */

/* The first failure of a dispatch: its code and its message (a later callback's failure or
 * success must not overwrite the message the caller will read). */
typedef struct mlt__first_err {
    mlt_err err;
    char msg[512];
} mlt__first_err;
/* Keeps err (its message from mlt_last_error(), else what) unless a failure is kept already. */
void mlt__note_err(mlt__first_err *fe, mlt_err err, const char *what);
/* The kept failure, its message made this thread's mlt_last_error(); MLT_OK if none. */
mlt_err mlt__finish_err(mlt__first_err *fe);
/* Counts a failed call against the tracker (t may be NULL); returns err. MLT_ERR_QUEUED is not
 * a failure of the call. */
mlt_err mlt__tracker_counted(mlt_tracker *t, mlt_err err);
/* What every call on a forked child's copy of a tracker returns (no lock, nothing counted). */
mlt_err mlt__tracker_forked_err(void);

/* Whether mlt_run_end() was called on run; what a call on it then returns (naming the run). */
bool mlt__run_has_ended(const mlt_run *run);
mlt_err mlt__run_ended_err(const mlt_run *run, const char *call);
/* Checks a call's run, key and (params, tags) value before anything is dispatched; counted. */
MLT__MUST_USE mlt_err mlt__run_check_entry(mlt_run *run, mlt__kind kind, const char *key,
                                           const char *value);
/* The parent's client key, NULL for a top-level run. */
const char *mlt__run_parent_key(const mlt_run *run);
/* Frees a run that is not linked anywhere (close frees the ended ones). */
void mlt__run_free(mlt_run *run);

#endif
