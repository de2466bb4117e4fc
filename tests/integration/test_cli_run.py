"""`mltrack run`, `mltrack log-metric | log-param | set-tag` and the CLI's help and usage errors,
against a real MLflow server; what landed is read back with mlflow_read (plain urllib)."""

import os
import shlex
import signal
import socket
import sys
import time

import pytest

from conftest import Programs, slow_factor, under_valgrind
from mlflow_read import MlflowReader

FAST_RETRY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
}


class Cli:
    """The mltrack CLI of one test: its own queue directory and experiment, aimed at uri."""

    def __init__(self, build_dir, tmp_path, exp_name, uri):
        self.programs = Programs(build_dir, uri)
        self.mltrack = self.programs.path("mltrack")
        self.queue = str(tmp_path / "queue")
        self.exp_name = exp_name
        self.uri = uri
        self.reader = MlflowReader(uri)

    def env(self, extra=None):
        env = {"MLTRACK_QUEUE_DIR": self.queue, "MLTRACK_RUN_KEY": None}
        env.update(FAST_RETRY)
        env.update(extra or {})
        return env

    def run(self, args, env=None, timeout=120):
        return self.programs.run(["mltrack"] + list(args), env=self.env(env), timeout=timeout)

    def start(self, args, env=None):
        return self.programs.start(["mltrack"] + list(args), env=self.env(env))

    def wrap(self, script, *flags, env=None, timeout=120):
        """mltrack run --experiment EXP FLAGS -- sh -c SCRIPT"""
        return self.run(["run", "--experiment", self.exp_name, *flags, "--", "sh", "-c", script],
                        env=env, timeout=timeout)

    def the_run(self, name=None):
        _, runs = self.reader.runs_of_experiment_named(self.exp_name)
        if name is not None:
            runs = [r for r in runs if r["info"].get("run_name") == name]
        assert len(runs) == 1, f"expected one run{' named ' + name if name else ''}: {runs}"
        return runs[0]

    def history(self, run, key):
        return [(p["value"], p["step"]) for p in
                self.reader.metric_history(run["info"]["run_id"], key)]


@pytest.fixture
def cli(build_dir, tmp_path, exp_name, tracking_uri):
    if not os.access(os.path.join(build_dir, "mltrack"), os.X_OK):
        pytest.fail(f"{build_dir}/mltrack is missing: run `make` first")
    return Cli(build_dir, tmp_path, exp_name, tracking_uri)


def tags_of(run):
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params_of(run):
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def test_wrapped_shell_exiting_3_is_a_failed_run_with_its_two_points(cli):
    """The issue's check: sh -c printing two metric lines and exiting 3 makes a FAILED run with
    those two points, and mltrack run exits 3; stdout passes through byte for byte."""
    script = ("echo 'mltrack:metric loss=0.75 step=0'; echo before; "
              "echo 'mltrack:metric loss=0.5 step=1'; printf 'no newline at the end'; exit 3")
    res = cli.wrap(script, "--run-name", "exit3", "--param", "lr=0.01", "--tag", "team=vision")
    assert res.rc == 3, res
    assert res.stdout == ("mltrack:metric loss=0.75 step=0\nbefore\n"
                          "mltrack:metric loss=0.5 step=1\nno newline at the end"), res
    run = cli.the_run("exit3")
    assert run["info"]["status"] == "FAILED", run
    assert cli.history(run, "loss") == [(0.75, 0), (0.5, 1)]
    assert params_of(run) == {"lr": "0.01"}
    tags = tags_of(run)
    assert tags["team"] == "vision"
    assert tags["mltrack.exit_code"] == "3"
    assert shlex.split(tags["mltrack.command"]) == ["sh", "-c", script], tags
    assert tags["mltrack.cwd"] == os.getcwd()
    assert tags["mltrack.host"] == os.uname().nodename
    assert tags["mlflow.source.name"] == "sh"
    assert tags["mltrack.client_run_key"], tags


def test_protocol_lines_quotes_steps_and_malformed_lines(cli):
    lines = [
        "mltrack:param optimizer=adam note=\"two words\"",
        'mltrack:tag stage="fine tune" quote="say \\"hi\\""',
        "mltrack:metric acc=0.5 loss=2",       # auto steps: 0
        "mltrack:metric acc=0.625",            # 1
        "mltrack:metric acc=0.75 step=10",     # explicit
        "mltrack:metric acc=0.875",            # 11: after the explicit one
        "mltrack:metric acc=abc",              # malformed: not a number
        "mltrack:metric step=3",               # malformed: no pair
        "mltrack:frobnicate x=1",              # malformed: unknown verb
        "mltrack:metric good=1 bad",           # malformed: all or nothing
        "mltrack:metric bad//key=1",           # refused by MLflow's key rules
        "not mltrack:metric x=1",              # not a protocol line
        "  mltrack:metric x=1",                # not either: the prefix starts the line
    ]
    script = "; ".join("printf '%s\\n' " + shlex.quote(line) for line in lines)
    script += r"; printf 'bytes \001\377 pass\r\n'"
    res = cli.wrap(script, "--run-name", "proto")
    assert res.rc == 0, res
    # every byte passes through (the harness decodes stdout with errors="replace")
    assert res.stdout == "\n".join(lines) + "\nbytes \x01\ufffd pass\r\n", res
    reported = [ln for ln in res.stderr.splitlines() if "ignored" in ln]
    assert len(reported) == 5, f"each malformed line reported once: {res.stderr}"
    for n in (7, 8, 9, 10, 11):
        assert sum(f"stdout line {n}:" in ln for ln in reported) == 1, (n, res.stderr)
    run = cli.the_run("proto")
    assert run["info"]["status"] == "FINISHED"
    assert params_of(run) == {"optimizer": "adam", "note": "two words"}
    tags = tags_of(run)
    assert (tags["stage"], tags["quote"]) == ("fine tune", 'say "hi"')
    assert cli.history(run, "acc") == [(0.5, 0), (0.625, 1), (0.75, 10), (0.875, 11)]
    assert cli.history(run, "loss") == [(2.0, 0)]
    assert sorted(m["key"] for m in run["data"].get("metrics", [])) == ["acc", "loss"]


def test_children_log_into_the_same_run(cli, build_dir):
    """libmltrack (examples/train_model: its MLT_TRACKED run attaches), `mltrack log-metric`
    and the official Python client all log into the wrapper's run, which ends FINISHED once."""
    train = os.path.join(build_dir, "examples", "train_model")
    py = ("import mlflow; mlflow.start_run(); mlflow.log_metric('from_python', 1.5, step=4); "
          "mlflow.end_run()")
    script = (f"test -n \"$MLFLOW_RUN_ID\" || exit 9; {shlex.quote(train)} >/dev/null || exit 8; "
              f"{shlex.quote(cli.mltrack)} log-metric from_shell -2.5 --step 7 || exit 7; "
              f"{shlex.quote(cli.mltrack)} log-param shell_param 'a b' || exit 6; "
              f"{shlex.quote(cli.mltrack)} set-tag shell_tag yes || exit 5; "
              f"{shlex.quote(sys.executable)} -c {shlex.quote(py)} || exit 4")
    # the Python client reads the backoff factor as an integer
    res = cli.wrap(script, "--run-name", "family", env={"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"},
                   timeout=300)
    assert res.rc == 0, res
    run = cli.the_run("family")  # one run: nobody made a second one
    assert run["info"]["status"] == "FINISHED"
    assert cli.history(run, "from_shell") == [(-2.5, 7)]
    assert cli.history(run, "from_python") == [(1.5, 4)]
    assert [v for v, _ in cli.history(run, "accuracy")] != [], run
    assert cli.history(run, "accuracy") == [(v, i) for i, (v, _) in
                                            enumerate(cli.history(run, "accuracy"))]
    params = params_of(run)
    assert params["shell_param"] == "a b"
    assert (params["epochs"], params["learning_rate"]) == ("10", "0.01")
    assert tags_of(run)["shell_tag"] == "yes"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_mltrack_reaches_the_child_and_the_run_ends_killed(cli, sig):
    proc = cli.start(["run", "--experiment", cli.exp_name, "--run-name", "sig", "--",
                      "sh", "-c", "echo ready; exec sleep 60"])
    deadline = time.monotonic() + 60 * slow_factor()
    line = b""
    while not line.endswith(b"ready\n") and time.monotonic() < deadline:
        line += proc.stdout.read(1)
    assert line.endswith(b"ready\n"), line
    proc.send_signal(sig)  # from another process, as kill(1) sends it: mltrack passes it on
    res = cli.programs.wait(proc, timeout=60)
    assert res.rc == 128 + sig, res
    run = cli.the_run("sig")
    assert run["info"]["status"] == "KILLED"
    assert tags_of(run)["mltrack.signal"] == signal.Signals(sig).name


def test_signal_while_waiting_for_the_run_id_starts_nothing(build_dir, tmp_path, exp_name):
    """A server that takes the connection and never answers: mltrack waits for the run id; a
    SIGTERM then means the command is never started, and mltrack exits 143 at once."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    hole.settimeout(60 * slow_factor())
    try:
        c = Cli(build_dir, tmp_path, exp_name, f"http://127.0.0.1:{hole.getsockname()[1]}")
        marker = tmp_path / "started"
        proc = c.start(["run", "--", "sh", "-c", f"touch {shlex.quote(str(marker))}"],
                       env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"})
        conn, _ = hole.accept()  # the run's create is in flight: mltrack waits for its id
        proc.send_signal(signal.SIGTERM)
        res = c.programs.wait(proc, timeout=60)
        conn.close()
    finally:
        hole.close()
    assert res.rc == 128 + signal.SIGTERM, res
    assert "not started" in res.stderr, res
    assert not marker.exists(), "the command ran after all"
    assert res.elapsed < 10 * slow_factor(), res


def test_command_not_found_is_127_not_executable_126_and_a_failed_run(cli):
    res = cli.run(["run", "--experiment", cli.exp_name, "--run-name", "nf", "--",
                   "/nonexistent/program"])
    assert res.rc == 127, res
    assert "command not found" in res.stderr
    run = cli.the_run("nf")
    assert run["info"]["status"] == "FAILED"
    assert tags_of(run)["mltrack.exit_code"] == "127"
    res = cli.run(["run", "--experiment", cli.exp_name, "--run-name", "noexec", "--",
                   "/etc/passwd"])
    assert res.rc == 126 and "Permission denied" in res.stderr, res
    assert tags_of(cli.the_run("noexec"))["mltrack.exit_code"] == "126"


def test_nested_mltrack_run_is_a_child_run(cli):
    inner = f"{shlex.quote(cli.mltrack)} run --run-name inner -- true"
    res = cli.wrap(inner, "--run-name", "outer")
    assert res.rc == 0, res
    outer = cli.the_run("outer")
    inner_run = cli.the_run("inner")
    assert tags_of(inner_run)["mlflow.parentRunId"] == outer["info"]["run_id"]
    assert inner_run["info"]["status"] == outer["info"]["status"] == "FINISHED"


def test_a_sweep_of_nested_runs_logs_each_line_once(cli):
    """An outer `mltrack run` over a sweep whose two trials run under `mltrack run` of their own:
    each trial's protocol lines land in the trial only (before, in the sweep too: the inner run
    passed them through and the outer read them again); the sweep's own line lands in the sweep;
    the user still sees every line, the trials' ones indented."""
    m = shlex.quote(cli.mltrack)
    trial = ("echo mltrack:metric loss=$a; printf mltrack:met; sleep 0.05; "
             "echo \"ric loss=$b\"; echo mltrack:param seen=yes")
    script = (f"a=1.5 b=1.25 {m} run --run-name trial-1 --param lr=0.1 -- sh -c '{trial}' && "
              f"a=2.5 b=2.25 {m} run --run-name trial-2 --param lr=0.2 -- sh -c '{trial}' && "
              "echo mltrack:metric best=1.25")
    res = cli.wrap(script, "--run-name", "sweep")
    assert res.rc == 0, res
    assert res.stdout == ("  mltrack:metric loss=1.5\n  mltrack:metric loss=1.25\n"
                          "  mltrack:param seen=yes\n"
                          "  mltrack:metric loss=2.5\n  mltrack:metric loss=2.25\n"
                          "  mltrack:param seen=yes\n"
                          "mltrack:metric best=1.25\n"), res
    sweep = cli.the_run("sweep")
    # each mltrack run says where its run is, and nothing else
    assert sorted(res.stderr.splitlines()) == sorted(
        f"mltrack: view run '{name}' at {cli.uri}/#/experiments/{r['info']['experiment_id']}/runs/"
        f"{r['info']['run_id']}/model-metrics?workflowType=machine_learning"
        for name, r in ((n, cli.the_run(n)) for n in ("sweep", "trial-1", "trial-2"))), res
    assert sweep["info"]["status"] == "FINISHED"
    assert cli.history(sweep, "best") == [(1.25, 0)]
    assert cli.history(sweep, "loss") == []
    assert MlflowReader.params(sweep) == {}
    for name, lr, points in (("trial-1", "0.1", [(1.5, 0), (1.25, 1)]),
                             ("trial-2", "0.2", [(2.5, 0), (2.25, 1)])):
        run = cli.the_run(name)
        assert tags_of(run)["mlflow.parentRunId"] == sweep["info"]["run_id"], name
        assert run["info"]["status"] == "FINISHED", name
        assert MlflowReader.params(run) == {"lr": lr, "seen": "yes"}, name
        assert cli.history(run, "loss") == points, name
        assert cli.history(run, "best") == [], name


def test_system_metrics_under_mlflow_names(cli):
    res = cli.wrap("sleep 1.3", "--run-name", "sys", "--system-metrics-interval", "0.25")
    assert res.rc == 0, res
    run = cli.the_run("sys")
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                 "system/system_memory_usage_percentage"):
        h = cli.history(run, name)
        assert len(h) >= 2, (name, h)
        assert [s for _, s in h] == list(range(len(h))), (name, h)
        assert all(v >= 0 for v, _ in h), (name, h)


def test_offline_run_and_log_metric_then_sync_delivers_once(cli, build_dir, tmp_path,
                                                            unused_port, server_factory):
    """With the server away the child gets only MLTRACK_RUN_KEY; log-metric queues a point for
    a run that does not exist yet; both exit 0 at once (not at their --timeout), each with one
    line saying what is kept, where, and how to deliver it; `mltrack sync` later makes the run
    once, with every point."""
    off = Cli(build_dir, tmp_path, cli.exp_name, f"http://127.0.0.1:{unused_port}")
    script = (f"test -z \"$MLFLOW_RUN_ID\" && test -n \"$MLTRACK_RUN_KEY\" || exit 9; "
              f"{shlex.quote(off.mltrack)} log-metric late 0.25 --step 3 --timeout 60 || exit 7; "
              "echo 'mltrack:metric loss=1'")
    res = off.run(["run", "--experiment", off.exp_name, "--run-name", "offline", "--timeout",
                   "60", "--", "sh", "-c", script], timeout=120)
    assert res.rc == 0, res
    assert res.elapsed < 20, f"mltrack run --timeout 60 took {res.elapsed:.1f} s offline: {res!r}"
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res  # log-metric's line, then run's: nothing else
    uri, queue = f"http://127.0.0.1:{unused_port}", off.queue
    for line, what in zip(lines, ["0 runs and 1 point (2 records)",
                                  "1 run, 1 point and 1 artifact (8 records)"]):
        assert line.startswith(f"mltrack: kept in the queue, not delivered yet: {what} in "
                               f"{queue}: the tracking server {uri} cannot be reached ("), res
        assert line.endswith(f"`mltrack sync --queue {queue}` delivers them once the server is "
                             "back"), res
    srv = server_factory(port=unused_port)
    res = off.run(["sync", "--tracking-uri", srv.uri, "--timeout", "120"], timeout=300)
    assert res.rc == 0 and "delivered everything" in res.stdout, res
    run = off.the_run("offline")
    assert run["info"]["status"] == "FINISHED"
    assert off.history(run, "late") == [(0.25, 3)]
    assert off.history(run, "loss") == [(1.0, 0)]
    res = off.run(["sync", "--tracking-uri", srv.uri], timeout=120)
    assert res.rc == 0, res
    _, runs = off.reader.runs_of_experiment_named(off.exp_name)
    assert len(runs) == 1, runs


def test_log_commands_need_a_run_and_usage_errors_are_one_line(cli):
    res = cli.run(["log-metric", "x", "1"], env={"MLFLOW_RUN_ID": None})
    assert res.rc == 2 and "MLFLOW_RUN_ID or MLTRACK_RUN_KEY" in res.stderr, res
    bad = [
        ["run"], ["run", "--param", "novalue", "--", "true"], ["run", "--bogus", "--", "true"],
        ["log-metric", "x"], ["log-metric", "x", "abc"], ["log-param", "k", "v", "extra"],
        ["frobnicate"], [], ["sync", "--queue"], ["log-metric", "x", "1", "--step", "1.5"],
        ["run", "--param", "bad//key=1", "--", "true"],
    ]
    for args in bad:
        res = cli.run(args, env={"MLFLOW_RUN_ID": "0" * 32})
        assert res.rc == 2, f"mltrack {args}: {res!r}"
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, f"mltrack {args}: one line wanted: {res.stderr!r}"
        assert lines[0].startswith("mltrack: "), lines
    _, runs = cli.reader.runs_of_experiment_named(cli.exp_name)
    assert runs == [], "a usage error must not make a run"
    for args in (["--help"], ["help"], ["help", "run"], ["run", "--help"],
                 ["log-metric", "--help"], ["sync", "--help"], ["status", "--help"]):
        res = cli.run(args)
        assert res.rc == 0 and res.stdout.startswith("usage: mltrack"), (args, res)



def test_resume_key_continues_one_run_across_starts(cli):
    """`mltrack run --resume-key KEY` twice: the first start makes the run (and fails, exit 3),
    the second continues it (RUNNING again, its command logging into it too) and ends it
    FINISHED: one run holding the points of both."""
    key = "job_" + cli.exp_name[-10:]
    res = cli.wrap("echo 'mltrack:metric loss=1 step=0'; exit 3", "--resume-key", key,
                   "--run-name", "resumed")
    assert res.rc == 3, res
    assert cli.the_run()["info"]["status"] == "FAILED"
    script = (f"{shlex.quote(cli.mltrack)} log-metric loss 0.5 --step 1 || exit 7; "
              "echo 'mltrack:metric loss=0.25 step=2'")
    res = cli.wrap(script, "--resume-key", key)
    assert res.rc == 0, res
    run = cli.the_run()  # still one run
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["run_name"] == "resumed"
    assert sorted(cli.history(run, "loss"), key=lambda p: p[1]) == [(1, 0), (0.5, 1), (0.25, 2)]
    tags = tags_of(run)
    assert tags["mltrack.client_run_key"] == key and tags["mltrack.exit_code"] == "0", tags
    # resume without a key, or with a run id: a clear error, no run
    res = cli.wrap("true", env={"MLTRACK_RESUME": "allow"})
    assert res.rc == 2 and "needs the key of the run to resume" in res.stderr, res
    res = cli.wrap("true", "--resume-key", key, env={"MLFLOW_RUN_ID": "abc"})
    assert res.rc == 2 and "--resume-key: MLFLOW_RUN_ID is set" in res.stderr, res
    res = cli.wrap("true", "--resume-key", "bad key")
    assert res.rc == 2 and "--resume-key" in res.stderr, res
