/*
 * drop.c - `mltrack drop`: deletes journals of the queue on purpose, or only their dead letters,
 * and says what went: the way out for records nobody will deliver (a run key with a typo, a
 * server that is gone for good).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "journal.h"

/* What the undelivered records of a journal are, by kind. */
typedef struct contents {
    uint64_t records, creates, attaches, params, points, tags, ends, artifacts, undecodable;
} contents;

/* Counts the undelivered records by kind; the runs they create go to runs, a line each. */
static void count_pending(mlt__journal *j, contents *n, mlt__buf *runs)
{
    uint64_t cursor = mlt__journal_acked_seq(j);
    mlt__buf scratch;
    mlt__buf_init(&scratch);
    mlt__rec r;
    for (;;) {
        uint64_t before = cursor;
        mlt_err e = mlt__journal_next(j, &cursor, &scratch, &r);
        if (e == MLT_ERR_CORRUPT && cursor != before) {
            n->undecodable++;
            continue;
        }
        if (e != MLT_OK) {
            break;
        }
        switch (r.type) {
        case MLT__REC_CREATE:
            n->creates++;
            mlt__buf_printf(runs, "  run %s%s%s%s -> (not created)\n", r.key,
                            r.run_name[0] ? " '" : "", r.run_name, r.run_name[0] ? "'" : "");
            break;
        case MLT__REC_ATTACH:
            n->attaches++;
            break;
        case MLT__REC_PARAM:
            n->params++;
            break;
        case MLT__REC_METRIC:
        case MLT__REC_POINT: /* read back as METRIC: counted there */
            n->points++;
            break;
        case MLT__REC_TAG:
            n->tags++;
            break;
        case MLT__REC_END:
            n->ends++;
            break;
        case MLT__REC_ARTIFACT:
            n->artifacts++;
            break;
        }
    }
    mlt__buf_free(&scratch);
    uint64_t last = mlt__journal_last_seq(j), acked = mlt__journal_acked_seq(j);
    n->records = last > acked ? last - acked : 0;
}

/* The journal's directory for what the user gave: a path, or a name in the queue. */
static int journal_path(cli *c, const char *queue, const char *arg, char *out, size_t len)
{
    int n =
        strchr(arg, '/') ? snprintf(out, len, "%s", arg) : snprintf(out, len, "%s/%s", queue, arg);
    struct stat st;
    if (n < 0 || (size_t)n >= len) {
        say(c, "%s: the path is too long", arg);
        return EXIT_USAGE;
    }
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/lock", out);
    if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode) || stat(lock, &st) != 0) {
        say(c, "%s: not a journal of the queue %s (see `mltrack status`)", arg, queue);
        return EXIT_USAGE;
    }
    return EXIT_SUCCESS;
}

static void print_runs(mlt__journal *j)
{
    size_t n = 0;
    const mlt__run_entry *runs = mlt__journal_runs(j, &n);
    for (size_t i = 0; runs && i < n; i++) {
        printf("  run %s -> %s\n", runs[i].key, runs[i].run_id ? runs[i].run_id : "(not created)");
    }
}

/* Drops one journal, or its dead letters. EXIT_SUCCESS, EXIT_LEFT (owned, failed) or
 * EXIT_USAGE (not a journal). */
static int drop_one(cli *c, const char *queue, const char *arg, bool dead_only)
{
    char dir[PATH_MAX];
    int rc = journal_path(c, queue, arg, dir, sizeof dir);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    mlt__journal *j = NULL;
    mlt__recovery rec;
    mlt__fail_clear();
    mlt_err e = mlt__journal_open(&j, dir, false, MLT__FSYNC_ALWAYS, &rec);
    if (e == MLT_ERR_LOCKED) {
        say(c, "%s: owned by a running process: left alone", dir);
        return EXIT_LEFT;
    }
    if (e != MLT_OK) {
        say(c, "%s: %s", dir, detail_of(e));
        return EXIT_LEFT;
    }
    uint64_t dead = mlt__journal_dead_count(j);
    if (dead_only) {
        if (dead > 0 && mlt__journal_keep_dead_letters(j, NULL, 0, 0) != MLT_OK) {
            say(c, "%s: cannot remove its dead letters: %s", dir, detail_of(MLT_ERR_IO));
            mlt__journal_close(j, false);
            return EXIT_LEFT;
        }
        printf("dropped %s/dead.jsonl: %" PRIu64 " dead %s\n", dir, dead,
               dead == 1 ? "letter" : "letters");
        mlt__journal_close(j, true); /* gone too if nothing else is left in it */
        return EXIT_SUCCESS;
    }
    contents n;
    memset(&n, 0, sizeof n);
    mlt__buf created;
    mlt__buf_init(&created);
    count_pending(j, &n, &created);
    printf("dropped %s: %" PRIu64 " records not delivered (%" PRIu64 " run creations, %" PRIu64
           " attaches, %" PRIu64 " params, %" PRIu64 " metric points, %" PRIu64 " tags, %" PRIu64
           " run ends, %" PRIu64 " artifacts, %" PRIu64 " undecodable), %" PRIu64 " dead letters\n",
           dir, n.records, n.creates, n.attaches, n.params, n.points, n.tags, n.ends, n.artifacts,
           n.undecodable, dead);
    print_runs(j);
    fputs(created.data && !created.oom ? created.data : "", stdout);
    mlt__buf_free(&created);
    if (rec.ring_points > 0) {
        verbose(c, "%s: %" PRIu64 " points its process left in memory were among them", dir,
                rec.ring_points);
    }
    mlt__journal_discard(j);
    return EXIT_SUCCESS;
}

int cmd_drop(cli *c, const args *a)
{
    mlt_options *opts = NULL;
    char queue[PATH_MAX];
    int rc = load_options(c, a, &opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    rc = queue_path(c, opts, queue, sizeof queue);
    unload_options(c, opts);
    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    int worst = EXIT_SUCCESS;
    for (size_t i = 0; i < a->n_journals; i++) {
        int r = drop_one(c, queue, a->journals[i], a->dead_letters);
        worst = r > worst ? r : worst;
    }
    if (fflush(stdout) != 0) {
        say(c, "cannot write what was dropped: %s", strerror(errno));
        return EXIT_LEFT;
    }
    return worst;
}
