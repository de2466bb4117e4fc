/*
 * requeue.c - `mltrack requeue`: the dead letters of the queue's journals back into the queue,
 * for `mltrack sync` (or the next tracker) to deliver, once what made the server refuse them is
 * fixed (a password, a permission, a deleted experiment restored).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "queue.h"
#include "requeue.h"

typedef struct requeue_totals {
    uint64_t journals, requeued, runs, kept, busy, pending, failed;
} requeue_totals;

/* Requeues the dead letters of one journal into a new journal of the same queue. */
static void requeue_journal(cli *c, const char *queue, const char *dir, requeue_totals *t)
{
    mlt__journal *from = NULL;
    mlt__recovery rec;
    mlt__fail_clear();
    mlt_err e = mlt__journal_open(&from, dir, false, MLT__FSYNC_INTERVAL, &rec);
    if (e == MLT_ERR_LOCKED) {
        verbose(c, "%s: owned by a running process, left alone", dir);
        t->busy += 1;
        return;
    }
    if (e != MLT_OK) {
        say(c, "%s: %s", dir, detail_of(e));
        t->failed++;
        return;
    }
    if (mlt__journal_dead_count(from) == 0) {
        mlt__journal_close(from, false);
        return;
    }
    if (mlt__journal_acked_seq(from) < mlt__journal_last_seq(from)) {
        /* its pending records come first: a run made again elsewhere would not get them */
        printf("%s: %" PRIu64 " records not delivered yet: `mltrack sync` first\n", dir,
               mlt__journal_last_seq(from) - mlt__journal_acked_seq(from));
        t->pending++;
        mlt__journal_close(from, false);
        return;
    }
    char id[37], to_dir[PATH_MAX];
    mlt__uuid4(id);
    int n = snprintf(to_dir, sizeof to_dir, "%s/j-%s", queue, id);
    mlt__journal *to = NULL;
    mlt__fail_clear();
    if (n < 0 || (size_t)n >= sizeof to_dir) {
        e = mlt__fail(MLT_ERR_VALUE_TOO_LONG, "the queue's path is too long");
    } else {
        e = mlt__journal_create(&to, to_dir, MLT__FSYNC_INTERVAL);
    }
    const char *target = mlt__journal_target(from);
    if (e == MLT_OK && target) {
        e = mlt__journal_set_target(to, target);
    }
    mlt__requeue_stats st;
    memset(&st, 0, sizeof st);
    if (e == MLT_OK) {
        e = mlt__requeue(from, to, &st);
    }
    char err[512] = "";
    snprintf(err, sizeof err, "%s", e == MLT_OK ? "" : detail_of(e)); /* before the cleanup */
    if (e != MLT_OK || st.requeued == 0) {
        mlt__journal_discard(to); /* nothing of it counts: the letters stay where they were */
        to = NULL;
    }
    if (e != MLT_OK) {
        say(c, "%s: cannot requeue its dead letters: %s", dir, err);
        t->failed++;
    } else {
        t->journals++;
        t->requeued += st.requeued;
        t->runs += st.runs;
        t->kept += st.kept;
        printf("%s: %" PRIu64 " dead letters requeued (%" PRIu64 " runs) into %s\n", dir,
               st.requeued, st.runs, to ? to_dir : "no journal");
        if (st.kept > 0) {
            printf("%s: %" PRIu64 " dead letters kept: %s\n", dir, st.kept, st.why_kept);
        }
    }
    mlt__journal_close(to, false);
    mlt__journal_close(from, true); /* removed when nothing is left in it */
}

int cmd_requeue(cli *c, const args *a)
{
    mlt_options *opts = NULL;
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    char queue[PATH_MAX];
    rc = queue_path(c, opts, queue, sizeof queue);
    unload_options(c, opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    char **list = NULL;
    size_t n = 0;
    mlt__fail_clear();
    mlt_err e = mlt__queue_list(queue, &list, &n);
    if (e != MLT_OK) {
        say(c, "cannot read the queue %s: %s", queue, detail_of(e));
    }
    requeue_totals t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; e == MLT_OK && i < n; i++) {
        requeue_journal(c, queue, list[i], &t);
    }
    for (size_t i = 0; i < n; i++) {
        free(list[i]);
    }
    free(list);
    /* Fixed wording: scripts parse these lines. */
    printf("requeued: %" PRIu64 "\n", t.requeued);
    printf("kept: %" PRIu64 "\n", t.kept);
    if (t.busy > 0) {
        printf("left alone: %" PRIu64 " journals of running processes\n", t.busy);
    }
    if (t.pending > 0) {
        printf("left alone: %" PRIu64 " journals with records not delivered yet\n", t.pending);
    }
    if (t.requeued > 0) {
        printf("deliver them with `mltrack sync`\n");
    }
    if (fflush(stdout) != 0) {
        say(c, "cannot write the summary: %s", strerror(errno));
        return EXIT_LEFT;
    }
    return e != MLT_OK || t.failed > 0 || t.pending > 0 ? EXIT_LEFT : EXIT_SUCCESS;
}
