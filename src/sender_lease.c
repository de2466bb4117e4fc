/*
 * sender_lease.c - who delivers each of the sender's journals: its delivery lease (lease.h) taken,
 * let go of while the server is away, looked at while a relay holds it (its acks read again for a
 * flush), and the seam a relay's loop (relay.c) uses to hand journals in and take them out.
 */
#include "config.h"

#include "sender_int.h"

#include "queue.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Drops what a slot had in flight and reads it again from its acked cursor (another party may
 * have delivered it meanwhile). Sender thread. */
static void slot_restart(slot *sl)
{
    mlt__deliver_free_window(sl);
    sl->have_unit = false;
    sl->has_ctl = false;
    sl->ctl_done = false;
    sl->create_ambiguous = false;
    sl->cursor = mlt__journal_acked_seq(sl->j);
}

static void set_relayed(mlt__sender *s, slot *sl, bool relayed, const mlt__lease_info *who)
{
    pthread_mutex_lock(&s->mu);
    sl->relayed = relayed;
    if (who) {
        sl->holder = *who;
    }
    pthread_cond_broadcast(&s->done_cv); /* a flusher reads what the relay acked */
    pthread_mutex_unlock(&s->mu);
}

/* The slot's journal is delivered by the party `who` names (a relay, or another process): said
 * once, what was in flight dropped; its acks read again, so that a flush sees them and delivered
 * segments go. Sender thread. */
static void delivered_by(mlt__sender *s, slot *sl, const mlt__lease_info *who)
{
    if (!sl->relayed) {
        mlt__log(&s->opts->logger, MLT_LOG_INFO,
                 "journal %s is delivered by the %s on %s (pid %ld)", mlt__journal_dir(sl->j),
                 who->role == MLT__LEASE_RELAY ? "relay" : "process",
                 who->host[0] ? who->host : "?", who->pid);
        slot_restart(sl);
    }
    if (mlt__journal_reload_delivery(sl->j) == MLT_OK) {
        sl->cursor = mlt__journal_acked_seq(sl->j);
    }
    set_relayed(s, sl, true, who);
}

/*
 * Whether a slot may be delivered now: its lease is valid, or (not a relay's) it could take it.
 * A lease another party holds leaves the slot to it: its acks are read again now and then, so
 * that a flush sees them and delivered segments go. Sender thread.
 */
bool mlt__sender_lease_ready(mlt__sender *s, slot *sl, bool flushing)
{
    if (!sl->lease || mlt__lease_valid(sl->lease)) {
        return true;
    }
    if (!sl->own_lease) {
        return false; /* a relay's: it takes and drops its leases itself */
    }
    int64_t now = mlt__mono_ns();
    int64_t look = (int64_t)(flushing ? RELAYED_FLUSH_MS : RELAYED_LOOK_MS) * 1000000;
    mlt__lease_info who;
    memset(&who, 0, sizeof who);
    if (now < sl->lease_try_ns || s->no_server) {
        /* held back (let go of, or another's; or no server to deliver to): only looked at, for
         * a relay that took it up */
        if (now < sl->lease_look_ns) {
            return false;
        }
        sl->lease_look_ns = now + look;
        if (mlt__lease_peek(sl->lease, &who) == 1) {
            delivered_by(s, sl, &who);
        } else if (sl->relayed) {
            set_relayed(s, sl, false, NULL); /* given up by the relay: nobody delivers it now */
        }
        return false;
    }
    sl->lease_try_ns = now + look;
    bool fresh = false;
    mlt__lease_take_result r = mlt__lease_take(sl->lease, &who, &fresh);
    if (r == MLT__LEASE_TAKEN) {
        if (fresh || sl->relayed) {
            if (mlt__journal_reload_delivery(sl->j) != MLT_OK) {
                mlt__log(&s->opts->logger, MLT_LOG_WARN, "%s", mlt_last_error());
            }
            slot_restart(sl);
            mlt__log(&s->opts->logger, MLT_LOG_INFO,
                     "journal %s: delivered from here again, from record %" PRIu64,
                     mlt__journal_dir(sl->j), sl->cursor + 1);
        }
        if (sl->relayed) {
            set_relayed(s, sl, false, NULL);
        }
        return true;
    }
    if (r != MLT__LEASE_OTHER) {
        return false; /* tried again at the next look */
    }
    delivered_by(s, sl, &who);
    sl->lease_look_ns = now + look;
    return false;
}

/* Whether a relay serves the sender's queue (its mark fresh), looked at most every
 * RELAY_RECHECK_MS: a tracker lets go of its journals only for a relay, else it retries as it
 * always did. Sender thread. */
static bool relay_serves(mlt__sender *s)
{
    int64_t now = mlt__mono_ns();
    if (s->relay_checked_ns == 0 || now - s->relay_checked_ns >= RELAY_RECHECK_MS * 1000000LL) {
        s->relay_checked_ns = now;
        s->relay_seen = s->queue_dir && mlt__queue_has_relay(s->queue_dir, RELAY_FRESH_MS);
    }
    return s->relay_seen;
}

/* After a request found the server away or reached it: a tracker (or `mltrack sync`) lets go of
 * its leases while the server is away, if a relay serves the queue (it may reach the server).
 * Else, as a relay always does, it keeps them and says in them whether it finds the server away
 * (`mltrack status` shows it). */
void mlt__sender_leases_on_reach(mlt__sender *s, bool away)
{
    bool keep = !away || s->lease_role == MLT__LEASE_RELAY || !relay_serves(s);
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->lease || !sl->j) {
            continue;
        }
        if (keep) {
            /* kept, and tried again after the backoff (the file is written only when held and
             * its state changes) */
            mlt__lease_set_state(sl->lease, away ? MLT__LEASE_AWAY : MLT__LEASE_DELIVERING);
        } else if (mlt__lease_valid(sl->lease)) {
            mlt__lease_release(sl->lease); /* left to a relay for LET_GO_MS */
            sl->lease_try_ns = mlt__mono_ns() + (int64_t)LET_GO_MS * 1000000;
            sl->lease_look_ns = 0;
        }
    }
}

/* ---- for a relay's loop (relay.c) ---- */

mlt__journal *mlt__sender_remove(mlt__sender *s, const char *dir)
{
    mlt__journal *j = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->j || strcmp(mlt__journal_dir(sl->j), dir) != 0) {
            continue;
        }
        j = sl->j;
        mlt__deliver_free_window(sl);
        free(sl->win);
        mlt__buf_free(&sl->ctl_buf);
        if (sl->own_lease) {
            if (s->keeper) {
                mlt__lease_keeper_remove(s->keeper, sl->lease);
            }
            mlt__lease_free(sl->lease);
        }
        s->slots[i] = s->slots[--s->n_slots];
        break;
    }
    pthread_mutex_unlock(&s->mu);
    return j;
}

bool mlt__sender_holds(mlt__sender *s, const char *dir)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].j && strcmp(mlt__journal_dir(s->slots[i].j), dir) == 0) {
            return true;
        }
    }
    return false;
}

void mlt__sender_sweep(mlt__sender *s)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_slots;) {
        slot *sl = &s->slots[i];
        if (sl->j) {
            i++;
            continue;
        }
        mlt__deliver_free_window(sl);
        free(sl->win);
        mlt__buf_free(&sl->ctl_buf);
        s->slots[i] = s->slots[--s->n_slots];
    }
    pthread_mutex_unlock(&s->mu);
}
