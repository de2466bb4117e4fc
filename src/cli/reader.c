/*
 * reader.c - `mltrack run`'s child's stdout: passed through byte for byte, and its protocol lines
 * (`mltrack:metric ...`) logged into the run. See reader.h.
 */
#include "config.h"

#include "reader.h"
#include "validate.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t *step_slot(reader *r, const char *key)
{
    for (size_t i = 0; i < r->n_steps; i++) {
        if (strcmp(r->steps[i].key, key) == 0) {
            return &r->steps[i].next;
        }
    }
    if (MLT__GROW(r->steps, r->cap_steps, r->n_steps + 1) != MLT_OK) {
        return NULL;
    }
    char *copy = mlt__strdup(key);
    if (!copy) {
        return NULL;
    }
    r->steps[r->n_steps] = (auto_step){copy, 0};
    return &r->steps[r->n_steps++].next;
}

static void malformed(reader *r, uint64_t line_no, const char *why)
{
    if (++r->malformed <= MAX_REPORTS) {
        say(r->c, "stdout line %" PRIu64 ": %s: ignored%s", line_no, why,
            r->malformed == MAX_REPORTS ? " (further malformed lines are only counted)" : "");
    }
}

/* Logs one parsed line. Returns NULL, or why it was refused (nothing of it was logged when
 * the first pair was refused; pairs are logged in order). */
static const char *log_line(reader *r, const mlt_proto_line *l)
{
    /* check every pair first, so that a line is logged whole or not at all */
    for (size_t i = 0; i < l->n_pairs; i++) {
        const mlt_proto_pair *p = &l->pairs[i];
        mlt__kind kind = l->kind == MLT_PROTO_METRIC  ? MLT__METRIC
                         : l->kind == MLT_PROTO_PARAM ? MLT__PARAM
                                                      : MLT__TAG;
        mlt_err e = mlt__validate_key(kind, p->key);
        if (e == MLT_OK && l->kind == MLT_PROTO_PARAM) {
            e = mlt__validate_param_value(p->key, p->value);
        } else if (e == MLT_OK && l->kind == MLT_PROTO_TAG) {
            e = mlt__validate_tag_value(p->key, p->value);
        }
        if (e != MLT_OK) {
            return mlt_last_error();
        }
    }
    for (size_t i = 0; i < l->n_pairs; i++) {
        const mlt_proto_pair *p = &l->pairs[i];
        mlt_err e;
        if (l->kind == MLT_PROTO_METRIC) {
            int64_t *next = step_slot(r, p->key);
            if (!next) {
                return "out of memory";
            }
            int64_t step = l->has_step ? l->step : *next;
            if (step >= *next && step < INT64_MAX) {
                *next = step + 1;
            }
            e = mlt_log_metric(r->run, p->key, p->number, step);
        } else if (l->kind == MLT_PROTO_PARAM) {
            e = mlt_log_param(r->run, p->key, p->value);
        } else {
            e = mlt_set_tag(r->run, p->key, p->value);
        }
        if (e != MLT_OK) {
            return mlt_last_error();
        }
    }
    return NULL;
}

void on_line(char *text, size_t len, bool too_long, uint64_t line_no, void *ud)
{
    reader *r = ud;
    if (too_long) {
        char why[64];
        snprintf(why, sizeof why, "a protocol line longer than %u bytes", MLT_PROTO_MAX_LINE);
        malformed(r, line_no, why);
        return;
    }
    char why[256];
    int rc = mlt_proto_parse(text, len, &r->line, why, sizeof why);
    if (rc < 0) {
        malformed(r, line_no, why);
    } else if (rc > 0) {
        const char *refused = log_line(r, &r->line);
        if (refused) {
            malformed(r, line_no, refused);
        }
    }
}

/* Copies all of buf to fd. false when fd is gone (EPIPE and the like). */
bool write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 100);
                continue;
            }
            return false;
        }
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

/* Copies the child's bytes to our stdout: unchanged, or (nested) with LOGGED_MARK before each
 * line that starts with the protocol prefix. false when our stdout is gone. */
bool pass_through(reader *r, const char *buf, size_t n)
{
    if (r->out_broken) {
        return false;
    }
    if (!r->mark) {
        return write_all(STDOUT_FILENO, buf, n);
    }
    static const char prefix[] = MLT_PROTO_PREFIX;
    const size_t plen = sizeof prefix - 1;
    mlt__buf_reset(&r->out);
    size_t i = 0;
    while (i < n) {
        if (r->bol) {
            while (i < n && r->held < plen && buf[i] == prefix[r->held]) {
                r->hold[r->held++] = buf[i++];
            }
            if (r->held < plen && i == n) {
                break; /* the rest of the prefix is in the next read */
            }
            if (r->held == plen) {
                mlt__buf_puts(&r->out, LOGGED_MARK);
            }
            mlt__buf_append(&r->out, r->hold, r->held);
            r->held = 0;
            r->bol = false;
        }
        const char *nl = memchr(buf + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - buf) + 1 : n;
        mlt__buf_append(&r->out, buf + i, end - i);
        i = end;
        r->bol = nl != NULL;
    }
    if (r->out.oom) {
        return false;
    }
    return write_all(STDOUT_FILENO, r->out.data ? r->out.data : "", r->out.len);
}

/* The end of the child's stdout: a line start held back goes out as it is. */
void pass_rest(reader *r)
{
    if (r->held && !r->out_broken) {
        write_all(STDOUT_FILENO, r->hold, r->held);
    }
    r->held = 0;
}

void free_reader(reader *r)
{
    mlt_proto_splitter_free(&r->split);
    mlt_proto_line_free(&r->line);
    mlt__buf_free(&r->out);
    for (size_t i = 0; i < r->n_steps; i++) {
        free(r->steps[i].key);
    }
    free(r->steps);
}
