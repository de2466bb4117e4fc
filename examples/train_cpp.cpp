// train_cpp.cpp - libmltrack from C++: the RAII types of mltrack.hpp, the C API and its macros
// side by side. Configured by the MLflow variables (MLFLOW_TRACKING_URI, ...), as the C examples.
//
//   train_cpp          a run "train_cpp" (params, a loss curve, a tag) with a child run "eval";
//                      a run "diverged" that an exception ends FAILED; a run made by MLT_WITH_RUN
//                      and one by an MLT_TRACKED function. Prints the main run's id and MLflow
//                      UI address once the server has it; exits 0 (also when the server is away:
//                      the runs are then kept in the queue, and stderr says so in one line).
#include <mltrack.hpp>

#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>

// A tracked function: each call is a run "evaluate" with params k and threshold.
MLT_TRACKED(double, evaluate, (int, k), (double, threshold))
{
    return k * threshold;
}

static double train_step(int epoch)
{
    return 1.0 / (1.0 + epoch); // a stand-in for training
}

int main()
{
    try {
        mlt::tracker tracker = mlt::tracker::from_env();
        tracker.make_default(); // for MLT_TRACKED
        {
            mlt::run run(tracker, "train_cpp");
            run.log_param("epochs", 5);
            run.log_param("learning_rate", 0.01);
            run.log_param("optimizer", std::string("adam"));
            for (int epoch = 0; epoch < 5; epoch++) {
                run.log_metric("loss", train_step(epoch), epoch);
            }
            run.set_tag("framework", "c++");
            {
                mlt::run eval(run, "eval"); // a child run
                eval.log_metric("accuracy", 0.75);
            }
            if (tracker.flush(10000) == MLT_OK && run.id()) {
                std::cout << "run id: " << run.id() << "\nrun url: " << run.ui_url() << "\n";
            }
        } // ended FINISHED here

        try {
            mlt::run diverged(tracker, "diverged");
            diverged.log_metric("loss", 1e9, 0);
            throw std::runtime_error("the loss diverged");
        } catch (const std::runtime_error &e) { // "diverged" ended FAILED as this unwound
            std::cout << "diverged: " << e.what() << "\n";
        }

        MLT_WITH_RUN(tracker.get(), run, "scope_cpp") {
            mlt_log_metric(run, "steps", 3, 0);
        }
        std::cout << "evaluate: " << evaluate(4, 0.25) << "\n";

        mlt_err rc = tracker.close(10000);
        if (rc != MLT_OK) {
            std::cerr << "train_cpp: " << mlt_last_error() << "\n"; // kept in the queue: where
        }
        return rc == MLT_OK || rc == MLT_ERR_QUEUED || rc == MLT_ERR_TIMEOUT ? 0 : 1;
    } catch (const mlt::error &e) {
        std::cerr << "train_cpp: " << e.what() << "\n";
        return 2;
    }
}
