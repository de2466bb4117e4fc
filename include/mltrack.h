/*
 * mltrack.h - experiment tracking for C programs, speaking the MLflow tracking REST API.
 *
 * A program wraps a function or a block as a *run*; the run's params, metrics, tags and outcome go
 * to every callback registered on the tracker: the built-in print, JSON lines and MLflow callbacks,
 * or the program's own. Three styles:
 *
 *   decorator   mlt_track() runs a function as a run; MLT_TRACKED() defines a tracked function
 *               whose arguments are logged as params by name.
 *   scope       MLT_WITH_RUN(tracker, run, "name") { ... } always ends the run, however the
 *               block is left by its end or `break`; MLT_SCOPED_RUN() also covers `return`/`goto`.
 *   callbacks   mlt_callbacks, a versioned struct of hooks; several may be registered on a tracker.
 *
 * Conventions
 *   - Fallible functions return mlt_err: MLT_OK (0) or a negative code.
 *   - Outputs come first, before every input: a pointer the function sets (named `out`, and
 *     `*out` is set only on success; mlt_track()'s fn_result is the one exception, see there),
 *     or a buffer it fills (`out` followed by its size `outlen`). errbuf/errlen (below), which
 *     only describe a failure, come last.
 *   - A public struct that the caller fills for the library (mlt_callbacks) or the library fills
 *     for the caller (mlt_queue_stats) starts with a version, set by the caller with the
 *     struct's macro (MLT_CALLBACKS_VERSION, MLT_QUEUE_STATS_INIT). Any version v with
 *     0 < v <= the library's is accepted, and only the fields version v had are read or written;
 *     version 0 and newer versions are refused with MLT_ERR_INVALID_ARG.
 *   - Strings passed in are borrowed for the duration of the call and copied if kept.
 *   - Every failing call leaves a message in a thread-local buffer read with mlt_last_error().
 *     Where a function also takes `errbuf`/`errlen`, the message is copied there (NUL-terminated,
 *     cut to fit between two UTF-8 characters); both may be NULL/0.
 *   - The library never writes to stdout or stderr by itself and never calls exit() or abort().
 *
 * Threads
 *   An mlt_options is used by one thread at a time. A tracker and its runs may be used from any
 *   thread, and several threads may log to one run (callbacks then see their calls concurrently).
 *   mlt_run_end() must not race with other calls on the same run, and mlt_tracker_close() must
 *   not race with any other call on the tracker or its runs.
 */
#ifndef MLTRACK_H
#define MLTRACK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The package version (configure.ac's AC_INIT, mltrack.pc): NEWS says what changed in each. */
#define MLT_VERSION_STRING "0.3.0"
#define MLT_VERSION_MAJOR 0
#define MLT_VERSION_MINOR 3
#define MLT_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------- */
/* Errors */

/** Error codes. MLT_OK is 0; every failure is negative. mlt_strerror() gives the text. */
typedef enum mlt_err {
    MLT_OK = 0,
    MLT_ERR_INVALID_ARG = -1,    /**< NULL where a value is required, or an out-of-range number. */
    MLT_ERR_NOMEM = -2,          /**< An allocation failed. */
    MLT_ERR_UNKNOWN_OPTION = -3, /**< mlt_options_set() was given a name it does not know. */
    MLT_ERR_BAD_OPTION = -4,     /**< An option's value is malformed (bad URL, number, word). */
    MLT_ERR_INVALID_KEY = -5,    /**< A metric, param or tag key breaks the server's key rules. */
    MLT_ERR_VALUE_TOO_LONG = -6, /**< A value or name is longer than the server accepts. */
    MLT_ERR_INVALID_VALUE = -7,  /**< A value is not valid UTF-8 or a timestamp is negative. */
    MLT_ERR_PARAM_CONFLICT = -8, /**< A param was already logged on this run with another value. */
    MLT_ERR_STATE = -9,          /**< Call out of order (callbacks added after a run began). */
    MLT_ERR_IO = -10,            /**< A file could not be opened, written or flushed. */
    MLT_ERR_NETWORK = -11,       /**< Server unreachable (refused, reset, DNS); retriable. */
    MLT_ERR_TIMEOUT = -12,       /**< The server did not answer in time; retriable. */
    MLT_ERR_SERVER = -13,        /**< The server failed (HTTP 5xx); retriable. */
    MLT_ERR_RATE_LIMITED = -14,  /**< The server asked to slow down (HTTP 429); retriable. */
    MLT_ERR_REJECTED = -15,      /**< The server refused the request for good (HTTP 400). */
    MLT_ERR_NOT_FOUND = -16,     /**< The server has no such run or experiment (HTTP 404). */
    MLT_ERR_AUTH = -17,          /**< The server refused the credentials (HTTP 401/403):
                                      permanent; queued records it refuses become dead letters. */
    MLT_ERR_PROTOCOL = -18,      /**< The server's answer could not be understood. */
    MLT_ERR_TLS = -19,           /**< TLS failed: certificate not trusted, handshake failed. */
    MLT_ERR_CALLBACK = -20,      /**< A user callback reported a failure. */
    MLT_ERR_QUEUE_FULL = -21,    /**< The durable queue is at its size cap (policy "fail"). */
    MLT_ERR_CORRUPT = -22,       /**< A journal file is damaged (its bad tail was cut). */
    MLT_ERR_LOCKED = -23,        /**< The journal or queue belongs to a live process. */
    MLT_ERR_QUEUED = -24,        /**< Not a failure of the data: what was logged is safe in the
                                      durable queue on disk, not delivered yet (the server
                                      cannot be reached, refuses TLS, or does not have the run
                                      the records are for yet). The next tracker on the queue
                                      or `mltrack sync` delivers it; retriable. */
} mlt_err;

/** Human-readable text for an error code. Never NULL; unknown codes give "unknown error". */
const char *mlt_strerror(mlt_err err);

/** The enum name of an error code ("MLT_ERR_NETWORK"). Never NULL. */
const char *mlt_err_name(mlt_err err);

/** 1 when an operation failing with err may succeed if tried again later, else 0. */
int mlt_err_is_retriable(mlt_err err);

/**
 * The message of the last failure of a call on this thread (run and log calls, mlt_track, the
 * scope macros, and the calls that also copy it into an errbuf). Thread-local: only the calling
 * thread's last failure. Never NULL; "" when nothing failed yet. Valid until the thread's next
 * mlt_ call.
 */
const char *mlt_last_error(void);

/* ---------------------------------------------------------------------------------------------- */
/* Options */

typedef struct mlt_options mlt_options;

/**
 * Diagnostic messages of the library (retries, server errors met on the way). Called on the
 * thread that made the failing call; no internal lock is held. level is one of MLT_LOG_*.
 */
typedef void (*mlt_log_fn)(int level, const char *message, void *userdata);
#define MLT_LOG_DEBUG 0
#define MLT_LOG_INFO 1
#define MLT_LOG_WARN 2
#define MLT_LOG_ERROR 3

/** A new options object with every option at its default. Free it with mlt_options_free().
 *  Returns NULL when out of memory. */
mlt_options *mlt_options_new(void);

/** Frees an options object. NULL does nothing. A tracker keeps its own copy, so the options may
 *  be freed once mlt_tracker_new() returns. */
void mlt_options_free(mlt_options *opts);

/**
 * Sets an option by name from its text form, as the CLI and configuration files do.
 *
 * Names (and their typed setters below):
 *   tracking_uri        http(s)://host[:port][/path] of the MLflow server (any path is kept).
 *   experiment_name     experiment to log into; created if missing. Up to 256 characters.
 *   experiment_id       experiment id (1 to 64 letters, digits, '_' or '-'), used when
 *                       experiment_name is unset; when both are set
 *                       they must name the same experiment (as the Python client checks).
 *                       Neither set: MLflow's Default experiment (id 0).
 *   token               bearer token (Authorization: Bearer).
 *   username, password  basic auth; wins over the token when both are set.
 *   insecure_tls        "true"/"false": skip TLS certificate verification (default false).
 *   ca_cert_path        CA bundle (PEM) to verify the server with.
 *   client_cert_path    client certificate (PEM, may hold the key) for mutual TLS.
 *   max_retries         retries after the first attempt of a retriable failure (default 7).
 *   backoff_factor      seconds; the n-th retry waits up to factor * 2^(n-1) s (default 2).
 *   backoff_jitter      seconds of random delay added to each wait (default 1).
 *   timeout             seconds per HTTP request (default 120).
 *   queue_dir           the durable queue's directory (MLTRACK_QUEUE_DIR; default
 *                       $XDG_STATE_HOME/mltrack/queue or ~/.local/state/mltrack/queue).
 *   fsync               none, interval (default) or always: when journal appends reach the disk.
 *   fsync_interval_ms   group commit period of fsync=interval (default 100).
 *   queue_max_bytes     cap of undelivered journal bytes, artifact snapshots included
 *                       (default 17179869184, 16 GiB).
 *   queue_segment_bytes size of the journal's segment files (default 67108864, 64 MiB; 65536 to
 *                       4294967296; MLTRACK_QUEUE_SEGMENT_BYTES). A segment is deleted once all
 *                       it holds is acknowledged, so a delivered journal keeps about one segment
 *                       on disk, plus its 2.5 MiB ring.
 *   queue_full          block (default) or fail: what a log call does at the cap. (A point
 *                       that finds the ring full, its writer behind, waits for it at least 1 s
 *                       either way; with fail, not when the writer cannot write: disk full.)
 *   queue_block_ms      how long "block" waits before failing with MLT_ERR_QUEUE_FULL (1000).
 *   linger_ms           MLTRACK_LINGER_MS: how long the sender lets new records gather before
 *                       it sends, so that log batches fill (20; 0 sends at once; a flush never
 *                       waits for it).
 *   run_id              MLFLOW_RUN_ID: the server id of an existing run. Every top-level run
 *                       the tracker starts then logs into that run instead of creating one (as
 *                       the Python client resumes it); see mlt_run_start().
 *   run_key             MLTRACK_RUN_KEY: the client run key of a run another process started
 *                       (`mltrack run` exports it); like run_id, and usable before the run
 *                       exists on the server: the sender finds it by its key once it is there.
 *                       Letters, digits, '_' or '-': up to 64 for run_id, 36 for run_key.
 *   resume              MLTRACK_RESUME, "never" (default) or "allow": with run_key (and no
 *                       run_id), the top-level run is the key's own: the first start creates
 *                       it, a later start (a job requeued, restarted) makes it RUNNING again,
 *                       after the earlier attempts' journals in the queue are delivered and
 *                       their runs ended; it ends as this start ends it. See
 *                       mlt_run_last_step(). mlt_run_start() fails with MLT_ERR_BAD_OPTION for
 *                       "allow" without run_key or run_id.
 *   lease_ms            MLTRACK_LEASE_MS: the delivery lease of a journal (default 10000; 1000
 *                       to 600000). One party at a time delivers a journal: its writer while it
 *                       reaches the server, else a relay (`mltrack sync --follow` on a host that
 *                       does, with the queue on a shared file system: docs/hpc.md). The holder
 *                       renews the lease every lease_ms / 5; another takes it over when it was
 *                       given up, or left unchanged for lease_ms (its holder died or hangs).
 *                       Set it alike for the writers and the relays of one queue.
 *   system_metrics      MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, "true"/"false" (default false):
 *                       log the machine's CPU and memory use into every top-level run under
 *                       MLflow's names (system/cpu_utilization_percentage,
 *                       system/system_memory_usage_megabytes,
 *                       system/system_memory_usage_percentage), steps 0, 1, 2, ...
 *   system_metrics_interval  MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL: seconds between two
 *                       samples (default 10, above 0).
 *   multipart_upload    MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD, "true"/"false": whether an artifact
 *                       of multipart_min_bytes or more goes as a multipart upload (create, parts
 *                       PUT in parallel to the presigned URLs of the server's artifact store,
 *                       complete). Unset (the default): as the server's
 *                       /api/3.0/mlflow/server-info says (true when its destination is S3, GCS
 *                       or Azure). A store that cannot (501) gets one PUT.
 *   multipart_min_bytes MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE (default 524288000, 500 MiB).
 *   multipart_chunk_bytes  MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE: bytes a part (default 10485760,
 *                       10 MiB; 1 MiB to 5 GiB; larger when the file would need more than
 *                       10,000 parts).
 *
 * Returns MLT_OK, MLT_ERR_UNKNOWN_OPTION, MLT_ERR_BAD_OPTION, MLT_ERR_VALUE_TOO_LONG or
 * MLT_ERR_NOMEM, with a message in errbuf. On failure the option keeps its previous value.
 */
mlt_err mlt_options_set(mlt_options *opts, const char *name, const char *value, char *errbuf,
                        size_t errlen);

/**
 * Reads the official MLflow client's environment variables into opts: MLFLOW_TRACKING_URI,
 * MLFLOW_EXPERIMENT_NAME, MLFLOW_EXPERIMENT_ID, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME,
 * MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH,
 * MLFLOW_TRACKING_CLIENT_CERT_PATH, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
 * MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
 * MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_RUN_ID, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING,
 * MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD,
 * MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE, MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE, and mltrack's own
 * MLTRACK_QUEUE_DIR, MLTRACK_FSYNC, MLTRACK_LINGER_MS, MLTRACK_RUN_KEY, MLTRACK_RESUME,
 * MLTRACK_LEASE_MS and MLTRACK_QUEUE_SEGMENT_BYTES. Unset or empty variables leave the option as it is. Returns the
 * first error met (naming the variable in errbuf); options read before it are kept. Reads the
 * environment: do not call while another thread calls setenv().
 */
mlt_err mlt_options_from_env(mlt_options *opts, char *errbuf, size_t errlen);

/** Typed setters. Strings are copied; NULL clears a string option. Same errors as
 *  mlt_options_set() (MLT_ERR_BAD_OPTION for a value out of range), without a message (use
 *  mlt_options_set() for one); MLT_ERR_INVALID_ARG for NULL opts. On failure nothing changes. */
mlt_err mlt_options_set_tracking_uri(mlt_options *opts, const char *uri);
mlt_err mlt_options_set_experiment_name(mlt_options *opts, const char *name);
mlt_err mlt_options_set_experiment_id(mlt_options *opts, const char *id);
mlt_err mlt_options_set_token(mlt_options *opts, const char *token);
mlt_err mlt_options_set_basic_auth(mlt_options *opts, const char *username, const char *password);
mlt_err mlt_options_set_insecure_tls(mlt_options *opts, int insecure);
mlt_err mlt_options_set_ca_cert_path(mlt_options *opts, const char *path);
mlt_err mlt_options_set_client_cert_path(mlt_options *opts, const char *path);
/** max_retries 0-100; backoff_factor_s, backoff_jitter_s 0-86400; timeout_s above 0, up to
 *  86400. mlt_options_set_retries() sets all three or none. */
mlt_err mlt_options_set_retries(mlt_options *opts, int max_retries, double backoff_factor_s,
                                double backoff_jitter_s);
mlt_err mlt_options_set_timeout(mlt_options *opts, double timeout_s);
/** Diagnostics sink; NULL (the default) drops them. userdata is borrowed. */
mlt_err mlt_options_set_logger(mlt_options *opts, mlt_log_fn fn, void *userdata);

/** What a delivery report is about. */
typedef enum mlt_op {
    MLT_OP_CREATE_RUN = 0,   /**< runs/create (the run id is known from here on) */
    MLT_OP_LOG = 1,          /**< params, metrics and tags (one log batch) */
    MLT_OP_END_RUN = 2,      /**< runs/update with the status and end time */
    MLT_OP_LOG_ARTIFACT = 3, /**< one artifact's upload (mltrack 0.3) */
} mlt_op;

/** The fate of a delivered operation. */
typedef enum mlt_delivery_state {
    MLT_DELIVERY_ACKNOWLEDGED = 0, /**< the server accepted it */
    MLT_DELIVERY_REJECTED = 1,     /**< refused for good: written to the dead-letter file */
} mlt_delivery_state;

/** A delivery report; valid during the callback only. */
typedef struct mlt_delivery {
    mlt_op op;
    mlt_delivery_state state;
    const char *run_key;       /**< the client run key */
    const char *run_id;        /**< the server's run id, NULL if the run was never created */
    const char *experiment_id; /**< NULL if unknown */
    uint32_t records;          /**< journal records the operation carried */
    const char *message;       /**< the server's answer when rejected, else NULL */
} mlt_delivery;

/** Called on the sender thread for each operation's fate. Must not block for long or call
 *  into the tracker. */
typedef void (*mlt_delivery_fn)(const mlt_delivery *delivery, void *userdata);

/** Sets the delivery callback (NULL: none). userdata is borrowed. */
mlt_err mlt_options_set_delivery_callback(mlt_options *opts, mlt_delivery_fn fn, void *userdata);

/**
 * The current text value of option `name` (as mlt_options_set() takes it), or NULL for an unset
 * or unknown option. Secrets ("token", "password") read back as "***" when set.
 * The string belongs to opts and lives until the option changes or opts is freed.
 */
const char *mlt_options_get(const mlt_options *opts, const char *name);

/* ---------------------------------------------------------------------------------------------- */
/* Tracker and runs */

typedef struct mlt_tracker mlt_tracker;
typedef struct mlt_run mlt_run;

/**
 * The version of mlt_queue_stats this header declares: 1, the six counters below. A later
 * release that adds counters adds them at the end and raises the version; the library keeps
 * accepting every version v with 0 < v <= its own and writes only the fields that version had.
 */
#define MLT_QUEUE_STATS_VERSION 1

/**
 * Initializer of an mlt_queue_stats, in C and C++: the current version, every counter 0.
 *   mlt_queue_stats st = MLT_QUEUE_STATS_INIT;
 * (Every field is named so that -Wextra's missing-field-initializers stays quiet.)
 */
/* clang-format off */
#define MLT_QUEUE_STATS_INIT {MLT_QUEUE_STATS_VERSION, 0, 0, 0, 0, 0, 0}
/* clang-format on */

/**
 * Counters of the durable queue, filled by mlt_tracker_queue_stats(). Allocated by the caller
 * (on the stack is fine), who sets version before the call: MLT_QUEUE_STATS_INIT does.
 */
typedef struct mlt_queue_stats {
    unsigned int version;   /**< set by the caller: MLT_QUEUE_STATS_VERSION; never written */
    uint64_t queued;        /**< records appended to the journal */
    uint64_t sent;          /**< records sent to the server (a retry counts again) */
    uint64_t acknowledged;  /**< records the server acknowledged */
    uint64_t retried;       /**< requests tried again after a failure (the server away, a
                                 TLS refusal) */
    uint64_t rejected;      /**< records rejected for good (dead letters): refused as invalid
                                 (400), for a missing run or experiment (404), or for the
                                 credentials (401: wrong password or token; 403: no
                                 permission on the experiment or run) */
    uint64_t bytes_pending; /**< journal bytes not yet acknowledged */
} mlt_queue_stats;

/** How a run ended. */
typedef enum mlt_run_status {
    MLT_RUN_FINISHED = 0,
    MLT_RUN_FAILED = 1,
    MLT_RUN_KILLED = 2,
} mlt_run_status;

/** "FINISHED", "FAILED" or "KILLED" (the MLflow names); "UNKNOWN" for other values. */
const char *mlt_run_status_name(mlt_run_status status);

/**
 * Creates a tracker from a copy of opts (NULL: all defaults). A new tracker has no callbacks:
 * add them with mlt_tracker_add_callbacks() or the mlt_tracker_add_* helpers before the first run.
 * Returns MLT_ERR_INVALID_ARG, MLT_ERR_BAD_OPTION or MLT_ERR_NOMEM with a message in errbuf.
 *
 * Threads: every call on a tracker and its runs may come from any thread, at once.
 * fork(): the child's copies of the trackers (and their runs and keys) are cut off: every call on
 * them fails at once with MLT_ERR_STATE, without taking a lock a parent thread may have held,
 * and mlt_tracker_close() on them does nothing. They stay the parent's, whose journal is left
 * untouched. The child may exec, exit, or make trackers of its own (with mlt_tracker_new).
 */
mlt_err mlt_tracker_new(mlt_tracker **out, const mlt_options *opts, char *errbuf, size_t errlen);

/**
 * Makes the callbacks deliver what they hold and waits up to timeout_ms (< 0: no limit): for
 * the MLflow callback, syncs the journal to disk and waits until everything this tracker logged
 * before the call is delivered (acknowledged, or rejected into the dead-letter file). Journals
 * left by processes that died, which the tracker delivers in the background, are not waited for.
 * Returns
 *   MLT_OK            everything was delivered;
 *   MLT_ERR_QUEUED    not a failure: what is left is safe in the queue on disk. Returned as soon
 *                     as a request finds the server cannot be reached (connection refused, no
 *                     route, unknown host, TLS refused; a finding older than a second makes the
 *                     sender try once more first), not at the deadline; or at the deadline when
 *                     the records wait for a run the server does not have yet (MLTRACK_RUN_KEY).
 *                     When a relay (`mltrack sync --follow`) serves the queue, the flush waits
 *                     for it instead (it takes the journal up within about 3 s): MLT_OK once it
 *                     delivered, MLT_ERR_QUEUED at once when the relay finds the server away too,
 *                     MLT_ERR_TIMEOUT at the deadline while it delivers. With no tracking_uri
 *                     (the queue alone), MLT_ERR_QUEUED at once unless a relay serves the queue.
 *                     mlt_last_error() is one line: how many runs and points are kept, in which
 *                     queue directory, why, and the `mltrack sync` command that delivers them.
 *                     Not counted by mlt_tracker_error_count(); mlt_err_is_retriable() says 1;
 *   MLT_ERR_TIMEOUT   the server (or the relay that delivers the journal) took the requests but
 *                     did not answer in time: what is left is kept the same way (mlt_last_error()
 *                     says so);
 *   or the first error a callback reported. Any thread.
 */
mlt_err mlt_tracker_flush(mlt_tracker *tracker, int timeout_ms);

/**
 * Ends every run still open as KILLED (children first), flushes within timeout_ms, lets each
 * callback release its userdata (mlt_callbacks.on_close) and frees the tracker; returns within
 * the deadline (a request in flight is cut at once), and what is undelivered stays in the queue
 * on disk for the next tracker on the same queue directory or `mltrack sync`. Returns as
 * mlt_tracker_flush(): MLT_OK, MLT_ERR_QUEUED at once when the server cannot be reached (the data
 * is safe: a program offline may exit 0, printing mlt_last_error()), MLT_ERR_TIMEOUT for a slow
 * server, or the first error met. NULL does nothing and returns MLT_OK. The tracker is freed
 * either way. If it is the default tracker, the default is cleared.
 */
mlt_err mlt_tracker_close(mlt_tracker *tracker, int timeout_ms);
/* Closing a tracker frees it, with every run handle it gave out (ended or not) and its metric
 * keys: using any of them afterwards, closing the same tracker twice included, is the caller's
 * bug (as with fclose()), which the library cannot detect. */

/**
 * The counters of the tracker's durable queue (the MLflow callback's) into *out, a struct the
 * caller owns and whose version it has set (mlt_queue_stats st = MLT_QUEUE_STATS_INIT;). A
 * struct of any version v with 0 < v <= MLT_QUEUE_STATS_VERSION is accepted, and only the
 * fields version v has are written: a program built against an older header keeps working.
 * The counters are a snapshot, each read atomically, not all at one instant. Any thread.
 * Returns
 *   MLT_OK               *out holds the counters;
 *   MLT_ERR_INVALID_ARG  out or tracker is NULL, or out->version is 0 or newer than the
 *                        library's (an uninitialized struct, or a newer header): nothing is
 *                        written, mlt_last_error() says why;
 *   MLT_ERR_STATE        the tracker has no MLflow callback, so no queue: the counters are 0.
 */
mlt_err mlt_tracker_queue_stats(mlt_queue_stats *out, mlt_tracker *tracker);

/**
 * Makes tracker the process-wide default used by MLT_TRACKED functions (NULL clears it).
 * Borrowed: the caller closes it, after which the default is cleared. Any thread.
 */
void mlt_tracker_set_default(mlt_tracker *tracker);

/** The process-wide default tracker, or NULL. */
mlt_tracker *mlt_tracker_get_default(void);

/**
 * How many calls on the tracker and its runs have failed so far (run start, logging, run end,
 * flush), for programs that check once at the end rather than at every call, as MLT_TRACKED
 * functions must. A flush that returned MLT_ERR_QUEUED (the records are safe in the queue) is
 * not counted. Any thread.
 */
unsigned long long mlt_tracker_error_count(const mlt_tracker *tracker);

/**
 * Copies into out ("" if none; truncated to outlen) the message of the most recent failed call
 * counted by mlt_tracker_error_count(), prefixed with its error name, e.g. "MLT_ERR_NETWORK:
 * create run: POST http://...: Connection refused". Returns the error count. out may be NULL
 * (outlen 0). Any thread.
 */
unsigned long long mlt_tracker_last_error(char *out, size_t outlen, mlt_tracker *tracker);

/**
 * Starts a run on the tracker at the current time, with a fresh client run key (a UUID).
 * run_name may be NULL (the server then picks one) and is at most 250 characters.
 * Every callback's on_run_start is called; if one fails, the callbacks that had already seen
 * the start are told the run ended KILLED and the error is returned.
 * Returns MLT_ERR_INVALID_ARG, MLT_ERR_VALUE_TOO_LONG, MLT_ERR_INVALID_VALUE, MLT_ERR_NOMEM or a
 * callback's error (the MLflow callback only queues: no server answer fails a start). The run
 * belongs to the tracker: it stays valid until mlt_tracker_close(), ended or not.
 *
 * When the options name a run (run_id, MLFLOW_RUN_ID; run_key, MLTRACK_RUN_KEY), as in a
 * program started by `mltrack run`, a top-level run is not created: it is that run, attached.
 * run_name is then ignored, mlt_run_key() is the given key and mlt_run_id() the given id (or the
 * one the sender finds by the key). The MLflow callback logs into it but never ends it (and
 * queues nothing for it until something is logged into it, so that a program that logs nothing,
 * or only bad input, leaves nothing waiting for a run the server may not have):
 * mlt_run_end() ends it for the callbacks only, and the process that started it sets its status.
 * Child runs of an attached run are created as usual, with it as their parent.
 *
 * With resume=allow (MLTRACK_RESUME) and run_key but no run_id, a top-level run is the key's own
 * instead: created on the server by the first start, RUNNING again at every later start, and
 * ended by mlt_run_end() as any run (mlt_run_last_step() tells where it left off). Without
 * run_key it fails with MLT_ERR_BAD_OPTION.
 */
mlt_err mlt_run_start(mlt_run **out, mlt_tracker *tracker, const char *run_name);

/** As mlt_run_start(), as a child of parent (MLflow's nested run: tag mlflow.parentRunId). */
mlt_err mlt_run_start_child(mlt_run **out, mlt_run *parent, const char *run_name);

/**
 * Logs a param. Params cannot change: logging the same key again with the same value returns
 * MLT_OK and sends nothing; with another value it returns MLT_ERR_PARAM_CONFLICT. value is at
 * most 6000 characters. Validation errors (MLT_ERR_INVALID_KEY, MLT_ERR_VALUE_TOO_LONG,
 * MLT_ERR_INVALID_VALUE) log nothing and name the key and the rule in mlt_last_error().
 */
mlt_err mlt_log_param(mlt_run *run, const char *key, const char *value);

/**
 * Logs a metric point stamped with the current time. NaN and +/-Inf are allowed. step is any
 * int64. Any thread (calls on one run from several threads are fine). Errors as
 * mlt_log_param(), plus a callback's error; with the MLflow callback, MLT_ERR_QUEUE_FULL (see
 * mlt_tracker_add_mlflow).
 * Cost: a key is checked once per tracker and remembered; when the MLflow callback is the only
 * one, the point is written into the queue's in-memory ring with no lock and no system call
 * (the journal's writer thread moves it to disk).
 */
mlt_err mlt_log_metric(mlt_run *run, const char *key, double value, int64_t step);

/** As mlt_log_metric(), with an explicit timestamp in ms since the epoch (>= 0). */
mlt_err mlt_log_metric_at(mlt_run *run, const char *key, double value, int64_t step,
                          int64_t timestamp_ms);

/**
 * A pre-registered metric key: mlt_metric_key() validates and interns the key once, and
 * mlt_log_metric_key() then logs with no key check at all (the cheapest way to log in a hot
 * loop). The handle belongs to the tracker: it stays valid until mlt_tracker_close() and must
 * not be freed. Any thread may register and use handles.
 */
typedef struct mlt_key mlt_key;

/**
 * Registers key on the tracker and sets *out to its handle (the same handle for the same key).
 * Returns MLT_ERR_INVALID_ARG (NULL argument), MLT_ERR_INVALID_KEY / MLT_ERR_VALUE_TOO_LONG (the
 * key breaks MLflow's rules; the message names the rule), MLT_ERR_NOMEM. *out is untouched on
 * error.
 */
mlt_err mlt_metric_key(const mlt_key **out, mlt_tracker *tracker, const char *key);

/**
 * As mlt_log_metric(), with a handle from mlt_metric_key() on the run's tracker.
 * Returns MLT_ERR_INVALID_ARG for NULL or a handle of another tracker, or a callback's error.
 */
mlt_err mlt_log_metric_key(mlt_run *run, const mlt_key *key, double value, int64_t step);

/** Sets a tag (last write wins). value is at most 8000 characters. Errors as mlt_log_param(). */
mlt_err mlt_set_tag(mlt_run *run, const char *key, const char *value);

/*
 * Artifacts: files and bytes kept with a run (MLflow's Artifacts tab). What the call logs is what
 * lands: the bytes are snapshotted into the durable queue at the call (a reflink where the file
 * system makes them, else a copy, with their size and SHA-256), so a file changed or deleted
 * afterwards still uploads what was logged, and an artifact logged while the server is away is
 * uploaded when it is back, or by `mltrack sync`. The call returns once the snapshot is as
 * durable as the fsync option says (interval and always: on disk). Upload goes through the
 * tracking server's artifact proxy (`mlflow server` serves artifacts by default); a server that
 * does not proxy them makes each a dead letter that says so (`mltrack requeue` brings it back).
 *
 * An artifact's path in the run is relative, '/'-separated and at most 1024 bytes, each part at
 * most 255 bytes; what MLflow refuses or would store under another name is refused at the call,
 * and nothing is queued: an absolute path, "." or ".." parts, empty parts ("a//b"), a backslash,
 * '#', '%' followed by two hex digits (the server decodes it), control characters, a first part
 * that starts like a URI scheme or a drive letter ("file:", "C:"), or text that is not UTF-8.
 *
 * Any thread; several threads may log artifacts to one run. The run must be open.
 */

/**
 * Logs the regular file at local_path as an artifact of run, under the directory artifact_dir
 * of the run (NULL or "" for its root), keeping its name: mlt_log_artifact(run, "out/model.bin",
 * "models") logs "models/model.bin" (MLflow's log_artifact(local_path, artifact_path)). The file
 * is borrowed for the call only.
 * Returns MLT_ERR_INVALID_ARG (NULL run or path, an artifact path refused as above: the message
 * names the rule), MLT_ERR_IO (the file is missing, unreadable, a directory or not a regular
 * file, or it cannot be snapshotted: no room), MLT_ERR_QUEUE_FULL (queue_max_bytes, as for
 * metrics), MLT_ERR_STATE (the run has ended), MLT_ERR_NOMEM, or a callback's error.
 */
mlt_err mlt_log_artifact(mlt_run *run, const char *local_path, const char *artifact_dir);

/**
 * Logs every regular file under the directory local_dir (recursively; symbolic links to files
 * are followed, to directories not) under artifact_dir of the run (NULL or "" for its root),
 * keeping their paths relative to local_dir, as MLflow's log_artifacts(). Every file is checked
 * first: when one is unreadable or its path is refused, nothing is logged. An empty directory
 * logs nothing. Errors as mlt_log_artifact(), and MLT_ERR_IO when local_dir is not a directory.
 */
mlt_err mlt_log_artifacts(mlt_run *run, const char *local_dir, const char *artifact_dir);

/**
 * Logs len bytes at data (copied; NULL allowed when len is 0) as the artifact artifact_file of
 * the run, a path such as "config.json" or "eval/predictions.csv" (MLflow's log_text and
 * log_dict). Errors as mlt_log_artifact().
 */
mlt_err mlt_log_artifact_bytes(mlt_run *run, const char *artifact_file, const void *data,
                               size_t len);

/**
 * Ends the run with status, at the current time. Open child runs are ended KILLED first. If the
 * run was marked with mlt_run_fail() and status is MLT_RUN_FINISHED, it ends FAILED.
 * The handle stays valid until mlt_tracker_close() (about 200 bytes each): the getters
 * (mlt_run_id(), mlt_run_key(), mlt_run_ui_url(), ...) still answer, and every call that would
 * log into the run, start a child of it or end it again returns MLT_ERR_STATE, with
 * mlt_last_error() naming the run and saying that it ended. Returns the first error a callback
 * reported, MLT_ERR_STATE when the run had ended already, MLT_ERR_INVALID_ARG for NULL.
 */
mlt_err mlt_run_end(mlt_run *run, mlt_run_status status);

/** Marks the run to end FAILED when it would otherwise end FINISHED (scopes, decorators).
 *  NULL does nothing. */
void mlt_run_fail(mlt_run *run);

/** 1 if mlt_run_fail() was called on the run, else 0. */
int mlt_run_failed(const mlt_run *run);

/** The run's MLflow run id once the sender has created the run on the server (see
 *  mlt_tracker_flush()), else NULL. Owned by the run. */
const char *mlt_run_id(const mlt_run *run);

/** The client run key: a UUID made at mlt_run_start(), never NULL. Owned by the run. (The
 *  options' run_key instead for the run of another process, or a run resumed.) */
const char *mlt_run_key(const mlt_run *run);

/**
 * Where a resumed run left off: the largest step of metric `key` logged into the run (by this
 * process's earlier attempts, under the same run_key with resume=allow), so that a restarted
 * program logs on from step + 1 and no step lands twice. Call it before logging `key` again.
 *
 * Looks first through the queue's journals, which hold the newest points not yet delivered
 * (read only, no network); when they have none of the key, asks the MLflow server on the
 * calling thread (the run by its key, then the run's latest point of the key: one try of each,
 * up to the `timeout` option; no retries, the caller decides whether to wait).
 *
 * Returns MLT_OK with *step set; MLT_ERR_NOT_FOUND when neither knows a point of the key (a
 * first attempt: start from step 0); MLT_ERR_INVALID_ARG for NULL arguments; MLT_ERR_STATE
 * when the tracker has no MLflow callback; the server's failure (MLT_ERR_NETWORK...) when
 * the journals do not know and the server cannot be asked: the step is then unknown. The
 * message is in mlt_last_error(). Any thread.
 */
mlt_err mlt_run_last_step(mlt_run *run, const char *key, int64_t *step);

/** The run's name as given to mlt_run_start() (NULL if none). Owned by the run. */
const char *mlt_run_name(const mlt_run *run);

/** The run's parent, or NULL for a top-level run. */
mlt_run *mlt_run_parent(const mlt_run *run);

/** The run's tracker. */
mlt_tracker *mlt_run_tracker(const mlt_run *run);

/**
 * The MLflow UI address of the run, written into out as "<tracking_uri>/#/experiments/<experiment
 * id>/runs/<run id>/model-metrics?workflowType=machine_learning": the run's metric charts in the
 * UI's "Model training" view, where MLflow 3 would otherwise open a fresh browser in its GenAI
 * view (MLflow 2.x ignores the query). Returns MLT_ERR_STATE when the run id or experiment id is
 * not known (no MLflow callback, or not created yet), MLT_ERR_VALUE_TOO_LONG when outlen is too
 * small. Any thread; also once the run ended.
 */
mlt_err mlt_run_ui_url(char *out, size_t outlen, const mlt_run *run);

/**
 * The innermost run that mlt_track(), an MLT_TRACKED function or a scope macro made active on
 * this thread, or NULL. Runs started with mlt_run_start() are not made active.
 */
mlt_run *mlt_active_run(void);

/* ---------------------------------------------------------------------------------------------- */
/* Callbacks (the Protocol) */

/** What callbacks learn of an artifact (on_artifact). Read-only; valid during the callback only. */
typedef struct mlt_artifact_info {
    const char *path;       /**< Its path in the run, e.g. "plots/loss.png". */
    const char *local_path; /**< The file logged (as given); NULL for bytes. */
    const void *data;       /**< mlt_log_artifact_bytes(): the bytes; NULL for a file. */
    uint64_t size;          /**< Its size in bytes, as logged. */
    const char *sha256;     /**< SHA-256 of the bytes logged: 64 lowercase hex digits. */
} mlt_artifact_info;

/** What callbacks learn of a run. Read-only; valid during the callback only. */
typedef struct mlt_run_info {
    mlt_run *run;               /**< The run (for mlt_run_id() and friends). */
    const char *run_key;        /**< Client run key (UUID). */
    const char *run_name;       /**< May be NULL. */
    const char *parent_run_key; /**< NULL for a top-level run. */
    int64_t start_time_ms;      /**< Set at mlt_run_start(). */
    int64_t end_time_ms;        /**< Set in on_run_end, else 0. */
} mlt_run_info;

/**
 * The version of mlt_callbacks this header declares: 2 (version 1 had no on_artifact). A
 * release that adds hooks adds them at the end and raises the version; the library then still
 * accepts every version v with 0 < v <= its own and reads a struct of version v only up to the
 * hooks version v had (the newer ones are taken as NULL), so a program built against an older
 * header keeps working. Version 0 and versions newer than the library are refused.
 */
#define MLT_CALLBACKS_VERSION 2

/**
 * A sink for run events. Fill it with version = MLT_CALLBACKS_VERSION; any hook may be NULL.
 * Hooks return MLT_OK or an mlt_err (MLT_ERR_CALLBACK if nothing better fits): the first error
 * becomes the return value of the call that caused the event; the other callbacks are still called.
 * Hooks are called on the thread that made the call, with no library lock held, in the order the
 * callbacks were added. Calls on different runs may arrive concurrently from different threads:
 * a callback shared by threads must protect its own state. A hook must not end the run it is told
 * about or close the tracker.
 */
typedef struct mlt_callbacks {
    int version;
    mlt_err (*on_run_start)(const mlt_run_info *info, void *userdata);
    mlt_err (*on_param)(const mlt_run_info *info, const char *key, const char *value,
                        void *userdata);
    mlt_err (*on_metric)(const mlt_run_info *info, const char *key, double value, int64_t step,
                         int64_t timestamp_ms, void *userdata);
    mlt_err (*on_tag)(const mlt_run_info *info, const char *key, const char *value, void *userdata);
    mlt_err (*on_run_end)(const mlt_run_info *info, mlt_run_status status, double duration_s,
                          void *userdata);
    /** mlt_tracker_flush(): deliver what is held back, within timeout_ms (< 0: no limit). */
    mlt_err (*on_flush)(int timeout_ms, void *userdata);
    /** mlt_tracker_close(), after the last flush: release userdata. Return value ignored. */
    void (*on_close)(void *userdata);
    /** An artifact was logged (version 2): its path, size and SHA-256, once the durable queue
     * (when the tracker has the MLflow callback) holds its snapshot. */
    mlt_err (*on_artifact)(const mlt_run_info *info, const mlt_artifact_info *artifact,
                           void *userdata);
} mlt_callbacks;

/**
 * Registers callbacks on the tracker. The struct is copied; userdata is borrowed and passed to
 * every hook (the tracker calls on_close at close so the callback may free it).
 * Returns MLT_ERR_STATE once a run has started on the tracker, MLT_ERR_INVALID_ARG for NULL or
 * a version that is 0 or newer than the library's MLT_CALLBACKS_VERSION (mlt_last_error() names
 * it), MLT_ERR_NOMEM.
 */
mlt_err mlt_tracker_add_callbacks(mlt_tracker *tracker, const mlt_callbacks *callbacks,
                                  void *userdata);

/**
 * Adds the print callback (the seed's PrintCallback): one human-readable line per event to out,
 * e.g. "[mltrack] run 'train' started (key 0b1e...)". Control characters in names and values
 * are escaped (\n, \xNN) so that each event stays on one line. out is borrowed and must outlive
 * the tracker. Returns as mlt_tracker_add_callbacks().
 */
mlt_err mlt_tracker_add_print(mlt_tracker *tracker, FILE *out);

/**
 * Adds the JSON lines callback: one JSON object per event appended to the file at path (created
 * 0644 if missing), e.g. {"event":"metric","run_key":"...","key":"loss","value":0.5,"step":1,
 * "timestamp":1700000000000}. NaN and +/-Inf are written as the strings "NaN", "Infinity",
 * "-Infinity". The file is flushed at each run end and at mlt_tracker_flush(), and closed at
 * mlt_tracker_close(). Returns MLT_ERR_IO (file cannot be opened, message in errbuf) or as
 * mlt_tracker_add_callbacks().
 */
mlt_err mlt_tracker_add_jsonl(mlt_tracker *tracker, const char *path, char *errbuf, size_t errlen);

/**
 * Adds the MLflow callback, using the tracker's options (tracking_uri, or queue_dir: below),
 * with its durable queue: a journal of this tracker's own in queue_dir (created 0700), a
 * background sender thread, and a thread that renews its journals' delivery leases. Every run
 * event is appended to the journal (fsync per the fsync option) and the call returns; it never
 * waits for the server, which may be absent. The sender delivers each run
 * as REST calls: the experiment got or created by name, runs/create with the start time, run name
 * and system tags (mlflow.user, mlflow.source.name, mlflow.source.type, mlflow.source.git.commit
 * in a git work tree, mlflow.parentRunId for child runs, mltrack.client_run_key), params,
 * metrics and tags coalesced into runs/log-batch calls, and runs/update with the status and end
 * time once the run's logs are acknowledged. Retriable failures are retried with backoff for as
 * long as the tracker lives; a run is never created twice. What the server refuses for good goes
 * to the journal's dead.jsonl and to the delivery callback. Journals left by processes that
 * died (their flock is free) are taken over and delivered too.
 * One party at a time delivers a journal (its delivery lease, option lease_ms): while the server
 * cannot be reached and a relay serves the queue, the sender lets go of its journal, and the
 * relay (`mltrack sync --follow` on a host that reaches the server, the queue on a shared file
 * system: docs/hpc.md) may deliver it, live; a flush then waits for the relay's acknowledgements. With no tracking_uri but a
 * queue_dir (a node without network), the journal is the relay's (or `mltrack sync`'s) alone to
 * deliver, and mlt_run_last_step() answers from the queue only.
 * Log calls fail with MLT_ERR_QUEUE_FULL at the queue_max_bytes cap (after waiting up to
 * queue_block_ms with queue_full=block); a run's start and end are always queued.
 * Returns MLT_ERR_BAD_OPTION (neither tracking_uri nor queue_dir; message in errbuf), MLT_ERR_IO
 * (the queue directory cannot be written) or as mlt_tracker_add_callbacks().
 */
mlt_err mlt_tracker_add_mlflow(mlt_tracker *tracker, char *errbuf, size_t errlen);

/**
 * The one-call setup most programs want: options from the MLflow environment variables
 * (mlt_options_from_env()), a tracker, and the MLflow callback. MLFLOW_TRACKING_URI must be set,
 * or MLTRACK_QUEUE_DIR for the queue alone (a node without network, delivered by a relay).
 * Add other callbacks to *out before the first run. Returns as mlt_options_from_env(),
 * mlt_tracker_new() and mlt_tracker_add_mlflow(), with a message in errbuf; *out is set only on
 * success.
 */
mlt_err mlt_tracker_from_env(mlt_tracker **out, char *errbuf, size_t errlen);

/* ---------------------------------------------------------------------------------------------- */
/* Decorator */

/** A param given to mlt_track(): both strings borrowed for the call. */
typedef struct mlt_param {
    const char *key;
    const char *value;
} mlt_param;

/**
 * Runs fn(run, arg) as a run named name (a child of this thread's active run, if any): logs the
 * params, makes the run active while fn runs, logs the metric "duration_s" and the tag
 * "mltrack.return_code", and ends the run FINISHED if fn returned 0 (and did not call
 * mlt_run_fail()), FAILED otherwise. fn's result goes to *fn_result (may be NULL); unlike an
 * `out`, it is set whenever fn ran, whatever tracking returns.
 * fn is called even when tracking fails (a param is invalid, the server is down): the work is not
 * lost to a tracking problem, and run is then NULL inside fn (mlt_ calls on NULL return
 * MLT_ERR_INVALID_ARG). Returns the first tracking error (MLT_OK if none).
 */
mlt_err mlt_track(int *fn_result, mlt_tracker *tracker, const char *name, const mlt_param *params,
                  size_t n_params, int (*fn)(mlt_run *run, void *arg), void *arg);

/* ---------------------------------------------------------------------------------------------- */
/* Scope */

/**
 * MLT_WITH_RUN(tracker, run, name) { ... }
 * Starts a run (a child of this thread's active run, if any), declares `mlt_run *run` for the
 * block and makes it active; ends it when the block is left by its end, `break` or `continue`:
 * FINISHED, or FAILED if the block called mlt_run_fail(run). The block runs even if the run could
 * not start (run is then NULL; mlt_last_error() says why). Leaving by `return` or `goto` skips
 * the end: use MLT_SCOPED_RUN for blocks with such exits.
 */
#define MLT_WITH_RUN(tracker, run, name) MLT__WITH_RUN(tracker, run, name, MLT__UNIQUE(mlt__scope_))
/* Parameter names must not be member names of struct mlt_scope. */
#define MLT__WITH_RUN(mlt__t, mlt__r, mlt__n, mlt__s)                                              \
    for (struct mlt_scope mlt__s = mlt_scope_begin((mlt__t), (mlt__n)); mlt__s.state < 2;          \
         mlt_scope_end(&mlt__s))                                                                   \
        for (mlt_run *mlt__r = mlt__s.run; mlt__s.state++ == 0;)

#if defined(__GNUC__) || defined(__clang__)
/**
 * MLT_SCOPED_RUN(tracker, run, name);
 * A declaration: declares `mlt_run *run`, a run started now and ended when the variable goes out
 * of scope, by
 * any exit of the enclosing block including `return` and `goto` (GCC/Clang cleanup attribute):
 * FINISHED, or FAILED if mlt_run_fail(run) was called. The run is active while in scope.
 */
#define MLT_SCOPED_RUN(tracker, run, name)                                                         \
    MLT__SCOPED_RUN(tracker, run, name, MLT__UNIQUE(mlt__scope_))
#define MLT__SCOPED_RUN(mlt__t, mlt__r, mlt__n, mlt__s)                                            \
    __attribute__((cleanup(mlt_scope_end))) struct mlt_scope mlt__s =                              \
        mlt_scope_begin((mlt__t), (mlt__n));                                                       \
    mlt_run *mlt__r = mlt__s.run
#endif

#ifdef __COUNTER__
#define MLT__UNIQUE(prefix) MLT__CAT(prefix, __COUNTER__)
#else
#define MLT__UNIQUE(prefix) MLT__CAT(prefix, __LINE__)
#endif

/** State of a scope; used by the scope and tracked-function macros only. */
struct mlt_scope {
    mlt_run *run;   /* the scope's run, NULL if it could not start */
    mlt_run *outer; /* the run active before the scope, while run is NULL */
    int state;
};
/** Scope macro support: starts a run (child of the active run) and makes it active. If the run
 *  cannot start, run is NULL, no run is active until mlt_scope_end() (so mlt_run_fail() in the
 *  block cannot reach an outer run), and mlt_last_error() says why. */
struct mlt_scope mlt_scope_begin(mlt_tracker *tracker, const char *name);
/** Scope macro support: ends the scope's run FINISHED (FAILED if marked), makes the outer run
 *  active again and sets state to 2. */
void mlt_scope_end(struct mlt_scope *scope);

/* ---------------------------------------------------------------------------------------------- */
/* Tracked functions: MLT_TRACKED(return type, name, (type, arg)...) */

/**
 * MLT_TRACKED(double, train_model, (int, epochs), (double, learning_rate)) { ...body... }
 * defines `double train_model(int epochs, double learning_rate)`. Each call is a run named
 * "train_model" on the default tracker (mlt_tracker_set_default()), a child of this thread's
 * active run if any; the arguments are logged as params by name (integers in decimal, floating
 * point as the shortest text that reads back to the same value, strings as they are and a NULL
 * string as "None", _Bool as true/false); the body runs with the run active (mlt_active_run()); the
 * returned value is logged as the metric "result" and the duration as "duration_s"; the run ends
 * FINISHED, or FAILED if the body called mlt_run_fail(mlt_active_run()). Without a default tracker,
 * or if tracking fails, the body still runs. The return type must be arithmetic; 1 to 8 arguments.
 * MLT_TRACKED_VOID(name, (type, arg)...) is the same for a function returning void.
 * Prefix with `static` as for any function definition.
 * C++: the same, with the argument types of C++ (bool, std::nullptr_t excepted); the types are
 * told apart by overloads of mlt_log_param_value() instead of _Generic, with the same formatting.
 * A type with no overload (std::string, a class) does not compile: pass .c_str(), or log it in
 * the body. mltrack.hpp has RAII types (mlt::tracker, mlt::run) for C++ programs.
 */
#define MLT_TRACKED(ret, name, ...)                                                                \
    ret name(MLT__PARAMS(__VA_ARGS__));                                                            \
    static ret name##__mlt_body(MLT__PARAMS(__VA_ARGS__));                                         \
    ret name(MLT__PARAMS(__VA_ARGS__))                                                             \
    {                                                                                              \
        struct mlt_scope mlt__s_ = mlt_tracked_begin(#name);                                       \
        MLT__LOG_ARGS(mlt__s_.run, __VA_ARGS__)                                                    \
        ret mlt__r_ = name##__mlt_body(MLT__ARGS(__VA_ARGS__));                                    \
        mlt_tracked_end(&mlt__s_, 1, (double)mlt__r_);                                             \
        return mlt__r_;                                                                            \
    }                                                                                              \
    static ret name##__mlt_body(MLT__PARAMS(__VA_ARGS__))

#define MLT_TRACKED_VOID(name, ...)                                                                \
    void name(MLT__PARAMS(__VA_ARGS__));                                                           \
    static void name##__mlt_body(MLT__PARAMS(__VA_ARGS__));                                        \
    void name(MLT__PARAMS(__VA_ARGS__))                                                            \
    {                                                                                              \
        struct mlt_scope mlt__s_ = mlt_tracked_begin(#name);                                       \
        MLT__LOG_ARGS(mlt__s_.run, __VA_ARGS__)                                                    \
        name##__mlt_body(MLT__ARGS(__VA_ARGS__));                                                  \
        mlt_tracked_end(&mlt__s_, 0, 0.0);                                                         \
    }                                                                                              \
    static void name##__mlt_body(MLT__PARAMS(__VA_ARGS__))

/** Tracked-function support: starts a run on the default tracker and makes it active. */
struct mlt_scope mlt_tracked_begin(const char *name);
/** Tracked-function support: logs "result" (if has_result) and "duration_s", ends the run. */
void mlt_tracked_end(struct mlt_scope *scope, int has_result, double result);
/** Tracked-function support: log an argument as a param (errors go to mlt_last_error()).
 *  mlt_param_str() logs a NULL string as "None", the text MLflow's Python client logs for None
 *  (so that runs of both can be compared and filtered alike). */
void mlt_param_i64(mlt_run *run, const char *key, long long value);
void mlt_param_u64(mlt_run *run, const char *key, unsigned long long value);
void mlt_param_f64(mlt_run *run, const char *key, double value);
void mlt_param_f32(mlt_run *run, const char *key, float value);
#ifdef __cplusplus
void mlt_param_bool(mlt_run *run, const char *key, bool value); /* the same type as C's _Bool */
#else
void mlt_param_bool(mlt_run *run, const char *key, _Bool value);
#endif
void mlt_param_str(mlt_run *run, const char *key, const char *value);

/** Logs value as a param under key, formatted by its C type (see MLT_TRACKED). In C++, where
 *  there is no _Generic, it is a set of overloaded inline functions (at the end of this file)
 *  that pick the same formatting, so MLT_TRACKED works there too. */
#ifndef __cplusplus
#define mlt_log_param_value(run, key, value)                                                       \
    _Generic((value),                                                                            \
        _Bool: mlt_param_bool,                                                                   \
        char: mlt_param_i64,                                                                     \
        signed char: mlt_param_i64,                                                              \
        short: mlt_param_i64,                                                                    \
        int: mlt_param_i64,                                                                      \
        long: mlt_param_i64,                                                                     \
        long long: mlt_param_i64,                                                                \
        unsigned char: mlt_param_u64,                                                            \
        unsigned short: mlt_param_u64,                                                           \
        unsigned int: mlt_param_u64,                                                             \
        unsigned long: mlt_param_u64,                                                            \
        unsigned long long: mlt_param_u64,                                                       \
        float: mlt_param_f32,                                                                    \
        double: mlt_param_f64,                                                                   \
        long double: mlt_param_f64,                                                              \
        char *: mlt_param_str,                                                                   \
        const char *: mlt_param_str)((run), (key), (value))
#endif

/* Argument-list machinery for MLT_TRACKED (internal). Pairs are (type, name). */
#define MLT__NARG(...) MLT__NARG_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define MLT__NARG_(_1, _2, _3, _4, _5, _6, _7, _8, n, ...) n
#define MLT__CAT(a, b) MLT__CAT_(a, b)
#define MLT__CAT_(a, b) a##b
#define MLT__MAP(m, sep, ...) MLT__CAT(MLT__MAP, MLT__NARG(__VA_ARGS__))(m, sep, __VA_ARGS__)
#define MLT__MAP1(m, s, a) m a
#define MLT__MAP2(m, s, a, ...) m a s() MLT__MAP1(m, s, __VA_ARGS__)
#define MLT__MAP3(m, s, a, ...) m a s() MLT__MAP2(m, s, __VA_ARGS__)
#define MLT__MAP4(m, s, a, ...) m a s() MLT__MAP3(m, s, __VA_ARGS__)
#define MLT__MAP5(m, s, a, ...) m a s() MLT__MAP4(m, s, __VA_ARGS__)
#define MLT__MAP6(m, s, a, ...) m a s() MLT__MAP5(m, s, __VA_ARGS__)
#define MLT__MAP7(m, s, a, ...) m a s() MLT__MAP6(m, s, __VA_ARGS__)
#define MLT__MAP8(m, s, a, ...) m a s() MLT__MAP7(m, s, __VA_ARGS__)
#define MLT__COMMA() ,
#define MLT__NOSEP()
#define MLT__DECL(type, name) type name
#define MLT__NAME(type, name) name
#define MLT__LOGARG(type, name) mlt_log_param_value(mlt__s_.run, #name, (type)(name));
#define MLT__PARAMS(...) MLT__MAP(MLT__DECL, MLT__COMMA, __VA_ARGS__)
#define MLT__ARGS(...) MLT__MAP(MLT__NAME, MLT__COMMA, __VA_ARGS__)
#define MLT__LOG_ARGS(run, ...) MLT__MAP(MLT__LOGARG, MLT__NOSEP, __VA_ARGS__)

#ifdef __cplusplus
}

/* C++: mlt_log_param_value() as overloads (extern "C++": this header may be included inside an
 * extern "C" block). mltrack.hpp has RAII types on top of this API. */
extern "C++" {
inline void mlt_log_param_value(mlt_run *run, const char *key, bool v)
{
    mlt_param_bool(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, char v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, signed char v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, short v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, int v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, long v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, long long v)
{
    mlt_param_i64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, unsigned char v)
{
    mlt_param_u64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, unsigned short v)
{
    mlt_param_u64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, unsigned int v)
{
    mlt_param_u64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, unsigned long v)
{
    mlt_param_u64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, unsigned long long v)
{
    mlt_param_u64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, float v)
{
    mlt_param_f32(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, double v)
{
    mlt_param_f64(run, key, v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, long double v)
{
    mlt_param_f64(run, key, (double)v);
}
inline void mlt_log_param_value(mlt_run *run, const char *key, const char *v)
{
    mlt_param_str(run, key, v);
}
} /* extern "C++" */
#endif
#endif /* MLTRACK_H */
