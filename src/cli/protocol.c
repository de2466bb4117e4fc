/*
 * protocol.c - the `mltrack run` line protocol (see protocol.h): a streaming line splitter that
 * keeps only candidate lines, and an in-place parser of one line.
 */
#include "config.h"

#include "common.h"
#include "protocol.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX_LEN (sizeof MLT_PROTO_PREFIX - 1)

static int fail(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Unquotes the value starting at *p (a '"' there) in place; *p is left past the closing quote.
 * Returns the value, or NULL when the quote is not closed or an escape is unknown. */
static char *unquote(char **p, char *end)
{
    char *src = *p + 1;
    char *dst = src;
    char *value = src;
    while (src < end && *src != '"') {
        if (*src == '\\') {
            if (src + 1 >= end) {
                return NULL;
            }
            switch (src[1]) {
            case '"':
                *dst++ = '"';
                break;
            case '\\':
                *dst++ = '\\';
                break;
            case 'n':
                *dst++ = '\n';
                break;
            case 't':
                *dst++ = '\t';
                break;
            default:
                return NULL;
            }
            src += 2;
        } else {
            *dst++ = *src++;
        }
    }
    if (src >= end) {
        return NULL;
    }
    *dst = '\0';
    *p = src + 1;
    return value;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!*s) {
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    if (!*s || is_space(*s)) {
        return false;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || (errno == ERANGE && isinf(v))) {
        return false; /* 1e999 is not a number MLflow can keep */
    }
    if (strchr(s, 'x') || strchr(s, 'X')) {
        return false; /* no hexadecimal floats */
    }
    *out = v;
    return true;
}

static bool add_pair(mlt_proto_line *out, const char *key, const char *value, double number)
{
    if (MLT__GROW(out->pairs, out->cap_pairs, out->n_pairs + 1) != MLT_OK) {
        return false;
    }
    out->pairs[out->n_pairs++] = (mlt_proto_pair){key, value, number};
    return true;
}

int mlt_proto_parse(char *line, size_t len, mlt_proto_line *out, char *why, size_t why_len)
{
    if (len < PREFIX_LEN || memcmp(line, MLT_PROTO_PREFIX, PREFIX_LEN) != 0) {
        return 0;
    }
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    line[len] = '\0';
    if (memchr(line, '\0', len)) {
        return fail(why, why_len, "%s", "the line holds a NUL byte");
    }
    out->n_pairs = 0;
    out->has_step = false;
    out->step = 0;
    char *p = line + PREFIX_LEN;
    char *end = line + len;
    size_t verb_len = strcspn(p, " \t");
    static const struct {
        const char *word;
        mlt_proto_kind kind;
    } verbs[] = {{"metric", MLT_PROTO_METRIC}, {"param", MLT_PROTO_PARAM}, {"tag", MLT_PROTO_TAG}};
    size_t v = 0;
    while (v < 3 &&
           !(strlen(verbs[v].word) == verb_len && memcmp(p, verbs[v].word, verb_len) == 0)) {
        v++;
    }
    if (v == 3) {
        p[verb_len] = '\0';
        return fail(why, why_len, "unknown verb '%.40s' (metric, param or tag)", p);
    }
    out->kind = verbs[v].kind;
    p += verb_len;
    for (;;) {
        while (p < end && is_space(*p)) {
            p++;
        }
        if (p >= end) {
            break;
        }
        char *key = p;
        while (p < end && *p != '=' && !is_space(*p)) {
            if (*p == '"') {
                return fail(why, why_len, "%s", "a key cannot be quoted");
            }
            p++;
        }
        if (p >= end || *p != '=') {
            *p = '\0';
            return fail(why, why_len, "'%.80s' is not KEY=VALUE", key);
        }
        if (p == key) {
            return fail(why, why_len, "%s", "a pair has no key");
        }
        *p++ = '\0';
        char *value;
        if (p < end && *p == '"') {
            value = unquote(&p, end);
            if (!value) {
                return fail(why, why_len,
                            "the value of '%.80s' has an unclosed quote or an "
                            "unknown escape (\\\" \\\\ \\n \\t)",
                            key);
            }
            if (p < end && !is_space(*p)) {
                return fail(why, why_len, "the quoted value of '%.80s' is followed by text", key);
            }
        } else {
            value = p;
            while (p < end && !is_space(*p)) {
                p++;
            }
        }
        if (p < end) {
            *p++ = '\0';
        }
        double number = 0;
        if (out->kind == MLT_PROTO_METRIC) {
            if (strcmp(key, "step") == 0) {
                if (out->has_step) {
                    return fail(why, why_len, "%s", "step is given twice");
                }
                if (!parse_i64(value, &out->step)) {
                    return fail(why, why_len, "step '%.80s' is not an integer", value);
                }
                out->has_step = true;
                continue;
            }
            if (!parse_double(value, &number)) {
                return fail(why, why_len, "the value of '%.80s' is not a number", key);
            }
        }
        if (!add_pair(out, key, value, number)) {
            return fail(why, why_len, "%s", "out of memory");
        }
    }
    if (out->n_pairs == 0) {
        return fail(why, why_len, "%s", out->has_step ? "a step but no KEY=VALUE" : "no KEY=VALUE");
    }
    return 1;
}

void mlt_proto_line_free(mlt_proto_line *l)
{
    free(l->pairs);
    l->pairs = NULL;
    l->n_pairs = l->cap_pairs = 0;
}

/* ---- the splitter ---- */

static void end_line(mlt_proto_splitter *s, mlt_proto_line_fn fn, void *ud)
{
    if (!s->skipping && (s->len > 0 || s->too_long)) {
        if (s->len >= PREFIX_LEN || s->too_long) {
            fn(s->buf, s->len, s->too_long, s->line_no, ud);
        }
    }
    s->len = 0;
    s->skipping = false;
    s->too_long = false;
    s->line_no++;
}

/* Appends to the current candidate line (one more byte of room is kept for the parser's NUL). */
static void keep(mlt_proto_splitter *s, const char *data, size_t n)
{
    if (s->too_long) {
        return;
    }
    if (s->len + n > MLT_PROTO_MAX_LINE) {
        s->too_long = true;
        return;
    }
    if (MLT__GROW(s->buf, s->cap, s->len + n + 1) != MLT_OK) {
        s->too_long = true;
        return;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

void mlt_proto_feed(mlt_proto_splitter *s, const char *data, size_t n, mlt_proto_line_fn fn,
                    void *ud)
{
    if (s->line_no == 0) {
        s->line_no = 1;
    }
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t chunk = nl ? (size_t)(nl - data) : n;
        if (!s->skipping) {
            /* decide as soon as the prefix can be compared */
            size_t have = s->len;
            if (have < PREFIX_LEN && !s->too_long) {
                size_t cmp = chunk < PREFIX_LEN - have ? chunk : PREFIX_LEN - have;
                if (memcmp(data, &MLT_PROTO_PREFIX[have], cmp) != 0 ||
                    (nl && have + cmp < PREFIX_LEN)) {
                    s->skipping = true;
                }
            }
            if (!s->skipping) {
                keep(s, data, chunk);
            }
        }
        if (nl) {
            end_line(s, fn, ud);
            data += chunk + 1;
            n -= chunk + 1;
        } else {
            break;
        }
    }
}

void mlt_proto_finish(mlt_proto_splitter *s, mlt_proto_line_fn fn, void *ud)
{
    if (s->line_no == 0) {
        s->line_no = 1;
    }
    if (s->len > 0 || s->too_long) {
        end_line(s, fn, ud);
    }
}

void mlt_proto_splitter_free(mlt_proto_splitter *s)
{
    free(s->buf);
    memset(s, 0, sizeof *s);
}
