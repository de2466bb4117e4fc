/*
 * cb_print.c - the print callback (the seed's PrintCallback): one readable line per event on a
 * FILE *. Each event is a single fprintf, which stdio keeps whole when threads share the stream.
 */
#include "config.h"

#include "common.h"

#include <inttypes.h>
#include <stdio.h>

static const char *name_of(const mlt_run_info *info)
{
    return info->run_name ? info->run_name : info->run_key;
}

static mlt_err written(int n)
{
    return n < 0 ? mlt__fail(MLT_ERR_IO, "print callback: write failed") : MLT_OK;
}

static mlt_err on_start(const mlt_run_info *info, void *ud)
{
    const char *id = mlt_run_id(info->run);
    if (info->parent_run_key) {
        return written(fprintf(ud, "[mltrack] run '%s' started (key %s, child of %s%s%s)\n",
                               name_of(info), info->run_key, info->parent_run_key,
                               id ? ", id " : "", id ? id : ""));
    }
    return written(fprintf(ud, "[mltrack] run '%s' started (key %s%s%s)\n", name_of(info),
                           info->run_key, id ? ", id " : "", id ? id : ""));
}

static mlt_err on_param(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    return written(fprintf(ud, "[mltrack] run '%s' param %s=%s\n", name_of(info), key, value));
}

static mlt_err on_metric(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t ts, void *ud)
{
    (void)ts;
    char num[32];
    mlt__fmt_double(num, sizeof num, value);
    return written(fprintf(ud, "[mltrack] run '%s' metric %s=%s step=%" PRId64 "\n",
                           name_of(info), key, num, step));
}

static mlt_err on_tag(const mlt_run_info *info, const char *key, const char *value, void *ud)
{
    return written(fprintf(ud, "[mltrack] run '%s' tag %s=%s\n", name_of(info), key, value));
}

static mlt_err on_end(const mlt_run_info *info, mlt_run_status status, double duration_s,
                      void *ud)
{
    int n = fprintf(ud, "[mltrack] run '%s' %s in %.3f s\n", name_of(info),
                    mlt_run_status_name(status), duration_s);
    if (n >= 0) {
        n = fflush(ud) == 0 ? n : -1;
    }
    return written(n);
}

static mlt_err on_flush(int timeout_ms, void *ud)
{
    (void)timeout_ms;
    return fflush(ud) == 0 ? MLT_OK : mlt__fail(MLT_ERR_IO, "print callback: flush failed");
}

mlt_err mlt_tracker_add_print(mlt_tracker *tracker, FILE *out)
{
    if (!out) {
        return mlt__fail(MLT_ERR_INVALID_ARG, "print callback: out is required");
    }
    static const mlt_callbacks cb = {
        .version = MLT_CALLBACKS_VERSION,
        .on_run_start = on_start,
        .on_param = on_param,
        .on_metric = on_metric,
        .on_tag = on_tag,
        .on_run_end = on_end,
        .on_flush = on_flush,
    };
    return mlt_tracker_add_callbacks(tracker, &cb, out);
}
