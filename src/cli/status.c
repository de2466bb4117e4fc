/*
 * status.c - `mltrack status`: each journal of the queue (read-only: nothing is locked, cut or
 * moved), its owner, pending records, dead letters, runs, and the runs its records wait for.
 */
#include "config.h"

#include "cli.h"
#include "journal.h"
#include "lease.h"
#include "queue.h"
#include "sender.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- status ---- */

static const char *run_state_name(mlt__run_state state)
{
    switch (state) {
    case MLT__RUN_OPEN:
        return "open";
    case MLT__RUN_ENDED:
        return "ended";
    case MLT__RUN_DEAD:
        return "dead";
    case MLT__RUN_ATTACHED:
        return "attached";
    }
    return "unknown";
}

typedef struct totals {
    uint64_t journals, records, bytes, dead, unreadable;
} totals;

/* A run whose CREATE or ATTACH record waits in the journal: the run map has it only once sent
 * (or found, for an attached run). */
typedef struct queued_run {
    uint32_t run_no;
    char *key;
    bool attach;      /* an attached run: its records wait for it to be on the server */
    bool ended;       /* its end record waits too */
    uint64_t records; /* its records waiting, its own included */
    int64_t since_ms; /* attach: when its ATTACH was written (0: unknown) */
} queued_run;

static queued_run *find_queued(queued_run *q, size_t n, uint32_t run_no)
{
    for (size_t i = 0; i < n; i++) {
        if (q[i].run_no == run_no) {
            return &q[i];
        }
    }
    return NULL;
}

/* "45 s", "12 min", "3 h", "2 days": how long ago ms was. */
static void age_text(int64_t ms, char *out, size_t len)
{
    int64_t s = (mlt__now_ms() - ms) / 1000;
    s = s < 0 ? 0 : s;
    if (s < 120) {
        snprintf(out, len, "%" PRId64 " s", s);
    } else if (s < 7200) {
        snprintf(out, len, "%" PRId64 " min", s / 60);
    } else if (s < 172800) {
        snprintf(out, len, "%" PRId64 " h", s / 3600);
    } else {
        snprintf(out, len, "%" PRId64 " days", s / 86400);
    }
}

/* The runs of the unacked records that the run map does not know yet: runs not created, and
 * attached runs their records wait for (with who creates them, if a journal of the queue does). */
static void print_queued_runs(mlt__journal *j, const char *queue, const mlt_options *opts)
{
    queued_run *q = NULL;
    size_t n = 0, cap = 0;
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    bool oom = false;
    while (!oom && mlt__journal_next(j, &cursor, &scratch, &r) == MLT_OK) {
        queued_run *known = find_queued(q, n, r.run_no);
        if (known) {
            known->records++;
            known->ended = known->ended || r.type == MLT__REC_END;
            continue;
        }
        const mlt__run_entry *mapped = mlt__journal_run(j, r.run_no);
        if ((r.type != MLT__REC_CREATE && r.type != MLT__REC_ATTACH) ||
            (mapped && mapped->run_id)) {
            continue;
        }
        if (MLT__GROW(q, cap, n + 1) != MLT_OK) {
            oom = true;
            break;
        }
        q[n] = (queued_run){r.run_no,
                            mlt__strdup(r.key),
                            r.type == MLT__REC_ATTACH,
                            false,
                            1,
                            r.type == MLT__REC_ATTACH ? r.time_ms : 0};
        if (!q[n].key) {
            oom = true;
            break;
        }
        n++;
    }
    mlt__buf_free(&scratch);
    for (size_t i = 0; i < n; i++) {
        if (!q[i].attach) {
            printf("  run %s -> (not created) %s\n", q[i].key, q[i].ended ? "ended" : "open");
            continue;
        }
        char age[32] = "an unknown time";
        if (q[i].since_ms > 0) {
            age_text(q[i].since_ms, age, sizeof age);
        }
        printf("  waiting for run %s: %" PRIu64 " records, for %s: ", q[i].key, q[i].records, age);
        char who[PATH_MAX] = "";
        bool owned = false;
        if (mlt__queue_find_creator(queue, q[i].key, who, sizeof who, &owned) == MLT_OK) {
            printf("journal %s creates it%s\n", who,
                   owned ? " (a running process owns it)" : ", not delivered yet");
        } else {
            printf("no journal of this queue creates it; unless the server has it (`mltrack "
                   "sync` looks), they become dead letters %lld s after they were written "
                   "(attach_timeout), or `mltrack drop` drops them\n",
                   opts->attach_timeout_s);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(q[i].key);
    }
    if (oom) {
        printf("  runs: out of memory, list incomplete\n");
    }
    free(q);
}

static void status_journal(const char *dir, const char *queue, const mlt_options *opts, totals *t)
{
    t->journals++;
    int owned = mlt__journal_owned(dir);
    const char *owner = owned > 0 ? "a running process" : owned == 0 ? "none" : "unknown";
    int saved = errno;
    printf("%s\n", dir);
    if (owned < 0) {
        printf("  owner: unknown (%s)\n", strerror(saved));
    } else {
        printf("  owner: %s\n", owner);
    }
    /* who delivers it now (its delivery lease): the writer itself, or a relay */
    mlt__lease *l = mlt__lease_new(dir, MLT__LEASE_RELAY, 0);
    mlt__lease_info who;
    if (l && mlt__lease_peek(l, &who) == 1) {
        printf("  delivered by: the %s on %s (pid %ld)%s\n",
               who.role == MLT__LEASE_RELAY ? "relay" : "writer", who.host, who.pid,
               who.state == MLT__LEASE_AWAY ? ", which finds the server away" : "");
    }
    mlt__lease_free(l);

    mlt__journal *j = NULL;
    mlt__recovery rec;
    memset(&rec, 0, sizeof rec);
    mlt__fail_clear();
    mlt_err e = mlt__journal_open(&j, dir, true, MLT__FSYNC_NONE, &rec);
    if (e != MLT_OK) {
        printf("  error: %s\n", detail_of(e));
        t->unreadable++;
        return;
    }
    uint64_t records = pending_records(j);
    uint64_t bytes = mlt__journal_pending_bytes(j);
    uint64_t dead = mlt__journal_dead_count(j);
    printf("  pending: %" PRIu64 " records, %" PRIu64 " bytes\n", records, bytes);
    if (rec.ring_points > 0) {
        printf("  in memory (saved when the journal is next opened): %" PRIu64 " points\n",
               rec.ring_points);
    }
    printf("  dead letters: %" PRIu64 "\n", dead);
    if (rec.cut_bytes > 0) {
        /* A live writer's record in flight looks torn too: only a free journal gets cut. */
        printf("  torn/corrupt tail: %" PRIu64 " bytes (%s)%s\n", rec.cut_bytes, rec.why,
               owned > 0 ? ", maybe a write in progress" : ", cut at the next sync");
    }
    size_t n_runs = 0;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n_runs);
    for (size_t i = 0; runs && i < n_runs; i++) {
        const char *id = runs[i].run_id ? runs[i].run_id : "(not created)";
        printf("  run %s -> %s %s\n", runs[i].key, id, run_state_name(runs[i].state));
    }
    print_queued_runs(j, queue, opts);
    t->records += records;
    t->bytes += bytes;
    t->dead += dead;
    mlt__journal_close(j, false);
}

static int status_queue(cli *c, const char *queue, const mlt_options *opts);

int cmd_status(cli *c, const args *a)
{
    char queue[PATH_MAX];
    mlt_options *opts = NULL;
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    rc = queue_path(c, opts, queue, sizeof queue);
    if (rc != EXIT_SUCCESS) {
        unload_options(c, opts);
        return rc;
    }
    rc = status_queue(c, queue, opts);
    unload_options(c, opts);
    return rc;
}

static int status_queue(cli *c, const char *queue, const mlt_options *opts)
{
    struct stat sb;
    if (stat(queue, &sb) != 0) {
        if (errno == ENOENT) {
            printf("no queue at %s\n", queue);
            return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_LEFT;
        }
        say(c, "cannot read the queue %s: %s", queue, strerror(errno));
        return EXIT_LEFT;
    }
    if (!S_ISDIR(sb.st_mode)) {
        say(c, "cannot read the queue %s: not a directory", queue);
        return EXIT_LEFT;
    }
    char **list = NULL;
    size_t n_list = 0;
    mlt__fail_clear();
    mlt_err e = mlt__queue_list(queue, &list, &n_list);
    if (e != MLT_OK) {
        say(c, "cannot read the queue %s: %s", queue, detail_of(e));
        free_list(list, n_list);
        return EXIT_LEFT;
    }
    totals t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < n_list; i++) {
        status_journal(list[i], queue, opts, &t);
    }
    free_list(list, n_list);
    /* Fixed wording (no singular forms): scripts parse this line. */
    printf("total: %" PRIu64 " journals, %" PRIu64 " records pending, %" PRIu64
           " bytes pending, %" PRIu64 " dead letters\n",
           t.journals, t.records, t.bytes, t.dead);
    if (fflush(stdout) != 0) {
        say(c, "cannot write the status: %s", strerror(errno));
        return EXIT_LEFT;
    }
    return t.unreadable ? EXIT_LEFT : EXIT_SUCCESS;
}
