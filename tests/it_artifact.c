/*
 * it_artifact.c - the artifact integration test program, driven by
 * tests/integration/test_artifacts.py against a real MLflow server (or none). Public header only.
 *
 *   it_artifact RUN_NAME ACTION...
 *
 * Starts run RUN_NAME (configuration from the environment: MLFLOW_TRACKING_URI,
 * MLFLOW_EXPERIMENT_NAME, MLTRACK_QUEUE_DIR, MLTRACK_FSYNC...), does each action in order, ends
 * the run FINISHED and closes the tracker (IT_ARTIFACT_CLOSE_MS, default 60000). Actions:
 *   file PATH DIR        mlt_log_artifact(run, PATH, DIR) ("-" for DIR: NULL)
 *   dir PATH DIR         mlt_log_artifacts(run, PATH, DIR)
 *   bytes NAME TEXT      mlt_log_artifact_bytes(run, NAME, TEXT, strlen(TEXT))
 *   change PATH TEXT     overwrites PATH with TEXT (right after the call before it returned)
 *   delete PATH          removes PATH
 *
 * Prints one line per artifact call, "ACTION ERRNAME MESSAGE", then "run_key KEY",
 * "run_id ID" (or "-") and "close ERRNAME". Exits 0 unless the run cannot start (1) or the
 * arguments are wrong (2); the test reads the lines.
 */
#include <mltrack.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void said(const char *action, mlt_err e)
{
    printf("%s %s %s\n", action, mlt_err_name(e), e == MLT_OK ? "" : mlt_last_error());
    fflush(stdout);
}

static const char *dir_arg(const char *s)
{
    return strcmp(s, "-") == 0 ? NULL : s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: it_artifact RUN_NAME ACTION...\n");
        return 2;
    }
    char err[1024];
    mlt_tracker *t = NULL;
    if (mlt_tracker_from_env(&t, err, sizeof err) != MLT_OK) {
        fprintf(stderr, "it_artifact: %s\n", err);
        return 1;
    }
    mlt_run *run = NULL;
    if (mlt_run_start(&run, t, argv[1]) != MLT_OK) {
        fprintf(stderr, "it_artifact: %s\n", mlt_last_error());
        mlt_tracker_close(t, 0);
        return 1;
    }
    int rc = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "file") == 0 && i + 2 < argc) {
            said(a, mlt_log_artifact(run, argv[i + 1], dir_arg(argv[i + 2])));
            i += 2;
        } else if (strcmp(a, "dir") == 0 && i + 2 < argc) {
            said(a, mlt_log_artifacts(run, argv[i + 1], dir_arg(argv[i + 2])));
            i += 2;
        } else if (strcmp(a, "bytes") == 0 && i + 2 < argc) {
            said(a, mlt_log_artifact_bytes(run, argv[i + 1], argv[i + 2], strlen(argv[i + 2])));
            i += 2;
        } else if (strcmp(a, "change") == 0 && i + 2 < argc) {
            FILE *f = fopen(argv[i + 1], "wb");
            if (!f || fputs(argv[i + 2], f) == EOF || fclose(f) != 0) {
                perror(argv[i + 1]);
                rc = 2;
            }
            i += 2;
        } else if (strcmp(a, "delete") == 0 && i + 1 < argc) {
            if (unlink(argv[i + 1]) != 0) {
                perror(argv[i + 1]);
                rc = 2;
            }
            i += 1;
        } else {
            fprintf(stderr, "it_artifact: bad action '%s'\n", a);
            rc = 2;
        }
    }
    mlt_run_end(run, MLT_RUN_FINISHED);
    const char *ms = getenv("IT_ARTIFACT_CLOSE_MS");
    mlt_err ce = mlt_tracker_flush(t, ms ? atoi(ms) : 60000);
    printf("run_key %s\nrun_id %s\nclose %s\n", mlt_run_key(run),
           mlt_run_id(run) ? mlt_run_id(run) : "-", mlt_err_name(ce));
    mlt_tracker_close(t, 0);
    return rc;
}
