/*
 * http.h - the transport: one HTTP request at a time over a keep-alive connection. A vtable, so
 * tests can put a scripted transport in place of libcurl.
 */
#ifndef MLT_HTTP_H
#define MLT_HTTP_H

#include "common.h"
#include "options.h"
#include "url.h"

#include <stdatomic.h>

/* A PUT's body, streamed from a file: bytes [off, off + len) of fd, read with pread (a retry,
 * or a redirect of the stream, reads them again from the start). */
typedef struct mlt__http_upload {
    int fd;
    uint64_t len;
    uint64_t off; /* where the body starts in the file (a part of a multipart upload) */
    /* optional: told how many bytes of the body went out so far, as they go */
    void (*sent)(void *ud, uint64_t bytes);
    void *sent_ud;
} mlt__http_upload;

typedef struct mlt__http_request {
    const char *method; /* "GET", "POST" or "PUT" */
    const char *url;    /* absolute */
    const char *body;   /* POST body (JSON), NULL for GET */
    size_t body_len;
    const mlt__http_upload *upload; /* PUT: the body (application/octet-stream); NULL else */
    bool not_idempotent;            /* sending it twice has an effect (runs/create): never resent */
    const char *const *headers;     /* NULL or NULL-terminated "Name: value" lines, added */
} mlt__http_request;

typedef struct mlt__http_response {
    long status;          /* HTTP status, 0 when no answer came */
    mlt__buf body;        /* the answer's body, NUL-terminated */
    double retry_after_s; /* Retry-After in seconds, < 0 when absent */
    mlt_err net_err;      /* MLT_OK when an answer came, else NETWORK, TIMEOUT, TLS, NOMEM... */
    bool maybe_sent;      /* the request may have reached the server although no answer came */
    char errmsg[256];     /* what failed, when net_err is set */
    char etag[256];       /* the ETag header, quotes kept ("" when absent or longer) */
} mlt__http_response;

void mlt__http_response_init(mlt__http_response *r);
void mlt__http_response_free(mlt__http_response *r);

typedef struct mlt__transport {
    /* Performs one request and fills resp (initialized by the caller). Called by one thread at
     * a time: the transport is not shared across threads concurrently. */
    void (*perform)(void *self, const mlt__http_request *req, mlt__http_response *resp);
    /* Releases self. */
    void (*destroy)(void *self);
    /* Optional: abort a request in flight once *flag is set. */
    void (*set_abort)(void *self, atomic_bool *flag);
    /* Optional: called on another thread once the abort flag is set, makes a request in flight
     * end at once (its connection is shut down). */
    void (*interrupt)(void *self);
    void *self;
} mlt__transport;

/* The libcurl transport for opts: timeouts, TLS verification (insecure_tls, ca_cert_path,
 * client_cert_path), bearer token or basic auth (basic wins), keep-alive. */
MLT__MUST_USE mlt_err mlt__transport_curl_new(mlt__transport *out, const mlt_options *opts);

/* A transport for presigned URLs (the parts of a multipart upload, straight to the artifact
 * store): the URL carries its own credentials, so no tracking-server auth, CA or client
 * certificate goes with it; the system's CAs verify the store. timeout_s as the option. */
MLT__MUST_USE mlt_err mlt__transport_presigned_new(mlt__transport *out, double timeout_s);

/* Largest answer body accepted before the request fails with MLT_ERR_PROTOCOL. */
#define MLT__HTTP_MAX_BODY (64u << 20)

/* Parses a Retry-After value (delta seconds or HTTP date); < 0 when invalid. */
double mlt__parse_retry_after(const char *value, int64_t now_ms);

#endif
