/*
 * sender_int.h - what the sender's two files share: sender.c, the worker (its thread, the turns
 * over the journals, waits and backoffs, flush, drain), and deliver.c, the delivery policy (one
 * unit of one journal: read it, send it, dead-letter what the server refuses, ack it).
 */
#ifndef MLT_SENDER_INT_H
#define MLT_SENDER_INT_H

#include "sender.h"

#include "lease.h"
#include "mlflow_client.h"

#include <pthread.h>
#include <stdatomic.h>

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
    bool has_ctl;          /* a CREATE, END, ATTACH or ARTIFACT record follows the window */
    bool ctl_done;         /* ...and it is delivered (or set aside): a retry of the unit (its ack
                            * failed) does not do it again */
    uint64_t verified_seq; /* the artifact record whose snapshot's digest was checked last */
    mlt__rec ctl;          /* points into ctl_buf */
    mlt__buf ctl_buf;
    mlt__rec last; /* the unit's last record (for the ack) */
    bool have_unit;
    bool create_ambiguous; /* a create of this unit may have reached the server */
    int64_t ambiguous_at_ns;
    uint64_t start_acked; /* acked when added, for the counters */
    /* WAIT: its next unit waits for a run the server does not have yet (sender thread; waits
     * and waiting_for change under mu, for a flusher's message) */
    int64_t wait_until_ns;  /* not tried before (monotonic); 0: not waiting */
    int64_t waited_at_ns;   /* when the current wait began */
    int waits;              /* waits in a row: each is longer */
    uint64_t runs_at_wait;  /* runs created by this sender when it began (one since: try now) */
    uint64_t ended_at_wait; /* runs ended by this sender when it began (one since: try now) */
    char waiting_for[40];   /* the run key it waits for ("" for none: a create settling) */
    char wait_key[40];      /* what the unit that returned WAIT waits for (attach_missing) */
    /* what it delivered (acknowledged or dead-lettered), for what a flush says is kept */
    _Atomic uint64_t runs_done, points_done, artifacts_done;
    /* an adopted journal all delivered is closed (j NULL, under mu) while the sender lives on:
     * its records for the counters */
    uint64_t retired_queued;
    /* its delivery lease (lease.h): the slot is delivered only while it is valid */
    mlt__lease *lease;
    bool own_lease;         /* made and freed by the sender (else the relay's) */
    bool relayed;           /* another party (a relay) holds it (under mu) */
    int64_t lease_try_ns;   /* a writer tries to take it again after this (held back after it let
                             * go of it, the server away; or another holds it)... */
    int64_t lease_look_ns;  /* ...and meanwhile only looks who holds it, after this */
    mlt__lease_info holder; /* who holds it then (under mu) */
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
    char *art_run_id; /* artifact root cache: the last run asked and its proxy path */
    char *art_root;
    mlt__run_id_fn on_run_id;
    void *on_run_id_ud;
    int failures; /* consecutive retriable failures */
    char last_error[1024];
    char *queue_dir; /* where the journals are (for the creator of a run waited for), or NULL */
    mlt__lease_keeper *keeper;  /* renews the leases the sender made (own_lease) */
    mlt__lease_role lease_role; /* what its leases say it is: a tracker's writer, or sync */
    bool no_server;             /* no tracking URI: never delivers (mlt__sender_set_no_server) */
    int64_t relay_checked_ns;   /* when the queue was last looked at for a relay (sender thread) */
    bool relay_seen;            /* ...and whether one serves it */
    /* what the latest request found (under mu): when it found no server to talk to (no
     * connection, TLS refused), 0 when it reached one; a flush asks for a probe (under mu) */
    int64_t down_at_ns;
    char down_why[256];     /* the transport's words for it (under mu) */
    uint64_t requests_seen; /* the client's request count when last looked at (sender thread) */
    bool probe;
    /* counters */
    _Atomic uint64_t sent, acknowledged, retried, rejected;
    uint64_t runs_ended;      /* runs this sender ended (a resumed run waits for an earlier end) */
    uint64_t rejected_points; /* metric records among the rejected (sender thread) */
    /* a drain's progress callback, told of an upload's bytes as they go (drain's thread) */
    void (*drain_progress)(const mlt__sync_progress *p, void *ud);
    void *drain_ud;
    mlt__sync_progress prog;
};

#define WINDOW_MAX 1000            /* entities per unit: one full log batch */
#define WAIT_FIRST_MS 1000         /* a journal waiting for a run tries again after this... */
#define WAIT_MAX_MS 30000          /* ...doubling up to this */
#define WAIT_FLUSH_MS 250          /* ...or this, while this process flushes and it is its own */
#define DOWN_FRESH_NS 1000000000LL /* a server found away this recently is away: no probe */
#define IDLE_MS 60000         /* an idle sender sleeps this long at most (new records wake it) */
#define RELAYED_LOOK_MS 1000  /* a journal a relay delivers: its acks are read this often... */
#define RELAYED_FLUSH_MS 100  /* ...or this often while this process flushes */
#define RELAY_FRESH_MS 10000  /* a relay's mark touched this recently: it serves the queue */
#define RELAY_PICKUP_MS 3000  /* a flush with the server away waits this long for it */
#define RELAY_RECHECK_MS 5000 /* a tracker looks for a relay at most this often */
/* A tracker that let go of its lease (the server away) leaves it to a relay this long: longer
 * than a relay's look at the queue (1 s). */
#define LET_GO_MS 2500
/* How long a run must stay absent from runs/search after an ambiguous create before it is
 * created again: a server may still be working on the first request. */
#define AMBIGUOUS_SETTLE_NS (5 * 1000000000LL)

/* Outcome of delivering part of a unit: done; try again after a backoff (the server failed or
 * is away); the server refused this record for good (a dead letter: a 400 or 404, or
 * credentials it refuses, 401/403, as the Python client fails such a call at once); delivery
 * cannot go on (TLS, configuration: nothing is dead-lettered, the unit waits); or this journal
 * waits for a run the server does not have yet (the others go on). */
typedef enum { OK, RETRY, DEAD, FATAL, WAIT } outcome;

/* Delivers the next unit of a slot: OK (something or nothing done; *did says), RETRY, FATAL,
 * WAIT (nothing done: the slot waits). Sender thread (or sync's). */
outcome mlt__deliver_step(mlt__sender *s, slot *sl, bool *did);

/* Drops the unit in flight of a slot (its window's copies). */
void mlt__deliver_free_window(slot *sl);

/* sender_lease.c: whether a slot may be delivered now (its lease valid, or taken now; a tracker's
 * slot whose lease another holds reads that one's acks now and then), sender thread; and what a
 * request's finding does to the leases (a tracker lets go of them while the server is away, a
 * relay says "away" in them). */
bool mlt__sender_lease_ready(mlt__sender *s, slot *sl, bool flushing);
void mlt__sender_leases_on_reach(mlt__sender *s, bool away);

#endif
