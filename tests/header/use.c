/* use.c - every part of mltrack.h a C program may use, for tests/check_header.sh: it must
 * compile without a warning as C11, C17 and C2x (gcc and clang, -Wall -Wextra -pedantic). */
#include <mltrack.h>

MLT_TRACKED(double, tracked, (int, epochs), (double, lr), (const char *, tag), (_Bool, flag))
{
    return epochs * lr + (tag ? 1 : 0) + flag;
}

MLT_TRACKED_VOID(tracked_void, (unsigned long, n))
{
    (void)n;
}

static mlt_err on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t timestamp_ms, void *userdata)
{
    (void)info, (void)key, (void)value, (void)step, (void)timestamp_ms, (void)userdata;
    return MLT_OK;
}

int main(void)
{
    mlt_tracker *t = NULL;
    if (mlt_tracker_new(&t, NULL, NULL, 0) != MLT_OK) {
        return 1;
    }
    const mlt_callbacks cb = {.version = MLT_CALLBACKS_VERSION, .on_metric = on_metric};
    mlt_tracker_add_callbacks(t, &cb, NULL);
    mlt_tracker_set_default(t);
    MLT_WITH_RUN(t, run, "scope")
    {
        mlt_log_param_value(run, "f", 0.5f);
        mlt_log_metric(run, "loss", 1.0, 0);
    }
    {
        MLT_SCOPED_RUN(t, run, "scoped");
        mlt_set_tag(run, "k", "v");
        mlt_log_artifact_bytes(run, "notes.txt", "text", 4);
        mlt_log_artifact(run, "/nonexistent", NULL);
        mlt_log_artifacts(run, "/nonexistent", "dir");
    }
    tracked(1, 0.1, NULL, 1);
    tracked_void(3);
    mlt_queue_stats stats = MLT_QUEUE_STATS_INIT;
    (void)mlt_tracker_queue_stats(&stats, t);
    return mlt_tracker_close(t, 0) == MLT_OK ? 0 : 1;
}
