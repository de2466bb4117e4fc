/*
 * lease.h - the delivery lease of one journal: which single party (the journal's writer, or one
 * relay: `mltrack sync --follow`) may deliver it now. Separate from the writer's append lock, and
 * made of plain files, so that it holds where locks between hosts are missing or only advisory
 * (NFS, Lustre; see docs/hpc.md):
 *
 *   lease.<gen>   generation gen (20 digits) of the lease: one line naming its holder
 *                 (MLT__LEASE_MAGIC gen id role pid beat state host crc), replaced (rename) at
 *                 every renewal with beat + 1
 *
 * A generation is taken by creating its file with link(2) (exclusive: of two parties taking
 * generation g + 1, one wins, over NFS too), only when generation g is released, its holder is a
 * dead process of this host, or its file has not changed for lease_ms as the taker saw it on its
 * own monotonic clock (no clocks are compared between hosts). The holder renews it every
 * lease_ms / 5 from a thread of its own (mlt__lease_keeper), so that a slow request never lets
 * the lease lapse, and counts itself the holder only for lease_ms / 2 after its last renewal
 * that found no newer generation: a party paused longer stops delivering before another may
 * start. Everything a holder does is idempotent on the server but creating a run (docs/hpc.md).
 *
 * Thread safety: one mlt__lease may be used from any thread (a mutex inside); mlt__lease_valid()
 * takes no lock.
 */
#ifndef MLT_LEASE_H
#define MLT_LEASE_H

#include "common.h"

#include <stdbool.h>
#include <stdint.h>

#define MLT__LEASE_MAGIC "mltrack-lease-1"
#define MLT__LEASE_MS 10000 /* the default lease_ms */

typedef enum mlt__lease_role { MLT__LEASE_WRITER, MLT__LEASE_RELAY } mlt__lease_role;

/* What the holder says of its delivery: it delivers, the server is away from it, it let go. */
typedef enum mlt__lease_state {
    MLT__LEASE_DELIVERING,
    MLT__LEASE_AWAY,
    MLT__LEASE_RELEASED
} mlt__lease_state;

/* One generation's file, parsed. */
typedef struct mlt__lease_info {
    uint64_t gen;
    uint64_t id; /* the holder's random id */
    mlt__lease_role role;
    long pid;
    uint64_t beat;
    mlt__lease_state state;
    char host[64];
} mlt__lease_info;

/* Parses the text of a lease file (len bytes). 0, or -1 when it is not one whole, checked
 * line (torn, damaged, of another version). */
int mlt__lease_parse(const char *text, size_t len, mlt__lease_info *out);
/* Formats info as a lease file's text into out (NUL-terminated): the length, or -1 when it does
 * not fit. */
int mlt__lease_format(const mlt__lease_info *info, char *out, size_t len);

typedef struct mlt__lease mlt__lease;

/* A lease object for the journal directory dir (nothing is read or written yet): NULL when out
 * of memory. lease_ms: the expiry (0: MLT__LEASE_MS). */
mlt__lease *mlt__lease_new(const char *dir, mlt__lease_role role, long long lease_ms);

/* Releases the lease if held (mlt__lease_release) and frees. NULL does nothing. */
void mlt__lease_free(mlt__lease *l);

/* Result of mlt__lease_take(). */
typedef enum mlt__lease_take_result {
    MLT__LEASE_TAKEN, /* held by us now (also when it already was) */
    MLT__LEASE_OTHER, /* another party holds it (*other says who), or won the race */
    MLT__LEASE_GONE,  /* the journal directory is gone */
    MLT__LEASE_ERROR  /* cannot read or write it (mlt_last_error() says why) */
} mlt__lease_take_result;

/*
 * Takes the lease when it is free (never taken, released, or its holder's file unchanged for
 * lease_ms since this object first saw it so, or its holder a dead process of this host). *other
 * (may be NULL) gets the holder's file when another holds it. *fresh (may be NULL) is set when
 * the lease was taken now from a generation another party held (what that party delivered is
 * in the journal's acked cursor and run map, to be read again).
 */
mlt__lease_take_result mlt__lease_take(mlt__lease *l, mlt__lease_info *other, bool *fresh);

/* With patient, a lease never taken yet is taken only once it stayed so for lease_ms (a relay,
 * for a live writer's journal: the writer, if it reaches the server, takes it first). */
void mlt__lease_set_patient(mlt__lease *l, bool patient);

/* Reads who holds the lease, taking nothing: 1 when another party holds it (*holder, may be
 * NULL, filled), 0 when it is free, released, ours, or cannot be read. */
int mlt__lease_peek(mlt__lease *l, mlt__lease_info *holder);

/* Whether this object holds the lease and may act on it now: taken, and renewed within
 * lease_ms / 2, no newer generation found. No lock, no I/O. */
bool mlt__lease_valid(const mlt__lease *l);

/* Whether the lease was held and then found taken by another (it stays lost until taken again). */
bool mlt__lease_lost(const mlt__lease *l);

/* Renews the lease if held (beat + 1, with the state last set): MLT_OK, or MLT_ERR_STATE when a
 * newer generation exists or the directory is gone (the lease is lost), MLT_ERR_IO. */
MLT__MUST_USE mlt_err mlt__lease_renew(mlt__lease *l);

/* The state the next renewal writes (DELIVERING or AWAY); written at once when it changes. */
void mlt__lease_set_state(mlt__lease *l, mlt__lease_state st);

/* Gives the lease up (its file says released: the next taker need not wait). Nothing when not
 * held. */
void mlt__lease_release(mlt__lease *l);

/* The generation held or last seen (0: none). */
uint64_t mlt__lease_gen(const mlt__lease *l);

/* ---- the keeper: a thread that renews leases ---- */

typedef struct mlt__lease_keeper mlt__lease_keeper;

/* Starts a keeper that renews every lease added to it every period_ms. NULL on failure. */
mlt__lease_keeper *mlt__lease_keeper_new(int period_ms);
/* Adds l (borrowed until removed) / removes it (no renewal of it runs after this returns). */
MLT__MUST_USE mlt_err mlt__lease_keeper_add(mlt__lease_keeper *k, mlt__lease *l);
void mlt__lease_keeper_remove(mlt__lease_keeper *k, mlt__lease *l);
/* Stops the thread and frees (the leases are the caller's). NULL does nothing. */
void mlt__lease_keeper_free(mlt__lease_keeper *k);

#endif
