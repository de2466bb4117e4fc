"""Resume by key: a job killed (SIGKILL, as a preempted job is) and started again with the same key
and MLTRACK_RESUME=allow continues one run, against a real MLflow server that is up, down, or
flapping. tests/it_resume asks mlt_run_last_step() where it left off and logs on from there.

Read back independently (mlflow_read, urllib): the experiment holds exactly one run with the key,
FINISHED, whose metric "loss" has every step once, with the value the program logged, and the
steps the killed attempts printed (calls that returned) are all there.
"""

import random
import signal
import subprocess
import threading
import time

from conftest import only_in, slow_factor, under_valgrind
from mlflow_read import MlflowReader
from test_queue import Queue

STEPS = 300


def attempt(q, tmp_path, n, env, kill_after=None, timeout=300):
    """One start of the job: killed with SIGKILL after kill_after seconds, or run to its end.
    Returns (printed steps, from, stdout, stderr, returncode)."""
    out_p, err_p = tmp_path / f"out-{n}.txt", tmp_path / f"err-{n}.txt"
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        cmd = q.programs.command(["tests/it_resume", str(STEPS), "2"])
        proc = subprocess.Popen(cmd, env=q.programs.env(q.env(env)), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=timeout * slow_factor())
    text = out_p.read_text(errors="replace")
    steps = [int(line.split()[1]) for line in text.splitlines() if line.startswith("step ")]
    start = [int(line.split()[1]) for line in text.splitlines() if line.startswith("from ")]
    return steps, start, text, err_p.read_text(errors="replace"), proc.returncode


def check_one_run(uri, exp_name, key, printed):
    rd = MlflowReader(uri)
    _, runs = rd.runs_of_experiment_named(exp_name)
    mine = [r for r in runs if MlflowReader.tags(r).get("mltrack.client_run_key") == key]
    assert len(runs) == 1 and len(mine) == 1, [r["info"] for r in runs]
    run = mine[0]
    assert run["info"]["status"] == "FINISHED", run["info"]
    hist = rd.metric_history(run["info"]["run_id"], "loss")
    steps = sorted(p["step"] for p in hist)
    assert steps == list(range(STEPS)), (
        f"{len(steps)} points; doubled: {sorted({s for s in steps if steps.count(s) > 1})[:20]}; "
        f"missing: {sorted(set(range(STEPS)) - set(steps))[:20]}")
    assert all(p["value"] == p["step"] / 2 for p in hist)
    assert printed <= set(steps)
    assert MlflowReader.params(run) == {"lr": "0.1"}


def assert_printed_but_in_flight(printed, kills):
    """Every step printed by the attempt that logged it, but at most one per SIGKILL: the call
    that returned just as the kill came, before its line was written. The restart resumes after
    it (mlt_run_last_step knows it from the queue), and check_one_run finds it on the server."""
    missing = set(range(STEPS)) - printed
    assert len(missing) <= kills, (kills, sorted(missing)[:20])


def run_attempts(q, tmp_path, env, kills, rng, first=0):
    """kills attempts, numbered from first (0: the job's first start), each killed at random."""
    printed, froms = set(), []
    for n in range(first, first + kills):
        e = dict(env, IT_RESUME_FIRST="1" if n == 0 else "0")
        steps, start, out, err, rc = attempt(q, tmp_path, n, e,
                                             kill_after=rng.uniform(0.3, 1.2) * slow_factor())
        assert rc in (-signal.SIGKILL, 0), (rc, out[-2000:], err[-2000:])
        assert not set(steps) & printed, f"attempt {n} logged again steps an earlier one logged"
        printed |= set(steps)
        froms += start
    return printed, froms


def test_a_job_killed_ten_times_resumes_one_run_with_every_step_once(
        queue_build_dir, server_factory, tmp_path, exp_name, reliability):
    rng = random.Random(20261206)
    kills = 4 if under_valgrind() else 10
    srv = server_factory()
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    key = "job-" + exp_name[-10:]
    env = {"MLTRACK_RUN_KEY": key, "MLTRACK_RESUME": "allow", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    printed, froms = run_attempts(q, tmp_path, env, kills, rng)
    steps, start, out, err, rc = attempt(q, tmp_path, kills, env)
    assert rc == 0 and "close MLT_OK" in out, (out[-2000:], err[-2000:])
    printed |= set(steps)
    assert_printed_but_in_flight(printed, kills)
    assert any(f > 0 for f in froms + start), "no attempt resumed past step 0"
    check_one_run(srv.uri, exp_name, key, printed)
    reliability("resume by key: SIGKILL and restart, server up", faults=kills, checked="server")


def test_resume_with_the_server_down_then_flapping_is_still_one_run(
        queue_build_dir, server_factory, tmp_path, exp_name, reliability):
    only_in("default", "tsan")  # server restarts: the paths are the ten-kill test's
    rng = random.Random(7)
    kills = 4
    srv = server_factory()
    port = srv.port
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    key = "job-" + exp_name[-10:]
    env = {"MLTRACK_RUN_KEY": key, "MLTRACK_RESUME": "allow", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
           "IT_RESUME_CLOSE_MS": "1000"}
    # the server away for the first attempts: the journals alone know where the job left off
    srv.stop()
    printed, froms = run_attempts(q, tmp_path, env, kills, rng)
    assert any(f > 0 for f in froms), froms
    # then up and down between and during the next attempts
    stop = threading.Event()
    flap_errors = []

    def flapper():
        flap = random.Random(11)
        while not stop.is_set():
            try:
                srv.start()
                stop.wait(flap.uniform(0.5, 2.5))
                srv.stop()
                stop.wait(flap.uniform(0.3, 1.5))
            except Exception as e:  # noqa: BLE001 - reported below
                flap_errors.append(repr(e))
                stop.wait(1)

    t = threading.Thread(target=flapper, daemon=True)
    t.start()
    try:
        more, froms2 = run_attempts(q, tmp_path, dict(env, IT_RESUME_ASK_S="600"), kills, rng,
                                    first=kills)
    finally:
        stop.set()
        t.join(timeout=120)
    assert not flap_errors, flap_errors
    assert not more & printed
    printed |= more
    if not srv.running:
        srv.start()
    assert srv.port == port
    env["IT_RESUME_CLOSE_MS"] = "120000"
    steps, start, out, err, rc = attempt(q, tmp_path, 2 * kills, env)
    assert rc == 0 and "close MLT_OK" in out, (out[-2000:], err[-2000:])
    printed |= set(steps)
    assert_printed_but_in_flight(printed, 2 * kills)
    # what the killed attempts left in the queue: delivered by a sync
    q.sync(check_delivered=False)
    check_one_run(srv.uri, exp_name, key, printed)
    reliability("resume by key: SIGKILL and restart, server down then flapping",
                faults=2 * kills, checked="server")


def test_a_start_killed_while_creating_the_run_is_resumed_into_one_run(
        queue_build_dir, server_factory, tmp_path, exp_name, reliability):
    """The first start's runs/create reaches the server but its answer is cut (the fault proxy),
    and the start is killed while it waits to see whether the run was made; the restart, straight
    to the server, still makes one run: the earlier journal's create finds the run by its key."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from fault_proxy import FaultProxy

    only_in("default", "asan", "tsan")
    srv = server_factory()
    key = "job-" + exp_name[-10:]
    env = {"MLTRACK_RUN_KEY": key, "MLTRACK_RESUME": "allow", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
           "IT_RESUME_FIRST": "1"}
    with FaultProxy(srv.port) as proxy:
        # every create reaches the server, every answer is lost, and no search gets through: the
        # first start cannot learn that its run was made before it is killed
        proxy.add_rule("runs/create", "cut_after", count=None)
        # two searches pass (mlt_run_last_step, then the resume looking for the run): not found
        proxy.add_rule("runs/search", "cut_before", skip=2, count=None)
        q = Queue(queue_build_dir, tmp_path, exp_name, proxy.uri)
        out_p = tmp_path / "out-0.txt"
        with open(out_p, "wb") as out:
            proc = subprocess.Popen(q.programs.command(["tests/it_resume", str(STEPS), "2"]),
                                    env=q.programs.env(q.env(env)), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60 * slow_factor()
            while not proxy.requests("runs/create") and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proxy.requests("runs/create"), "the first start never tried to create its run"
        _, made = MlflowReader(srv.uri).runs_of_experiment_named(exp_name)
        assert len(made) >= 1, "the cut create did not make the run"
        printed = {int(line.split()[1]) for line in out_p.read_text().splitlines()
                   if line.startswith("step ")}
        # the restart, at the same tracking URI (the proxy, which now passes everything)
        proxy.clear_rules()
        steps, start, out, err, rc = attempt(q, tmp_path, 1, dict(env, IT_RESUME_FIRST="0"))
    assert rc == 0 and "close MLT_OK" in out, (out[-2000:], err[-2000:])
    printed |= set(steps)
    assert_printed_but_in_flight(printed, 1)
    check_one_run(srv.uri, exp_name, key, printed)
    reliability("resume by key: the first start killed while its run was being created",
                faults=1, checked="server")
