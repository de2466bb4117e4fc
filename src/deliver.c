/*
 * deliver.c - the sender's delivery policy: one unit of one journal (a run's creation or end,
 * an attach, or a window of log records), read from the journal's cursor, sent through the
 * MLflow client, what the server refuses for good written to the dead letters, and acked once
 * all of it is delivered. Runs are never created twice; a run another process makes is waited
 * for (WAIT) until attach_timeout. sender.c decides when, and which journal.
 */
#include "config.h"

#include "sender_int.h"

#include "queue.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void mlt__deliver_free_window(slot *sl)
{
    for (size_t i = 0; i < sl->n_win; i++) {
        free(sl->win[i].key);
        free(sl->win[i].value);
    }
    sl->n_win = 0;
    sl->has_ctl = false;
    sl->ctl_done = false;
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

static MLT__MUST_USE mlt_err read_unit(mlt__sender *s, slot *sl)
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
            if (mlt__journal_dead_letter(sl->j, &bad, "the record could not be decoded") !=
                MLT_OK) {
                return MLT_ERR_IO; /* kept unread, unacked: tried again */
            }
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
        if (r.type == MLT__REC_CREATE || r.type == MLT__REC_END || r.type == MLT__REC_ATTACH ||
            r.type == MLT__REC_ARTIFACT) {
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
        if (MLT__GROW(sl->win, sl->cap_win, sl->n_win + 1) != MLT_OK) {
            return MLT_ERR_NOMEM;
        }
        ent *e = &sl->win[sl->n_win];
        *e = (ent){r.type,
                   r.run_no,
                   mlt__strdup(r.key),
                   r.value ? mlt__strdup(r.value) : NULL,
                   r.num,
                   r.time_ms,
                   r.step,
                   r.seq,
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

/* ---- dead letters ---- */

/* Writes r as a dead letter with answer. When it cannot be written (a full disk), the record
 * stays in the queue, unacked, and this says why: RETRY (it is tried again, after a backoff,
 * until there is room); else OK. */
static outcome dead_letter(mlt__sender *s, slot *sl, const mlt__rec *r, const char *answer)
{
    if (mlt__journal_dead_letter(sl->j, r, answer) == MLT_OK) {
        return OK;
    }
    char why[1024];
    snprintf(why, sizeof why,
             "%s (a record the server refused stays in the queue until it can be "
             "kept as a dead letter)",
             mlt_last_error());
    return classify(s, MLT_ERR_IO, why);
}

/* ---- delivering log windows ---- */

/* Sets the entities ents[0..n) of one run aside as dead letters, with the server's answer (or
 * why they were not sent): one warning and one report for them all. RETRY when one cannot be
 * written (those written are done; the rest stay in the unit). */
static outcome dead_ents(mlt__sender *s, slot *sl, ent **ents, size_t n, const char *answer)
{
    if (n == 0) {
        return OK;
    }
    for (size_t i = 0; i < n; i++) {
        const ent *e = ents[i];
        if (e->done) {
            continue; /* kept already, by an earlier try of this unit */
        }
        mlt__rec r = {0};
        r.seq = e->seq;
        r.type = e->type;
        r.run_no = e->run_no;
        r.key = e->key;
        r.value = e->value;
        r.num = e->num;
        r.time_ms = e->ts;
        r.step = e->step;
        outcome o = dead_letter(s, sl, &r, answer);
        if (o != OK) {
            return o;
        }
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
    return OK;
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
    mlt_err err = mlt__client_log_batch(&s->client, run_id, &b, -1);
    mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
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
        return dead_ents(s, sl, ents, n, msg);
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
            const char *why = !re                          ? "the run is unknown to the journal"
                              : re->state == MLT__RUN_DEAD ? "the run could not be created"
                                                           : "the run was not created";
            o = dead_ents(s, sl, mine, n, why);
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
    mlt_err err = mlt__client_experiment(&s->client, r->experiment_name, &id);
    mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
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
    outcome o = dead_letter(s, sl, r, why);
    if (o != OK) {
        return o;
    }
    mlt_err perr = mlt__journal_put_run(sl->j, r->run_no, r->key, NULL, exp_id, MLT__RUN_DEAD);
    atomic_fetch_add(&sl->runs_done, r->type == MLT__REC_CREATE);
    report(s, MLT_OP_CREATE_RUN, MLT_DELIVERY_REJECTED, r->key, NULL, exp_id, 1, why);
    log_msg(s, MLT_LOG_ERROR, why);
    /* the mapping must be durable before the record is acked */
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

/*
 * A resumed run (resume=allow, MLT__CREATE_RESUME): while another journal of the queue holds the
 * run of its key open (an earlier attempt's, not delivered or not ended yet), it waits (WAIT), so
 * that the earlier attempt's records and end land first. Then the run the server has under its
 * key is RUNNING again (*run_id set); none: *run_id stays NULL and the run is created.
 */
static outcome resume_found(mlt__sender *s, slot *sl, const mlt__rec *r, const char *exp_id,
                            char **run_id)
{
    char who[PATH_MAX] = "", msg[1024];
    bool owned = false;
    if (s->queue_dir && mlt__queue_find_open(s->queue_dir, r->key, mlt__journal_dir(sl->j),
                                             r->time_ms, who, sizeof who, &owned) == MLT_OK) {
        /* (owned says little here: this sender may be the one that took it over) */
        snprintf(msg, sizeof msg,
                 "run %s is resumed once the journal of an earlier attempt (%s) is delivered and "
                 "its run ended",
                 r->key, who);
        set_error(s, msg);
        snprintf(sl->wait_key, sizeof sl->wait_key, "%s", r->key);
        return WAIT;
    }
    atomic_fetch_add(&s->sent, 1); /* the record's question, asked again on a retry */
    mlt_err err = mlt__client_find_run(&s->client, exp_id, r->key, run_id);
    if (err == MLT_ERR_NOT_FOUND) {
        return OK;
    }
    if (err == MLT_OK) {
        err = mlt__client_resume_run(&s->client, *run_id, -1);
        if (err != MLT_OK) {
            free(*run_id);
            *run_id = NULL;
        }
    }
    if (err != MLT_OK) {
        mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
        return classify(s, err, msg);
    }
    return OK;
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
    bool resume = r->flags & MLT__CREATE_RESUME;
    if (o == OK && resume && !sl->create_ambiguous) {
        o = resume_found(s, sl, r, exp_id, &run_id);
    }
    if (o == OK && !run_id) {
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
            err = mlt__client_find_run(&s->client, exp_id, r->key, &run_id);
            mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
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
            if (!resume) {
                atomic_fetch_add(&s->sent, 1);
            }
            err = mlt__client_create_run(&s->client, exp_id, r->key,
                                         r->run_name[0] ? r->run_name : NULL, r->time_ms, tags, n,
                                         sl->adopted, -1, &run_id);
            mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
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
    if (o == RETRY || o == FATAL || o == WAIT) {
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
        if (s->queue_dir && mlt__queue_find_creator(s->queue_dir, r->key, who, sizeof who,
                                                    &owned) == MLT_ERR_NOT_FOUND) {
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
        mlt_err err = o == OK ? mlt__client_find_run(&s->client, exp_id, r->key, &run_id) : MLT_OK;
        mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
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
        outcome o = dead_letter(s, sl, r, why);
        if (o == OK) {
            report(s, MLT_OP_END_RUN, MLT_DELIVERY_REJECTED, re ? re->key : "", NULL, NULL, 1, why);
        }
        return o;
    }
    char msg[1024];
    atomic_fetch_add(&s->sent, 1);
    mlt_err err =
        mlt__client_end_run(&s->client, re->run_id, (mlt_run_status)r->status, r->time_ms, -1);
    mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
    if (err != MLT_OK && classify(s, err, msg) != DEAD) {
        return classify(s, err, msg);
    }
    char key[40], run_id[128], exp_id[128];
    snprintf(key, sizeof key, "%s", re->key);
    snprintf(run_id, sizeof run_id, "%s", re->run_id);
    snprintf(exp_id, sizeof exp_id, "%s", re->experiment_id ? re->experiment_id : "");
    if (err != MLT_OK) {
        outcome o = dead_letter(s, sl, r, msg);
        if (o != OK) {
            return o;
        }
        report(s, MLT_OP_END_RUN, MLT_DELIVERY_REJECTED, key, run_id, exp_id, 1, msg);
    }
    mlt_err perr = mlt__journal_put_run(sl->j, r->run_no, key, NULL, NULL, MLT__RUN_ENDED);
    s->runs_ended++;
    if (err == MLT_OK) {
        report(s, MLT_OP_END_RUN, MLT_DELIVERY_ACKNOWLEDGED, key, run_id, exp_id, 1, NULL);
    }
    return perr == MLT_OK ? OK : classify(s, perr, "cannot write the run map");
}

/* ---- artifacts ---- */

/* The artifact proxy's path of run_id's artifacts (the last run asked is remembered). */
static outcome artifact_root(mlt__sender *s, const char *run_id, const char **root)
{
    if (s->art_run_id && strcmp(s->art_run_id, run_id) == 0) {
        *root = s->art_root;
        return OK;
    }
    char msg[1024];
    char *got = NULL;
    mlt_err err = mlt__client_artifact_root(&s->client, run_id, &got);
    mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
    if (err != MLT_OK) {
        return classify(s, err, msg);
    }
    char *id = mlt__strdup(run_id);
    if (!id) {
        free(got);
        return classify(s, MLT_ERR_NOMEM, "out of memory");
    }
    free(s->art_run_id);
    free(s->art_root);
    s->art_run_id = id;
    s->art_root = got;
    *root = got;
    return OK;
}

/* An artifact refused for good: a dead letter (its snapshot kept beside it for requeue). */
static outcome dead_artifact(mlt__sender *s, slot *sl, const mlt__rec *r, const mlt__run_entry *re,
                             const char *why)
{
    outcome o = dead_letter(s, sl, r, why);
    if (o == OK) {
        atomic_fetch_add(&sl->artifacts_done, 1);
        mlt__log(&s->opts->logger, MLT_LOG_WARN, "artifact '%s' rejected for good, kept in %s: %s",
                 r->key, mlt__journal_dir(sl->j), why);
        report(s, MLT_OP_LOG_ARTIFACT, MLT_DELIVERY_REJECTED, re ? re->key : "",
               re ? re->run_id : NULL, re ? re->experiment_id : NULL, 1, why);
    }
    return o;
}

/* An upload in flight: its bytes count in the sync's progress as they go. */
typedef struct upload_count {
    mlt__sender *s;
    uint64_t base; /* artifact bytes sent before this upload */
} upload_count;

static void upload_sent(void *ud, uint64_t bytes)
{
    upload_count *u = ud;
    mlt__sender *s = u->s;
    s->prog.artifact_bytes_sent = u->base + bytes;
    if (s->drain_progress) {
        s->drain_progress(&s->prog, s->drain_ud);
    }
}

/* Uploads the snapshot an ARTIFACT record names, through the tracking server's artifact proxy.
 * A snapshot from a journal taken over after a crash is checked against its SHA-256 first: a
 * torn one is never uploaded as if whole. */
static outcome deliver_artifact(mlt__sender *s, slot *sl)
{
    const mlt__rec *r = &sl->ctl;
    const mlt__run_entry *re = mlt__journal_run(sl->j, r->run_no);
    if (!re || !re->run_id) {
        return dead_artifact(s, sl, r, re,
                             !re                          ? "the run is unknown to the journal"
                             : re->state == MLT__RUN_DEAD ? "the run could not be created"
                                                          : "the run was not created");
    }
    const char *root = NULL;
    outcome o = artifact_root(s, re->run_id, &root);
    if (o == DEAD) {
        return dead_artifact(s, sl, r, re, s->last_error);
    }
    if (o != OK) {
        return o;
    }
    int fd = -1;
    /* a journal taken over after a crash: each snapshot's digest checked once */
    bool verify = sl->adopted && sl->verified_seq != r->seq;
    mlt_err err = mlt__journal_open_artifact(sl->j, r, verify, &fd);
    if (err == MLT_OK && verify) {
        sl->verified_seq = r->seq;
    }
    if (err == MLT_ERR_NOT_FOUND || err == MLT_ERR_CORRUPT) {
        char why[1024];
        mlt__errbuf(why, sizeof why, err);
        return dead_artifact(s, sl, r, re, why);
    }
    if (err != MLT_OK) {
        return classify(s, err, mlt_last_error());
    }
    char msg[1024];
    atomic_fetch_add(&s->sent, 1);
    upload_count count = {s, s->prog.artifact_bytes_sent};
    err = mlt__client_put_artifact(&s->client, root, r->key, fd, r->bytes, -1, upload_sent, &count);
    s->prog.artifact_bytes_sent = count.base; /* counted once it is acknowledged, below */
    mlt__errbuf(msg, sizeof msg, err);        /* kept: retried, dead-lettered or reported */
    close(fd);
    if (err != MLT_OK) {
        o = classify(s, err, msg);
        return o == DEAD ? dead_artifact(s, sl, r, re, msg) : o;
    }
    s->prog.artifacts_sent++;
    atomic_fetch_add(&sl->artifacts_done, 1);
    s->prog.artifact_bytes_sent += r->bytes;
    report(s, MLT_OP_LOG_ARTIFACT, MLT_DELIVERY_ACKNOWLEDGED, re->key, re->run_id,
           re->experiment_id, 1, NULL);
    return OK;
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
        mlt_err err = mlt__client_end_run(&s->client, run_id, MLT_RUN_KILLED, mlt__now_ms(), -1);
        mlt__errbuf(msg, sizeof msg, err); /* kept: retried, dead-lettered or reported */
        if (err != MLT_OK && classify(s, err, msg) != DEAD) {
            return classify(s, err, msg);
        }
        s->runs_ended++;
        if (mlt__journal_put_run(sl->j, run_no, key, NULL, NULL, MLT__RUN_ENDED) != MLT_OK) {
            return classify(s, MLT_ERR_IO, "cannot write the run map");
        }
        *did = true;
        return OK; /* the map changed under runs: one at a time */
    }
    return OK;
}

/* Delivers the next unit of a slot: OK (something or nothing done; *did says), RETRY, FATAL,
 * WAIT (nothing done: the slot waits). */
outcome mlt__deliver_step(mlt__sender *s, slot *sl, bool *did)
{
    *did = false;
    if (!sl->have_unit) {
        mlt_err err = read_unit(s, sl);
        if (err != MLT_OK) {
            set_error(s, mlt_last_error());
            return err == MLT_ERR_NOMEM || err == MLT_ERR_IO ? RETRY : FATAL;
        }
        if (!sl->have_unit) {
            /* a live writer's journal (a relay follows it) has no orphans */
            return sl->adopted && !mlt__journal_following(sl->j) ? end_orphans(s, sl, did) : OK;
        }
    }
    if (sl->lease && !mlt__lease_valid(sl->lease)) {
        return OK; /* the lease lapsed since the pass looked: nothing is sent without it */
    }
    outcome o = deliver_window(s, sl);
    if (o == OK && sl->has_ctl && !sl->ctl_done) {
        o = sl->ctl.type == MLT__REC_CREATE     ? deliver_create(s, sl)
            : sl->ctl.type == MLT__REC_ATTACH   ? deliver_attach(s, sl)
            : sl->ctl.type == MLT__REC_ARTIFACT ? deliver_artifact(s, sl)
                                                : deliver_end(s, sl);
        sl->ctl_done = o == OK;
    }
    if (o != OK) {
        return o;
    }
    if (sl->lease && !mlt__lease_valid(sl->lease)) {
        /* lost while the unit went (paused longer than the lease): the cursor is another's
         * now; what was sent is sent again by it, which the server takes as the same */
        return OK;
    }
    mlt_err err = mlt__journal_ack(sl->j, &sl->last);
    if (err != MLT_OK) {
        set_error(s, mlt_last_error());
        return RETRY;
    }
    if (sl->has_ctl && sl->ctl.type == MLT__REC_ARTIFACT) {
        mlt__journal_artifact_done(sl->j, &sl->ctl); /* acked: its snapshot goes */
    }
    mlt__deliver_free_window(sl);
    *did = true;
    return OK;
}
