/*
 * it_resume.c - the resume-by-key integration test program, driven by
 * tests/integration/test_resume.py against a real MLflow server (or none). Public header only.
 *
 *   it_resume STEPS DELAY_MS
 *
 * A training job that can be killed and started again: configuration from the environment
 * (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLTRACK_QUEUE_DIR, and MLTRACK_RUN_KEY with
 * MLTRACK_RESUME=allow). Starts run "resumable", asks mlt_run_last_step(run, "loss") where the
 * earlier attempts left off (MLT_ERR_NOT_FOUND: from step 0; another failure, the step unknown:
 * asked again every 200 ms for up to IT_RESUME_ASK_S seconds, default 120; with IT_RESUME_FIRST=1,
 * the job's first start, a server that cannot be asked means step 0), logs param lr=0.1 and
 * metric "loss" = step / 2 at each step from there to STEPS - 1 (DELAY_MS between two), ends the
 * run FINISHED and flushes (IT_RESUME_CLOSE_MS, default 60000).
 *
 * IT_RESUME_FROM=N starts at step N without asking (the job's own checkpoint), and
 * IT_RESUME_TS_BASE=T stamps step s with T + s (mlt_log_metric_at): a step logged again after a
 * kill is then the same point, which the server keeps once.
 *
 * Prints "from N" (the first step it logs), "step N" after each mlt_log_metric() that returned
 * MLT_OK (written with write(2): a SIGKILL loses no line of a returned call), then "close ERRNAME".
 * Exits 0, or 1 when the run cannot start or the step stays unknown.
 */
#include <mltrack.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* "WORD N\n" in one write(2) */
static void say(const char *word, long long v)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%s %lld\n", word, v);
    if (n > 0 && write(1, line, (size_t)n) != n) {
        _exit(1);
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: it_resume STEPS DELAY_MS\n");
        return 2;
    }
    long long steps = atoll(argv[1]);
    long delay = atol(argv[2]);
    char err[1024];
    mlt_tracker *t = NULL;
    if (mlt_tracker_from_env(&t, err, sizeof err) != MLT_OK) {
        fprintf(stderr, "it_resume: %s\n", err);
        return 1;
    }
    mlt_run *run = NULL;
    if (mlt_run_start(&run, t, "resumable") != MLT_OK) {
        fprintf(stderr, "it_resume: %s\n", mlt_last_error());
        mlt_tracker_close(t, 0);
        return 1;
    }
    /* IT_RESUME_FROM: where the job's own checkpoint says it left off (a node without network,
     * whose relay delivered everything: mlt_run_last_step() cannot know there) */
    const char *from_env = getenv("IT_RESUME_FROM");
    const char *ts_env = getenv("IT_RESUME_TS_BASE");
    long long ts_base = ts_env ? atoll(ts_env) : -1;
    const char *ask = getenv("IT_RESUME_ASK_S");
    long tries = (ask ? atol(ask) : 120) * 5;
    int64_t last = -1;
    mlt_err e;
    const char *first = getenv("IT_RESUME_FIRST");
    if (from_env) {
        last = atoll(from_env) - 1;
        e = last >= 0 ? MLT_OK : MLT_ERR_NOT_FOUND;
    }
    while (!from_env && (e = mlt_run_last_step(run, "loss", &last)) != MLT_OK &&
           e != MLT_ERR_NOT_FOUND) {
        if (first && strcmp(first, "1") == 0 && mlt_err_is_retriable(e)) {
            e = MLT_ERR_NOT_FOUND; /* the first start: nothing logged before */
            break;
        }
        if (--tries <= 0) {
            fprintf(stderr, "it_resume: the last step stays unknown: %s %s\n", mlt_err_name(e),
                    mlt_last_error());
            mlt_tracker_close(t, 0);
            return 1;
        }
        sleep_ms(200);
    }
    long long from = e == MLT_OK ? (long long)last + 1 : 0;
    say("from", from);
    if (mlt_log_param(run, "lr", "0.1") != MLT_OK) {
        fprintf(stderr, "it_resume: %s\n", mlt_last_error());
    }
    for (long long s = from; s < steps; s++) {
        mlt_err le = ts_base >= 0 ? mlt_log_metric_at(run, "loss", (double)s / 2, s, ts_base + s)
                                  : mlt_log_metric(run, "loss", (double)s / 2, s);
        if (le == MLT_OK) {
            say("step", s);
        } else {
            fprintf(stderr, "it_resume: step %lld: %s\n", s, mlt_last_error());
        }
        if (delay > 0) {
            sleep_ms(delay);
        }
    }
    mlt_run_end(run, MLT_RUN_FINISHED);
    const char *ms = getenv("IT_RESUME_CLOSE_MS");
    mlt_err ce = mlt_tracker_flush(t, ms ? atoi(ms) : 60000);
    printf("close %s\n", mlt_err_name(ce));
    mlt_tracker_close(t, 0);
    return 0;
}
