/*
 * error.c - the one table of error codes: name, text and whether a retry may succeed.
 */
#include "config.h"

#include "mltrack.h"

#include <stddef.h>

struct err_entry {
    mlt_err code;
    const char *name;
    const char *text;
    int retriable;
};

static const struct err_entry errors[] = {
    {MLT_OK, "MLT_OK", "success", 0},
    {MLT_ERR_INVALID_ARG, "MLT_ERR_INVALID_ARG", "invalid argument", 0},
    {MLT_ERR_NOMEM, "MLT_ERR_NOMEM", "out of memory", 0},
    {MLT_ERR_UNKNOWN_OPTION, "MLT_ERR_UNKNOWN_OPTION", "unknown option", 0},
    {MLT_ERR_BAD_OPTION, "MLT_ERR_BAD_OPTION", "invalid option value", 0},
    {MLT_ERR_INVALID_KEY, "MLT_ERR_INVALID_KEY", "invalid key", 0},
    {MLT_ERR_VALUE_TOO_LONG, "MLT_ERR_VALUE_TOO_LONG", "value too long", 0},
    {MLT_ERR_INVALID_VALUE, "MLT_ERR_INVALID_VALUE", "invalid value", 0},
    {MLT_ERR_PARAM_CONFLICT, "MLT_ERR_PARAM_CONFLICT",
     "param already logged with a different value", 0},
    {MLT_ERR_STATE, "MLT_ERR_STATE", "call not valid in this state", 0},
    {MLT_ERR_IO, "MLT_ERR_IO", "file input/output error", 0},
    {MLT_ERR_NETWORK, "MLT_ERR_NETWORK", "could not reach the tracking server", 1},
    {MLT_ERR_TIMEOUT, "MLT_ERR_TIMEOUT", "the tracking server did not answer in time", 1},
    {MLT_ERR_SERVER, "MLT_ERR_SERVER", "the tracking server failed (HTTP 5xx)", 1},
    {MLT_ERR_RATE_LIMITED, "MLT_ERR_RATE_LIMITED", "rate limited by the tracking server", 1},
    {MLT_ERR_REJECTED, "MLT_ERR_REJECTED", "request rejected by the tracking server", 0},
    {MLT_ERR_NOT_FOUND, "MLT_ERR_NOT_FOUND", "not found on the tracking server", 0},
    {MLT_ERR_AUTH, "MLT_ERR_AUTH", "not authorized by the tracking server", 0},
    {MLT_ERR_PROTOCOL, "MLT_ERR_PROTOCOL", "unexpected answer from the tracking server", 0},
    {MLT_ERR_TLS, "MLT_ERR_TLS", "TLS error", 0},
    {MLT_ERR_CALLBACK, "MLT_ERR_CALLBACK", "a callback failed", 0},
    {MLT_ERR_QUEUE_FULL, "MLT_ERR_QUEUE_FULL", "the durable queue is full", 0},
    {MLT_ERR_CORRUPT, "MLT_ERR_CORRUPT", "a journal file is damaged", 0},
    {MLT_ERR_LOCKED, "MLT_ERR_LOCKED", "owned by a running process", 0},
    {MLT_ERR_QUEUED, "MLT_ERR_QUEUED", "kept in the queue, not delivered yet", 1},
};

static const struct err_entry *find(mlt_err err)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        if (errors[i].code == err) {
            return &errors[i];
        }
    }
    return NULL;
}

const char *mlt_strerror(mlt_err err)
{
    const struct err_entry *e = find(err);
    return e ? e->text : "unknown error";
}

const char *mlt_err_name(mlt_err err)
{
    const struct err_entry *e = find(err);
    return e ? e->name : "MLT_ERR_UNKNOWN";
}

int mlt_err_is_retriable(mlt_err err)
{
    const struct err_entry *e = find(err);
    return e ? e->retriable : 0;
}

const char *mlt_run_status_name(mlt_run_status status)
{
    switch (status) {
    case MLT_RUN_FINISHED:
        return "FINISHED";
    case MLT_RUN_FAILED:
        return "FAILED";
    case MLT_RUN_KILLED:
        return "KILLED";
    }
    return "UNKNOWN";
}
