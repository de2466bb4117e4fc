/*
 * cb_print.c - the print callback (the seed's PrintCallback): one readable line per event on a
 * FILE *, control characters escaped so that each event stays on one line.
 */
#include "config.h"

#include "common.h"

#include <inttypes.h>
#include <stdio.h>

/* Appends s with control characters escaped, so that an event stays on one line. */
static void put_escaped(mlt__buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != 0x7f && c != '\\') {
            mlt__buf_putc(b, (char)c);
        } else if (c == '\n' || c == '\t' || c == '\r' || c == '\\') {
            char esc[2] = {'\\', c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : '\\'};
            mlt__buf_append(b, esc, 2);
        } else {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            mlt__buf_append(b, esc, 4);
        }
    }
}

/* Starts a line: [mltrack] run 'NAME' */
static void head(mlt__buf *b, const mlt_run_info *info)
{
    mlt__buf_puts(b, "[mltrack] run '");
    put_escaped(b, info->run_name ? info->run_name : info->run_key);
    mlt__buf_puts(b, "' ");
}

/* Writes the line with one stdio call, so that threads sharing the stream do not interleave. */
static MLT__MUST_USE mlt_err emit(mlt__buf *b, FILE *out, int flush)
{
    mlt__buf_putc(b, '\n');
    mlt_err err = MLT_OK;
    if (b->oom) {
        err = mlt__fail(MLT_ERR_NOMEM, "print callback: out of memory");
    } else if (fputs(b->data, out) == EOF || (flush && fflush(out) != 0)) {
        err = mlt__fail(MLT_ERR_IO, "print callback: write failed");
    }
    mlt__buf_free(b);
    return err;
}

static MLT__MUST_USE mlt_err on_start(const mlt_run_info *info, void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, info);
    mlt__buf_printf(&b, "started (key %s", info->run_key);
    if (info->parent_run_key) {
        mlt__buf_printf(&b, ", child of %s", info->parent_run_key);
    }
    const char *id = mlt_run_id(info->run);
    if (id) {
        mlt__buf_printf(&b, ", id %s", id);
    }
    mlt__buf_putc(&b, ')');
    return emit(&b, ud, 0);
}

/* param KEY=VALUE and tag KEY=VALUE */
static MLT__MUST_USE mlt_err kv_line(const mlt_run_info *info, const char *what, const char *key,
                                     const char *value, FILE *out)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, info);
    mlt__buf_puts(&b, what);
    put_escaped(&b, key);
    mlt__buf_putc(&b, '=');
    put_escaped(&b, value);
    return emit(&b, out, 0);
}

static MLT__MUST_USE mlt_err on_param(const mlt_run_info *info, const char *key, const char *value,
                                      void *ud)
{
    return kv_line(info, "param ", key, value, ud);
}

static MLT__MUST_USE mlt_err on_tag(const mlt_run_info *info, const char *key, const char *value,
                                    void *ud)
{
    return kv_line(info, "tag ", key, value, ud);
}

static MLT__MUST_USE mlt_err on_artifact(const mlt_run_info *info, const mlt_artifact_info *a,
                                         void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, info);
    mlt__buf_puts(&b, "artifact ");
    put_escaped(&b, a->path);
    mlt__buf_printf(&b, " (%" PRIu64 " bytes, sha256 %s)", a->size, a->sha256);
    return emit(&b, ud, 0);
}

static MLT__MUST_USE mlt_err on_metric(const mlt_run_info *info, const char *key, double value,
                                       int64_t step, int64_t ts, void *ud)
{
    (void)ts;
    char num[32];
    mlt__fmt_double(num, sizeof num, value);
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, info);
    mlt__buf_puts(&b, "metric ");
    put_escaped(&b, key);
    mlt__buf_printf(&b, "=%s step=%" PRId64, num, step);
    return emit(&b, ud, 0);
}

static MLT__MUST_USE mlt_err on_end(const mlt_run_info *info, mlt_run_status status,
                                    double duration_s, void *ud)
{
    mlt__buf b;
    mlt__buf_init(&b);
    head(&b, info);
    mlt__buf_printf(&b, "%s in %.3f s", mlt_run_status_name(status), duration_s);
    return emit(&b, ud, 1);
}

static MLT__MUST_USE mlt_err on_flush(int timeout_ms, void *ud)
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
        .on_artifact = on_artifact,
    };
    return mlt_tracker_add_callbacks(tracker, &cb, out);
}
