/*
 * sender.c - delivery of journals to the MLflow server (see sender.h).
 *
 * Each journal is read in order from its cursor. A "unit" is what one step delivers: a run
 * creation, a run end, or a window of consecutive log records (params, metrics, tags of any runs,
 * up to one full log batch), grouped per run. A unit is acked only once all of it is delivered
 * (or dead-lettered), so a crash replays at most the unit in flight: metrics come back as exact
 * duplicates the server ignores, params with the same value, tags with the latest value, and a
 * run creation is preceded by a search for the run's client key.
 *
 * Journals are served in turns, one unit each, the tracker's own journal first: a large backlog
 * adopted from a dead process never holds up what this process logs, and a flush waits for
 * this process's own records only. A failure of the server (no connection, 5xx, a timeout)
 * holds every journal back for a backoff; a journal whose records wait for a run that is not on
 * the server yet (a run another process makes) waits on its own, and the others go on.
 *
 * Locks: s->mu guards stop/wake/probe flags, the flush targets and what the last request found;
 * the journals' own locks guard appends. No lock is held during a network call or a user
 * callback.
 */
#include "config.h"

#include "sender.h"

#include "mlflow_client.h"
#include "queue.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A log entity of a window, with its own copies of the strings. */
typedef struct ent {
    mlt__rec_type type;
    uint32_t run_no;
    char *key;
    char *value;
    double num;
    int64_t ts, step;
    uint64_t seq;
    bool done; /* delivered or dead-lettered: not sent again if the unit is retried */
} ent;

typedef struct slot {
    mlt__journal *j;
    bool adopted;
    uint64_t cursor; /* last record read */
    /* the unit in flight */
    ent *win;
    size_t n_win, cap_win;
    bool has_ctl;      /* a CREATE or END record follows the window */
    mlt__rec ctl;      /* points into ctl_buf */
    mlt__buf ctl_buf;
    mlt__rec last;     /* the unit's last record (for the ack) */
    bool have_unit;
    bool create_ambiguous; /* a create of this unit may have reached the server */
    int64_t ambiguous_at_ns;
    uint64_t start_acked;  /* acked when added, for the counters */
    /* WAIT: its next unit waits for a run the server does not have yet (sender thread; waits
     * and waiting_for change under mu, for a flusher's message) */
    int64_t wait_until_ns;  /* not tried before (monotonic); 0: not waiting */
    int64_t waited_at_ns;   /* when the current wait began */
    int waits;              /* waits in a row: each is longer */
    uint64_t runs_at_wait;  /* runs created by this sender when it began (one since: try now) */
    char waiting_for[40];   /* the run key it waits for ("" for none: a create settling) */
    char wait_key[40];      /* what the unit that returned WAIT waits for (attach_missing) */
    /* what it delivered (acknowledged or dead-lettered), for what a flush says is kept */
    _Atomic uint64_t runs_done, points_done;
    /* an adopted journal all delivered is closed (j NULL, under mu) while the sender lives on:
     * its records for the counters */
    uint64_t retired_queued;
} slot;

struct mlt__sender {
    mlt_options *opts;
    mlt__client client;
    atomic_bool abort;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t wake_cv; /* the sender waits here */
    pthread_cond_t done_cv; /* flushers wait here */
    bool stop;
    bool wake;
    int flushing; /* flushes waiting: no lingering */
    slot *slots;
    size_t n_slots;
    mlt__buf scratch;
    char *exp_name; /* experiment cache: the last name resolved and its id */
    char *exp_id;
    mlt__run_id_fn on_run_id;
    void *on_run_id_ud;
    int failures;   /* consecutive retriable failures */
    char last_error[1024];
    char *queue_dir; /* where the journals are (for the creator of a run waited for), or NULL */
    /* what the latest request found (under mu): when it found no server to talk to (no
     * connection, TLS refused), 0 when it reached one; a flush asks for a probe (under mu) */
    int64_t down_at_ns;
    char down_why[256];     /* the transport's words for it (under mu) */
    uint64_t requests_seen; /* the client's request count when last looked at (sender thread) */
    bool probe;
    /* counters */
    _Atomic uint64_t sent, acknowledged, retried, rejected;
    uint64_t rejected_points; /* metric records among the rejected (sender thread) */
    mlt__sync_progress prog;
};

#define WINDOW_MAX 1000 /* entities per unit: one full log batch */
#define WAIT_FIRST_MS 1000   /* a journal waiting for a run tries again after this... */
#define WAIT_MAX_MS 30000    /* ...doubling up to this */
#define WAIT_FLUSH_MS 250    /* ...or this, while this process flushes and it is its own */
#define DOWN_FRESH_NS 1000000000LL /* a server found away this recently is away: no probe */
/* How long a run must stay absent from runs/search after an ambiguous create before it is
 * created again: a server may still be working on the first request. */
#define AMBIGUOUS_SETTLE_NS (5 * 1000000000LL)

/* ---- construction ---- */

mlt_err mlt__sender_new(mlt__sender **out, const mlt_options *opts, char *errbuf, size_t errlen)
{
    mlt__sender *s = calloc(1, sizeof *s);
    if (!s || !(s->opts = mlt__options_dup(opts))) {
        free(s);
        return mlt__errf(errbuf, errlen, MLT_ERR_NOMEM, "out of memory");
    }
    mlt_err err = mlt__client_init(&s->client, s->opts, errbuf, errlen);
    if (err != MLT_OK) {
        mlt_options_free(s->opts);
        free(s);
        return err;
    }
    char qdir[PATH_MAX];
    if (mlt__queue_dir(s->opts, qdir, sizeof qdir) == MLT_OK) {
        s->queue_dir = mlt__strdup(qdir); /* NULL: waits are never cut short */
    }
    /* The sender retries by itself, with its own waits that a stop interrupts. */
    s->client.max_retries = 0;
    atomic_init(&s->abort, false);
    mlt__client_set_abort(&s->client, &s->abort);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    mlt__buf_init(&s->scratch);
    *out = s;
    return MLT_OK;
}

mlt_err mlt__sender_add(mlt__sender *s, mlt__journal *j, bool adopted)
{
    pthread_mutex_lock(&s->mu);
    slot *n = realloc(s->slots, (s->n_slots + 1) * sizeof *n);
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        return MLT_ERR_NOMEM;
    }
    s->slots = n;
    slot *sl = &s->slots[s->n_slots++];
    memset(sl, 0, sizeof *sl);
    sl->j = j;
    sl->adopted = adopted;
    sl->cursor = mlt__journal_acked_seq(j);
    sl->start_acked = sl->cursor;
    atomic_init(&sl->runs_done, 0);
    atomic_init(&sl->points_done, 0);
    mlt__buf_init(&sl->ctl_buf);
    s->prog.records_total += mlt__journal_last_seq(j) - sl->cursor;
    s->wake = true;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->mu);
    return MLT_OK;
}

void mlt__sender_on_run_id(mlt__sender *s, mlt__run_id_fn fn, void *ud)
{
    s->on_run_id = fn;
    s->on_run_id_ud = ud;
}

/* ---- helpers ---- */

static void log_msg(mlt__sender *s, int level, const char *msg)
{
    mlt__log(&s->opts->logger, level, "%s", msg);
}

static void report(mlt__sender *s, mlt_op op, mlt_delivery_state state, const char *run_key,
                   const char *run_id, const char *exp_id, uint32_t records, const char *msg)
{
    if (state == MLT_DELIVERY_ACKNOWLEDGED) {
        atomic_fetch_add(&s->acknowledged, records);
    } else {
        atomic_fetch_add(&s->rejected, records);
        s->prog.rejected += records;
    }
    s->prog.records_done += records;
    if (!s->opts->delivery_fn) {
        return;
    }
    mlt_delivery d = {op, state, run_key, run_id, exp_id, records, msg};
    s->opts->delivery_fn(&d, s->opts->delivery_ud);
}

static void free_window(slot *sl)
{
    for (size_t i = 0; i < sl->n_win; i++) {
        free(sl->win[i].key);
        free(sl->win[i].value);
    }
    sl->n_win = 0;
    sl->has_ctl = false;
    sl->have_unit = false;
    sl->create_ambiguous = false;
}

static const mlt__run_entry *run_by_key(mlt__journal *j, const char *key)
{
    size_t n;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(runs[i].key, key) == 0) {
            return &runs[i];
        }
    }
    return NULL;
}

/* Outcome of delivering part of a unit: done; try again after a backoff (the server failed or
 * is away); the server refused this record for good (a dead letter: a 400 or 404, or
 * credentials it refuses, 401/403, as the Python client fails such a call at once); delivery
 * cannot go on (TLS, configuration: nothing is dead-lettered, the unit waits); or this journal
 * waits for a run the server does not have yet (the others go on). */
typedef enum { OK, RETRY, DEAD, FATAL, WAIT } outcome;

/* Keeps msg as the last failure (read by flushing threads under s->mu). */
static void set_error(mlt__sender *s, const char *msg)
{
    size_t n = strlen(msg);
    n = n < sizeof s->last_error - 1 ? n : sizeof s->last_error - 1;
    pthread_mutex_lock(&s->mu);
    memcpy(s->last_error, msg, n);
    s->last_error[n] = '\0';
    pthread_mutex_unlock(&s->mu);
}

static outcome classify(mlt__sender *s, mlt_err err, const char *msg)
{
    set_error(s, msg);
    if (mlt_err_is_retriable(err) || err == MLT_ERR_PROTOCOL || err == MLT_ERR_NOMEM ||
        err == MLT_ERR_IO) {
        return RETRY;
    }
    return err == MLT_ERR_REJECTED || err == MLT_ERR_NOT_FOUND || err == MLT_ERR_AUTH ? DEAD
                                                                                     : FATAL;
}

/* ---- reading a unit ---- */

static mlt_err read_unit(mlt__sender *s, slot *sl)
{
    mlt__rec r;
    for (;;) {
        uint64_t c = sl->cursor;
        mlt_err err = mlt__journal_next(sl->j, &c, sl->n_win ? &s->scratch : &sl->ctl_buf, &r);
        if (err == MLT_ERR_NOT_FOUND) {
            break;
        }
        if (err == MLT_ERR_CORRUPT && c > sl->cursor) {
            /* checksummed but undecodable: set it aside and go on */
            mlt__rec bad = {.seq = r.seq, .end_pos = r.end_pos, .size = r.size, .key = ""};
            mlt__journal_dead_letter(sl->j, &bad, "the record could not be decoded");
            report(s, MLT_OP_LOG, MLT_DELIVERY_REJECTED, "", NULL, NULL, 1,
                   "the record could not be decoded");
            sl->cursor = c;
            sl->last = bad;
            sl->have_unit = true;
            continue;
        }
        if (err != MLT_OK) {
            return err;
        }
        sl->cursor = c;
        sl->last = r;
        sl->have_unit = true;
        if (r.type == MLT__REC_CREATE || r.type == MLT__REC_END || r.type == MLT__REC_ATTACH) {
            if (sl->n_win) {
                /* the window's strings are copies; the control record lives in s->scratch:
                 * move it to ctl_buf so the next read cannot overwrite it */
                mlt__buf tmp = sl->ctl_buf;
                sl->ctl_buf = s->scratch;
                s->scratch = tmp;
            }
            sl->ctl = r;
            sl->has_ctl = true;
            break;
        }
        if (sl->n_win == sl->cap_win) {
            size_t cap = sl->cap_win ? sl->cap_win * 2 : 64;
            ent *n = realloc(sl->win, cap * sizeof *n);
            if (!n) {
                return MLT_ERR_NOMEM;
            }
            sl->win = n;
            sl->cap_win = cap;
        }
        ent *e = &sl->win[sl->n_win];
        *e = (ent){r.type,    r.run_no, mlt__strdup(r.key), r.value ? mlt__strdup(r.value) : NULL,
                   r.num,     r.time_ms, r.step,             r.seq,
                   false};
        if (!e->key || (r.value && !e->value)) {
            free(e->key);
            free(e->value);
            return MLT_ERR_NOMEM;
        }
        sl->n_win++;
        if (sl->n_win >= WINDOW_MAX) {
            break;
        }
    }
    return MLT_OK;
}

/* ---- delivering log windows ---- */

/* Sets the entities ents[0..n) of one run aside as dead letters, with the server's answer (or
 * why they were not sent): one warning and one report for them all. */
static void dead_ents(mlt__sender *s, slot *sl, ent **ents, size_t n, const char *answer)
{
    if (n == 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const ent *e = ents[i];
        mlt__rec r = {0};
        r.seq = e->seq;
        r.type = e->type;
        r.run_no = e->run_no;
        r.key = e->key;
        r.value = e->value;
        r.num = e->num;
        r.time_ms = e->ts;
        r.step = e->step;
        mlt__journal_dead_letter(sl->j, &r, answer);
        s->rejected_points += e->type == MLT__REC_METRIC;
        atomic_fetch_add(&sl->points_done, e->type == MLT__REC_METRIC);
        ents[i]->done = true;
    }
    mlt__log(&s->opts->logger, MLT_LOG_WARN,
             "%zu record%s rejected for good, kept in %s/dead.jsonl: %s", n, n == 1 ? "" : "s",
             mlt__journal_dir(sl->j), answer);
    const mlt__run_entry *re = mlt__journal_run(sl->j, ents[0]->run_no);
    report(s, MLT_OP_LOG, MLT_DELIVERY_REJECTED, re ? re->key : "", re ? re->run_id : NULL,
           re ? re->experiment_id : NULL, (uint32_t)n, answer);
}

/* Sends the entities ents[0..n) of one run (n small enough for one request or split by the
 * client). A permanent rejection is narrowed down by halves to the entities the server refuses,
 * which become dead letters; the rest lands. */
static outcome send_ents(mlt__sender *s, slot *sl, const char *run_id, ent **ents, size_t n)
{
    mlt__metric *m = calloc(n ? n : 1, sizeof *m);
    mlt__kv *p = calloc(n ? n : 1, sizeof *p);
    mlt__kv *t = calloc(n ? n : 1, sizeof *t);
    if (!m || !p || !t) {
        free(m);
        free(p);
        free(t);
        return classify(s, MLT_ERR_NOMEM, "out of memory");
    }
    size_t nm = 0, np = 0, nt = 0;
    for (size_t i = 0; i < n; i++) {
        const ent *e = ents[i];
        if (e->type == MLT__REC_METRIC) {
            m[nm++] = (mlt__metric){e->key, e->num, e->ts, e->step};
        } else if (e->type == MLT__REC_PARAM) {
            p[np++] = (mlt__kv){e->key, e->value};
        } else {
            /* last write wins: a later value of the same tag replaces an earlier one */
            size_t k = 0;
            while (k < nt && strcmp(t[k].key, e->key) != 0) {
                k++;
            }
            t[k] = (mlt__kv){e->key, e->value};
            nt += k == nt;
        }
    }
    mlt__batch b = {m, nm, p, np, t, nt};
    char msg[1024];
    atomic_fetch_add(&s->sent, n);
    mlt_err err = mlt__client_log_batch(&s->client, run_id, &b, -1, msg, sizeof msg);
    free(m);
    free(p);
    free(t);
    if (err == MLT_OK) {
        for (size_t i = 0; i < n; i++) {
            ents[i]->done = true;
        }
        return OK;
    }
    outcome c = classify(s, err, msg);
    if (c != DEAD) {
        return c;
    }
    if (n == 1 || err != MLT_ERR_REJECTED) {
        /* a 400 may be about one entity: narrowed down below; a 401/403/404 is about the run
         * or the caller, and every entity shares it */
        dead_ents(s, sl, ents, n, msg);
        return OK;
    }
    outcome o = send_ents(s, sl, run_id, ents, n / 2);
    return o == OK ? send_ents(s, sl, run_id, ents + n / 2, n - n / 2) : o;
}

static outcome deliver_window(mlt__sender *s, slot *sl)
{
    /* One run at a time, in the order the runs first appear in the window. */
    while (sl->n_win) {
        uint32_t run_no = sl->win[0].run_no;
        ent **mine = malloc(sl->n_win * sizeof *mine);
        if (!mine) {
            return classify(s, MLT_ERR_NOMEM, "out of memory");
        }
        size_t n = 0;
        for (size_t i = 0; i < sl->n_win; i++) {
            if (sl->win[i].run_no == run_no && !sl->win[i].done) {
                mine[n++] = &sl->win[i];
            }
        }
        const mlt__run_entry *re = mlt__journal_run(sl->j, run_no);
        outcome o = OK;
        if (!re || !re->run_id) {
            const char *why = !re                           ? "the run is unknown to the journal"
                              : re->state == MLT__RUN_DEAD ? "the run could not be created"
                                                           : "the run was not created";
            dead_ents(s, sl, mine, n, why);
        } else {
            uint64_t before = atomic_load(&s->rejected);
            uint64_t before_points = s->rejected_points;
            o = send_ents(s, sl, re->run_id, mine, n);
            if (o == OK) {
                uint64_t rej = atomic_load(&s->rejected) - before;
                uint64_t rej_points = s->rejected_points - before_points;
                uint64_t points = 0;
                for (size_t i = 0; i < n; i++) {
                    points += mine[i]->type == MLT__REC_METRIC;
                }
                s->prog.points_sent += points - rej_points;
                atomic_fetch_add(&sl->points_done, points - rej_points);
                report(s, MLT_OP_LOG, MLT_DELIVERY_ACKNOWLEDGED, re->key, re->run_id,
                       re->experiment_id, (uint32_t)(n - rej), NULL);
            }
        }
        free(mine);
        if (o != OK) {
            return o;
        }
        /* drop this run's entities from the window */
        size_t k = 0;
        for (size_t i = 0; i < sl->n_win; i++) {
            if (sl->win[i].run_no == run_no) {
                free(sl->win[i].key);
                free(sl->win[i].value);
            } else {
                sl->win[k++] = sl->win[i];
            }
        }
        sl->n_win = k;
    }
    return OK;
}

/* ---- runs ---- */

static outcome resolve_experiment(mlt__sender *s, const mlt__rec *r, char **out_id)
{
    if (!r->experiment_name[0]) {
        *out_id = mlt__strdup(r->experiment_id[0] ? r->experiment_id : "0");
        return *out_id ? OK : classify(s, MLT_ERR_NOMEM, "out of memory");
    }
    if (s->exp_name && strcmp(s->exp_name, r->experiment_name) == 0) {
        *out_id = mlt__strdup(s->exp_id);
        return *out_id ? OK : classify(s, MLT_ERR_NOMEM, "out of memory");
    }
    char msg[1024];
    char *id = NULL;
    mlt_err err = mlt__client_experiment(&s->client, r->experiment_name, &id, msg, sizeof msg);
    if (err != MLT_OK) {
        return classify(s, err, msg);
    }
    if (r->experiment_id[0] && strcmp(r->experiment_id, id) != 0) {
        char why[512];
        snprintf(why, sizeof why, "experiment_id %s does not match experiment '%s' (id %s)",
                 r->experiment_id, r->experiment_name, id);
        set_error(s, why);
        free(id);
        return DEAD;
    }
    free(s->exp_name);
    free(s->exp_id);
    s->exp_name = mlt__strdup(r->experiment_name);
    s->exp_id = mlt__strdup(id);
    *out_id = id;
    return OK;
}

/* A run's create or attach r refused for good (why): the run is dead in the map, so that what
 * is logged into it is set aside too, and r is a dead letter. */
static outcome dead_run(mlt__sender *s, slot *sl, const mlt__rec *r, const char *exp_id,
                        const char *why)
{
    mlt_err perr = mlt__journal_put_run(sl->j, r->run_no, r->key, NULL, exp_id, MLT__RUN_DEAD);
    mlt__journal_dead_letter(sl->j, r, why);
    atomic_fetch_add(&sl->runs_done, r->type == MLT__REC_CREATE);
    report(s, MLT_OP_CREATE_RUN, MLT_DELIVERY_REJECTED, r->key, NULL, exp_id, 1, why);
    log_msg(s, MLT_LOG_ERROR, why);
    /* the mapping must be durable before the record is acked */
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

static outcome deliver_create(mlt__sender *s, slot *sl)
{
    const mlt__rec *r = &sl->ctl;
    const mlt__run_entry *known = mlt__journal_run(sl->j, r->run_no);
    if (known && known->run_id) {
        return OK; /* created before a crash, and the mapping was made durable */
    }
    char *exp_id = NULL;
    outcome o = resolve_experiment(s, r, &exp_id);
    char *run_id = NULL;
    char msg[1024] = "";
    if (o == OK) {
        mlt__kv tags[MLT__REC_MAX_TAGS + 1];
        size_t n = 0;
        for (size_t i = 0; i < r->n_tags; i++) {
            tags[n++] = (mlt__kv){r->tag_keys[i], r->tag_values[i]};
        }
        if (r->parent_key[0]) {
            const mlt__run_entry *parent = run_by_key(sl->j, r->parent_key);
            if (parent && parent->run_id) {
                tags[n++] = (mlt__kv){"mlflow.parentRunId", parent->run_id};
            }
        }
        mlt_err err = MLT_ERR_NOT_FOUND;
        if (sl->create_ambiguous) {
            /* An earlier attempt may have created the run, and the server may still be at it:
             * look for it, and create again only once it stayed absent for a while. */
            err = mlt__client_find_run(&s->client, exp_id, r->key, &run_id, msg, sizeof msg);
            if (err == MLT_ERR_NOT_FOUND &&
                mlt__mono_ns() - sl->ambiguous_at_ns < AMBIGUOUS_SETTLE_NS) {
                snprintf(msg, sizeof msg, "create run: waiting to see whether run %s was made",
                         r->key);
                set_error(s, msg);
                sl->wait_until_ns = sl->ambiguous_at_ns + AMBIGUOUS_SETTLE_NS;
                free(exp_id);
                return WAIT;
            }
        }
        if (err == MLT_ERR_NOT_FOUND) {
            atomic_fetch_add(&s->sent, 1);
            err = mlt__client_create_run(&s->client, exp_id, r->key,
                                         r->run_name[0] ? r->run_name : NULL, r->time_ms, tags,
                                         n, sl->adopted, -1, &run_id, msg, sizeof msg);
            if (err != MLT_OK && !sl->create_ambiguous && s->client.last_ambiguous) {
                /* it may have reached the server: from now on, search before creating */
                sl->create_ambiguous = true;
                sl->ambiguous_at_ns = mlt__mono_ns();
            }
        }
        if (err != MLT_OK) {
            o = classify(s, err, msg);
        }
    }
    if (o == RETRY || o == FATAL) {
        free(exp_id);
        free(run_id);
        return o;
    }
    if (o == DEAD) {
        o = dead_run(s, sl, r, exp_id, msg[0] ? msg : s->last_error);
        free(exp_id);
        free(run_id);
        return o;
    }
    mlt_err perr = mlt__journal_put_run(sl->j, r->run_no, r->key, run_id, exp_id, MLT__RUN_OPEN);
    if (perr == MLT_OK) {
        s->prog.runs_created++;
        atomic_fetch_add(&sl->runs_done, 1);
        report(s, MLT_OP_CREATE_RUN, MLT_DELIVERY_ACKNOWLEDGED, r->key, run_id, exp_id, 1, NULL);
        if (s->on_run_id) {
            s->on_run_id(r->key, run_id, exp_id, s->on_run_id_ud);
        }
    }
    free(run_id);
    free(exp_id);
    /* the mapping must be durable before the create is acked */
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

/*
 * An attached run the server does not have (yet): its creator's journal may not be delivered,
 * here or in another queue, so the journal waits for it (WAIT) and the others go on. Once the
 * ATTACH record is attach_timeout old and no journal of this queue creates the run, it is
 * refused for good (DEAD, with last_error saying why): its records become dead letters, which
 * `mltrack requeue` can bring back. A record without its time (mltrack 0.1) waits for ever.
 */
static outcome attach_missing(mlt__sender *s, slot *sl, const mlt__rec *r, const char *exp_id)
{
    char msg[1024];
    int64_t waited_ms = r->time_ms > 0 ? mlt__now_ms() - r->time_ms : -1;
    if (waited_ms >= 0 && waited_ms >= s->opts->attach_timeout_s * 1000) {
        char who[PATH_MAX] = "";
        bool owned = false;
        if (s->queue_dir &&
            mlt__queue_find_creator(s->queue_dir, r->key, who, sizeof who, &owned) ==
                MLT_ERR_NOT_FOUND) {
            snprintf(msg, sizeof msg,
                     "no run with client key %s is on the server (experiment %s), %" PRId64
                     " s after its records were written (attach_timeout %lld s), and no journal "
                     "of the queue creates it",
                     r->key, exp_id, waited_ms / 1000, s->opts->attach_timeout_s);
            set_error(s, msg);
            return DEAD;
        }
    }
    snprintf(msg, sizeof msg,
             "run %s is not on the server yet (experiment %s): its records wait for the process "
             "that started it to deliver it",
             r->key, exp_id);
    set_error(s, msg);
    snprintf(sl->wait_key, sizeof sl->wait_key, "%s", r->key);
    return WAIT;
}

/* A run another process started (MLFLOW_RUN_ID / MLTRACK_RUN_KEY): its id is given, or it is
 * looked up by its client key, waiting (WAIT) while it is not on the server yet: its owner's
 * journal may not be delivered. Never created, never ended from here. */
static outcome deliver_attach(mlt__sender *s, slot *sl)
{
    const mlt__rec *r = &sl->ctl;
    const mlt__run_entry *known = mlt__journal_run(sl->j, r->run_no);
    if (known && known->run_id) {
        return OK;
    }
    char *exp_id = NULL;
    char *run_id = NULL;
    outcome o = OK;
    if (r->run_id[0]) {
        run_id = mlt__strdup(r->run_id);
        if (r->experiment_id[0] && !r->experiment_name[0]) {
            exp_id = mlt__strdup(r->experiment_id);
        }
        if (!run_id) {
            o = classify(s, MLT_ERR_NOMEM, "out of memory");
        }
    } else {
        o = resolve_experiment(s, r, &exp_id);
        char msg[1024] = "";
        if (o == OK) {
            atomic_fetch_add(&s->sent, 1); /* the record's question, asked again on a retry */
        }
        mlt_err err = o == OK ? mlt__client_find_run(&s->client, exp_id, r->key, &run_id, msg,
                                                     sizeof msg)
                              : MLT_OK;
        if (err == MLT_ERR_NOT_FOUND) {
            o = attach_missing(s, sl, r, exp_id);
        } else if (err != MLT_OK) {
            o = classify(s, err, msg);
        }
    }
    if (o == DEAD) {
        /* refused for good (credentials, experiment): what is logged into it is set aside */
        char why[sizeof s->last_error + 200];
        snprintf(why, sizeof why, "attach to run %s: %s", r->run_id[0] ? r->run_id : r->key,
                 s->last_error);
        free(run_id);
        o = dead_run(s, sl, r, exp_id, why);
        free(exp_id);
        return o;
    }
    if (o != OK) {
        free(exp_id);
        free(run_id);
        return o;
    }
    mlt_err perr =
        mlt__journal_put_run(sl->j, r->run_no, r->key, run_id, exp_id, MLT__RUN_ATTACHED);
    if (perr == MLT_OK) {
        /* delivered: counted like any record (queued = acknowledged + rejected once all is
         * delivered); an id given needs no request, but the record went through */
        if (r->run_id[0]) {
            atomic_fetch_add(&s->sent, 1);
        }
        atomic_fetch_add(&s->acknowledged, 1);
        s->prog.records_done++;
        if (s->on_run_id) {
            s->on_run_id(r->key, run_id, exp_id, s->on_run_id_ud);
        }
    }
    free(run_id);
    free(exp_id);
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

static outcome deliver_end(mlt__sender *s, slot *sl)
{
    const mlt__rec *r = &sl->ctl;
    const mlt__run_entry *re = mlt__journal_run(sl->j, r->run_no);
    if (!re || !re->run_id) {
        const char *why = re ? "the run could not be created" : "the run is unknown";
        mlt__journal_dead_letter(sl->j, r, why);
        report(s, MLT_OP_END_RUN, MLT_DELIVERY_REJECTED, re ? re->key : "", NULL, NULL, 1, why);
        return OK;
    }
    char msg[1024];
    atomic_fetch_add(&s->sent, 1);
    mlt_err err = mlt__client_end_run(&s->client, re->run_id, (mlt_run_status)r->status,
                                      r->time_ms, -1, msg, sizeof msg);
    if (err != MLT_OK && classify(s, err, msg) != DEAD) {
        return classify(s, err, msg);
    }
    char key[40], run_id[128], exp_id[128];
    snprintf(key, sizeof key, "%s", re->key);
    snprintf(run_id, sizeof run_id, "%s", re->run_id);
    snprintf(exp_id, sizeof exp_id, "%s", re->experiment_id ? re->experiment_id : "");
    if (err != MLT_OK) {
        mlt__journal_dead_letter(sl->j, r, msg);
        report(s, MLT_OP_END_RUN, MLT_DELIVERY_REJECTED, key, run_id, exp_id, 1, msg);
    }
    mlt_err perr = mlt__journal_put_run(sl->j, r->run_no, key, NULL, NULL, MLT__RUN_ENDED);
    if (err == MLT_OK) {
        report(s, MLT_OP_END_RUN, MLT_DELIVERY_ACKNOWLEDGED, key, run_id, exp_id, 1, NULL);
    }
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

/* A journal taken over from a process that died ends with runs that never ended: once all its
 * records are delivered, they end KILLED on the server (the process did die). */
static outcome end_orphans(mlt__sender *s, slot *sl, bool *did)
{
    size_t n;
    const mlt__run_entry *runs = mlt__journal_runs(sl->j, &n);
    for (size_t i = 0; i < n; i++) {
        if (runs[i].state != MLT__RUN_OPEN || !runs[i].run_id) {
            continue;
        }
        char key[40], run_id[128], msg[1024];
        uint32_t run_no = runs[i].run_no;
        snprintf(key, sizeof key, "%s", runs[i].key);
        snprintf(run_id, sizeof run_id, "%s", runs[i].run_id);
        atomic_fetch_add(&s->sent, 1);
        mlt_err err = mlt__client_end_run(&s->client, run_id, MLT_RUN_KILLED, mlt__now_ms(), -1,
                                          msg, sizeof msg);
        if (err != MLT_OK && classify(s, err, msg) != DEAD) {
            return classify(s, err, msg);
        }
        if (mlt__journal_put_run(sl->j, run_no, key, NULL, NULL, MLT__RUN_ENDED) != MLT_OK) {
            return classify(s, MLT_ERR_IO, "cannot write the run map");
        }
        *did = true;
        return OK; /* the map changed under runs: one at a time */
    }
    return OK;
}

/* After a request: what it found, for flushes (woken when the server is found away). */
static void note_reach(mlt__sender *s)
{
    if (s->client.requests == s->requests_seen) {
        return;
    }
    s->requests_seen = s->client.requests;
    pthread_mutex_lock(&s->mu);
    s->down_at_ns = s->client.last_unreachable ? mlt__mono_ns() : 0;
    if (s->down_at_ns) {
        memcpy(s->down_why, s->client.unreachable_why, sizeof s->down_why);
        pthread_cond_broadcast(&s->done_cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/* A slot's next unit waits for a run: it is tried again later, each wait longer. */
static void begin_wait(mlt__sender *s, slot *sl)
{
    int64_t now = mlt__mono_ns();
    if (sl->wait_until_ns <= now) {
        int shift = sl->waits < 5 ? sl->waits : 5;
        int64_t ms = (int64_t)WAIT_FIRST_MS << shift;
        sl->wait_until_ns = now + (ms < WAIT_MAX_MS ? ms : WAIT_MAX_MS) * 1000000;
    }
    if (sl->waits == 0) {
        mlt__log(&s->opts->logger, MLT_LOG_INFO, "journal %s: %s", mlt__journal_dir(sl->j),
                 s->last_error);
    }
    pthread_mutex_lock(&s->mu);
    sl->waits++;
    memcpy(sl->waiting_for, sl->wait_key, sizeof sl->waiting_for);
    pthread_mutex_unlock(&s->mu);
    sl->wait_key[0] = '\0';
    sl->waited_at_ns = now;
    sl->runs_at_wait = s->prog.runs_created;
}

static void end_wait(mlt__sender *s, slot *sl)
{
    sl->wait_until_ns = 0;
    if (sl->waits) {
        pthread_mutex_lock(&s->mu);
        sl->waits = 0;
        sl->waiting_for[0] = '\0';
        pthread_mutex_unlock(&s->mu);
    }
}

/* Whether a waiting slot is due: its time came, a run was created since it began waiting (maybe
 * its own), or this process flushes and it is its own journal (tried every WAIT_FLUSH_MS). */
static bool wait_over(mlt__sender *s, const slot *sl, int64_t now, bool flushing)
{
    if (sl->wait_until_ns == 0 || now >= sl->wait_until_ns ||
        s->prog.runs_created != sl->runs_at_wait) {
        return true;
    }
    return flushing && !sl->adopted && now - sl->waited_at_ns >= WAIT_FLUSH_MS * 1000000LL;
}

/* Delivers the next unit of a slot: OK (something or nothing done; *did says), RETRY, FATAL,
 * WAIT (nothing done: the slot waits). */
static outcome step(mlt__sender *s, slot *sl, bool *did)
{
    *did = false;
    if (!sl->have_unit) {
        mlt_err err = read_unit(s, sl);
        if (err != MLT_OK) {
            set_error(s, mlt_last_error());
            return err == MLT_ERR_NOMEM ? RETRY : FATAL;
        }
        if (!sl->have_unit) {
            return sl->adopted ? end_orphans(s, sl, did) : OK;
        }
    }
    outcome o = deliver_window(s, sl);
    if (o == OK && sl->has_ctl) {
        o = sl->ctl.type == MLT__REC_CREATE   ? deliver_create(s, sl)
            : sl->ctl.type == MLT__REC_ATTACH ? deliver_attach(s, sl)
                                              : deliver_end(s, sl);
    }
    if (o != OK) {
        return o;
    }
    mlt_err err = mlt__journal_ack(sl->j, &sl->last);
    if (err != MLT_OK) {
        set_error(s, mlt_last_error());
        return RETRY;
    }
    free_window(sl);
    *did = true;
    return OK;
}

typedef void (*progress_fn)(const mlt__sync_progress *p, void *ud);

/* One unit of one slot, with what follows from it: a wait begun or ended, the server's state. */
static outcome turn(mlt__sender *s, slot *sl, bool *did)
{
    outcome o = step(s, sl, did);
    note_reach(s);
    if (o == WAIT) {
        begin_wait(s, sl);
    } else if (o == OK) {
        end_wait(s, sl);
    }
    return o;
}

/*
 * One pass over the journals, one unit each, this process's own first: *did says whether
 * anything was delivered; *next_ns (monotonic, 0 for none) is when the earliest waiting journal
 * is due. A failure of the server (RETRY) ends the pass: the others would meet it too; FATAL
 * (TLS refused, or this journal unreadable) is returned once every journal had its turn.
 * progress (may be NULL) is told after each unit.
 */
static bool slot_delivered(const slot *sl);

/* An adopted journal all delivered (its orphans ended too) is closed, and removed from disk
 * unless dead letters are left in it, so that the queue shows it gone and it costs nothing
 * more. Sender thread; flushers and the counters read slots under mu. */
static void retire(mlt__sender *s, slot *sl)
{
    mlt__journal *j = sl->j;
    sl->retired_queued = mlt__journal_last_seq(j) - sl->start_acked;
    mlt__log(&s->opts->logger, MLT_LOG_INFO, "journal %s (of a process that ended) is delivered",
             mlt__journal_dir(j));
    pthread_mutex_lock(&s->mu);
    sl->j = NULL;
    pthread_mutex_unlock(&s->mu);
    mlt__journal_close(j, true);
}

static outcome pass(mlt__sender *s, bool *did, int64_t *next_ns, bool retiring,
                    progress_fn progress, void *ud)
{
    outcome worst = OK;
    *did = false;
    *next_ns = 0;
    pthread_mutex_lock(&s->mu);
    bool flushing = s->flushing > 0;
    pthread_mutex_unlock(&s->mu);
    for (int adopted = 0; adopted < 2; adopted++) {
        for (size_t i = 0; i < s->n_slots && !atomic_load(&s->abort); i++) {
            slot *sl = &s->slots[i];
            if (sl->adopted != (adopted == 1) || !sl->j) {
                continue;
            }
            int64_t now = mlt__mono_ns();
            if (!wait_over(s, sl, now, flushing)) {
                if (*next_ns == 0 || sl->wait_until_ns < *next_ns) {
                    *next_ns = sl->wait_until_ns;
                }
                continue;
            }
            bool d = false;
            outcome o = turn(s, sl, &d);
            if (retiring && sl->adopted && o == OK && !d && !sl->have_unit &&
                slot_delivered(sl)) {
                retire(s, sl);
            }
            *did = *did || d;
            if (d && progress) {
                progress(&s->prog, ud);
            }
            if (o == RETRY) {
                return o;
            }
            if (o == FATAL) {
                worst = o; /* maybe this journal's alone (unreadable): the others go on */
            }
            if (o == WAIT && (*next_ns == 0 || sl->wait_until_ns < *next_ns)) {
                *next_ns = sl->wait_until_ns;
            }
        }
    }
    return worst;
}

static bool slot_delivered(const slot *sl)
{
    return !sl->j || mlt__journal_acked_seq(sl->j) >= mlt__journal_last_seq(sl->j);
}

static bool all_delivered(mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (!slot_delivered(&s->slots[i])) {
            return false;
        }
    }
    return true;
}

static int64_t backoff_ms(mlt__sender *s)
{
    /* the outage probe: the failed unit is tried again, less often while it keeps failing */
    double f = s->opts->backoff_factor_s > 0 ? s->opts->backoff_factor_s : 0.1;
    double w = f * (double)(1u << (s->failures < 6 ? s->failures : 6));
    if (w > 30) {
        w = 30;
    }
    w += s->opts->backoff_jitter_s * mlt__rand01();
    double ra = s->client.last_retry_after_s;
    if (ra > w) {
        w = ra < 300 ? ra : 300; /* the server asked for this much */
    }
    return (int64_t)(w * 1000);
}

/* ---- the thread ---- */

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* After new records woke an idle sender: lets more gather for linger_ms, so that a batch
 * fills, unless a flush or a stop wants it now. */
static void linger(mlt__sender *s)
{
    if (s->opts->linger_ms <= 0) {
        return;
    }
    struct timespec ts;
    deadline_in(&ts, s->opts->linger_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->flushing) {
        if (pthread_cond_timedwait(&s->wake_cv, &s->mu, &ts) != 0) {
            break;
        }
    }
    s->wake = false;
    pthread_mutex_unlock(&s->mu);
}

/* Waits ms, or less when stopped, when a flush asks for a probe of the server, or (with
 * wake_ok) when new records arrive: returns whether they did. A backoff after a failure ignores
 * new records: they must not turn the outage probe into a hammering. */
static bool timed_wait(mlt__sender *s, int64_t ms, bool wake_ok)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->probe && !(wake_ok && s->wake)) {
        if (pthread_cond_timedwait(&s->wake_cv, &s->mu, &ts) != 0) {
            break;
        }
    }
    bool woken = wake_ok && s->wake && !s->flushing;
    if (wake_ok) {
        s->wake = false;
    }
    s->probe = false;
    pthread_mutex_unlock(&s->mu);
    return woken;
}

static void sync_journals(mlt__sender *s, bool own_only)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].j && (!own_only || !s->slots[i].adopted)) {
            mlt__journal_sync(s->slots[i].j);
        }
    }
}

static void *run_thread(void *arg)
{
    mlt__sender *s = arg;
    int64_t interval = s->opts->fsync_mode == MLT__FSYNC_INTERVAL ? s->opts->fsync_interval_ms
                                                                  : 1000;
    int64_t next_sync = mlt__mono_ns() / 1000000 + interval;
    bool outage = false;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            break;
        }
        bool did = false;
        int64_t next_wait_ns = 0;
        outcome o = pass(s, &did, &next_wait_ns, true, NULL, NULL);
        int64_t now = mlt__mono_ns() / 1000000;
        if (now >= next_sync) {
            sync_journals(s, false); /* group commit of fsync=interval */
            next_sync = now + interval;
        }
        if (did) {
            pthread_mutex_lock(&s->mu);
            pthread_cond_broadcast(&s->done_cv);
            pthread_mutex_unlock(&s->mu);
        }
        if (o == RETRY) {
            if (!outage) {
                /* info: a flush says it (MLT_ERR_QUEUED, with the cause); the program goes on */
                mlt__log(&s->opts->logger, MLT_LOG_INFO,
                         "the tracking server cannot be reached (%s): logging goes on to the "
                         "journal and is delivered when it is back",
                         s->last_error);
            }
            outage = true;
            s->failures++;
            atomic_fetch_add(&s->retried, 1);
            timed_wait(s, backoff_ms(s), false);
            continue;
        }
        if (outage) {
            mlt__log(&s->opts->logger, MLT_LOG_INFO, "the tracking server is back");
        }
        outage = false;
        s->failures = 0;
        if (o == FATAL) {
            /* no server to talk to (TLS refused): a flush says so, with the records kept */
            mlt__log(&s->opts->logger, s->client.last_unreachable ? MLT_LOG_INFO : MLT_LOG_ERROR,
                     "delivery stopped: %s", s->last_error);
            atomic_fetch_add(&s->retried, 1); /* it is tried again in 5 s */
            timed_wait(s, 5000, false);
            continue;
        }
        if (!did) {
            int64_t left = next_sync - mlt__mono_ns() / 1000000;
            if (next_wait_ns) {
                int64_t w = (next_wait_ns - mlt__mono_ns()) / 1000000;
                left = w < left ? w : left;
            }
            pthread_mutex_lock(&s->mu);
            bool flushing = s->flushing > 0;
            pthread_mutex_unlock(&s->mu);
            if (flushing && next_wait_ns && left > WAIT_FLUSH_MS) {
                left = WAIT_FLUSH_MS; /* the flusher's own journal may be the one waiting */
            }
            if (timed_wait(s, left > 0 ? left : 1, true)) {
                linger(s);
            }
        }
    }
    return NULL;
}

mlt_err mlt__sender_start(mlt__sender *s)
{
    if (pthread_create(&s->thread, NULL, run_thread, s) != 0) {
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the sender thread");
    }
    s->started = true;
    return MLT_OK;
}

void mlt__sender_notify(mlt__sender *s)
{
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->mu);
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* The queue directory of the journals, for messages. */
static void queue_of(const mlt__sender *s, char *out, size_t len)
{
    const char *dir = NULL;
    for (size_t i = 0; i < s->n_slots && !dir; i++) {
        dir = s->slots[i].adopted ? NULL : mlt__journal_dir(s->slots[i].j);
    }
    const char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && slash > dir) {
        snprintf(out, len, "%.*s", (int)(slash - dir), dir);
    } else {
        snprintf(out, len, "%s", s->queue_dir ? s->queue_dir : "the queue directory");
    }
}

/* Why a flush leaves records in the queue. */
typedef enum { KEPT_AWAY, KEPT_WAITING, KEPT_SLOW } kept_why;

/*
 * What a flush returns when it leaves records in the queue: MLT_ERR_QUEUED (the server away,
 * or the journal waiting for run waiting_for) or MLT_ERR_TIMEOUT (a slow server, at the
 * deadline), with what this process logged that is kept, where, and why. Call with s->mu held
 * (last_error, down_why).
 */
static mlt_err kept(mlt__sender *s, kept_why cause, const char *waiting_for)
{
    uint64_t records = 0, runs = 0, points = 0;
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->adopted) {
            continue;
        }
        uint64_t r = 0, p = 0;
        mlt__journal_appended(sl->j, &r, &p);
        uint64_t rd = atomic_load(&sl->runs_done), pd = atomic_load(&sl->points_done);
        runs += r > rd ? r - rd : 0;
        points += p > pd ? p - pd : 0;
        uint64_t last = mlt__journal_last_seq(sl->j), acked = mlt__journal_acked_seq(sl->j);
        records += last > acked ? last - acked : 0;
    }
    char qdir[PATH_MAX];
    queue_of(s, qdir, sizeof qdir);
    char why[1400], uri[256];
    mlt__redact_url(s->client.base, uri, sizeof uri);
    const char *when = "once the server is back";
    if (cause == KEPT_WAITING) {
        snprintf(why, sizeof why, "they wait for run %s, which the server does not have yet (%s)",
                 waiting_for, s->last_error);
        when = "once the run is there";
    } else if (cause == KEPT_AWAY) {
        snprintf(why, sizeof why, "the tracking server %s cannot be reached (%s)", uri,
                 s->down_why);
    } else {
        snprintf(why, sizeof why, "the tracking server %s did not take them in time%s%s", uri,
                 s->last_error[0] ? ": " : "", s->last_error);
        when = "later";
    }
    return mlt__fail(cause == KEPT_SLOW ? MLT_ERR_TIMEOUT : MLT_ERR_QUEUED,
                     "kept in the queue, not delivered yet: %" PRIu64 " %s and %" PRIu64
                     " %s (%" PRIu64 " %s) in %s: %s. `mltrack sync --queue %s` delivers them %s",
                     runs, plural(runs, "run", "runs"), points, plural(points, "point", "points"),
                     records, plural(records, "record", "records"), qdir, why, qdir, when);
}

/* The run key the tracker's own journal waits for, or NULL. Call with s->mu held. */
static const char *own_waiting_for(const mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        const slot *sl = &s->slots[i];
        if (!sl->adopted && sl->waits > 0 && sl->waiting_for[0]) {
            return sl->waiting_for;
        }
    }
    return NULL;
}

mlt_err mlt__sender_flush(mlt__sender *s, int timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    s->flushing++;
    pthread_mutex_unlock(&s->mu);
    sync_journals(s, true);
    int64_t start = mlt__mono_ns();
    int64_t deadline = timeout_ms < 0 ? -1 : start + (int64_t)timeout_ms * 1000000;
    uint64_t *targets = calloc(s->n_slots ? s->n_slots : 1, sizeof *targets);
    if (!targets) {
        pthread_mutex_lock(&s->mu);
        s->flushing--;
        pthread_mutex_unlock(&s->mu);
        return MLT_ERR_NOMEM;
    }
    /* this process's own records only: adopted journals are delivered in the background */
    for (size_t i = 0; i < s->n_slots; i++) {
        targets[i] = s->slots[i].adopted ? 0 : mlt__journal_last_seq(s->slots[i].j);
    }
    mlt__sender_notify(s);
    mlt_err err = MLT_OK;
    bool probed = false;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        bool done = true;
        for (size_t i = 0; i < s->n_slots && done; i++) {
            done = targets[i] == 0 || mlt__journal_acked_seq(s->slots[i].j) >= targets[i];
        }
        if (done) {
            break;
        }
        /* The server was found away just now: what is left is safe on disk, and waiting
         * would not deliver it. Found away a while ago: it is tried once more now. */
        if (s->down_at_ns && s->down_at_ns >= start - DOWN_FRESH_NS) {
            err = kept(s, KEPT_AWAY, NULL);
            break;
        }
        if (s->down_at_ns && !probed) {
            s->probe = true;
            probed = true;
            pthread_cond_signal(&s->wake_cv);
        }
        if (deadline >= 0 && mlt__mono_ns() >= deadline) {
            const char *waiting = own_waiting_for(s);
            err = kept(s, waiting ? KEPT_WAITING : KEPT_SLOW, waiting);
            break;
        }
        struct timespec ts;
        deadline_in(&ts, 50);
        pthread_cond_timedwait(&s->done_cv, &s->mu, &ts);
    }
    s->flushing--;
    pthread_mutex_unlock(&s->mu);
    free(targets);
    return err;
}

/* Whether a journal waits to see whether a create it sent made the run (not for a run). */
static bool settling(const mlt__sender *s)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].waits > 0 && !s->slots[i].waiting_for[0]) {
            return true;
        }
    }
    return false;
}

/* What sync leaves waiting for runs: one line per journal into why, and the counts. */
static void describe_waits(mlt__sender *s, mlt__sync_progress *p, mlt__buf *why)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->waits == 0 || slot_delivered(sl) || !sl->j) {
            continue;
        }
        uint64_t left = mlt__journal_last_seq(sl->j) - mlt__journal_acked_seq(sl->j);
        char who[PATH_MAX] = "";
        bool owned = false;
        mlt_err found = s->queue_dir ? mlt__queue_find_creator(s->queue_dir, sl->waiting_for, who,
                                                               sizeof who, &owned)
                                     : MLT_ERR_NOT_FOUND;
        mlt__buf_printf(why, "%s%" PRIu64 " %s of %s wait for run %s, ", why->len ? "; " : "",
                        left, plural(left, "record", "records"), mlt__journal_dir(sl->j),
                        sl->waiting_for);
        if (found == MLT_OK) {
            p->waiting_created += left;
            mlt__buf_printf(why, "which %s creates%s", who,
                            owned ? " (a running process owns it)" : "");
        } else {
            p->waiting_nowhere += left;
            mlt__buf_printf(why,
                            "which the server does not have and no journal of the queue creates "
                            "(attach_timeout: %lld s after they were written, they become dead "
                            "letters; `mltrack drop` drops them now)",
                            s->opts->attach_timeout_s);
        }
    }
}

mlt_err mlt__sender_drain(mlt__sender *s, int64_t deadline_ns, progress_fn progress, void *ud,
                          mlt__sync_progress *summary, char *errbuf, size_t errlen)
{
    mlt_err err = MLT_OK;
    int tries = 0;
    for (;;) {
        bool did = false;
        int64_t next_ns = 0;
        outcome o = pass(s, &did, &next_ns, false, progress, ud);
        if (progress) {
            progress(&s->prog, ud);
        }
        if (o == OK && !did && all_delivered(s)) {
            break;
        }
        if (o == FATAL) {
            err = mlt__errf(errbuf, errlen, MLT_ERR_REJECTED, "%s", s->last_error);
            break;
        }
        if (o == RETRY) {
            s->failures++;
            atomic_fetch_add(&s->retried, 1);
            tries = did ? 0 : tries + 1;
            int64_t w = backoff_ms(s);
            if (deadline_ns >= 0) {
                int64_t left = (deadline_ns - mlt__mono_ns()) / 1000000;
                if (left <= 0) {
                    err = mlt__errf(errbuf, errlen, MLT_ERR_TIMEOUT, "%s", s->last_error);
                    break;
                }
                w = w < left ? w : left; /* one more try at the deadline */
            } else if (tries > s->opts->max_retries) {
                err = mlt__errf(errbuf, errlen, MLT_ERR_NETWORK, "%s", s->last_error);
                break;
            }
            mlt__log(&s->opts->logger, MLT_LOG_WARN, "%s (retrying in %.1f s)", s->last_error,
                     (double)w / 1000.0);
            mlt__sleep_ms(w);
            continue;
        }
        s->failures = 0;
        if (did) {
            continue;
        }
        /* Only waiting journals are left. One waiting to see whether an earlier create made its
         * run is due soon: waited for. A wait for a run that began before a run was created
         * here is tried at once (wait_over); the others wait for a run this sync cannot make:
         * waiting longer would not help, so sync stops and says for what. */
        if (next_ns == 0) {
            err = mlt__errf(errbuf, errlen, MLT_ERR_STATE, "delivery made no progress");
            break;
        }
        if (settling(s)) {
            int64_t w = (next_ns - mlt__mono_ns()) / 1000000;
            if (deadline_ns >= 0 && next_ns > deadline_ns) {
                err = mlt__errf(errbuf, errlen, MLT_ERR_TIMEOUT, "%s", s->last_error);
                break;
            }
            mlt__sleep_ms(w > 0 ? w : 1);
            continue;
        }
        mlt__buf why;
        mlt__buf_init(&why);
        describe_waits(s, &s->prog, &why);
        err = mlt__errf(errbuf, errlen, MLT_ERR_QUEUED, "%s",
                        why.data && !why.oom ? why.data : "records wait for runs");
        mlt__buf_free(&why);
        break;
    }
    if (summary) {
        *summary = s->prog;
    }
    return err;
}

void mlt__sender_stats(mlt__sender *s, mlt_queue_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu); /* a retired journal is gone */
    for (size_t i = 0; i < s->n_slots; i++) {
        const slot *sl = &s->slots[i];
        if (!sl->j) {
            out->queued += sl->retired_queued;
            continue;
        }
        out->queued += mlt__journal_last_seq(sl->j) - sl->start_acked;
        out->bytes_pending += mlt__journal_pending_bytes(sl->j);
    }
    pthread_mutex_unlock(&s->mu);
    out->sent = atomic_load(&s->sent);
    out->acknowledged = atomic_load(&s->acknowledged);
    out->retried = atomic_load(&s->retried);
    out->rejected = atomic_load(&s->rejected);
}

void mlt__sender_free(mlt__sender *s, int timeout_ms)
{
    if (!s) {
        return;
    }
    if (s->started) {
        (void)timeout_ms; /* always met: the abort flag ends a request in flight at once */
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->wake_cv);
        pthread_mutex_unlock(&s->mu);
        atomic_store(&s->abort, true);
        mlt__client_interrupt(&s->client);
        pthread_join(s->thread, NULL);
    }
    for (size_t i = 0; i < s->n_slots; i++) {
        free_window(&s->slots[i]);
        free(s->slots[i].win);
        mlt__buf_free(&s->slots[i].ctl_buf);
        mlt__journal_close(s->slots[i].j, true); /* NULL (retired): nothing */
    }
    free(s->slots);
    mlt__buf_free(&s->scratch);
    mlt__client_free(&s->client);
    free(s->exp_name);
    free(s->exp_id);
    free(s->queue_dir);
    mlt_options_free(s->opts);
    pthread_cond_destroy(&s->wake_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
