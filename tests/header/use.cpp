// use.cpp - every part of mltrack.h and mltrack.hpp a C++ program may use, for
// tests/check_header.sh: it must compile without a warning as C++11, 14, 17 and 20 (g++ and
// clang++, -Wall -Wextra -pedantic), with mltrack.h included directly or inside extern "C".
#ifdef MLT_INSIDE_EXTERN_C
extern "C" {
#include <mltrack.h>
}
#endif
#include <mltrack.hpp>

#include <stdexcept>
#include <string>

MLT_TRACKED(double, tracked, (int, epochs), (double, lr), (const char *, tag), (bool, flag),
            (long double, big), (unsigned char, byte))
{
    return epochs * lr + (tag ? 1 : 0) + flag + static_cast<double>(big) + byte;
}

MLT_TRACKED_VOID(tracked_void, (unsigned long, n))
{
    (void)n;
}

int main()
{
    mlt::tracker t;
    t.make_default();
    try {
        mlt::run run(t, "raii");
        run.log_param("epochs", 10);
        run.log_param("lr", 0.01);
        run.log_param("fast", true);
        run.log_param("name", std::string("x"));
        run.log_metric("loss", 0.5, 1);
        run.log_metric(std::string("acc"), 0.9);
        run.set_tag("k", std::string("v"));
        run.log_artifact_bytes("notes.txt", std::string("text"));
        run.log_artifact_bytes("raw.bin", "ab", 2);
        (void)run.log_artifact(std::string("/nonexistent"), "dir");
        mlt::run child(run, "child");
        const mlt_key *k = t.metric_key("fast/loss");
        child.log_metric(k, 1.0, 0);
        throw std::runtime_error("ends both FAILED");
    } catch (const std::exception &) {
    }
    MLT_WITH_RUN(t.get(), run, "scope")
    {
        mlt_log_param_value(run, "f", 0.5f);
    }
    {
        MLT_SCOPED_RUN(t.get(), run, "scoped");
        mlt_set_tag(run, "k", "v");
    }
    tracked(1, 0.1, nullptr, true, 1.0L, 7);
    tracked_void(3);
    mlt_queue_stats stats = MLT_QUEUE_STATS_INIT;
    (void)mlt_tracker_queue_stats(&stats, t.get());
    return t.close(0) == MLT_OK ? 0 : 1;
}
