/*
 * http.c - the libcurl transport: one easy handle (so one keep-alive connection) per transport,
 * used by one thread at a time; auth and TLS from the options; answers read into a capped buffer.
 */
#include "config.h"

#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

void mlt__http_response_init(mlt__http_response *r)
{
    memset(r, 0, sizeof *r);
    mlt__buf_init(&r->body);
    r->retry_after_s = -1;
}

void mlt__http_response_free(mlt__http_response *r)
{
    mlt__buf_free(&r->body);
}

double mlt__parse_retry_after(const char *v, int64_t now_ms)
{
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (isdigit((unsigned char)*v)) {
        char *end;
        double s = strtod(v, &end);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') {
            end++;
        }
        return *end ? -1 : s;
    }
    time_t t = curl_getdate(v, NULL);
    if (t < 0) {
        return -1;
    }
    double s = (double)t - (double)now_ms / 1000.0;
    return s < 0 ? 0 : s;
}

typedef struct curl_tr {
    CURL *h;
    /* the handle's open sockets (see quickack and curl_interrupt): changed by the requesting
     * thread under fds_mu, which curl_interrupt takes to shut them down from another thread */
    curl_socket_t fds[4];
    pthread_mutex_t fds_mu;
    atomic_bool *abort;
    struct curl_slist *headers;
    struct curl_slist *upload_headers; /* a PUT of a file's bytes */
    const mlt__http_upload *uploading; /* the upload in flight, for on_progress */
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
} curl_tr;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    mlt__http_response *r = ud;
    size_t len = size * n;
    if (r->body.len + len > MLT__HTTP_MAX_BODY) {
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    mlt__buf_append(&r->body, data, len);
    return r->body.oom ? 0 : len;
}

typedef struct head_ctx {
    mlt__http_response *resp;
    curl_tr *c;
} head_ctx;

static void quickack(curl_socket_t fd);
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow);

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    head_ctx *ctx = ud;
    mlt__http_response *r = ctx->resp;
    size_t len = size * n;
    if (len == 2 && data[0] == '\r' && data[1] == '\n') {
        /* the head is in: acknowledge it now (see quickack); the handle's other sockets are
         * idle, where the option does nothing */
        for (size_t i = 0; i < sizeof ctx->c->fds / sizeof ctx->c->fds[0]; i++) {
            quickack(ctx->c->fds[i]);
        }
        return len;
    }
    static const char etag[] = "etag:";
    if (len > sizeof etag - 1 && strncasecmp(data, etag, sizeof etag - 1) == 0) {
        const char *v = data + sizeof etag - 1, *e = data + len;
        while (v < e && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) {
            e--;
        }
        if ((size_t)(e - v) < sizeof r->etag) {
            memcpy(r->etag, v, (size_t)(e - v));
            r->etag[e - v] = '\0';
        }
        return len;
    }
    static const char name[] = "retry-after:";
    if (len > sizeof name - 1 && len < 256 && strncasecmp(data, name, sizeof name - 1) == 0) {
        char v[256];
        memcpy(v, data + sizeof name - 1, len - (sizeof name - 1));
        v[len - (sizeof name - 1)] = '\0';
        r->retry_after_s = mlt__parse_retry_after(v, mlt__now_ms());
    }
    return len;
}

static MLT__MUST_USE mlt_err curl_err_class(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return MLT_ERR_TIMEOUT;
    case CURLE_ABORTED_BY_CALLBACK:
        return MLT_ERR_TIMEOUT; /* stopped at a deadline */
    case CURLE_OUT_OF_MEMORY:
        return MLT_ERR_NOMEM;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
        return MLT_ERR_TLS;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return MLT_ERR_BAD_OPTION;
    default:
        return MLT_ERR_NETWORK;
    }
}

/*
 * Servers that write an answer's head and body in two sends without TCP_NODELAY (uvicorn, the
 * MLflow server's) hold the body until the head is acknowledged, and a kept-alive connection
 * delays its acknowledgements by up to 40 ms: every request would wait that long. Setting
 * TCP_QUICKACK sends a pending acknowledgement at once: done when the head has been read.
 */
static void quickack(curl_socket_t fd)
{
#ifdef TCP_QUICKACK
    if (fd != CURL_SOCKET_BAD) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
#else
    (void)fd;
#endif
}

/* The handle's sockets are made and closed here, so that quickack can reach them. */
/* The warning that certificate verification is off is given once a process. */
static atomic_flag insecure_said = ATOMIC_FLAG_INIT;

static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    curl_tr *c = ud;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    pthread_mutex_lock(&c->fds_mu);
    for (size_t i = 0; fd != CURL_SOCKET_BAD && i < sizeof c->fds / sizeof c->fds[0]; i++) {
        if (c->fds[i] == CURL_SOCKET_BAD) {
            c->fds[i] = fd;
            break;
        }
    }
    pthread_mutex_unlock(&c->fds_mu);
    return fd;
}

static int close_socket(void *ud, curl_socket_t fd)
{
    curl_tr *c = ud;
    /* closed under the lock: curl_interrupt never shuts down a number reused meanwhile */
    pthread_mutex_lock(&c->fds_mu);
    for (size_t i = 0; i < sizeof c->fds / sizeof c->fds[0]; i++) {
        if (c->fds[i] == fd) {
            c->fds[i] = CURL_SOCKET_BAD;
        }
    }
    int rc = close(fd);
    pthread_mutex_unlock(&c->fds_mu);
    return rc;
}

/* Another thread: a request in flight ends now, rather than at the progress callback's next
 * look at the abort flag (once a second while the connection is idle). */
static void curl_interrupt(void *self)
{
    curl_tr *c = self;
    pthread_mutex_lock(&c->fds_mu);
    for (size_t i = 0; i < sizeof c->fds / sizeof c->fds[0]; i++) {
        if (c->fds[i] != CURL_SOCKET_BAD) {
            shutdown(c->fds[i], SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&c->fds_mu);
}

/* The upload buffer: larger than libcurl's 64 KiB default, fewer reads and sends per file. */
#define UPLOAD_BUFFER (1L << 20)

/* An upload's body, read at the stream's position (pread: the descriptor's offset is not
 * used, so a rewind is only a new position). */
typedef struct upload_pos {
    const mlt__http_upload *up;
    uint64_t at;
    int err; /* errno of a failed read */
} upload_pos;

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    upload_pos *p = ud;
    size_t want = size * n;
    if (p->at >= p->up->len) {
        return 0;
    }
    if (want > p->up->len - p->at) {
        want = (size_t)(p->up->len - p->at);
    }
    for (;;) {
        ssize_t got = pread(p->up->fd, buf, want, (off_t)(p->up->off + p->at));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            p->err = got < 0 ? errno : EIO; /* a file shorter than its length: torn */
            return CURL_READFUNC_ABORT;
        }
        p->at += (uint64_t)got;
        return (size_t)got;
    }
}

static int on_seek(void *ud, curl_off_t offset, int origin)
{
    upload_pos *p = ud;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > p->up->len) {
        return CURL_SEEKFUNC_CANTSEEK;
    }
    p->at = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* A copy of the lines of base followed by lines (NULL-terminated); NULL when out of memory. */
static struct curl_slist *slist_join(const struct curl_slist *base, const char *const *lines)
{
    struct curl_slist *all = NULL;
    for (; base; base = base->next) {
        struct curl_slist *x = curl_slist_append(all, base->data);
        if (!x) {
            curl_slist_free_all(all);
            return NULL;
        }
        all = x;
    }
    for (size_t i = 0; lines[i]; i++) {
        struct curl_slist *x = curl_slist_append(all, lines[i]);
        if (!x) {
            curl_slist_free_all(all);
            return NULL;
        }
        all = x;
    }
    return all;
}

static void curl_perform(void *self, const mlt__http_request *req, mlt__http_response *resp)
{
    curl_tr *c = self;
    CURL *h = c->h;
    c->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    head_ctx hc = {resp, c};
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hc);
    upload_pos up = {req->upload, 0, 0};
    /* the request's own headers, after the transport's */
    struct curl_slist *extra = NULL;
    if (req->headers) {
        extra = slist_join(req->upload ? c->upload_headers : c->headers, req->headers);
        if (!extra) {
            resp->net_err = MLT_ERR_NOMEM;
            snprintf(resp->errmsg, sizeof resp->errmsg, "out of memory");
            return;
        }
    }
    if (req->upload) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &up);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &up);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->upload->len);
        curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER);
        c->uploading = req->upload;
        if (req->upload->sent) { /* on_progress tells it */
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, extra ? extra : c->upload_headers);
        /* a large file takes longer: the timeout plus a second a MB, for the body and for the
         * server to store it before it answers (an S3 destination does that at the end) */
        double ms = (double)c->timeout_ms + (double)req->upload->len / 1000.0;
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms < (double)LONG_MAX ? (long)ms : LONG_MAX);
    } else if (strcmp(req->method, "POST") == 0) {
        if (extra) {
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, extra);
        }
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else {
        if (extra) {
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, extra);
        }
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    /* libcurl silently sends a request again when a reused connection turns out dead; for a
     * request that is not idempotent that would be a second run, so it gets a fresh one. An
     * upload gets one too: libcurl 7.88 sends such a second try's head but never its body (it
     * waits for a rewind that does not come), so a dead connection is left to our own retry,
     * which starts the body again. */
    curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, req->not_idempotent || req->upload ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, req->not_idempotent ? 1L : 0L);
    CURLcode rc = curl_easy_perform(h);
    if (req->upload) {
        /* back to what every other request expects */
        curl_easy_setopt(h, CURLOPT_UPLOAD, 0L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, NULL);
        curl_easy_setopt(h, CURLOPT_READDATA, NULL);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, NULL);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, NULL);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, c->abort ? 0L : 1L);
        c->uploading = NULL;
    }
    if (extra) {
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
        curl_slist_free_all(extra);
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK && up.err) {
        resp->net_err = MLT_ERR_IO;
        snprintf(resp->errmsg, sizeof resp->errmsg, "cannot read the file to upload: %s",
                 strerror(up.err));
        resp->maybe_sent = true;
        return;
    }
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
        return;
    }
    if (rc == CURLE_WRITE_ERROR && resp->body.len + 1 > MLT__HTTP_MAX_BODY / 2) {
        resp->net_err = MLT_ERR_PROTOCOL;
        char url[200];
        mlt__redact_url(req->url, url, sizeof url);
        snprintf(resp->errmsg, sizeof resp->errmsg, "answer from %s larger than %u bytes", url,
                 MLT__HTTP_MAX_BODY);
        resp->maybe_sent = true;
        return;
    }
    resp->net_err = curl_err_class(rc);
    /* Nothing reached the server only if the connection never came up; anything else may
     * have (a cut after sending, a timeout while the server works). */
    resp->maybe_sent = rc != CURLE_COULDNT_CONNECT && rc != CURLE_COULDNT_RESOLVE_HOST &&
                       rc != CURLE_COULDNT_RESOLVE_PROXY;
    /* A long URL may cut the message: that only shortens what the user reads. */
    char url[200];
    mlt__redact_url(req->url, url, sizeof url);
    int w = snprintf(resp->errmsg, sizeof resp->errmsg, "%s %s: %s", req->method, url,
                     c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
    size_t n = w < 0 ? 0 : strlen(resp->errmsg);
    if (n && resp->errmsg[n - 1] == '\n') {
        resp->errmsg[n - 1] = '\0';
    }
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const curl_tr *c = ud;
    if (c->uploading && c->uploading->sent && ulnow > 0) {
        c->uploading->sent(c->uploading->sent_ud, (uint64_t)ulnow);
    }
    return c->abort && atomic_load(c->abort) ? 1 : 0;
}

static void curl_set_abort(void *self, atomic_bool *flag)
{
    curl_tr *c = self;
    c->abort = flag;
    curl_easy_setopt(c->h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c->h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(c->h, CURLOPT_NOPROGRESS, flag ? 0L : 1L);
}

static void curl_destroy(void *self)
{
    curl_tr *c = self;
    if (c) {
        curl_easy_cleanup(c->h);
        curl_slist_free_all(c->headers);
        curl_slist_free_all(c->upload_headers);
        pthread_mutex_destroy(&c->fds_mu);
        free(c);
    }
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A transport's handle with what every request shares: headers (json for the REST calls, upload
 * for a file's bytes), timeouts, the socket hooks, http(s) only, no redirects. */
static MLT__MUST_USE mlt_err curl_base_new(curl_tr **out, double timeout_s, const char *const *json,
                                           const char *const *upload)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        return mlt__fail(MLT_ERR_NETWORK, "libcurl failed to initialize: %s",
                         curl_easy_strerror(global_rc));
    }
    curl_tr *c = calloc(1, sizeof *c);
    for (size_t i = 0; c && i < sizeof c->fds / sizeof c->fds[0]; i++) {
        c->fds[i] = CURL_SOCKET_BAD;
    }
    if (!c || !(c->h = curl_easy_init())) {
        free(c);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&c->fds_mu, NULL);
    c->headers = slist_join(NULL, json);
    c->upload_headers = slist_join(NULL, upload);
    if (!c->headers || !c->upload_headers) {
        curl_destroy(c);
        return mlt__fail(MLT_ERR_NOMEM, "out of memory");
    }
    CURL *h = c->h;
    long timeout_ms = (long)(timeout_s * 1000.0);
    c->timeout_ms = timeout_ms;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "mltrack/" MLT_VERSION_STRING);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 30000 ? timeout_ms : 30000L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, c);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    *out = c;
    return MLT_OK;
}

static void curl_vtable(mlt__transport *out, curl_tr *c)
{
    out->perform = curl_perform;
    out->destroy = curl_destroy;
    out->set_abort = curl_set_abort;
    out->interrupt = curl_interrupt;
    out->self = c;
}

mlt_err mlt__transport_curl_new(mlt__transport *out, const mlt_options *o)
{
    static const char *const json[] = {"Content-Type: application/json", "Accept: application/json",
                                       "Expect:", NULL};
    static const char *const upload[] = {"Content-Type: application/octet-stream",
                                         "Accept: application/json", "Expect:", NULL};
    curl_tr *c;
    mlt_err err = curl_base_new(&c, o->timeout_s, json, upload);
    if (err != MLT_OK) {
        return err;
    }
    CURL *h = c->h;
    const char *user = mlt__opt_str(o, MLT__OPT_USERNAME);
    const char *pass = mlt__opt_str(o, MLT__OPT_PASSWORD);
    const char *token = mlt__opt_str(o, MLT__OPT_TOKEN);
    if (user && pass) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, pass);
    } else if (token) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, token);
    }
    if (o->insecure_tls) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        const char *uri = mlt__opt_str(o, MLT__OPT_TRACKING_URI);
        if (uri && strncmp(uri, "https:", 6) == 0 && !atomic_flag_test_and_set(&insecure_said)) {
            mlt__log(&o->logger, MLT_LOG_WARN,
                     "TLS certificate verification is off (insecure_tls, "
                     "MLFLOW_TRACKING_INSECURE_TLS): the tracking server is not authenticated");
        }
    }
    const char *ca = mlt__opt_str(o, MLT__OPT_CA_CERT_PATH);
    if (ca) {
        curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    }
    const char *cert = mlt__opt_str(o, MLT__OPT_CLIENT_CERT_PATH);
    if (cert) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, cert);
    }
    curl_vtable(out, c);
    return MLT_OK;
}

mlt_err mlt__transport_presigned_new(mlt__transport *out, double timeout_s)
{
    /* the store's own headers come with each part (the server's answer says which) */
    static const char *const none[] = {"Expect:", NULL};
    curl_tr *c;
    mlt_err err = curl_base_new(&c, timeout_s, none, none);
    if (err == MLT_OK) {
        curl_vtable(out, c);
    }
    return err;
}
