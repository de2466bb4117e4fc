/*
 * relay.c - `mltrack sync --follow` (see relay.h): lists the queue every second, takes the
 * delivery leases it can, follows or adopts those journals, hands them to a sender of its own
 * and runs it on this thread, and gives each journal back (or removes it, delivered) as its
 * writer and the other relays come and go.
 */
#include "config.h"

#include "relay.h"

#include "journal.h"
#include "lease.h"
#include "queue.h"
#include "sender.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_MS 1000        /* the queue listed, others' leases looked at, owners asked */
#define RETRY_OPEN_MS 10000 /* a journal that could not be opened is tried again after this */

/* One journal of the queue, as the relay knows it. */
typedef struct rj {
    char *dir;
    mlt__lease *lease;
    bool in;         /* handed to the sender, its lease renewed by the keeper */
    bool follow;     /* ...as a follower (its writer alive), else adopted */
    bool unowned;    /* found without a live writer at the last look (adopted at the next) */
    bool seen;       /* in the latest listing */
    int64_t look_ns; /* looked at again after this */
} rj;

typedef struct relay {
    const mlt_options *opts;
    const char *queue;
    mlt__sender *s;
    mlt__lease_keeper *keeper;
    rj *js;
    size_t n, cap;
    mlt__relay_stats st;
} relay;

/* Takes journal x out of the sender (its journal closed, nothing removed), lease kept. */
static void take_out(relay *r, rj *x)
{
    mlt__journal *j = mlt__sender_remove(r->s, x->dir);
    mlt__journal_close(j, false);
    if (x->in) {
        mlt__lease_keeper_remove(r->keeper, x->lease);
        if (x->follow) {
            r->st.following--;
        } else {
            r->st.adopted--;
        }
    }
    x->in = false;
}

/* Opens journal x under its lease, as a follower (owned: its writer alive) or adopted, and hands
 * it to the sender. False when it cannot (the lease is given back). */
static bool bring_in(relay *r, rj *x, int owned)
{
    mlt__journal *j = NULL;
    mlt__recovery rec;
    mlt_err err;
    bool follow = owned != 0;
    if (follow) {
        err = mlt__journal_open_follow(&j, x->dir, &rec);
    } else {
        err = mlt__journal_open(&j, x->dir, false, MLT__FSYNC_ALWAYS, &rec);
        if (err == MLT_ERR_LOCKED) { /* its writer came back: followed */
            follow = true;
            err = mlt__journal_open_follow(&j, x->dir, &rec);
        } else if (err == MLT_OK && rec.cut_bytes) {
            mlt__log(&r->opts->logger, MLT_LOG_WARN,
                     "journal %s: %" PRIu64 " bytes of a torn or damaged tail cut (%s)", x->dir,
                     rec.cut_bytes, rec.why);
        }
    }
    if (err == MLT_OK && (err = mlt__lease_keeper_add(r->keeper, x->lease)) == MLT_OK) {
        err = mlt__sender_add_leased(r->s, j, x->lease);
        if (err != MLT_OK) {
            mlt__lease_keeper_remove(r->keeper, x->lease);
        }
    }
    if (err != MLT_OK) {
        mlt__log(&r->opts->logger, MLT_LOG_WARN, "journal %s cannot be delivered from here: %s",
                 x->dir, mlt_last_error());
        mlt__journal_close(j, false);
        mlt__lease_release(x->lease);
        x->look_ns = mlt__mono_ns() + (int64_t)RETRY_OPEN_MS * 1000000;
        return false;
    }
    x->in = true;
    x->follow = follow;
    x->unowned = false;
    if (follow) {
        r->st.following++;
    } else {
        r->st.adopted++;
    }
    mlt__log(&r->opts->logger, MLT_LOG_INFO, "journal %s: delivering it%s", x->dir,
             follow ? " while its writer runs" : " (its writer is gone)");
    return true;
}

static void forget(relay *r, size_t i)
{
    rj *x = &r->js[i];
    if (x->in) {
        take_out(r, x);
    }
    mlt__lease_free(x->lease);
    free(x->dir);
    r->js[i] = r->js[--r->n];
}

/* Lists the queue: journals new to the relay are added, those gone forgotten. */
static void scan(relay *r)
{
    char **dirs = NULL;
    size_t n = 0;
    if (mlt__queue_list(r->queue, &dirs, &n) != MLT_OK) {
        mlt__log(&r->opts->logger, MLT_LOG_WARN, "cannot list the queue %s: %s", r->queue,
                 mlt_last_error());
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        r->js[i].seen = false;
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = 0;
        while (i < r->n && strcmp(r->js[i].dir, dirs[k]) != 0) {
            i++;
        }
        if (i == r->n) {
            mlt__lease *l = mlt__lease_new(dirs[k], MLT__LEASE_RELAY, r->opts->lease_ms);
            if (!l || MLT__GROW(r->js, r->cap, r->n + 1) != MLT_OK) {
                mlt__lease_free(l);
                free(dirs[k]);
                continue;
            }
            r->js[r->n++] = (rj){.dir = dirs[k], .lease = l};
            dirs[k] = NULL;
        }
        r->js[i].seen = true;
        free(dirs[k]);
    }
    free(dirs);
    for (size_t i = 0; i < r->n;) {
        /* gone from the listing, and not ours: removed (delivered) by its writer or a relay */
        if (!r->js[i].seen && !r->js[i].in) {
            forget(r, i);
        } else {
            i++;
        }
    }
    r->st.journals = r->n;
}

/* One look at journal x (not in the sender): takes its lease when it can. */
static void look(relay *r, size_t i, int64_t now)
{
    rj *x = &r->js[i];
    int owned = mlt__journal_owned(x->dir);
    if (owned < 0) {
        x->look_ns = now + (int64_t)SCAN_MS * 1000000;
        return;
    }
    mlt__lease_set_patient(x->lease, owned == 1);
    mlt__lease_info who;
    switch (mlt__lease_take(x->lease, &who, NULL)) {
    case MLT__LEASE_TAKEN:
        /* followed first, even when no process holds it: a journal just made has no lock for
         * a moment; one still without a live writer at the next two looks is adopted (tend) */
        r->st.taken++;
        if (bring_in(r, x, 1)) {
            x->look_ns = now; /* its owner is asked at the next listing */
        }
        return;
    case MLT__LEASE_OTHER:
        x->look_ns = now + (int64_t)SCAN_MS * 1000000;
        return;
    case MLT__LEASE_GONE:
        forget(r, i);
        return;
    case MLT__LEASE_ERROR:
    default:
        mlt__log(&r->opts->logger, MLT_LOG_WARN, "journal %s: %s", x->dir, mlt_last_error());
        x->look_ns = now + (int64_t)RETRY_OPEN_MS * 1000000;
        return;
    }
}

/* A journal in the sender: lost to another party, delivered (adopted: closed and removed by the
 * sender), or its writer gone (followed: adopted now). */
static void tend(relay *r, size_t i, int64_t now)
{
    rj *x = &r->js[i];
    if (!mlt__sender_holds(r->s, x->dir)) {
        /* adopted, delivered, removed with its lease files */
        r->st.removed++;
        mlt__lease_keeper_remove(r->keeper, x->lease);
        r->st.adopted -= x->follow ? 0 : 1;
        r->st.following -= x->follow ? 1 : 0;
        x->in = false;
        forget(r, i);
        return;
    }
    if (!mlt__lease_lost(x->lease) && !mlt__lease_valid(x->lease)) {
        /* not renewed in time (this process paused, a slow file system): renewed here too, so
         * that a newer generation is found whether or not the keeper's renewal came first */
        if (mlt__lease_renew(x->lease) != MLT_OK) {
            /* lost (below), or it could not be written: the next look tries again */
        }
    }
    if (mlt__lease_lost(x->lease)) {
        r->st.lost++;
        mlt__log(&r->opts->logger, MLT_LOG_INFO, "journal %s: another party delivers it now",
                 x->dir);
        take_out(r, x);
        x->look_ns = now + (int64_t)SCAN_MS * 1000000;
        return;
    }
    if (x->follow && now >= x->look_ns) {
        x->look_ns = now + (int64_t)SCAN_MS * 1000000;
        if (mlt__journal_owned(x->dir) == 0) {
            if (!x->unowned) {
                x->unowned = true; /* looked at again before it is adopted */
                return;
            }
            if (!mlt__lease_valid(x->lease)) {
                return; /* adopted only under a valid lease (after a takeover's settle time) */
            }
            /* its writer is gone: adopted (its lock taken, its tail checked, its ring's last
             * points moved in), still under the lease */
            take_out(r, x);
            (void)bring_in(r, x, 0);
        } else {
            x->unowned = false;
        }
    }
}

mlt_err mlt__relay_run(const mlt_options *opts, const char *queue_dir, const atomic_bool *stop,
                       int poll_ms, mlt__relay_report report, void *ud)
{
    relay r;
    memset(&r, 0, sizeof r);
    r.opts = opts;
    r.queue = queue_dir;
    if (poll_ms <= 0) {
        poll_ms = 200;
    }
    mlt_err err = mlt__sender_new(&r.s, opts);
    if (err != MLT_OK) {
        return err;
    }
    mlt__sender_set_relay(r.s);
    if (!(r.keeper = mlt__lease_keeper_new((int)(opts->lease_ms / 5)))) {
        mlt__sender_free(r.s, 0);
        return mlt__fail(MLT_ERR_NOMEM, "cannot start the lease keeper thread");
    }
    int64_t next_scan = 0, next_pass = 0;
    while (!atomic_load(stop)) {
        int64_t now = mlt__mono_ns();
        if (now >= next_scan) {
            if (mlt__queue_mark_relay(queue_dir) != 0 && r.st.journals == 0) {
                /* a queue not made yet: the listing says so */
            }
            scan(&r);
            next_scan = now + (int64_t)SCAN_MS * 1000000;
            for (size_t i = 0; i < r.n;) {
                size_t before = r.n;
                if (r.js[i].in) {
                    tend(&r, i, now);
                } else if (now >= r.js[i].look_ns) {
                    look(&r, i, now);
                }
                i += r.n == before ? 1 : 0; /* forgotten: another took its place */
            }
            r.st.others = 0;
            for (size_t i = 0; i < r.n; i++) {
                r.st.others += r.js[i].in ? 0 : 1;
            }
            if (report) {
                report(&r.st, ud);
            }
        } else {
            for (size_t i = 0; i < r.n;) {
                size_t before = r.n;
                if (r.js[i].in && mlt__lease_lost(r.js[i].lease)) {
                    tend(&r, i, now);
                }
                i += r.n == before ? 1 : 0;
            }
        }
        mlt__sender_sweep(r.s);
        int64_t wait_ms = poll_ms;
        if (now >= next_pass) {
            bool did = false;
            wait_ms = mlt__sender_pass(r.s, poll_ms, &did);
            next_pass = mlt__mono_ns() + wait_ms * 1000000;
        } else {
            wait_ms = (next_pass - now) / 1000000;
        }
        /* sleep in slices: a stop, and the queue's listing, come on time */
        int64_t until = mlt__mono_ns() + wait_ms * 1000000;
        until = until < next_scan ? until : next_scan;
        while (!atomic_load(stop) && mlt__mono_ns() < until) {
            int64_t left = (until - mlt__mono_ns()) / 1000000;
            mlt__sleep_ms(left < 50 ? (left > 0 ? left : 1) : 50);
        }
    }
    /* stop: every lease renewed till now is given up, every journal left as it is */
    mlt__lease_keeper_free(r.keeper);
    r.keeper = NULL;
    for (size_t i = 0; i < r.n; i++) {
        mlt__journal_close(mlt__sender_remove(r.s, r.js[i].dir), false);
        mlt__lease_free(r.js[i].lease); /* released */
        free(r.js[i].dir);
    }
    free(r.js);
    mlt__sender_free(r.s, 0);
    mlt__queue_unmark_relay(queue_dir);
    return MLT_OK;
}
