/*
 * record.c - encoding and decoding of journal record payloads (see record.h). Numbers are
 * little-endian and fixed-width; a string is a u32 length, its bytes and a NUL, so a decoded
 * record can point into the payload.
 */
#include "config.h"

#include "record.h"

#include <string.h>

static void put_u32(mlt__buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    mlt__buf_append(b, x, 4);
}

static void put_u64(mlt__buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(mlt__buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    put_u32(b, (uint32_t)n);
    mlt__buf_append(b, s ? s : "", n);
    mlt__buf_putc(b, '\0');
}

void mlt__rec_put_create(mlt__buf *b, uint32_t run_no, const char *run_key, const char *parent_key,
                         const char *run_name, const char *experiment_name,
                         const char *experiment_id, int64_t start_ms, const char *const *tag_keys,
                         const char *const *tag_values, size_t n_tags, uint32_t flags)
{
    if (n_tags > MLT__REC_MAX_TAGS) {
        b->oom = true; /* a caller bug: refuse rather than cut */
        return;
    }
    put_u32(b, run_no);
    put_str(b, run_key);
    put_str(b, parent_key);
    put_str(b, run_name);
    put_str(b, experiment_name);
    put_str(b, experiment_id);
    put_u64(b, (uint64_t)start_ms);
    put_u32(b, (uint32_t)n_tags);
    for (size_t i = 0; i < n_tags; i++) {
        put_str(b, tag_keys[i]);
        put_str(b, tag_values[i]);
    }
    if (flags) {
        put_u32(b, flags); /* absent when 0: the record reads as before */
    }
}

void mlt__rec_put_kv(mlt__buf *b, uint32_t run_no, const char *key, const char *value)
{
    put_u32(b, run_no);
    put_str(b, key);
    put_str(b, value);
}

void mlt__rec_put_metric(mlt__buf *b, uint32_t run_no, const char *key, double value,
                         int64_t timestamp_ms, int64_t step)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    put_u32(b, run_no);
    put_str(b, key);
    put_u64(b, bits);
    put_u64(b, (uint64_t)timestamp_ms);
    put_u64(b, (uint64_t)step);
}

void mlt__rec_put_attach(mlt__buf *b, uint32_t run_no, const char *run_key, const char *run_id,
                         const char *experiment_name, const char *experiment_id, int64_t time_ms)
{
    put_u32(b, run_no);
    put_str(b, run_key);
    put_str(b, run_id);
    put_str(b, experiment_name);
    put_str(b, experiment_id);
    put_u64(b, (uint64_t)time_ms);
}

void mlt__rec_put_end(mlt__buf *b, uint32_t run_no, int status, int64_t end_ms)
{
    put_u32(b, run_no);
    put_u32(b, (uint32_t)status);
    put_u64(b, (uint64_t)end_ms);
}

void mlt__rec_put_artifact(mlt__buf *b, uint32_t run_no, const char *path, uint64_t bytes,
                           const char *sha256_hex, int64_t time_ms)
{
    put_u32(b, run_no);
    put_str(b, path);
    put_u64(b, bytes);
    put_str(b, sha256_hex);
    put_u64(b, (uint64_t)time_ms);
}

/* ---- decoding ---- */

typedef struct reader {
    const unsigned char *p;
    size_t left;
    bool bad;
} reader;

static uint32_t get_u32(reader *r)
{
    if (r->left < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    r->left -= 4;
    return v;
}

static uint64_t get_u64(reader *r)
{
    uint64_t lo = get_u32(r);
    uint64_t hi = get_u32(r);
    return lo | hi << 32;
}

static const char *get_str(reader *r)
{
    uint32_t n = get_u32(r);
    if (r->bad || r->left < (size_t)n + 1 || r->p[n] != '\0' || memchr(r->p, '\0', n)) {
        r->bad = true;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n + 1;
    r->left -= (size_t)n + 1;
    return s;
}

void mlt__rec_clear(mlt__rec *r, mlt__rec_type type)
{
    uint64_t seq = r->seq, end_pos = r->end_pos;
    uint32_t size = r->size;
    memset(r, 0, sizeof *r);
    r->seq = seq;
    r->end_pos = end_pos;
    r->size = size;
    r->type = type;
}

mlt_err mlt__rec_decode(mlt__rec_type type, const void *payload, size_t len, mlt__rec *out)
{
    reader r = {payload, len, false};
    mlt__rec_clear(out, type);
    out->run_no = get_u32(&r);
    switch (type) {
    case MLT__REC_CREATE: {
        out->key = get_str(&r);
        out->parent_key = get_str(&r);
        out->run_name = get_str(&r);
        out->experiment_name = get_str(&r);
        out->experiment_id = get_str(&r);
        out->time_ms = (int64_t)get_u64(&r);
        uint32_t n = get_u32(&r);
        if (n > MLT__REC_MAX_TAGS) {
            return MLT_ERR_CORRUPT;
        }
        out->n_tags = n;
        for (uint32_t i = 0; i < n; i++) {
            out->tag_keys[i] = get_str(&r);
            out->tag_values[i] = get_str(&r);
        }
        /* flags came with mltrack 0.3, written only when not 0, known bits only */
        if (r.left == 4) {
            out->flags = get_u32(&r);
            r.bad = r.bad || out->flags == 0 || (out->flags & ~MLT__CREATE_RESUME);
        }
        break;
    }
    case MLT__REC_ATTACH:
        out->key = get_str(&r);
        out->run_id = get_str(&r);
        out->experiment_name = get_str(&r);
        out->experiment_id = get_str(&r);
        /* the time it was written came with mltrack 0.2; before, 0: unknown */
        out->time_ms = r.left == 8 ? (int64_t)get_u64(&r) : 0;
        break;
    case MLT__REC_PARAM:
    case MLT__REC_TAG:
        out->key = get_str(&r);
        out->value = get_str(&r);
        break;
    case MLT__REC_METRIC: {
        out->key = get_str(&r);
        uint64_t bits = get_u64(&r);
        memcpy(&out->num, &bits, sizeof bits);
        out->time_ms = (int64_t)get_u64(&r);
        out->step = (int64_t)get_u64(&r);
        break;
    }
    case MLT__REC_END:
        out->status = (int)get_u32(&r);
        out->time_ms = (int64_t)get_u64(&r);
        break;
    case MLT__REC_ARTIFACT:
        out->key = get_str(&r);
        out->bytes = get_u64(&r);
        out->value = get_str(&r);
        out->time_ms = (int64_t)get_u64(&r);
        if (!r.bad && strlen(out->value) != 64) {
            return MLT_ERR_CORRUPT;
        }
        break;
    default:
        return MLT_ERR_CORRUPT;
    }
    return r.bad || r.left != 0 ? MLT_ERR_CORRUPT : MLT_OK;
}
