/*
 * mltrack.hpp - C++ types over libmltrack's C API (mltrack.h): a tracker and a run that release
 * what they hold when they go out of scope. Header-only, C++11 and later; link with libmltrack
 * as for C (`pkg-config --cflags --libs mltrack`).
 *
 *   mlt::tracker t = mlt::tracker::from_env();       // MLFLOW_* variables, the MLflow callback
 *   {
 *       mlt::run run(t, "train");                      // mlt_run_start
 *       run.log_param("lr", 0.01);
 *       for (int step = 0; step < 100; step++) {
 *           run.log_metric("loss", train_step(), step);
 *       }
 *   }                                                  // ended FINISHED, or FAILED when an
 *                                                      // exception unwinds it
 *   mlt_err rc = t.close(10000);                       // MLT_OK, or MLT_ERR_QUEUED offline
 *
 * Errors: constructors throw mlt::error (a std::runtime_error carrying the mlt_err and the
 * library's message) when they cannot make what they stand for; every other call returns the
 * mlt_err of the C function it wraps and never throws, so that a training loop is not cut short
 * by a tracking problem. Destructors never throw.
 *
 * Threads, ownership and errors are those of the C functions named at each member. The C API
 * stays usable alongside: get() gives the C handle. MLT_WITH_RUN, MLT_SCOPED_RUN and
 * MLT_TRACKED work in C++ as in C (mltrack.h).
 */
#ifndef MLTRACK_HPP
#define MLTRACK_HPP

#include "mltrack.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace mlt
{

/** A failure of a constructor: code() is the library's mlt_err, what() its message. */
class error : public std::runtime_error
{
  public:
    error(mlt_err code, const std::string &message)
        : std::runtime_error(std::string(mlt_err_name(code)) + ": " + message), code_(code)
    {
    }
    mlt_err code() const noexcept
    {
        return code_;
    }

  private:
    mlt_err code_;
};

namespace detail
{

/* Exceptions unwinding the calling thread's stack now. */
inline int uncaught() noexcept
{
#if defined(__cpp_lib_uncaught_exceptions) && __cpp_lib_uncaught_exceptions >= 201411L
    return std::uncaught_exceptions();
#else
    return std::uncaught_exception() ? 1 : 0;
#endif
}

/* The text of a param value, as MLT_TRACKED logs arguments: integers in decimal, floating point
 * as the shortest text that reads back to the same value, bool as true/false. */
inline std::string param_text(bool v)
{
    return v ? "true" : "false";
}

template <class T>
inline typename std::enable_if<std::is_integral<T>::value, std::string>::type param_text(T v)
{
    return std::to_string(v);
}

template <class T>
inline typename std::enable_if<std::is_floating_point<T>::value, std::string>::type param_text(T v)
{
    if (std::isnan(v)) {
        return "nan";
    }
    if (std::isinf(v)) {
        return v > 0 ? "inf" : "-inf";
    }
    const bool is_float = sizeof(T) == sizeof(float);
    char buf[48];
    for (int precision = 1; precision <= 17; precision++) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, static_cast<double>(v));
        double back = std::strtod(buf, nullptr);
        if (is_float ? static_cast<float>(back) == static_cast<float>(v)
                     : back == static_cast<double>(v)) {
            break;
        }
    }
    return buf;
}

} // namespace detail

/** Owns an mlt_tracker: closed (mlt_tracker_close) when destroyed, unless closed before. */
class tracker
{
  public:
    /** mlt_tracker_new(opts) (NULL: defaults): a tracker with no callback yet. Throws. */
    explicit tracker(const mlt_options *opts = nullptr)
    {
        char err[512] = "";
        mlt_err rc = mlt_tracker_new(&t_, opts, err, sizeof err);
        if (rc != MLT_OK) {
            throw error(rc, err);
        }
    }

    /** mlt_tracker_from_env(): options from the MLflow variables and the MLflow callback.
     *  Throws (MLFLOW_TRACKING_URI unset, say). */
    static tracker from_env()
    {
        char err[512] = "";
        mlt_tracker *t = nullptr;
        mlt_err rc = mlt_tracker_from_env(&t, err, sizeof err);
        if (rc != MLT_OK) {
            throw error(rc, err);
        }
        return tracker(t);
    }

    /** Takes over t (closed by this object). */
    explicit tracker(mlt_tracker *t) noexcept : t_(t)
    {
    }

    tracker(const tracker &) = delete;
    tracker &operator=(const tracker &) = delete;
    tracker(tracker &&o) noexcept : t_(o.t_), close_ms_(o.close_ms_)
    {
        o.t_ = nullptr;
    }
    tracker &operator=(tracker &&o) noexcept
    {
        if (this != &o) {
            close(close_ms_);
            t_ = o.t_;
            close_ms_ = o.close_ms_;
            o.t_ = nullptr;
        }
        return *this;
    }

    /** Closes with the close timeout (10 s unless set_close_timeout() said otherwise); the
     *  result is lost: call close() to see it. */
    ~tracker()
    {
        close(close_ms_);
    }

    /** mlt_tracker_close(): MLT_OK, MLT_ERR_QUEUED (kept in the queue: not a failure),
     *  MLT_ERR_TIMEOUT... Every run of the tracker must be destroyed or ended before.
     *  MLT_OK when closed already. */
    mlt_err close(int timeout_ms)
    {
        mlt_tracker *t = t_;
        t_ = nullptr;
        return mlt_tracker_close(t, timeout_ms);
    }

    void set_close_timeout(int timeout_ms) noexcept
    {
        close_ms_ = timeout_ms;
    }

    /** mlt_tracker_flush() */
    mlt_err flush(int timeout_ms)
    {
        return mlt_tracker_flush(t_, timeout_ms);
    }

    /** mlt_tracker_add_mlflow(). Throws. */
    void add_mlflow()
    {
        char err[512] = "";
        mlt_err rc = mlt_tracker_add_mlflow(t_, err, sizeof err);
        if (rc != MLT_OK) {
            throw error(rc, err);
        }
    }

    /** mlt_tracker_add_print() */
    mlt_err add_print(std::FILE *out)
    {
        return mlt_tracker_add_print(t_, out);
    }

    /** mlt_tracker_add_callbacks(): callbacks copied, userdata borrowed. */
    mlt_err add_callbacks(const mlt_callbacks &cb, void *userdata)
    {
        return mlt_tracker_add_callbacks(t_, &cb, userdata);
    }

    /** mlt_tracker_set_default(): MLT_TRACKED functions log through this tracker. */
    void make_default() noexcept
    {
        mlt_tracker_set_default(t_);
    }

    /** mlt_metric_key(): a handle for run::log_metric in a hot loop (nullptr on error). */
    const mlt_key *metric_key(const char *key)
    {
        const mlt_key *k = nullptr;
        return mlt_metric_key(&k, t_, key) == MLT_OK ? k : nullptr;
    }

    mlt_tracker *get() const noexcept
    {
        return t_;
    }

  private:
    mlt_tracker *t_ = nullptr;
    int close_ms_ = 10000;
};

/**
 * A run, ended when destroyed: FINISHED, or FAILED when an exception unwinds it (or fail() was
 * called). A child run (constructed from its parent) is a nested MLflow run. The handle stays
 * readable after the end (id(), ui_url()) until the tracker is closed, as in C.
 */
class run
{
  public:
    /** mlt_run_start(&r, t, name): a top-level run. Throws. */
    explicit run(tracker &t, const char *name = nullptr) : unwinding_(detail::uncaught())
    {
        check(mlt_run_start(&r_, t.get(), name));
    }
    run(tracker &t, const std::string &name) : run(t, name.c_str())
    {
    }

    /** mlt_run_start_child(&r, parent, name). Throws. */
    run(run &parent, const char *name) : unwinding_(detail::uncaught())
    {
        check(mlt_run_start_child(&r_, parent.r_, name));
    }
    run(run &parent, const std::string &name) : run(parent, name.c_str())
    {
    }

    run(const run &) = delete;
    run &operator=(const run &) = delete;
    run(run &&o) noexcept : r_(o.r_), ended_(o.ended_), unwinding_(o.unwinding_)
    {
        o.r_ = o.ended_ = nullptr;
    }
    run &operator=(run &&) = delete;

    ~run()
    {
        if (r_) {
            end(detail::uncaught() > unwinding_ ? MLT_RUN_FAILED : MLT_RUN_FINISHED);
        }
    }

    /** mlt_run_end() now; the destructor then does nothing. MLT_ERR_STATE when ended already
     *  (MLT_ERR_INVALID_ARG for a moved-from run). */
    mlt_err end(mlt_run_status status = MLT_RUN_FINISHED)
    {
        if (r_) {
            ended_ = r_;
            r_ = nullptr;
        }
        return mlt_run_end(ended_, status);
    }

    /** mlt_run_fail(): it ends FAILED. */
    void fail() noexcept
    {
        mlt_run_fail(h());
    }

    /** mlt_log_param(); numbers and bool are formatted as MLT_TRACKED formats arguments. */
    mlt_err log_param(const char *key, const char *value)
    {
        return mlt_log_param(h(), key, value);
    }
    mlt_err log_param(const char *key, const std::string &value)
    {
        return mlt_log_param(h(), key, value.c_str());
    }
    template <class T, class = typename std::enable_if<std::is_arithmetic<T>::value>::type>
    mlt_err log_param(const char *key, T value)
    {
        return mlt_log_param(h(), key, detail::param_text(value).c_str());
    }

    /** mlt_log_metric() */
    mlt_err log_metric(const char *key, double value, int64_t step = 0)
    {
        return mlt_log_metric(h(), key, value, step);
    }
    mlt_err log_metric(const std::string &key, double value, int64_t step = 0)
    {
        return mlt_log_metric(h(), key.c_str(), value, step);
    }
    /** mlt_log_metric_key(): with a handle of tracker::metric_key(). */
    mlt_err log_metric(const mlt_key *key, double value, int64_t step = 0)
    {
        return mlt_log_metric_key(h(), key, value, step);
    }
    /** mlt_log_metric_at() */
    mlt_err log_metric_at(const char *key, double value, int64_t step, int64_t timestamp_ms)
    {
        return mlt_log_metric_at(h(), key, value, step, timestamp_ms);
    }

    /** mlt_set_tag() */
    mlt_err set_tag(const char *key, const char *value)
    {
        return mlt_set_tag(h(), key, value);
    }
    mlt_err set_tag(const char *key, const std::string &value)
    {
        return mlt_set_tag(h(), key, value.c_str());
    }

    /** mlt_log_artifact(): the file keeps its name, under artifact_dir (nullptr or "": the
     * run's root). */
    mlt_err log_artifact(const std::string &local_path, const char *artifact_dir = nullptr)
    {
        return mlt_log_artifact(h(), local_path.c_str(), artifact_dir);
    }
    /** mlt_log_artifacts(): a directory tree. */
    mlt_err log_artifacts(const std::string &local_dir, const char *artifact_dir = nullptr)
    {
        return mlt_log_artifacts(h(), local_dir.c_str(), artifact_dir);
    }
    /** mlt_log_artifact_bytes(): what the program holds (text, JSON, a PNG it drew). */
    mlt_err log_artifact_bytes(const char *artifact_file, const void *data, size_t len)
    {
        return mlt_log_artifact_bytes(h(), artifact_file, data, len);
    }
    mlt_err log_artifact_bytes(const char *artifact_file, const std::string &text)
    {
        return mlt_log_artifact_bytes(h(), artifact_file, text.data(), text.size());
    }

    /** mlt_run_last_step(): where a resumed run left off with key (MLT_ERR_NOT_FOUND: it did
     * not log it yet; start from 0). */
    mlt_err last_step(const char *key, int64_t &step)
    {
        return mlt_run_last_step(h(), key, &step);
    }

    /** mlt_run_key(), mlt_run_id() (nullptr until the server made the run), mlt_run_name() */
    const char *key() const noexcept
    {
        return mlt_run_key(h());
    }
    const char *id() const noexcept
    {
        return mlt_run_id(h());
    }
    const char *name() const noexcept
    {
        return mlt_run_name(h());
    }

    /** mlt_run_ui_url(), or "" while the run's id is not known. */
    std::string ui_url() const
    {
        char buf[2048];
        return mlt_run_ui_url(buf, sizeof buf, h()) == MLT_OK ? std::string(buf) : std::string();
    }

    /** The C handle (for the C API, and MLT_TRACKED bodies); still valid once ended. */
    mlt_run *get() const noexcept
    {
        return h();
    }

  private:
    void check(mlt_err rc)
    {
        if (rc != MLT_OK) {
            throw error(rc, mlt_last_error());
        }
    }
    /* after end(), the C handle still answers (MLT_ERR_STATE for logging), until close */
    mlt_run *h() const noexcept
    {
        return r_ ? r_ : ended_;
    }

    mlt_run *r_ = nullptr;
    mlt_run *ended_ = nullptr;
    int unwinding_;
};

} // namespace mlt

#endif /* MLTRACK_HPP */
