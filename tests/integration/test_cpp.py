"""libmltrack from C++ (examples/train_cpp.cpp): the RAII types of mltrack.hpp, the C API, and
the MLT_WITH_RUN and MLT_TRACKED macros in a C++ program, against the real server, read back
through the REST API; and the same program with the server away, delivered by `mltrack sync`."""

import os

from mlflow_read import MlflowReader

TRAIN_LOSS = [(1.0 / (1 + e), e) for e in range(5)]
CLIENT_KEY_TAG = "mltrack.client_run_key"


def runs_by_name(reader, exp_name):
    _, runs = reader.runs_of_experiment_named(exp_name)
    by_name = {}
    for r in runs:
        name = r["info"]["run_name"]
        assert name not in by_name, f"two runs named {name}: {runs}"
        by_name[name] = r
    return by_name


def history(reader, run, key):
    return [(p["value"], p["step"]) for p in reader.metric_history(run["info"]["run_id"], key)]


def check_runs(reader, exp_name):
    """Exactly the runs train_cpp makes, each as it logged it."""
    runs = runs_by_name(reader, exp_name)
    assert sorted(runs) == ["diverged", "eval", "evaluate", "scope_cpp", "train_cpp"], runs
    train, ev = runs["train_cpp"], runs["eval"]
    assert train["info"]["status"] == "FINISHED"
    assert MlflowReader.params(train) == {"epochs": "5", "learning_rate": "0.01",
                                          "optimizer": "adam"}
    assert MlflowReader.tags(train)["framework"] == "c++"
    assert history(reader, train, "loss") == TRAIN_LOSS
    # the child run, ended by its destructor
    assert MlflowReader.tags(ev)["mlflow.parentRunId"] == train["info"]["run_id"]
    assert ev["info"]["status"] == "FINISHED"
    assert history(reader, ev, "accuracy") == [(0.75, 0)]
    # an exception unwound it: FAILED
    assert runs["diverged"]["info"]["status"] == "FAILED"
    assert history(reader, runs["diverged"], "loss") == [(1e9, 0)]
    # MLT_WITH_RUN and MLT_TRACKED in C++
    assert runs["scope_cpp"]["info"]["status"] == "FINISHED"
    assert history(reader, runs["scope_cpp"], "steps") == [(3.0, 0)]
    evaluate = runs["evaluate"]
    assert evaluate["info"]["status"] == "FINISHED"
    assert MlflowReader.params(evaluate) == {"k": "4", "threshold": "0.25"}
    assert history(reader, evaluate, "result") == [(1.0, 0)]
    assert [s for _, s in history(reader, evaluate, "duration_s")] == [0]
    for r in runs.values():
        assert MlflowReader.tags(r)[CLIENT_KEY_TAG], r
    return runs


def test_cpp_program_logs_through_raii_and_macros(programs, reader, exp_name, tmp_path):
    env = {"MLFLOW_EXPERIMENT_NAME": exp_name, "MLTRACK_QUEUE_DIR": str(tmp_path / "queue")}
    res = programs.run(["train_cpp"], env=env, timeout=120)
    assert res.rc == 0 and res.stderr == "", res
    runs = check_runs(reader, exp_name)
    train = runs["train_cpp"]
    exp_id, run_id = train["info"]["experiment_id"], train["info"]["run_id"]
    assert f"run id: {run_id}\n" in res.stdout, res
    assert f"run url: {programs.tracking_uri}/#/experiments/{exp_id}/runs/{run_id}/model-metrics" \
           "?workflowType=machine_learning\n" in res.stdout, res
    assert "diverged: the loss diverged\n" in res.stdout and "evaluate: 1\n" in res.stdout, res
    assert os.listdir(tmp_path / "queue") == [], "a delivered program left a journal"


def test_cpp_program_offline_then_sync(programs, reader, exp_name, tmp_path, unused_port,
                                       tracking_uri):
    queue = str(tmp_path / "queue")
    env = {"MLFLOW_EXPERIMENT_NAME": exp_name, "MLTRACK_QUEUE_DIR": queue,
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{unused_port}"}
    res = programs.run(["train_cpp"], env=env, timeout=120)
    assert res.rc == 0, res
    (line,) = res.stderr.splitlines()
    assert line.startswith("train_cpp: kept in the queue, not delivered yet: 5 runs and 10 "
                           "points"), res
    assert "run id:" not in res.stdout, res
    res = programs.run(["mltrack", "sync", "--queue", queue, "--tracking-uri", tracking_uri],
                       env=env, timeout=300)
    assert res.rc == 0 and "delivered everything" in res.stdout, res
    check_runs(reader, exp_name)
