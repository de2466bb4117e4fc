/*
 * cb_mlflow.c - the MLflow callback: every run event becomes a record appended to this
 * tracker's journal in the durable queue (with the system tags at run start); the sender thread
 * delivers them. The application thread never waits for the server. Also mlt_tracker_from_env.
 */
#include "config.h"

#include "journal.h"
#include "mlflow_client.h"
#include "queue.h"
#include "sender.h"
#include "sysinfo.h"
#include "tracker.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The callback's view of a live run: its number in the journal and its handle (so the sender
 * can hand over the run id). */
typedef struct live_run {
    char key[37];
    uint32_t run_no;
    mlt_run *run;
    bool attach_pending; /* an attached run whose ATTACH record is not written yet */
} live_run;

typedef struct mlflow_cb {
    mlt_tracker *tracker;
    const mlt_options *opts; /* the tracker's */
    mlt__journal *journal;   /* this tracker's own; owned by the sender */
    mlt__sender *sender;
    pthread_mutex_t lock; /* guards the live runs and next_run_no */
    live_run *live;
    size_t n_live, cap_live;
    uint32_t next_run_no;
    mlt__ring *ring;  /* the journal's */
    uint64_t cap;     /* queue_max_bytes */
    bool sync_always; /* fsync=always: a point is on disk when its call returns */
    char user[256];
    char program[PATH_MAX];
    char commit[41];
    int has_commit;
} mlflow_cb;

#define RING_WAIT_MS 1000 /* the least a put waits for the journal's writer to drain the ring */

static live_run *find_live(mlflow_cb *m, const char *key)
{
    for (size_t i = 0; i < m->n_live; i++) {
        if (strcmp(m->live[i].key, key) == 0) {
            return &m->live[i];
        }
    }
    return NULL;
}

/* Sender thread: the server created a run. */
static void on_run_id(const char *run_key, const char *run_id, const char *experiment_id, void *ud)
{
    mlflow_cb *m = ud;
    /* Out of memory only, and then the run has no UI address (mlt_run_ui_url() says so):
     * its delivery is not affected. */
    if (experiment_id && mlt__tracker_set_experiment_id(m->tracker, experiment_id) != MLT_OK) {
        mlt__log(&m->opts->logger, MLT_LOG_WARN, "run %s: %s", run_key, mlt_last_error());
    }
    pthread_mutex_lock(&m->lock);
    live_run *l = find_live(m, run_key);
    if (l && mlt__run_set_id(l->run, run_id) != MLT_OK) {
        mlt__log(&m->opts->logger, MLT_LOG_WARN, "run %s: %s", run_key, mlt_last_error());
    }
    pthread_mutex_unlock(&m->lock);
}

/* Waits for room under the queue's size cap, as the policy says. */
static MLT__MUST_USE mlt_err make_room(mlflow_cb *m, size_t len)
{
    const mlt_options *o = m->opts;
    uint64_t cap = (uint64_t)o->queue_max_bytes;
    if (mlt__journal_pending_bytes(m->journal) + len <= cap) {
        return MLT_OK;
    }
    if (!o->queue_full_fail) {
        int64_t deadline = mlt__mono_ns() + o->queue_block_ms * 1000000;
        mlt__sender_notify(m->sender);
        while (mlt__mono_ns() < deadline) {
            mlt__sleep_ms(5);
            if (mlt__journal_pending_bytes(m->journal) + len <= cap) {
                return MLT_OK;
            }
        }
    }
    return mlt__fail(MLT_ERR_QUEUE_FULL,
                     "the queue holds %" PRIu64 " undelivered bytes, its cap (queue_max_bytes) "
                     "is %" PRIu64 ": the call was not logged",
                     mlt__journal_pending_bytes(m->journal), cap);
}

static MLT__MUST_USE mlt_err append(mlflow_cb *m, mlt__rec_type type, mlt__buf *b, bool capped)
{
    mlt_err err = b->oom ? mlt__fail(MLT_ERR_NOMEM, "out of memory") : MLT_OK;
    if (err == MLT_OK && capped) {
        err = make_room(m, b->len);
    }
    if (err == MLT_OK) {
        err = mlt__journal_append(m->journal, type, b->data, b->len, NULL);
    }
    mlt__buf_free(b);
    if (err == MLT_OK) {
        mlt__sender_notify(m->sender);
    }
    return err;
}

/* An attached run's ATTACH record is written just before the first record logged into it: a
 * run that nothing is logged into (bad input, a program that only reads its run) leaves nothing
 * in the journal, so nothing waits for a run the server may not have. Call with m->lock held;
 * appends go under the journal's own lock, taken after it. */
static MLT__MUST_USE mlt_err attach_now(mlflow_cb *m, live_run *l)
{
    if (!l->attach_pending) {
        return MLT_OK;
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_attach(&b, l->run_no, l->key, mlt__opt_str(m->opts, MLT__OPT_RUN_ID),
                        mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_NAME),
                        mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_ID), mlt__now_ms());
    mlt_err err = append(m, MLT__REC_ATTACH, &b, false);
    if (err == MLT_OK) {
        l->attach_pending = false;
        mlt__run_use_ring(l->run, l->run_no);
    }
    return err;
}

/* The journal number of a run, its ATTACH written first if it is still due; 0 (and an error)
 * when the callback does not know the run. */
static MLT__MUST_USE mlt_err ready_run_no(mlflow_cb *m, const char *key, uint32_t *run_no)
{
    pthread_mutex_lock(&m->lock);
    live_run *l = find_live(m, key);
    mlt_err err = l ? attach_now(m, l) : MLT_OK;
    *run_no = l ? l->run_no : 0;
    pthread_mutex_unlock(&m->lock);
    if (!l) {
        return mlt__fail(MLT_ERR_STATE, "mlflow callback: run %s is unknown", key);
    }
    return err;
}

static MLT__MUST_USE mlt_err on_start(const mlt_run_info *info, void *ud)
{
    mlflow_cb *m = ud;
    pthread_mutex_lock(&m->lock);
    mlt_err err = MLT_OK;
    if (MLT__GROW(m->live, m->cap_live, m->n_live + 1) != MLT_OK) {
        pthread_mutex_unlock(&m->lock);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    uint32_t run_no = ++m->next_run_no;
    live_run *l = &m->live[m->n_live++];
    snprintf(l->key, sizeof l->key, "%s", info->run_key);
    l->run_no = run_no;
    l->run = info->run;
    /* another process's run: logged into (attach_now), never created (its owner tagged it) */
    l->attach_pending = info->run->attached;
    if (info->parent_run_key) {
        /* a child of an attached run names it: its ATTACH goes first */
        live_run *parent = find_live(m, info->parent_run_key);
        err = parent ? attach_now(m, parent) : MLT_OK;
    }
    pthread_mutex_unlock(&m->lock);
    if (info->run->attached) {
        return MLT_OK;
    }

    const char *exp_name = mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_NAME);
    const char *exp_id = mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_ID);
    mlt__buf b;
    mlt__buf_init(&b);
    if (err != MLT_OK) {
        goto out;
    }

    const char *keys[4] = {"mlflow.user", "mlflow.source.name", "mlflow.source.type"};
    const char *values[4] = {m->user, m->program, "LOCAL"};
    size_t n = 3;
    if (m->has_commit) {
        keys[n] = "mlflow.source.git.commit";
        values[n++] = m->commit;
    }
    mlt__rec_put_create(&b, run_no, info->run_key, info->parent_run_key, info->run_name, exp_name,
                        exp_id, info->start_time_ms, keys, values, n,
                        info->run->resumed ? MLT__CREATE_RESUME : 0);
    err = append(m, MLT__REC_CREATE, &b, false);
    if (err == MLT_OK) {
        mlt__run_use_ring(info->run, run_no); /* its points may follow the create now */
    }
out:
    mlt__buf_free(&b);
    if (err != MLT_OK) {
        pthread_mutex_lock(&m->lock);
        live_run *gone = find_live(m, info->run_key);
        if (gone) {
            *gone = m->live[--m->n_live];
        }
        pthread_mutex_unlock(&m->lock);
    }
    return err;
}

static MLT__MUST_USE mlt_err kv(mlflow_cb *m, mlt__rec_type type, const mlt_run_info *info,
                                const char *key, const char *value)
{
    uint32_t run_no;
    mlt_err err = ready_run_no(m, info->run_key, &run_no);
    if (err != MLT_OK) {
        return err;
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_kv(&b, run_no, key, value);
    return append(m, type, &b, true);
}

static MLT__MUST_USE mlt_err on_param(const mlt_run_info *info, const char *key, const char *value,
                                      void *ud)
{
    return kv(ud, MLT__REC_PARAM, info, key, value);
}

static MLT__MUST_USE mlt_err on_tag(const mlt_run_info *info, const char *key, const char *value,
                                    void *ud)
{
    return kv(ud, MLT__REC_TAG, info, key, value);
}

/* An artifact: snapshotted into the journal (its ARTIFACT record follows the snapshot), which
 * counts against queue_max_bytes as records do. */
static MLT__MUST_USE mlt_err keep_artifact(void *ud, const mlt_run_info *info, const char *path,
                                           int fd, const void *data, uint64_t len, uint64_t *bytes,
                                           char sha256[65])
{
    mlflow_cb *m = ud;
    uint32_t run_no;
    mlt_err err = ready_run_no(m, info->run_key, &run_no);
    if (err == MLT_OK && len + 256 > (uint64_t)m->opts->queue_max_bytes) {
        /* it would never fit: said at once rather than waited for */
        err = mlt__fail(MLT_ERR_QUEUE_FULL,
                        "artifact '%s' of %" PRIu64 " bytes is larger than the queue's cap "
                        "(queue_max_bytes %lld): it was not logged; raise queue_max_bytes",
                        path, len, m->opts->queue_max_bytes);
    } else if (err == MLT_OK) {
        err = make_room(m, len + 256);
    }
    if (err != MLT_OK) {
        return err;
    }
    const mlt__art_src src = {fd, data, len};
    err = mlt__journal_put_artifact(m->journal, run_no, path, &src, mlt__now_ms(), bytes, sha256);
    if (err == MLT_OK) {
        mlt__sender_notify(m->sender);
    }
    return err;
}

/* The hot path: one slot of the ring, no lock, no syscall. */
static MLT__MUST_USE mlt_err fast_metric(void *ud, mlt_run *run, const mlt_key *key, double value,
                                         int64_t step, int64_t ts)
{
    mlflow_cb *m = ud;
    if (run->attached) {
        uint32_t run_no;
        mlt_err err = ready_run_no(m, run->key, &run_no);
        if (err != MLT_OK) {
            return err;
        }
    }
    if (!mlt__ring_admits(m->ring)) {
        mlt_err err = make_room(m, 64);
        if (err != MLT_OK) {
            return err;
        }
    }
    mlt_err err = mlt__ring_put(m->ring, run->ring_run, key->id | MLT__RING_MS, value, ts, step);
    if (err == MLT_OK && m->sync_always) {
        err = mlt__journal_sync(m->journal);
    }
    return err;
}

static MLT__MUST_USE mlt_err on_key(void *ud, const mlt_key *key)
{
    mlflow_cb *m = ud;
    return mlt__journal_put_key(m->journal, key->id, key->name);
}

static MLT__MUST_USE mlt_err on_end(const mlt_run_info *info, mlt_run_status status,
                                    double duration_s, void *ud)
{
    (void)duration_s;
    mlflow_cb *m = ud;
    pthread_mutex_lock(&m->lock);
    live_run *l = find_live(m, info->run_key);
    uint32_t run_no = l ? l->run_no : 0;
    bool wrote = l && !l->attach_pending;
    if (l) {
        *l = m->live[--m->n_live]; /* the run is over for the journal */
    }
    pthread_mutex_unlock(&m->lock);
    if (!run_no) {
        return mlt__fail(MLT_ERR_STATE, "mlflow callback: run %s is unknown", info->run_key);
    }
    if (info->run->attached || !wrote) {
        return MLT_OK; /* its owner ends it */
    }
    mlt__buf b;
    mlt__buf_init(&b);
    mlt__rec_put_end(&b, run_no, (int)status, info->end_time_ms);
    mlt_err err = append(m, MLT__REC_END, &b, false);
    /* a run's end always reaches the disk */
    return err == MLT_OK ? mlt__journal_sync(m->journal) : err;
}

static MLT__MUST_USE mlt_err stats(void *ud, mlt_queue_stats *out)
{
    mlflow_cb *m = ud;
    mlt__sender_stats(m->sender, out);
    return MLT_OK;
}

/* mlt_run_last_step(): the queue's journals know the newest points (not delivered yet); else the
 * server, asked on the caller's thread. */
static MLT__MUST_USE mlt_err last_step(void *ud, const char *run_key, const char *metric_key,
                                       int64_t *step)
{
    mlflow_cb *m = ud;
    char qdir[PATH_MAX];
    mlt_err err = mlt__queue_dir(m->opts, qdir, sizeof qdir);
    if (err == MLT_OK) {
        err = mlt__queue_last_step(qdir, run_key, metric_key, step);
    }
    if (err != MLT_ERR_NOT_FOUND) {
        return err;
    }
    if (!mlt__opt_str(m->opts, MLT__OPT_TRACKING_URI)) {
        return mlt__fail(MLT_ERR_NETWORK,
                         "the step is unknown here: nothing of run %s is left undelivered in the "
                         "queue, and no tracking URI is set to ask the server",
                         run_key);
    }
    mlt__client c;
    err = mlt__client_init(&c, m->opts);
    if (err != MLT_OK) {
        return err;
    }
    c.max_retries = 0; /* one try: the caller knows best whether to wait for the server */
    const char *exp_name = mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_NAME);
    const char *exp_id = mlt__opt_str(m->opts, MLT__OPT_EXPERIMENT_ID);
    char *id = NULL;
    if (exp_name) {
        err = mlt__client_experiment(&c, exp_name, &id);
    } else {
        id = mlt__strdup(exp_id ? exp_id : "0");
        err = id ? MLT_OK : mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    if (err == MLT_OK) {
        err = mlt__client_last_step(&c, id, run_key, metric_key, step);
    }
    free(id);
    mlt__client_free(&c);
    return err;
}

static void on_fork_child(void *ud)
{
    mlflow_cb *m = ud;
    mlt__journal_forget_after_fork(m->journal);
}

static MLT__MUST_USE mlt_err on_flush(int timeout_ms, void *ud)
{
    mlflow_cb *m = ud;
    return mlt__sender_flush(m->sender, timeout_ms);
}

static void on_close(void *ud)
{
    mlflow_cb *m = ud;
    mlt__sender_free(m->sender, 0);
    free(m->live);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The journal's writer moved points into the segments. */
static void notify_sender(void *ud)
{
    mlt__sender_notify(ud);
}

/* A journal whose owner died: taken over by this tracker's sender, unless it is another
 * server's (left for a tracker of that server, or `mltrack sync`). */
static bool take_over(const mlt__adoption *a, void *ud)
{
    mlflow_cb *m = ud;
    const mlt__logger *lg = &m->opts->logger;
    if (a->rec->cut_bytes) {
        mlt__log(lg, MLT_LOG_WARN,
                 "journal %s: cut %" PRIu64 " bytes of a torn or corrupt tail (%s)", a->dir,
                 a->rec->cut_bytes, a->rec->why);
    }
    if (a->err != MLT_OK) {
        if (a->err != MLT_ERR_LOCKED) {
            mlt__log(lg, MLT_LOG_WARN, "cannot take over journal: %s", mlt_last_error());
        }
        return true;
    }
    const char *uri = mlt__opt_str(m->opts, MLT__OPT_TRACKING_URI);
    if (!mlt__journal_is_for(a->j, uri)) {
        mlt__log(lg, MLT_LOG_INFO, "journal %s is for %s, not this tracker's server: left alone",
                 a->dir, mlt__journal_target(a->j));
        mlt__journal_close(a->j, false);
        return true;
    }
    mlt__journal_set_interval(a->j, (int)m->opts->fsync_interval_ms);
    if (a->rec->ring_points) {
        mlt__log(lg, MLT_LOG_INFO,
                 "journal %s: %" PRIu64 " points its process left in memory were saved", a->dir,
                 a->rec->ring_points);
    }
    if (mlt__sender_add(m->sender, a->j, true) != MLT_OK) {
        mlt__journal_close(a->j, false); /* out of memory: left for the next tracker */
    }
    return true;
}

/* Opens the queue: every journal whose owner died, and a new journal for this tracker. */
static MLT__MUST_USE mlt_err open_queue(mlflow_cb *m)
{
    char qdir[PATH_MAX - 64], jdir[PATH_MAX];
    mlt_err err = mlt__queue_dir(m->opts, qdir, sizeof qdir);
    if (err != MLT_OK) {
        return err;
    }
    if (mlt__opt_str(m->opts, MLT__OPT_TRACKING_URI) &&
        mlt__queue_adopt(qdir, m->opts->fsync_mode, take_over, m, NULL) != MLT_OK) {
        /* what dead processes left waits for the next tracker or `mltrack sync`; this one
         * still needs its own journal, made below (which says why if the queue is unusable) */
        mlt__log(&m->opts->logger, MLT_LOG_WARN, "cannot look for journals to take over: %s",
                 mlt_last_error());
    }
    char id[37];
    mlt__uuid4(id);
    int len = snprintf(jdir, sizeof jdir, "%s/j-%s", qdir, id);
    if (len < 0 || (size_t)len >= sizeof jdir) {
        return mlt__fail(MLT_ERR_VALUE_TOO_LONG, "queue_dir is too long");
    }
    err = mlt__journal_create(&m->journal, jdir, m->opts->fsync_mode);
    if (err != MLT_OK) {
        return err;
    }
    mlt__journal_set_segment_bytes(m->journal, (uint64_t)m->opts->queue_segment_bytes);
    const char *target = mlt__opt_str(m->opts, MLT__OPT_TRACKING_URI);
    err = target ? mlt__journal_set_target(m->journal, target) : MLT_OK;
    if (err != MLT_OK) {
        mlt__journal_close(m->journal, true);
        return err;
    }
    m->ring = mlt__journal_ring(m->journal);
    /* A full ring is not a full queue: the writer is only behind, and every put waits for it
     * (at least RING_WAIT_MS), unless the policy is fail and the writer cannot write. */
    m->ring->full_block_ms =
        m->opts->queue_block_ms > RING_WAIT_MS ? (int)m->opts->queue_block_ms : RING_WAIT_MS;
    m->ring->full_fail_fast = m->opts->queue_full_fail;
    m->cap = (uint64_t)m->opts->queue_max_bytes;
    m->ring->cap = m->cap;
    m->sync_always = m->opts->fsync_mode == MLT__FSYNC_ALWAYS;
    err = mlt__journal_start_writer(m->journal, notify_sender, m->sender,
                                    (int)m->opts->fsync_interval_ms);
    if (err == MLT_OK) {
        err = mlt__sender_add(m->sender, m->journal, false);
    }
    if (err != MLT_OK) {
        mlt__journal_close(m->journal, true);
    }
    return err;
}

static MLT__MUST_USE mlt_err add_mlflow(mlt_tracker *tracker)
{
    if (!tracker) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "tracker is required");
    }
    const mlt_options *o = mlt__tracker_options(tracker);
    if (!mlt__opt_str(o, MLT__OPT_TRACKING_URI) && !mlt__opt_str(o, MLT__OPT_QUEUE_DIR)) {
        return mlt__fail(MLT_ERR_BAD_OPTION,
                         "the MLflow callback needs a tracking_uri (option tracking_uri or "
                         "MLFLOW_TRACKING_URI), or a queue_dir (MLTRACK_QUEUE_DIR) that a relay "
                         "or `mltrack sync` delivers");
    }
    mlflow_cb *m = calloc(1, sizeof *m);
    if (!m) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    m->tracker = tracker;
    m->opts = o;
    pthread_mutex_init(&m->lock, NULL);
    mlt_err err = mlt__sender_new(&m->sender, o);
    if (err == MLT_OK) {
        mlt__sender_on_run_id(m->sender, on_run_id, m);
        if (!mlt__opt_str(o, MLT__OPT_TRACKING_URI)) {
            /* the queue only (a node without network): a relay or `mltrack sync` delivers */
            mlt__sender_set_no_server(m->sender);
            mlt__log(&o->logger, MLT_LOG_INFO,
                     "no tracking URI: what is logged waits in the queue %s for a relay "
                     "(`mltrack sync --follow`) or `mltrack sync` to deliver",
                     mlt__opt_str(o, MLT__OPT_QUEUE_DIR));
        }
        err = open_queue(m);
    }
    if (err == MLT_OK) {
        err = mlt__sender_start(m->sender);
    }
    if (err != MLT_OK) {
        mlt__sender_free(m->sender, 0);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return err;
    }
    mlt__sys_user(m->user, sizeof m->user);
    const char *source = mlt__tracker_source(tracker);
    if (source) {
        /* a wrapper (mltrack run) names the program it runs; the commit is the directory's */
        snprintf(m->program, sizeof m->program, "%s", source);
        m->has_commit = mlt__sys_git_commit(".", m->commit);
    } else {
        mlt__sys_program(m->program, sizeof m->program);
        m->has_commit = mlt__sys_git_commit(m->program[0] ? m->program : ".", m->commit);
        if (!m->has_commit) {
            m->has_commit = mlt__sys_git_commit(".", m->commit);
        }
    }
    static const mlt_callbacks cb = {
        .version = MLT_CALLBACKS_VERSION,
        .on_run_start = on_start,
        .on_param = on_param,
        .on_tag = on_tag,
        .on_run_end = on_end,
        .on_flush = on_flush,
        .on_close = on_close,
    };
    /* fsync=always: every point goes through fast_metric, which syncs */
    const mlt__sink_ext ext = {fast_metric,   on_key, m->sync_always ? NULL : m->ring,
                               on_fork_child, stats,  keep_artifact,
                               last_step};
    err = mlt__tracker_add_internal(tracker, &cb, m, &ext);
    if (err != MLT_OK) {
        on_close(m);
        return err;
    }
    return MLT_OK;
}

mlt_err mlt_tracker_add_mlflow(mlt_tracker *tracker, char *errbuf, size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, add_mlflow(tracker));
}

static MLT__MUST_USE mlt_err tracker_from_env(mlt_tracker **out)
{
    if (!out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "out is required");
    }
    mlt_options *o = mlt_options_new();
    if (!o) {
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    mlt_tracker *t = NULL;
    mlt_err err = mlt_options_from_env(o, NULL, 0);
    if (err == MLT_OK && !mlt__opt_str(o, MLT__OPT_TRACKING_URI) &&
        !mlt__opt_str(o, MLT__OPT_QUEUE_DIR)) {
        err = mlt__fail(MLT_ERR_BAD_OPTION,
                        "MLFLOW_TRACKING_URI is not set (e.g. http://127.0.0.1:5000); on a node "
                        "without network, set MLTRACK_QUEUE_DIR instead, for a relay to deliver");
    }
    if (err == MLT_OK) {
        err = mlt_tracker_new(&t, o, NULL, 0);
    }
    mlt_options_free(o);
    if (err == MLT_OK && (err = add_mlflow(t)) != MLT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", mlt_last_error()); /* closing may leave its own */
        mlt_tracker_close(t, 0);
        mlt__fail(err, "%s", why);
    }
    if (err == MLT_OK) {
        *out = t;
    }
    return err;
}

mlt_err mlt_tracker_from_env(mlt_tracker **out, char *errbuf, size_t errlen)
{
    return mlt__errbuf(errbuf, errlen, tracker_from_env(out));
}
