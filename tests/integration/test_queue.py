"""Integration tests of the durable offline queue and the background sender.

The issue: "Durable offline queue and background sender: nothing blocks on the network, nothing is
lost, nothing doubles". Every test runs the C programs (tests/it_queue, examples/train_model, the
CLI mltrack) against MLflow servers of its OWN (started, stopped and restarted here with
scripts/mlflow-server.sh; the shared server of the session is never touched), with a fresh queue
directory (MLTRACK_QUEUE_DIR), and then reads the server back over REST (mlflow_read.py, standard
library only) and compares EXACTLY with it_queue's ledger: one line per call that returned MLT_OK,
with the timestamps the library stamped. Compared: run count per client run key (never two), run
name, start and end time, status, params, tags, and full metric histories (value, step,
timestamp; every point exactly once).

Faults the server cannot make on demand come from tests/fault_proxy.py, a loopback proxy in front
of the real server.

MLTRACK_TEST_WRAPPER (valgrind) prefixes every C program, mltrack included; the timeouts (never the
assertions on content) grow with it.
"""

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest

from conftest import VERIFIED, Programs, only_in, slow_factor
from mlflow_read import MlflowReader, value_key

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fault_proxy import FaultProxy  # noqa: E402

CLIENT_KEY_TAG = "mltrack.client_run_key"
SYSTEM_TAG_PREFIXES = ("mlflow.", "mltrack.")
TS_BASE = 1700000000000
# Quick retries, so that the tests do not wait for the default backoff (2 s doubling).
FAST_RETRY = {
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.1",
}


# ---- what it_queue logs (the same formulas as tests/it_queue.c) ----------------------------------


def it_key(i):
    return "loss" if i % 2 == 0 else "acc"


def it_value(r, i):
    step = i // 2
    if i % 2 == 0:
        return float(step * 7 + r * 13 + 1) / 3.0
    return 1.0 / (float(step) + 3.0 + float(r))


# ---- the ledger ----------------------------------------------------------------------------------


def read_ledger(path):
    """The ledger's entries (dicts). A last line without its newline would be a line being
    written when the program died: it_queue writes each line with one write(2), so there is none."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    lines = data.split("\n")
    assert lines[-1] == "", f"{path}: last ledger line is cut: {lines[-1]!r}"
    return [json.loads(ln) for ln in lines[:-1]]


class RunExp:
    """What the server should hold for one run, built from ledger entries."""

    def __init__(self, key):
        self.key = key
        self.name = None
        self.start = None
        self.params = {}
        self.tags = {}
        self.metrics = defaultdict(list)  # key -> [(step, ts, value)]
        self.end = None

    def statuses(self):
        """The statuses the server may show: the program's, or for a run the program never
        ended, RUNNING or KILLED (a journal taken over from a dead process ends its runs KILLED)."""
        return {self.end["status"]} if self.end else {"RUNNING", "KILLED"}


def expected_runs(entries):
    """{run key: RunExp} from ledger entries, in order (tags: last write wins)."""
    runs = {}
    for e in entries:
        k = e["run"]
        if e["kind"] == "start":
            assert k not in runs, f"run key {k} started twice in the ledger"
            runs[k] = RunExp(k)
            runs[k].name, runs[k].start = e["name"], e["start"]
            continue
        r = runs[k]
        if e["kind"] == "param":
            assert e["key"] not in r.params, f"param {e['key']} logged twice by the program"
            r.params[e["key"]] = e["value"]
        elif e["kind"] == "tag":
            r.tags[e["key"]] = e["value"]
        elif e["kind"] == "metric":
            r.metrics[e["key"]].append((e["step"], e["ts"], float(e["value"])))
        elif e["kind"] == "end":
            r.end = e
        else:
            raise AssertionError(f"unknown ledger entry {e}")
    return runs


def sort_points(points):
    return sorted(points, key=lambda p: (p[0], p[1], value_key(p[2])))


def points_id(points):
    return [(s, t, value_key(v)) for s, t, v in sort_points(points)]


def user_tags(tags):
    return {k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)}


# ---- reading the server --------------------------------------------------------------------------


def server_runs(reader, exp_name):
    """(experiment id, {client run key: [runs]}, [runs without the key tag]) of an experiment."""
    exp, runs = reader.runs_of_experiment_named(exp_name)
    by_key, untagged = defaultdict(list), []
    for run in runs:
        key = reader.tags(run).get(CLIENT_KEY_TAG)
        (by_key[key] if key else untagged).append(run)
    return (exp["experiment_id"] if exp else None), by_key, untagged


def run_view(reader, run):
    """A comparable dict of a run (from runs/search data plus full metric histories)."""
    info = run["info"]
    return {
        "run_id": info.get("run_id"),
        "run_name": info.get("run_name"),
        "status": info.get("status"),
        "start_time": info.get("start_time"),
        "end_time": info.get("end_time"),
        "params": reader.params(run),
        "tags": reader.tags(run),
        "metrics": {k: [(s, t, value_key(v)) for s, t, v in pts]
                    for k, pts in reader.full_metrics(run).items()},
    }


def assert_server_holds_exactly(reader, exp_name, runs, *, what=""):
    """The experiment holds exactly one run per expected run key and nothing else, and each run
    holds exactly what the ledger says. Returns {key: run_view}."""
    _, by_key, untagged = server_runs(reader, exp_name)
    assert not untagged, f"{what}runs without the {CLIENT_KEY_TAG} tag: {untagged}"
    dup = {k: len(v) for k, v in by_key.items() if len(v) != 1}
    assert not dup, f"{what}client run keys with more than one run on the server: {dup}"
    assert set(by_key) == set(runs), (
        f"{what}run keys on the server {sorted(by_key)} != ledger {sorted(runs)}"
    )
    views = {}
    for key, exp in runs.items():
        v = run_view(reader, by_key[key][0])
        views[key] = v
        where = f"{what}run {exp.name} ({key}): "
        assert v["run_name"] == exp.name, where + "run name"
        assert v["start_time"] == exp.start, where + "start time"
        assert v["status"] in exp.statuses(), where + f"status {v['status']}"
        if exp.end:
            assert v["end_time"] == exp.end["end"], where + "end time"
        assert v["params"] == exp.params, where + "params"
        assert user_tags(v["tags"]) == exp.tags, where + "tags"
        want = {k: points_id(p) for k, p in exp.metrics.items()}
        assert sorted(v["metrics"]) == sorted(want), where + "metric keys"
        for k in want:
            got = v["metrics"][k]
            dups = [p for p, c in Counter(got).items() if c > 1]
            assert not dups, where + f"metric {k}: points twice on the server: {dups[:5]}"
            assert len(got) == len(want[k]), (
                where + f"metric {k}: {len(got)} points on the server, {len(want[k])} logged"
            )
            assert got == want[k], where + f"metric {k}: history differs from the ledger"
            VERIFIED["points"] += len(got)
        VERIFIED["runs"] += 1
    return views


# ---- running the programs ------------------------------------------------------------------------


SYNC_LINES = [
    ("runs_created", re.compile(r"^runs created: (\d+)$")),
    ("points_sent", re.compile(r"^points sent: (\d+)$")),
    ("rejected", re.compile(r"^rejected: (\d+)$")),
    ("left", re.compile(r"^left: (\d+)$")),
]


def parse_sync(res):
    """mltrack sync's summary: {runs_created, points_sent, rejected, left, delivered, reason}."""
    lines = res.stdout.splitlines()
    assert len(lines) >= 5, f"mltrack sync printed too few lines: {res!r}"
    out = {}
    for line, (name, rx) in zip(lines, SYNC_LINES):
        m = rx.match(line)
        assert m, f"mltrack sync: expected {rx.pattern!r}, got {line!r}: {res!r}"
        out[name] = int(m.group(1))
    last = lines[4]
    if last == "delivered everything":
        out["delivered"], out["reason"] = True, None
    else:
        assert last.startswith("not delivered: "), f"mltrack sync: line 5 {last!r}: {res!r}"
        out["delivered"], out["reason"] = False, last[len("not delivered: "):]
    for extra in lines[5:]:
        assert extra.startswith("dead letters: "), f"mltrack sync: unexpected line {extra!r}"
    return out


def parse_it_queue(res):
    """it_queue's stdout: {"started": [(name, key, id)], "delivered": [dicts], "flush": (err, ms),
    "close": (err, ms)}."""
    out = {"started": [], "delivered": [], "flush": None, "close": None, "stats": None}
    for line in res.stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "started":
            out["started"].append((parts[1], parts[2], None if parts[3] == "-" else parts[3]))
        elif parts[0] == "delivered":
            out["delivered"].append({
                "op": parts[1], "state": parts[2], "run_key": parts[3],
                "run_id": None if parts[4] == "-" else parts[4], "records": int(parts[5]),
                "message": " ".join(parts[6:]),
            })
        elif parts[0] in ("flush", "close"):
            out[parts[0]] = (parts[1], int(parts[2]))
        elif parts[0] == "stats" and len(parts) > 2:
            out["stats"] = {k: int(v) for k, v in (p.split("=") for p in parts[1:])}
    return out


def assert_all_acknowledged(out, n_records, res):
    """mlt_tracker_queue_stats() before close: n_records queued, all acknowledged, none left."""
    st = out["stats"]
    assert st is not None, f"no queue stats: {res!r}"
    assert st["queued"] == n_records, f"queued {st['queued']} != {n_records} calls: {st}"
    assert st["acknowledged"] == n_records and st["rejected"] == 0, st
    assert st["bytes_pending"] == 0, st
    assert st["sent"] >= st["acknowledged"], st


def assert_retry_counted(out, res, proxy=None, records_resent=True):
    """After a fault that made a request be sent again: the queue stats say so (retried counts
    the requests retried; sent counts a record again when a request carrying it is retried)."""
    st = out["stats"]
    seen = f"; requests through the proxy: {len(proxy.requests())}" if proxy else ""
    assert st["retried"] >= 1 and (st["sent"] > st["queued"] or not records_resent), (
        f"a request was sent again after a fault, but the queue stats do not count it: {st}{seen}"
        f"\n{res!r}"
    )


def journal_dirs(queue):
    if not os.path.isdir(queue):
        return []
    return sorted(os.path.join(queue, d) for d in os.listdir(queue) if d.startswith("j-"))


class Queue:
    """One test's queue directory, experiment and programs, pointed at a tracking URI."""

    def __init__(self, build_dir, tmp_path, exp_name, uri):
        self.dir = str(tmp_path / "queue")
        self.tmp = tmp_path
        self.exp_name = exp_name
        self.uri = uri
        self.programs = Programs(build_dir, uri)

    def env(self, extra=None, uri=None):
        env = {
            "MLFLOW_TRACKING_URI": uri or self.uri,
            "MLFLOW_EXPERIMENT_NAME": self.exp_name,
            "MLTRACK_QUEUE_DIR": self.dir,
            "MLTRACK_FSYNC": None,
            "IT_QUEUE_LEDGER": None,
            "IT_QUEUE_CLOSE_MS": None,
        }
        env.update(FAST_RETRY)
        env.update(extra or {})
        return env

    def it_queue(self, args, env=None, uri=None, timeout=120):
        return self.programs.run(["tests/it_queue"] + list(args), env=self.env(env, uri),
                                 timeout=timeout)

    def start_it_queue(self, args, env=None, uri=None):
        return self.programs.start(["tests/it_queue"] + list(args), env=self.env(env, uri))

    def sync(self, uri=None, env=None, timeout=300, check_delivered=True):
        res = self.programs.run(
            ["mltrack", "sync", "--queue", self.dir, "--tracking-uri", uri or self.uri],
            env=self.env(env, uri), timeout=timeout,
        )
        summary = parse_sync(res)
        if check_delivered:
            assert res.rc == 0 and summary["delivered"] and summary["left"] == 0, (
                f"mltrack sync did not deliver everything: {res!r}"
            )
        return res, summary

    def status(self):
        return self.programs.run(["mltrack", "status", "--queue", self.dir], env=self.env(),
                                 timeout=60)


@pytest.fixture
def queue_for(queue_build_dir, tmp_path, exp_name):
    """queue_for(uri) -> Queue: the test's queue directory and experiment, programs aimed at uri."""
    return lambda uri: Queue(queue_build_dir, tmp_path, exp_name, uri)


def wait_until(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_exists(reader, exp_name, name):
    """The runs named name in the experiment (possibly [])."""
    try:
        _, runs = reader.runs_of_experiment_named(exp_name)
    except OSError:
        return []
    return [r for r in runs if r["info"].get("run_name") == name]


# ---- (a) no server at all, then mltrack sync -----------------------------------------------------


def test_offline_program_then_sync_delivers_exactly_once(queue_for, unused_port, server_factory,
                                                         reliability):
    port = unused_port
    q = queue_for(f"http://127.0.0.1:{port}")  # nobody listens there
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "5000", "log", "3", "500"], timeout=60)
    assert res.rc == 0, f"it_queue must succeed without a server: {res!r}"
    out = parse_it_queue(res)
    # every run started with no server; its id cannot be known yet
    assert [s[0] for s in out["started"]] == ["run-0", "run-1", "run-2"], res
    assert all(s[2] is None for s in out["started"]), f"run id known with no server: {res!r}"
    assert out["close"] is not None, res
    assert out["close"][1] <= 5000 + 500 * slow_factor(), (
        f"mlt_tracker_close(5000) took {out['close'][1]} ms"
    )
    assert res.elapsed < 5 + 15 * slow_factor(), f"it_queue took {res.elapsed:.1f} s: {res!r}"
    assert not out["delivered"], f"delivered with no server? {res!r}"
    entries = read_ledger(ledger)
    assert len(entries) == 3 * (1 + 3 + 2 + 500 + 5 + 1 + 1), "ledger size"
    st = out["stats"]
    assert st is not None, res
    assert st["queued"] == len(entries) and st["acknowledged"] == 0 and st["rejected"] == 0, st
    assert st["bytes_pending"] > 0, st
    runs = expected_runs(entries)
    assert len(runs) == 3

    srv = server_factory(port=port)
    reader = MlflowReader(srv.uri)
    res, s = q.sync()
    assert (s["runs_created"], s["points_sent"], s["rejected"], s["left"]) == (3, 1500, 0, 0), res
    views = assert_server_holds_exactly(reader, q.exp_name, runs)
    for key, v in views.items():
        assert v["tags"][CLIENT_KEY_TAG] == key

    # a second sync has nothing to do and changes nothing
    res2, s2 = q.sync()
    assert (s2["runs_created"], s2["points_sent"], s2["rejected"], s2["left"]) == (0, 0, 0, 0), res2
    views2 = assert_server_holds_exactly(reader, q.exp_name, runs, what="after a second sync: ")
    assert views2 == views
    reliability("no server while the program logs; `mltrack sync` later")


def test_status_lists_an_undelivered_journal(queue_for, unused_port):
    """mltrack status on a journal that never met a server: its records, bytes and runs."""
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "300", "log", "2", "20"], timeout=60)
    assert res.rc == 0, res
    entries = read_ledger(ledger)
    runs = expected_runs(entries)
    (jdir,) = journal_dirs(q.dir)
    st = q.status()
    assert st.rc == 0, st
    assert jdir in st.stdout, st
    m = re.search(r"pending: (\d+) records, (\d+) bytes", st.stdout)
    assert m, st
    # one journal record per call that returned MLT_OK (start, param, tag, metric, end)
    assert int(m.group(1)) == len(entries), (
        f"records pending != calls logged ({len(entries)}): {st!r}"
    )
    assert int(m.group(2)) > 0
    assert "dead letters: 0" in st.stdout, st
    for key in runs:
        assert re.search(rf"run {key} -> ", st.stdout), (
            f"mltrack status does not list run {key} of the undelivered journal: {st!r}"
        )


def test_next_tracker_takes_over_a_dead_journal(queue_for, module_server, proxy, reliability):
    """A journal left by a program that ended while its server could not be reached is delivered
    in the background by the next program of the same server that opens the same queue
    directory, without mltrack sync (its own flush waits for its own records only)."""
    q = queue_for(proxy.uri)
    first, second = str(q.tmp / "ledger-1.jsonl"), str(q.tmp / "ledger-2.jsonl")
    proxy.add_rule("/api/", "cut_before", count=None)  # the server is out of reach
    res = q.it_queue(["--ledger", first, "--close-ms", "300", "log", "2", "50"], timeout=60)
    assert res.rc == 0, res
    (adopted,) = journal_dirs(q.dir)
    proxy.clear_rules()
    hold = str(q.tmp / "hold")
    proc = q.start_it_queue(["--ledger", second, "--flush-ms", "60000", "--hold", hold,
                             "log", "1", "30"])
    try:
        wait_until(lambda: os.path.exists(hold + ".ready") or proc.poll() is not None,
                   60 * slow_factor(), "it_queue to log and flush")
        # delivered while the program lives: its journal is removed once all of it is
        wait_until(lambda: adopted not in journal_dirs(q.dir), 60 * slow_factor(),
                   "the adopted journal to be delivered")
    finally:
        open(hold, "w").close()
        res = q.programs.wait(proc, timeout=60)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res
    runs = expected_runs(read_ledger(first) + read_ledger(second))
    assert len(runs) == 3
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    st = q.status()
    assert "0 records pending" in st.stdout, st
    reliability("a process dies with its journal undelivered; the next tracker takes it over")


def test_a_tracker_leaves_another_servers_journal_alone(queue_for, unused_port, module_server):
    """A journal records the server it was written for: a tracker of another server does not
    deliver it there; mltrack sync does when told to, and says so."""
    q = queue_for(f"http://user:secret@127.0.0.1:{unused_port}/")
    first, second = str(q.tmp / "ledger-1.jsonl"), str(q.tmp / "ledger-2.jsonl")
    res = q.it_queue(["--ledger", first, "--close-ms", "300", "log", "1", "20"], timeout=60)
    assert res.rc == 0, res
    [journal] = journal_dirs(q.dir)
    with open(os.path.join(q.dir, journal, "target")) as f:
        assert f.read() == f"http://127.0.0.1:{unused_port}\n"  # no credentials on disk
    res = q.it_queue(["--ledger", second, "--flush-ms", "60000", "log", "1", "10"],
                     uri=module_server.uri, timeout=120)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res
    reader = MlflowReader(module_server.uri)
    assert_server_holds_exactly(reader, q.exp_name, expected_runs(read_ledger(second)))
    assert journal in journal_dirs(q.dir), "the other server's journal is gone"
    res, s = q.sync(uri=module_server.uri)
    said = res.stdout + res.stderr
    assert f"was written for http://127.0.0.1:{unused_port}: delivering it to" in said, res
    assert "secret" not in said, res
    assert_server_holds_exactly(reader, q.exp_name,
                                expected_runs(read_ledger(first) + read_ledger(second)))


def test_sync_leaves_the_journal_of_a_live_process_alone(queue_for, unused_port, module_server):
    """mltrack sync does not touch a journal whose owner is alive (its flock is held); once the
    owner has ended, the journal is delivered."""
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    ledger, hold = str(q.tmp / "ledger.jsonl"), str(q.tmp / "hold")
    proc = q.start_it_queue(["--ledger", ledger, "--close-ms", "300", "--hold", hold,
                             "log", "1", "20"])
    try:
        wait_until(lambda: os.path.exists(hold + ".ready") or proc.poll() is not None,
                   60 * slow_factor(), "it_queue to log")
        assert proc.poll() is None, "it_queue ended early"
        res, s = q.sync(uri=module_server.uri, check_delivered=False)
        assert res.rc == 1 and not s["delivered"], f"sync claims a live journal: {res!r}"
        assert "running process" in s["reason"], res
        assert s["runs_created"] == 0 and s["points_sent"] == 0, res
        exp, runs = MlflowReader(module_server.uri).runs_of_experiment_named(q.exp_name)
        assert not runs, "a live process's journal was delivered by mltrack sync"
    finally:
        open(hold, "w").close()
        res = q.programs.wait(proc, timeout=60)
    assert res.rc == 0, res
    res, s = q.sync(uri=module_server.uri)
    assert (s["runs_created"], s["points_sent"]) == (1, 20), res
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name,
                                expected_runs(read_ledger(ledger)))


# ---- one record never holds up a queue -----------------------------------------------------------

STALE_KEY = "6f1c2e4a-0b7d-4e2a-9c3f-1a2b3c4d5e6f"  # a run key no run has


def test_bad_input_into_an_attached_run_leaves_nothing(queue_for, module_server):
    """A log command refused for bad input (exit 2) leaves no journal: nothing waits for a run."""
    q = queue_for(module_server.uri)
    res = q.programs.run(["mltrack", "log-metric", "a/../b", "1"],
                         env=q.env({"MLTRACK_RUN_KEY": STALE_KEY}), timeout=60)
    assert res.rc == 2 and "invalid" in res.stderr, res
    assert journal_dirs(q.dir) == [], os.listdir(q.dir)
    st = q.status()
    assert "total: 0 journals, 0 records pending" in st.stdout, st


def test_a_record_for_a_run_nobody_makes_never_holds_up_a_queue(queue_for, module_server):
    """A point logged with a run key no run has waits on its own: the next program on the queue
    delivers its own run and exits at once with MLT_OK; status shows the wait with its key and
    reason; sync says what it waits for and exits 3; with attach_timeout run out (0 here) sync
    makes dead letters of it and the queue drains; `mltrack drop` removes them, saying so."""
    q = queue_for(module_server.uri)
    res = q.programs.run(["mltrack", "log-metric", "loss", "1.5", "--timeout", "60"],
                         env=q.env({"MLTRACK_RUN_KEY": STALE_KEY}), timeout=100)
    assert res.rc == 0, res
    assert "kept in the queue, not delivered yet: 0 runs and 1 point (2 records)" in res.stderr
    assert f"they wait for run {STALE_KEY}, which the server does not have yet" in res.stderr
    (waiting,) = journal_dirs(q.dir)

    # the next program on the queue: its own run only, at once, whatever the waiting journal does
    res = q.programs.run(["train_model"], env=q.env(), timeout=60)
    assert res.rc == 0 and res.stderr == "", res
    assert res.elapsed < 5, f"train_model took {res.elapsed:.1f} s: {res!r}"
    reader = MlflowReader(module_server.uri)
    _, by_key, _ = server_runs(reader, q.exp_name)
    assert len(by_key) == 1 and [len(v) for v in by_key.values()] == [1], by_key
    assert journal_dirs(q.dir) == [waiting], "train_model's own journal is left, or the other gone"

    st = q.status()
    assert st.rc == 0, st
    assert re.search(rf"waiting for run {STALE_KEY}: 2 records, for \d+ s: no journal of this "
                     r"queue creates it", st.stdout), st

    res, s = q.sync(check_delivered=False)
    assert res.rc == 3, f"sync must exit 3 when only a run nobody makes is waited for: {res!r}"
    assert (s["runs_created"], s["points_sent"], s["rejected"], s["left"]) == (0, 0, 0, 2), res
    assert s["reason"] == (f"2 records of {waiting} wait for run {STALE_KEY}, which the server "
                           "does not have and no journal of the queue creates (attach_timeout: "
                           "604800 s after they were written, they become dead letters; `mltrack "
                           "drop` drops them now)"), res
    assert "cannot be reached" not in res.stdout + res.stderr, res

    res, s = q.sync(env={"MLTRACK_ATTACH_TIMEOUT": "0"})
    assert (s["runs_created"], s["points_sent"], s["rejected"], s["left"]) == (0, 0, 2, 0), res
    with open(os.path.join(waiting, "dead.jsonl"), encoding="utf-8") as f:
        letter_attach, letter_point = [json.loads(line) for line in f]
    assert (letter_attach["type"], letter_attach["run_key"]) == ("attach_run", STALE_KEY)
    assert "no journal of the queue creates it" in letter_attach["answer"], letter_attach
    assert (letter_point["type"], letter_point["key"], letter_point["value"]) == (
        "metric", "loss", 1.5), letter_point

    res = q.programs.run(["mltrack", "drop", "--dead-letters", os.path.basename(waiting)],
                         env=q.env(), timeout=60)
    assert res.rc == 0, res
    assert res.stdout == f"dropped {waiting}/dead.jsonl: 2 dead letters\n", res
    assert journal_dirs(q.dir) == []


def test_drop_says_what_it_drops_and_spares_a_live_journal(queue_for, unused_port):
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "300", "log", "2", "10"], timeout=60)
    assert res.rc == 0, res
    (jdir,) = journal_dirs(q.dir)
    hold = str(q.tmp / "hold")
    # for another server: it leaves the first journal alone (it would adopt it, and own it)
    proc = q.start_it_queue(["--close-ms", "300", "--hold", hold, "log", "1", "5"],
                            uri=f"http://127.0.0.1:{unused_port}/elsewhere")
    try:
        wait_until(lambda: os.path.exists(hold + ".ready") or proc.poll() is not None,
                   60 * slow_factor(), "it_queue to log")
        (live,) = [d for d in journal_dirs(q.dir) if d != jdir]
        res = q.programs.run(["mltrack", "drop", live, os.path.basename(jdir)], env=q.env(),
                             timeout=60)
    finally:
        open(hold, "w").close()
        q.programs.wait(proc, timeout=60)
    assert res.rc == 1, res
    assert f"{live}: owned by a running process: left alone" in res.stderr, res
    # 2 runs: create, params lr, run_index, points, tags kind, run_index, progress, 10 points,
    # end; then the runs, not created
    runs = expected_runs(read_ledger(ledger))
    assert res.stdout.splitlines() == [
        f"dropped {jdir}: 36 records not delivered (2 run creations, 0 attaches, 6 params, 20 "
        "metric points, 6 tags, 2 run ends, 0 artifacts, 0 undecodable), 0 dead letters"] + [
        f"  run {k} '{r.name}' -> (not created)" for k, r in runs.items()], res
    assert not os.path.exists(jdir)
    res = q.programs.run(["mltrack", "drop", "j-nosuch"], env=q.env(), timeout=60)
    assert res.rc == 2 and "not a journal of the queue" in res.stderr, res


@pytest.mark.parametrize("layout", ["shared queue", "a queue per node"])
def test_ranks_share_a_run_whose_creator_was_offline(layout, queue_for, unused_port,
                                                     module_server):
    """Rank 0 makes the job's run with the server away; rank 1 logs into it by MLTRACK_RUN_KEY
    with the server up (its records wait, its close says so). Once rank 0's queue is synced the
    run exists, and rank 1's records land in it, exactly once."""
    q0 = queue_for(f"http://127.0.0.1:{unused_port}")
    keyfile = str(q0.tmp / "key")
    res = q0.programs.run(["mltrack", "run", "--run-name", "job", "--", "sh", "-c",
                           f"echo $MLTRACK_RUN_KEY > {keyfile}"], env=q0.env(), timeout=60)
    assert res.rc == 0 and "kept in the queue" in res.stderr, res
    key = open(keyfile).read().strip()
    q1 = queue_for(module_server.uri)
    if layout == "a queue per node":
        q1.dir = str(q1.tmp / "queue-rank1")
    ledger = str(q1.tmp / "ledger-rank1.jsonl")
    res = q1.it_queue(["--ledger", ledger, "--close-ms", "2000", "log", "1", "20"],
                      env={"MLTRACK_RUN_KEY": key}, timeout=60)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["close"][0] == "MLT_ERR_QUEUED", res
    if layout == "a queue per node":
        res, s = q1.sync(check_delivered=False)
        assert res.rc == 3 and f"wait for run {key}" in s["reason"], res
    res, s = q0.sync(uri=module_server.uri)
    assert s["runs_created"] == 1, res
    if layout == "a queue per node":
        res, s = q1.sync()
    assert s["points_sent"] == 20 and s["left"] == 0, res
    reader = MlflowReader(module_server.uri)
    _, by_key, untagged = server_runs(reader, q1.exp_name)
    assert not untagged and list(by_key) == [key] and len(by_key[key]) == 1, by_key
    v = run_view(reader, by_key[key][0])
    assert v["run_name"] == "job" and v["status"] == "FINISHED", v
    (exp,) = expected_runs(read_ledger(ledger)).values()
    assert v["params"] == exp.params, v
    assert {k: [(st, ts, val) for st, ts, val in pts] for k, pts in v["metrics"].items()} == {
        k: [(st, ts, value_key(val)) for st, ts, val in pts] for k, pts in exp.metrics.items()}


def test_flush_is_queued_at_once_and_sync_exit_codes_with_no_server(queue_for, unused_port):
    """With no server: mlt_tracker_flush(t, 60000) and mlt_tracker_close(t, 60000) return
    MLT_ERR_QUEUED as soon as the sender finds no server, not at their deadlines; `mltrack sync`
    exits 1 with everything left, saying the server cannot be reached; usage errors exit 2."""
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--flush-ms", "60000", "--close-ms", "60000",
                      "log", "1", "10"], timeout=100)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] is not None and out["flush"][0] == "MLT_ERR_QUEUED", res
    assert out["flush"][1] <= 10000, res  # not its 60 s deadline
    assert out["close"] is not None and out["close"][0] == "MLT_ERR_QUEUED", res
    assert out["close"][1] <= 10000, res
    entries = read_ledger(ledger)

    res = q.programs.run(["mltrack", "sync", "--queue", q.dir, "--timeout", "3"],
                         env=q.env(), timeout=120)
    s = parse_sync(res)
    assert res.rc == 1, f"sync with nothing delivered must exit 1: {res!r}"
    assert not s["delivered"] and s["reason"], res
    assert "Couldn't connect to server" in s["reason"], res
    assert (s["runs_created"], s["points_sent"], s["rejected"]) == (0, 0, 0), res
    assert s["left"] == len(entries), f"left: {s['left']} != {len(entries)} records: {res!r}"
    assert res.elapsed < 3 + 10 * slow_factor(), f"sync --timeout 3 took {res.elapsed:.1f} s"

    for args in (["sync", "--bogus"], ["frobnicate"], ["sync", "--queue"], []):
        res = q.programs.run(["mltrack"] + args, env=q.env(), timeout=60)
        assert res.rc == 2, f"mltrack {' '.join(args)}: usage error must exit 2: {res!r}"


@pytest.mark.parametrize("mode", ["none", "interval", "always"])
def test_every_fsync_mode_delivers_exactly(queue_for, module_server, mode):
    q = queue_for(module_server.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--flush-ms", "60000", "log", "2", "40"],
                     env={"MLTRACK_FSYNC": mode}, timeout=120)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res
    assert_all_acknowledged(out, len(read_ledger(ledger)), res)
    views = assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name,
                                       expected_runs(read_ledger(ledger)))
    # the delivery callback told each run's id, the server's own
    ids = {d["run_key"]: d["run_id"] for d in out["delivered"] if d["op"] == "create_run"}
    assert ids == {k: v["run_id"] for k, v in views.items()}, (ids, res)


def test_bad_fsync_mode_is_refused(queue_for, unused_port):
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    res = q.it_queue(["log", "1", "1"], env={"MLTRACK_FSYNC": "sometimes"}, timeout=60)
    assert res.rc == 2, f"MLTRACK_FSYNC=sometimes must fail the setup: {res!r}"
    assert "MLTRACK_FSYNC" in res.stderr, res
    assert not journal_dirs(q.dir), "a journal was made by a tracker that failed to set up"


# ---- (b) the example program with no server ------------------------------------------------------


def test_train_model_offline_then_sync(queue_for, unused_port, module_server, reliability):
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    res = q.programs.run(["train_model"], env=q.env(), timeout=60)
    assert res.rc == 0, f"examples/train_model must exit 0 with no server: {res!r}"
    # its mlt_tracker_close(t, 10000) returns when the server is found away, not at 10 s
    assert res.elapsed < 5, f"train_model took {res.elapsed:.1f} s: {res!r}"
    assert "accuracy:" in res.stdout
    # one line says what is kept, where, why, and how to deliver it
    (line,) = res.stderr.splitlines()
    assert line.startswith("train_model: kept in the queue, not delivered yet: 1 run and 12 "
                           "points"), res
    assert f"in {q.dir}: the tracking server http://127.0.0.1:{unused_port} cannot be " \
           "reached (" in line, res
    assert f"`mltrack sync --queue {q.dir}` delivers them" in line, res

    reader = MlflowReader(module_server.uri)
    res, s = q.sync(uri=module_server.uri)
    assert (s["runs_created"], s["rejected"], s["left"]) == (1, 0, 0), res
    assert s["points_sent"] == 12, res  # accuracy x10, result, duration_s
    _, by_key, untagged = server_runs(reader, q.exp_name)
    assert not untagged and len(by_key) == 1 and all(len(v) == 1 for v in by_key.values()), by_key
    (run,) = next(iter(by_key.values()))
    v = run_view(reader, run)
    assert v["run_name"] == "train_model"
    assert v["status"] == "FINISHED"
    assert v["params"] == {"epochs": "10", "learning_rate": "0.01"}
    acc, expect = 0.5, []
    for epoch in range(10):
        acc += (1.0 - acc) * 0.01 * 10.0
        expect.append((epoch, value_key(acc)))
    assert [(s_, val) for s_, _, val in v["metrics"]["accuracy"]] == expect
    assert sorted(v["metrics"]) == ["accuracy", "duration_s", "result"]

    res2, s2 = q.sync(uri=module_server.uri)
    assert (s2["runs_created"], s2["points_sent"]) == (0, 0), res2
    _, by_key2, _ = server_runs(reader, q.exp_name)
    assert {k: len(v) for k, v in by_key2.items()} == {k: 1 for k in by_key}
    VERIFIED["runs"] += 1
    VERIFIED["points"] += sum(len(p) for p in v["metrics"].values())
    reliability("the example program without a server; `mltrack sync` later")


# ---- (c) the server goes away in the middle of a run and comes back ------------------------------


def test_server_restart_mid_run_library_reconnects_alone(queue_for, server_factory, reliability):
    only_in("default", "asan", "tsan")  # valgrind: CI's time budget (the paths are the outage
    # probe's and the proxy cuts', which valgrind runs)
    srv = server_factory()
    reader = MlflowReader(srv.uri)
    q = queue_for(srv.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    # the library's default retry settings: it must come back by itself
    env = {k: None for k in FAST_RETRY}
    back = str(q.tmp / "server-is-back")
    proc = q.start_it_queue(["--ledger", ledger, "--delay-ms", "25", "--before-flush", back,
                             "--flush-ms", "180000", "--close-ms", "10000", "log", "1", "400"],
                            env=env)
    try:
        # wait until the run exists and points flow, then take the server away for a while
        wait_until(lambda: any(reader.full_metrics(r).get("loss")
                               for r in run_exists(reader, q.exp_name, "run-0")),
                   60 * slow_factor(), "the first points on the server", interval=0.2)
        srv.stop()
        time.sleep(3)
        assert proc.poll() is None, "it_queue ended while the server was down (too fast?)"
        srv.start()
        # a server found away within the last second is taken as away (mlt_tracker_flush()
        # returns MLT_ERR_QUEUED without a new try): the last failed try must be older than that
        time.sleep(1.5)
    finally:
        # the flush comes once the server is back (while it is away, a flush returns
        # MLT_ERR_QUEUED at once): the sender, deep in its backoff, is made to try again now
        open(back, "w").close()
        res = q.programs.wait(proc, timeout=240)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", f"flush did not deliver: {res!r}"
    assert not [d for d in out["delivered"] if d["state"] != "acknowledged"], res
    assert_all_acknowledged(out, len(read_ledger(ledger)), res)
    runs = expected_runs(read_ledger(ledger))
    assert_server_holds_exactly(reader, q.exp_name, runs)
    (key,) = runs
    creates = [d for d in out["delivered"] if d["op"] == "create_run"]
    assert len(creates) == 1 and creates[0]["run_key"] == key and creates[0]["run_id"], res
    assert [d["op"] for d in out["delivered"]][-1] == "end_run", res
    assert sum(d["records"] for d in out["delivered"] if d["op"] == "log") == (
        len(read_ledger(ledger)) - 2
    ), "delivery reports do not cover every log record once"
    assert_retry_counted(out, res)
    reliability("the server stopped for 3 s mid-run and restarted; the library reconnects by "
                "itself")


# ---- (d) SIGKILL at random moments ---------------------------------------------------------------


def check_crash_run(reader, exp_run, ledger_run, r):
    """Compares one server run with the ledger of the process that logged it. Returns the number
    of things the server holds beyond the ledger (a call in flight at the kill), after checking
    that each of them is what the program would have logged."""
    extras = 0
    info = exp_run["info"]
    params = reader.params(exp_run)
    tags = user_tags(reader.tags(exp_run))
    where = f"run {info.get('run_name')} ({reader.tags(exp_run).get(CLIENT_KEY_TAG)}): "
    want_params = {"lr": "0.01", "proc": info["run_name"].rsplit("-", 1)[0], "run_index": str(r)}
    if ledger_run is None:
        extras += 1  # the run's start was the call in flight
        ledger_run = RunExp(None)
    else:
        assert info.get("start_time") == ledger_run.start, where + "start time"
    for k, v in params.items():
        assert want_params.get(k) == v, where + f"param {k}={v!r} was never logged"
        if k not in ledger_run.params:
            extras += 1
    for k, v in ledger_run.params.items():
        assert params.get(k) == v, where + f"param {k}={v!r} of the ledger is missing"
    for k, v in tags.items():
        if k in ledger_run.tags and ledger_run.tags[k] == v:
            continue
        assert k in ("kind", "run_index", "progress"), where + f"tag {k} was never set"
        extras += 1
    for k, v in ledger_run.tags.items():
        assert k in tags, where + f"tag {k}={v!r} of the ledger is missing"
    server_metrics = reader.full_metrics(exp_run)
    for k in set(server_metrics) | set(ledger_run.metrics):
        got = server_metrics.get(k, [])
        assert k in ("loss", "acc"), where + f"metric {k} was never logged"
        steps = Counter(s for s, _, _ in got)
        twice = sorted(s for s, c in steps.items() if c > 1)
        assert not twice, where + f"metric {k}: steps on the server more than once: {twice[:10]}"
        have = set(points_id(got))
        for p in points_id(ledger_run.metrics.get(k, [])):
            assert p in have, where + f"metric {k}: ledger point {p} missing on the server"
        logged = set(points_id(ledger_run.metrics.get(k, [])))
        for s, t, v in got:
            if (s, t, value_key(v)) in logged:
                continue
            i = 2 * s + (0 if k == "loss" else 1)
            assert value_key(v) == value_key(it_value(r, i)), where + f"{k} step {s}: value {v}"
            if k == "loss":
                assert t == TS_BASE + r * 1000000 + i, where + f"{k} step {s}: timestamp {t}"
            extras += 1
        VERIFIED["points"] += len(got)
    VERIFIED["runs"] += 1
    status = info.get("status")
    if ledger_run.end:
        assert status == "FINISHED", where + f"status {status}, the run was ended"
        assert info.get("end_time") == ledger_run.end["end"], where + "end time"
    elif status not in ("RUNNING", "KILLED"):
        assert status == "FINISHED", where + f"status {status} of a run never ended"
        extras += 1
    return extras


def assert_ledgers_on_server(reader, exp_name, procs):
    """Every line of every ledger (procs: (tag, ledger path) of it_queue forever processes, killed
    or not) is on the server exactly, nothing twice, no run twice, no run from nowhere; at most
    one call in flight per tag landed beyond its ledger. Returns (runs by client key, calls in
    flight that landed, ledgers by tag)."""
    _, by_key, untagged = server_runs(reader, exp_name)
    assert not untagged, f"runs without the {CLIENT_KEY_TAG} tag: {untagged}"
    dup = {k: len(v) for k, v in by_key.items() if len(v) != 1}
    assert not dup, f"client run keys with more than one run on the server: {dup}"
    ledgers = {tag: read_ledger(path) for tag, path in procs}
    assert sum(len(e) for e in ledgers.values()) > 0, "nothing was logged at all"
    runs_by_name = {}
    for key, (run,) in by_key.items():
        runs_by_name.setdefault(run["info"]["run_name"], []).append((key, run))
    seen_keys = set()
    total_extras = 0
    for tag, entries in ledgers.items():
        lruns = expected_runs(entries)
        extras = 0
        for key, lr in lruns.items():
            assert key in by_key, f"{tag}: run {lr.name} ({key}) of the ledger is not on the server"
        names = sorted({r["info"]["run_name"] for (r,) in by_key.values()
                        if r["info"]["run_name"].rsplit("-", 1)[0] == tag})
        for name in names:
            for key, run in runs_by_name[name]:
                seen_keys.add(key)
                r_index = int(name.rsplit("-", 1)[1])
                extras += check_crash_run(reader, run, lruns.get(key), r_index)
        assert extras <= 1, (
            f"{tag}: the server holds {extras} things beyond the ledger (at most the one call "
            f"in flight at the kill may have landed)"
        )
        total_extras += extras
    assert seen_keys == set(by_key), "runs on the server from no process"
    return by_key, total_extras, ledgers


def test_sigkill_at_random_moments_loses_and_doubles_nothing(queue_for, server_factory, tmp_path,
                                                            reliability):
    # Not under valgrind (CI's time budget: every start costs seconds there): the recovery paths
    # are the next-tracker and damaged-tail tests', which valgrind runs, and ASan runs this one.
    # Nor under TSan: a killed process races with nobody, and the sender's races with a server
    # that comes and goes are the restart and resume tests', which TSan runs.
    only_in("default", "asan")
    rng = random.Random(20261130)
    slow = slow_factor()
    # 36 kills; under the sanitizers, whose errors a few kills of each phase find, 18 (CI's time
    # budget)
    label = os.environ.get("MLTRACK_TEST_LABEL", "default")
    per_phase = (12, 12, 12) if label == "default" else (6, 6, 6)
    srv = server_factory()
    q = queue_for(srv.uri)
    env = {"MLTRACK_FSYNC": "always", "IT_QUEUE_FOREVER_MAX_S": str(120 * slow),
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    procs = []  # (tag, ledger path)
    errors = []

    def one_kill(n):
        tag = f"p{n}"
        ledger = str(tmp_path / f"ledger-{n}.jsonl")
        with open(tmp_path / f"out-{n}.txt", "wb") as out, \
                open(tmp_path / f"err-{n}.txt", "wb") as err:
            cmd = q.programs.command(["tests/it_queue", "--ledger", ledger, "--delay-ms", "1",
                                      "forever", tag, "100"])
            proc = subprocess.Popen(cmd, env=q.programs.env(q.env(env)), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err)
            procs.append((tag, ledger))
            time.sleep(rng.uniform(0.05, 1.5) * slow)
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        if not alive:
            errors.append(f"{tag} ended by itself ({proc.returncode}): "
                          f"{(tmp_path / f'err-{n}.txt').read_text(errors='replace')[-2000:]}")

    n = 0
    # phase 1: the server is up
    for _ in range(per_phase[0]):
        one_kill(n)
        n += 1
    # phase 2: the server is down
    srv.stop()
    for _ in range(per_phase[1]):
        one_kill(n)
        n += 1
    # phase 3: the server flaps (a thread stops and starts it at random)
    stop_flapping = threading.Event()
    flap_rng = random.Random(7)
    flap_errors = []
    flaps = Counter()

    def flapper():
        while not stop_flapping.is_set():
            try:
                srv.start()
                flaps["start"] += 1
                stop_flapping.wait(flap_rng.uniform(0.5, 3))
                srv.stop()
                flaps["stop"] += 1
                stop_flapping.wait(flap_rng.uniform(0.5, 2))
            except Exception as e:  # noqa: BLE001 - reported below
                flap_errors.append(repr(e))
                stop_flapping.wait(1)

    flap = threading.Thread(target=flapper, daemon=True)
    flap.start()
    try:
        for _ in range(per_phase[2]):
            one_kill(n)
            n += 1
    finally:
        stop_flapping.set()
        flap.join(timeout=120)
    assert not flap.is_alive(), "the flapping thread did not stop"
    assert not errors, "\n".join(errors)
    assert not flap_errors, f"the server could not be flapped: {flap_errors}"
    assert flaps["start"] >= 1 and flaps["stop"] >= 1, f"the server did not flap: {flaps}"
    assert sum(per_phase) >= (36 if label == "default" else 18)

    if not srv.running:
        srv.start()
    reader = MlflowReader(srv.uri)
    res, s = q.sync(timeout=600)
    assert s["rejected"] == 0, f"records rejected after the crashes: {res!r}"

    by_key, total_extras, ledgers = assert_ledgers_on_server(reader, q.exp_name, procs)
    print(f"crash test: {len(procs)} kills, {sum(len(e) for e in ledgers.values())} ledger lines "
          f"({sum(1 for e in ledgers.values() if not e)} empty ledgers), {len(by_key)} runs on "
          f"the server, {total_extras} calls in flight landed, server flaps {dict(flaps)}; "
          f"last sync: {s}")
    reliability("SIGKILL of the logging process at a random moment, the server up, down and "
                "flapping", trials=len(procs), faults=len(procs) + flaps["stop"])


# ---- (e) a torn or corrupt journal tail ----------------------------------------------------------

FRAME_HEADER = 17  # u32 payload length, u32 CRC32C, u64 sequence number, u8 type
SEGMENT_MAGIC = b"MLTJRNL1"


def segment_frames(path):
    """[(offset, payload length)] of the frames of a segment file (format of src/journal.h)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == SEGMENT_MAGIC, f"{path}: no segment magic"
    frames, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        frames.append((pos, length))
        pos += FRAME_HEADER + length
    assert pos == len(data), f"{path}: frames do not end at the end of the file"
    return frames


@pytest.mark.parametrize("damage", ["torn_payload", "torn_header", "flipped_byte"])
def test_damaged_journal_tail_is_cut_and_the_rest_delivered(queue_for, unused_port, module_server,
                                                            damage, reliability):
    q = queue_for(f"http://127.0.0.1:{unused_port}")
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "300", "log", "1", "200"], timeout=60)
    assert res.rc == 0, res
    entries = read_ledger(ledger)
    (jdir,) = journal_dirs(q.dir)
    segs = sorted(f for f in os.listdir(jdir) if re.match(r"^seg-\d+\.log$", f))
    assert segs, f"no segment in {jdir}: {os.listdir(jdir)}"
    last = os.path.join(jdir, segs[-1])
    frames = segment_frames(last)
    n_frames = sum(len(segment_frames(os.path.join(jdir, s))) for s in segs)
    assert n_frames == len(entries), "one journal record per call that returned MLT_OK"
    off, length = frames[-1]
    size = os.path.getsize(last)
    if damage == "torn_payload":
        os.truncate(last, off + FRAME_HEADER + length // 2)
    elif damage == "torn_header":
        os.truncate(last, off + 5)
    else:
        with open(last, "r+b") as f:
            pos = off + FRAME_HEADER + length // 2
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0x5A]))
        assert os.path.getsize(last) == size

    reader = MlflowReader(module_server.uri)
    res, s = q.sync(uri=module_server.uri)
    assert "cut" in res.stderr.lower(), f"mltrack sync does not report the cut tail: {res!r}"
    assert (s["runs_created"], s["points_sent"], s["rejected"], s["left"]) == (1, 200, 0, 0), res
    # the last call (the run's end) was the damaged record: everything before it landed
    assert entries[-1]["kind"] == "end"
    runs = expected_runs(entries[:-1])
    assert_server_holds_exactly(reader, q.exp_name, runs)
    reliability(f"the journal's last record damaged ({damage})")


# ---- the journal's size: segments are deleted once delivered -------------------------------------


def test_a_delivered_journal_keeps_one_segment_on_disk(queue_for, module_server, reliability):
    """A run that writes some thirty segments' worth of journal (64 KiB segments) with the
    server up: once delivered, the journal holds only the segment being written, and the
    journal is gone after close."""
    # not under valgrind (CI's time budget): 50,000 points; the segment roll and delete paths are
    # check_journal's, which valgrind runs, and the other delivery tests'
    only_in("default", "asan", "tsan")
    q = queue_for(module_server.uri)
    ledger, hold = str(q.tmp / "ledger.jsonl"), str(q.tmp / "hold")
    seg = 65536
    proc = q.start_it_queue(["--ledger", ledger, "--flush-ms", "300000", "--hold", hold,
                             "log", "2", "25000"], env={"MLTRACK_QUEUE_SEGMENT_BYTES": str(seg)})
    try:
        wait_until(lambda: os.path.exists(hold + ".ready") or proc.poll() is not None,
                   300 * slow_factor(), "the program's flush", interval=0.2)
        assert proc.poll() is None, "it_queue ended early"
        (jdir,) = journal_dirs(q.dir)
        segs = sorted(f for f in os.listdir(jdir) if re.match(r"^seg-\d+\.log$", f))
        sizes = [os.path.getsize(os.path.join(jdir, f)) for f in segs]
        first_seq = int(segs[0][4:-4]) if segs else 0
    finally:
        open(hold, "w").close()
        res = q.programs.wait(proc, timeout=120)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res
    n = len(read_ledger(ledger))
    # about 37 bytes a point: some 30 segments were written in all
    assert first_seq > n // 2, f"the journal never moved past its first segments: {segs}"
    assert len(segs) == 1 and sizes[0] <= seg + 65536, (
        f"delivered, yet the journal keeps {len(segs)} segments ({sum(sizes)} bytes): {segs}"
    )
    assert not journal_dirs(q.dir), "the delivered journal was not removed at close"
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name,
                                expected_runs(read_ledger(ledger)))
    reliability(f"journal growth: {n} records through 64 KiB segments, deleted once delivered",
                faults=0)


# ---- (f) a record the server rejects for good ----------------------------------------------------


def test_rejected_record_goes_to_dead_letters_and_the_run_still_lands(queue_for, module_server,
                                                                      reliability):
    reader = MlflowReader(module_server.uri)
    q = queue_for(module_server.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    go, hold = str(q.tmp / "go"), str(q.tmp / "hold")
    proc = q.start_it_queue(["--ledger", ledger, "--flush-ms", "60000", "--hold", hold,
                             "pause-between", go])
    try:
        (run,) = wait_until(lambda: run_exists(reader, q.exp_name, "pause"), 60 * slow_factor(),
                            "the run on the server")
        run_id = run["info"]["run_id"]
        reader.post("runs/log-parameter", {"run_id": run_id, "key": "p", "value": "1"})
        open(go, "w").close()
        wait_until(lambda: os.path.exists(hold + ".ready") or proc.poll() is not None,
                   120 * slow_factor(), "the program's flush")
        assert proc.poll() is None, "it_queue ended early"
        # before close: the dead letter is in the journal
        dead_files = [os.path.join(j, "dead.jsonl") for j in journal_dirs(q.dir)]
        dead_files = [f for f in dead_files if os.path.exists(f)]
        assert len(dead_files) == 1, f"dead.jsonl files in {q.dir}: {dead_files}"
        with open(dead_files[0], encoding="utf-8") as f:
            dead = [json.loads(line) for line in f if line.strip()]
    finally:
        open(hold, "w").close()
        res = q.programs.wait(proc, timeout=120)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res

    assert len(dead) == 1, f"dead letters: {dead}"
    text = json.dumps(dead[0])
    assert '"p"' in text and '"2"' in text, f"the dead letter is not param p=2: {dead[0]}"
    assert "INVALID_PARAMETER_VALUE" in text or "Changing param values is not allowed" in text, (
        f"the dead letter lacks the server's answer: {dead[0]}"
    )
    rejected = [d for d in out["delivered"] if d["state"] == "rejected"]
    assert len(rejected) == 1, f"delivery callback rejections: {rejected}: {res!r}"
    assert rejected[0]["op"] == "log" and rejected[0]["run_id"] == run_id, rejected
    assert rejected[0]["records"] == 1, rejected
    st = out["stats"]
    assert st and st["rejected"] == 1 and st["acknowledged"] == st["queued"] - 1, st
    assert st["queued"] == len(read_ledger(ledger)) and st["bytes_pending"] == 0, st
    assert ("INVALID_PARAMETER_VALUE" in rejected[0]["message"]
            or "Changing param values" in rejected[0]["message"]), rejected

    # the dead letter stays on disk after close (the journal is kept for it)
    assert os.path.exists(dead_files[0]), "dead.jsonl was removed at close"

    entries = read_ledger(ledger)
    runs = expected_runs(entries)
    (key,) = runs
    runs[key].params["p"] = "1"  # the server's own value stays; p=2 is the dead letter
    assert_server_holds_exactly(reader, q.exp_name, runs)
    st = q.status()
    assert "dead letters: 1" in st.stdout, st
    reliability("a record the server refuses for good (400): a dead letter, the run lands")


# ---- (g) faults through the proxy in front of the real server ------------------------------------


@pytest.fixture
def proxy(module_server):
    """A fault proxy in front of the module's server; a failing test shows what went through."""
    with FaultProxy(module_server.port) as p:
        try:
            yield p
        finally:
            print("---- requests through the fault proxy ----")
            t0 = p.requests()[0]["t"] if p.requests() else 0
            for e in p.requests():
                print(f"{e['t'] - t0:8.3f} {e['method']:4} {e['path'][:70]:70} {e['action']} "
                      f"{e['status']}")


def log_through_proxy(q, proxy, points=50, extra_env=None, flush_ms=60000):
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--verbose", "--ledger", ledger, "--flush-ms", str(flush_ms),
                      "--close-ms", "5000", "log", "1", str(points)],
                     env=extra_env, uri=proxy.uri, timeout=180)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", (
        f"not delivered: {res!r}\n{proxy.requests()}"
    )
    assert_all_acknowledged(out, len(read_ledger(ledger)), res)
    return res, out, expected_runs(read_ledger(ledger))


def test_proxy_cut_after_runs_create_makes_one_run(queue_for, module_server, proxy, reliability):
    """The first runs/create reaches the server (which makes the run) and the connection is cut
    before the answer: exactly one run with the client run key in the end. The request goes on the
    connection that resolved the experiment: on a REUSED connection that dies without an answer,
    libcurl itself resends the request on a fresh one ("Connection died, retrying a fresh
    connect") before the library sees any failure, so the library must keep libcurl from
    resending its non-idempotent runs/create (or never reuse a connection for it)."""
    q = queue_for(proxy.uri)
    rule = proxy.add_rule("runs/create", "cut_after", count=1)
    res, out, runs = log_through_proxy(q, proxy)
    assert rule.applied == 1, proxy.requests()
    reader = MlflowReader(module_server.uri)
    assert_server_holds_exactly(reader, q.exp_name, runs)
    cut_at = [e for e in proxy.requests("runs/create") if e["action"] == "cut_after"][0]["t"]
    assert [e for e in proxy.requests("runs/search") if e["t"] > cut_at], (
        "no runs/search by the client run key after the ambiguous create"
    )
    reliability("connection cut after runs/create reached the server (kept-alive connection)")


def test_proxy_cut_after_runs_create_on_a_fresh_connection_makes_one_run(queue_for, module_server,
                                                                          proxy, reliability):
    """As above, with runs/create on a fresh connection (the proxy closes the connection after
    each experiments/ answer), where libcurl does not resend by itself: the sender sees the
    failure, and searches by the client run key before creating again."""
    q = queue_for(proxy.uri)
    proxy.add_rule("experiments/", "pass_close", count=None)
    rule = proxy.add_rule("runs/create", "cut_after", count=1)
    res, out, runs = log_through_proxy(q, proxy)
    assert rule.applied == 1, proxy.requests()
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    cut_at = [e for e in proxy.requests("runs/create") if e["action"] == "cut_after"][0]["t"]
    assert [e for e in proxy.requests("runs/search") if e["t"] > cut_at], (
        "no runs/search by the client run key after the ambiguous create"
    )
    reliability("connection cut after runs/create reached the server (fresh connection)")


def test_proxy_cut_before_runs_create_makes_one_run(queue_for, module_server, proxy, reliability):
    q = queue_for(proxy.uri)
    rule = proxy.add_rule("runs/create", "cut_before", count=1)
    res, out, runs = log_through_proxy(q, proxy)
    assert rule.applied == 1
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    reliability("connection cut before runs/create reached the server")


def test_proxy_cut_after_log_batch_no_duplicate_points(queue_for, module_server, proxy,
                                                       reliability):
    q = queue_for(proxy.uri)
    rule = proxy.add_rule("runs/log-batch", "cut_after", count=2)
    res, out, runs = log_through_proxy(q, proxy, points=300)
    assert rule.applied == 2, proxy.requests()
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    # No retry count is asserted here: when a kept-alive connection dies, libcurl itself sends an
    # idempotent request again on a new one, which the queue's counters cannot see. What matters
    # is above: every point landed, none twice.
    reliability("connection cut after log-batch reached the server", faults=rule.applied)


def test_proxy_garbled_answer_and_503_land_once(queue_for, module_server, proxy, reliability):
    q = queue_for(proxy.uri)
    garble = proxy.add_rule("runs/log-batch", "garble", count=1)
    unavailable = proxy.add_rule("runs/log-batch", "status", count=1, status=503, retry_after=1)
    garble_create = proxy.add_rule("runs/create", "garble", count=1)
    res, out, runs = log_through_proxy(q, proxy, points=200)
    assert (garble.applied, unavailable.applied, garble_create.applied) == (1, 1, 1), (
        proxy.requests()
    )
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    assert_retry_counted(out, res, proxy)
    reliability("garbled answers (create, log-batch) and a 503", faults=3)


def test_proxy_503_retry_after_is_honoured(queue_for, module_server, proxy, reliability):
    """A 503 with Retry-After: 2: the next attempt does not come before the server asked."""
    q = queue_for(proxy.uri)
    proxy.add_rule("runs/log-batch", "status", count=1, status=503, retry_after=2)
    res, out, runs = log_through_proxy(q, proxy, points=20,
                                       extra_env={"MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"})
    batches = proxy.requests("runs/log-batch")
    first = [e for e in batches if e["action"] == "status"][0]
    after = [e for e in batches if e["t"] > first["t"]]
    assert after, batches
    gap = after[0]["t"] - first["t"]
    assert gap >= 1.8, f"retried {gap:.2f} s after a 503 with Retry-After: 2"
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    assert_retry_counted(out, res, proxy)
    reliability("503 with Retry-After")


def test_proxy_outage_is_probed_with_backoff_not_hammered(queue_for, module_server, proxy,
                                                          reliability):
    """The server is unreachable for 4 s (every request cut before it reaches it) while the
    program keeps logging: the sender probes with exponential backoff (0.5 s doubling here), it
    does not retry at every append, and once the server is back everything lands once."""
    q = queue_for(proxy.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    outage = proxy.add_rule("/api/2.0/mlflow/", "cut_before", count=None)
    proc = q.start_it_queue(["--ledger", ledger, "--delay-ms", "10", "--flush-ms", "120000",
                             "log", "1", "300"], uri=proxy.uri,
                            env={"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5",
                                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"})
    try:
        time.sleep(4)
    finally:
        proxy.clear_rules()
    res = q.programs.wait(proc, timeout=180)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] and out["flush"][0] == "MLT_OK", res
    # 0.5, 1, 2 s waits: about 4 probes in 4 s; libcurl may resend each once on a fresh
    # connection. 20 is a generous bound; retrying at every append makes hundreds.
    assert outage.applied <= 20, (
        f"{outage.applied} requests in a 4 s outage: the sender does not back off"
    )
    assert_all_acknowledged(out, len(read_ledger(ledger)), res)
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name,
                                expected_runs(read_ledger(ledger)))
    # (the requests cut were the experiment's lookups: no record was sent before the server
    # came back)
    assert_retry_counted(out, res, proxy, records_resent=False)
    reliability("server unreachable for 4 s while logging", faults=outage.applied)


def test_proxy_slow_answer_times_out_and_lands_once(queue_for, module_server, proxy, reliability):
    q = queue_for(proxy.uri)
    rule = proxy.add_rule("runs/log-batch", "delay", count=1, delay=3)
    res, out, runs = log_through_proxy(q, proxy, points=200,
                                       extra_env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "1"})
    assert rule.applied == 1
    assert len(proxy.requests("runs/log-batch")) >= 2, "the slow log-batch was not retried"
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    assert_retry_counted(out, res, proxy)
    reliability("an answer slower than the request timeout")


def test_proxy_close_deadline_while_the_answer_is_held(queue_for, module_server, proxy,
                                                       reliability):
    q = queue_for(proxy.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    rule = proxy.add_rule("runs/log-batch", "delay", count=1, delay=30)
    proc = q.start_it_queue(["--ledger", ledger, "--close-ms", "2000", "log", "1", "200"],
                            uri=proxy.uri)
    # hang guard: mlt_tracker_close(t, 2000) must return within its deadline, long before the
    # proxy lets the answer go (30 s)
    res = q.programs.wait(proc, timeout=20)
    elapsed = res.elapsed
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert rule.applied == 1, proxy.requests()
    assert out["close"] is not None, res
    # a server that took the request but answers slowly is not "away": the close gives it its
    # whole deadline (not MLT_ERR_QUEUED at once), then cuts the request
    assert out["close"][0] == "MLT_ERR_TIMEOUT", res
    assert out["close"][1] >= 1900, f"close gave up after {out['close'][1]} ms, before 2000"
    assert out["close"][1] <= 2000 + 500 * slow_factor(), f"close took {out['close'][1]} ms"
    assert elapsed < 2 + 6 * slow_factor(), f"it_queue took {elapsed:.1f} s"
    proxy.release()
    proxy.clear_rules()
    reader = MlflowReader(module_server.uri)
    res, s = q.sync(uri=module_server.uri)
    assert s["rejected"] == 0 and s["left"] == 0, res
    assert_server_holds_exactly(reader, q.exp_name, expected_runs(read_ledger(ledger)))
    reliability("an answer held past the close deadline; `mltrack sync` later")


# ---- threads ------------------------------------------------------------------------------------


def test_eight_threads_into_one_run_and_their_own_lose_and_double_nothing(queue_for,
                                                                          module_server,
                                                                          reliability):
    """8 threads log at once into one shared run (a key each) and into a run of their own; the
    server holds every point once, per the ledger of calls that returned MLT_OK."""
    only_in("default", "asan", "tsan")  # valgrind runs threads one at a time: TSan's test
    q = queue_for(module_server.uri)
    ledger = str(q.tmp / "ledger.jsonl")
    threads, points = 8, 2000
    res = q.it_queue(["--ledger", ledger, "--flush-ms", "300000", "threads", str(threads),
                      str(points)], timeout=900)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"] is not None and out["flush"][0] == "MLT_OK", res
    entries = read_ledger(ledger)
    assert sum(e["kind"] == "metric" for e in entries) == 2 * threads * points, res
    runs = expected_runs(entries)
    assert len(runs) == threads + 1, sorted(r for r in runs)
    assert_server_holds_exactly(MlflowReader(module_server.uri), q.exp_name, runs)
    reliability("8 threads logging at once into one run and their own", faults=0)


