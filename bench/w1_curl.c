/*
 * w1_curl.c - benchmark W1's ceiling: what the server takes at most. Pre-serializes the
 * runs/log-batch bodies of 1000 metrics each (the server's limit per request) for an existing
 * run, then POSTs them in a loop through one keep-alive libcurl handle; only the loop is timed.
 *
 *   w1_curl --uri URI --run-id ID [--steps 1000] [--keys 100]
 *
 * Same points as w1_mltrack (keys metric_000.., value s * 0.001 + k, printed with %.17g so that
 * they round-trip), timestamps fixed (1700000000000 + step). Prints one JSON line: variant,
 * points, requests, seconds, body_bytes.
 */
#include "bench_util.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define BATCH 1000
#define TS_BASE INT64_C(1700000000000)

typedef struct buf {
    char *data;
    size_t len, cap;
} buf;

__attribute__((format(printf, 2, 3))) static void buf_add(buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data != NULL ? b->data + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            bench_die("vsnprintf failed");
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            bench_die("out of memory");
        }
        b->data = d;
        b->cap = cap;
    }
}

/* The one connection's socket, and the same quick acknowledgement of an answer's head as the
 * library's (src/http.c, quickack): without it every request of a kept-alive connection to
 * uvicorn waits 40 ms for the body, and the ceiling would be the ACK timer's, not the server's. */
static curl_socket_t conn_fd = CURL_SOCKET_BAD;

static int on_socket(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    (void)ud;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        conn_fd = fd;
    }
    return CURL_SOCKOPT_OK;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    (void)ud;
    if (size * nmemb == 2 && data[0] == '\r' && data[1] == '\n' && conn_fd != CURL_SOCKET_BAD) {
        int one = 1;
        setsockopt(conn_fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    return size * nmemb;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

int main(int argc, char **argv)
{
    const char *uri = NULL, *run_id = NULL;
    long long steps = 1000;
    int nkeys = 100;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--uri") == 0) {
            uri = bench_optarg(argc, argv, &i);
        } else if (strcmp(argv[i], "--run-id") == 0) {
            run_id = bench_optarg(argc, argv, &i);
        } else if (strcmp(argv[i], "--steps") == 0) {
            steps = bench_arg_ll("--steps", bench_optarg(argc, argv, &i));
        } else if (strcmp(argv[i], "--keys") == 0) {
            nkeys = (int)bench_arg_ll("--keys", bench_optarg(argc, argv, &i));
        } else {
            fprintf(stderr, "w1_curl: unknown argument %s\n", argv[i]);
            return BENCH_EXIT_USAGE;
        }
    }
    if (uri == NULL || run_id == NULL || nkeys < 1 || nkeys > 1000) {
        fprintf(stderr, "usage: w1_curl --uri URI --run-id ID [--steps N] [--keys 1-1000]\n");
        return BENCH_EXIT_USAGE;
    }

    long long points = steps * nkeys;
    size_t nbodies = (size_t)((points + BATCH - 1) / BATCH);
    buf *bodies = calloc(nbodies > 0 ? nbodies : 1, sizeof *bodies);
    if (bodies == NULL) {
        bench_die("out of memory");
    }
    size_t total_bytes = 0;
    for (long long p = 0; p < points; p++) {
        buf *b = &bodies[p / BATCH];
        int64_t s = p / nkeys;
        int k = (int)(p % nkeys);
        if (p % BATCH == 0) {
            buf_add(b, "{\"run_id\":\"%s\",\"metrics\":[", run_id);
        } else {
            buf_add(b, ",");
        }
        buf_add(b, "{\"key\":\"metric_%03d\",\"value\":%.17g,\"timestamp\":%" PRId64
                   ",\"step\":%" PRId64 "}",
                k, bench_value(s, k), TS_BASE + s, s);
        if (p % BATCH == BATCH - 1 || p == points - 1) {
            buf_add(b, "]}");
            total_bytes += b->len;
        }
    }

    char url[1024];
    snprintf(url, sizeof url, "%s/api/2.0/mlflow/runs/log-batch", uri);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (h == NULL || hdrs == NULL) {
        bench_die("curl setup failed");
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_socket);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);

    double t0 = bench_now();
    for (size_t i = 0; i < nbodies; i++) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, bodies[i].data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodies[i].len);
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200) {
            bench_die("POST %s: %s, HTTP %ld", url, curl_easy_strerror(rc), status);
        }
    }
    double t1 = bench_now();

    printf("{\"variant\":\"curl-ceiling\",\"points\":%lld,\"requests\":%zu,\"seconds\":%.6f,"
           "\"body_bytes\":%zu,\"run_id\":\"%s\"}\n",
           points, nbodies, t1 - t0, total_bytes, run_id);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    for (size_t i = 0; i < nbodies; i++) {
        free(bodies[i].data);
    }
    free(bodies);
    return 0;
}
