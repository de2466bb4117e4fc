/*
 * sysmetrics.c - the system metrics sampler (option system_metrics): a thread of the tracker's
 * that samples the machine every interval and logs MLflow's system metrics into every open
 * top-level run it created, through the tracker's own API.
 */
#include "config.h"

#include "tracker.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sysinfo.h"
#include "sysmetrics.h"

/* ---- system metrics ---- */

/* MLflow's names (mlflow/system_metrics), so that the UI shows them on its system metrics tab. */
static const char *const sys_names[] = {
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
};

#define N_SYS (sizeof sys_names / sizeof sys_names[0])

/* Waits one interval; false when the tracker is closing. Call with sys_lock held. */
static bool sys_wait(mlt_tracker *t, double interval_s)
{
    int64_t until = mlt__mono_ns() + (int64_t)(interval_s * 1e9);
    while (!t->sys_stop) {
        if (!mlt__cond_wait_until(&t->sys_cv, &t->sys_lock, until)) {
            break;
        }
    }
    return !t->sys_stop;
}

/* Each interval: one sample of the machine, logged into every open top-level run of this
 * tracker that it created (an attached run's owner logs its own), at the run's next step. */
static void *sys_thread(void *arg)
{
    mlt_tracker *t = arg;
    const mlt_key *keys[N_SYS];
    for (size_t i = 0; i < N_SYS; i++) {
        if (mlt_metric_key(&keys[i], t, sys_names[i]) != MLT_OK) {
            return NULL; /* counted as a tracker error */
        }
    }
    uint64_t busy0 = 0, total0 = 0;
    mlt__sys_cpu_times(&busy0, &total0);
    pthread_mutex_lock(&t->sys_lock);
    while (sys_wait(t, t->opts->system_metrics_interval_s)) {
        uint64_t busy = 0, total = 0, used = 0, mem = 0;
        double v[N_SYS];
        bool cpu_ok = mlt__sys_cpu_times(&busy, &total) && total > total0 && busy >= busy0;
        v[0] = cpu_ok ? 100.0 * (double)(busy - busy0) / (double)(total - total0) : 0.0;
        busy0 = busy;
        total0 = total;
        bool mem_ok = mlt__sys_memory(&used, &mem);
        v[1] = mem_ok ? (double)used / 1e6 : 0.0;
        v[2] = mem_ok ? 100.0 * (double)used / (double)mem : 0.0;
        pthread_mutex_lock(&t->lock);
        size_t n = 0;
        for (mlt_run *r = t->runs; r; r = r->next_sibling) {
            n++;
        }
        mlt_run **runs = n ? malloc(n * sizeof *runs) : NULL;
        size_t k = 0;
        for (mlt_run *r = t->runs; runs && r; r = r->next_sibling) {
            if (!r->attached) {
                runs[k++] = r;
            }
        }
        pthread_mutex_unlock(&t->lock);
        /* the runs stay alive: their end waits for sys_lock before unlinking them */
        for (size_t i = 0; i < k; i++) {
            for (size_t m = 0; m < N_SYS; m++) {
                if ((m == 0 && cpu_ok) || (m > 0 && mem_ok)) {
                    mlt_log_metric_key(runs[i], keys[m], v[m], runs[i]->sys_step);
                }
            }
            runs[i]->sys_step++;
        }
        free(runs);
    }
    pthread_mutex_unlock(&t->sys_lock);
    return NULL;
}

mlt_err mlt__sysmetrics_start(mlt_tracker *t)
{
    uint64_t a, b;
    if (!mlt__sys_cpu_times(&a, &b) || !mlt__sys_memory(&a, &b)) {
        return mlt__fail(MLT_ERR_BAD_OPTION,
                         "system_metrics: cannot read /proc/stat or /proc/meminfo");
    }
    if (pthread_create(&t->sys_thread, NULL, sys_thread, t) != 0) {
        return mlt__fail(MLT_ERR_NOMEM, "system_metrics: cannot start the sampling thread");
    }
    t->sys_started = true;
    return MLT_OK;
}

void mlt__sysmetrics_stop(mlt_tracker *t)
{
    if (!t->sys_started) {
        return;
    }
    pthread_mutex_lock(&t->sys_lock);
    t->sys_stop = true;
    pthread_cond_signal(&t->sys_cv);
    pthread_mutex_unlock(&t->sys_lock);
    pthread_join(t->sys_thread, NULL);
    t->sys_started = false;
}
