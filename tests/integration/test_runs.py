"""Integration tests of libmltrack against a real MLflow tracking server.

Every test runs C programs (the examples, or tests/it_client with a scenario) and then reads the
server back over REST (mlflow_read.py, standard library only) and compares EXACTLY: params, full
metric histories (key, value, step, timestamp), tags, status, start and end time, run name and the
number of runs in the test's own experiment.

it_client writes a ledger (JSON lines) of what it logged and what a callback of its own saw, with
the timestamps the library stamped; the tests check the ledger against values they compute
themselves, and the server against the ledger.

The MLflow callback does not send: every event goes to a durable journal in the queue directory
(MLTRACK_QUEUE_DIR) and a sender thread delivers it. So a run's server id is known only once the
run is delivered: the tests find a ledger run on the server by its client run key (the tag
mltrack.client_run_key), and check every run id the ledger saw (it_client reads ids after
mlt_tracker_flush, and its delivery callback reports each one) against the server's. Every program
run gets a queue directory of its own (the `programs` fixture below); a program that delivered
everything leaves it empty. Calls the server rejects become dead letters (<queue>/j-*/dead.jsonl)
and delivery callback reports; with no server the data stays queued, and `mltrack sync` delivers
it later.
"""

import ctypes
import json
import math
import os
import pwd
import re
import shlex
import shutil
import subprocess
import time
from collections import Counter, defaultdict

import pytest

from conftest import slow_factor
from mlflow_read import DBL_MAX, MlflowError

if not os.environ.get("MLTRACK_TEST_TRACKING_URI"):
    pytest.skip(
        "MLTRACK_TEST_TRACKING_URI is not set: these tests need a running MLflow server "
        "(scripts/test.sh starts one; or scripts/mlflow-server.sh start DIR)",
        allow_module_level=True,
    )

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
TWO53P1 = 2**53 + 1
ULONG_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_ulong)) - 1

CLIENT_KEY_TAG = "mltrack.client_run_key"

# it_client's exit codes
# the run's charts, in the MLflow 3 UI's "Model training" view (mlt_run_ui_url)
UI_RUN_TAIL = "/model-metrics?workflowType=machine_learning"

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_START, EXIT_REJECTED, EXIT_QUEUED = 0, 1, 2, 3, 4, 5

# What a dead letter says for the records of a run whose creation was rejected.
RUN_NOT_CREATED = "the run could not be created"


# ---- a queue directory of its own for every program run ------------------------------------------


class QueuedPrograms:
    """conftest's Programs with a fresh durable queue directory (MLTRACK_QUEUE_DIR, a subdirectory
    of the test's tmp_path) for every program run, unless the caller names one. The Result of a
    run, and the process of start(), carry it as .queue."""

    def __init__(self, inner, root):
        self._inner = inner
        self._root = root
        self._n = 0
        self.build_dir = inner.build_dir
        self.tracking_uri = inner.tracking_uri

    def path(self, name):
        return self._inner.path(name)

    def env(self, extra=None):
        return self._inner.env(extra)

    def new_queue(self):
        self._n += 1
        return str(self._root / f"queue-{self._n:02d}")

    def start(self, args, env=None, cwd=None):
        env = dict(env or {})
        if not env.get("MLTRACK_QUEUE_DIR"):
            env["MLTRACK_QUEUE_DIR"] = self.new_queue()
        proc = self._inner.start(args, env=env, cwd=cwd)
        proc.queue = env["MLTRACK_QUEUE_DIR"]
        return proc

    def wait(self, proc, timeout=None):
        res = self._inner.wait(proc, timeout=timeout)
        res.queue = proc.queue
        return res

    def run(self, args, env=None, cwd=None, timeout=None):
        return self.wait(self.start(args, env=env, cwd=cwd), timeout=timeout)


@pytest.fixture
def programs(programs, tmp_path):
    """The session's programs, each run with a queue directory of its own."""
    return QueuedPrograms(programs, tmp_path / "queues")


def journal_dirs(queue):
    if not os.path.isdir(queue):
        return []
    return sorted(os.path.join(queue, d) for d in os.listdir(queue) if d.startswith("j-"))


def assert_queue_empty(res):
    """A program that delivered everything (and had nothing rejected) leaves its queue directory
    empty: the library made it (so MLTRACK_QUEUE_DIR was used) and removed its journal."""
    assert os.path.isdir(res.queue), f"the queue directory {res.queue} was never made: {res!r}"
    left = sorted(os.listdir(res.queue))
    assert left == [], f"the queue {res.queue} of a fully delivered program holds {left}: {res!r}"


def assert_queue_untouched(res):
    """A program that failed before it had a tracker made no journal."""
    assert journal_dirs(res.queue) == [], f"a journal in {res.queue}: {res!r}"


def dead_letters(journal):
    path = os.path.join(journal, "dead.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


SYNC_LINES = [
    ("runs_created", re.compile(r"^runs created: (\d+)$")),
    ("points_sent", re.compile(r"^points sent: (\d+)$")),
    ("rejected", re.compile(r"^rejected: (\d+)$")),
    ("left", re.compile(r"^left: (\d+)$")),
]


def sync_queue(programs, res, tracking_uri):
    """Delivers the queue a program left (res.queue) with `mltrack sync`; returns the summary
    {runs_created, points_sent, rejected, left} after checking that everything was delivered and
    the queue is empty again."""
    sync = programs.run(
        ["mltrack", "sync", "--queue", res.queue, "--tracking-uri", tracking_uri],
        env={"MLTRACK_QUEUE_DIR": res.queue}, timeout=120,
    )
    assert sync.rc == 0, sync
    lines = sync.stdout.splitlines()
    assert len(lines) == 5, sync
    out = {}
    for line, (name, rx) in zip(lines, SYNC_LINES):
        m = rx.match(line)
        assert m, (line, sync)
        out[name] = int(m.group(1))
    assert lines[4] == "delivered everything", sync
    assert_queue_empty(sync)
    return out


# ---- values --------------------------------------------------------------------------------------


def vrepr(v):
    """Exact, readable identity of a float (repr round-trips; all NaNs are one)."""
    v = float(v)
    return "nan" if math.isnan(v) else repr(v)


def ledger_value(v):
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)


def served(v, neg_zero_kept):
    """What the server can give back for v: +/-DBL_MAX and +/-Inf look alike (mlflow_read decodes
    both to +/-inf), and -0.0 comes back as 0.0 if the server itself drops the sign."""
    v = float(v)
    if v == DBL_MAX:
        return math.inf
    if v == -DBL_MAX:
        return -math.inf
    if v == 0.0 and math.copysign(1.0, v) < 0 and not neg_zero_kept:
        return 0.0
    return v


def sig_digits(text):
    """Significant digits of a decimal number's text ("4.94e-324" -> 3, "0.1" -> 1)."""
    mant = re.split(r"[eE]", text.strip().lstrip("+-"))[0].replace(".", "")
    mant = mant.lstrip("0").rstrip("0")
    return max(len(mant), 1)


def make_text(prefix, n_cp):
    """The same text as it_client's make_text(): exactly n_cp code points."""
    cycle = ["a", "\u00e9", "\u20ac", "\U0001d11e"]
    cps = list(prefix)
    i = 0
    while len(cps) + 1 < n_cp:
        cps.append(cycle[i % 4])
        i += 1
    if len(cps) < n_cp:
        cps.append("\U0001d11e")
    return "".join(cps)


# ---- the ledger ----------------------------------------------------------------------------------


class RunRec:
    """One run as it_client's ledger callback saw it. run_id is the server's id, set once the run
    is found on the server by its client run key (check_experiment, find_run)."""

    def __init__(self, start):
        self.start = start
        self.end = None
        self.params = {}
        self.tags = {}
        self.metrics = defaultdict(list)  # key -> [(step, timestamp, value)]
        self.labels = []  # label events
        self.deliveries = []  # delivery callback reports
        self.n_tags = 0  # tag events (a tag set twice counts twice)
        self.run_id = None

    key = property(lambda self: self.start["run_key"])
    name = property(lambda self: self.start["run_name"])
    parent_key = property(lambda self: self.start["parent_run_key"])
    status = property(lambda self: self.end["status"] if self.end else None)

    @property
    def known_ids(self):
        """Every run id the program saw for this run (callbacks, labels, delivery reports)."""
        ids = {self.start["run_id"]}
        ids |= {self.end["run_id"]} if self.end else set()
        ids |= {e["run_id"] for e in self.labels} | {d["run_id"] for d in self.deliveries}
        return ids - {None}

    @property
    def n_logged(self):
        """Params, metric points and tags the callbacks saw (journal records of the run)."""
        return len(self.params) + sum(len(p) for p in self.metrics.values()) + self.n_tags


class Ledger:
    def __init__(self, path):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
        self.events = [json.loads(line) for line in text.split("\n") if line.strip()]
        self.runs = {}
        for e in self.events:
            ev, k = e["ev"], e.get("run_key")
            if ev == "cb_start":
                assert k not in self.runs, f"run key {k} started twice"
                assert UUID_RE.match(k), k
                self.runs[k] = RunRec(e)
            elif ev == "cb_param":
                assert e["key"] not in self.runs[k].params, f"param {e['key']} dispatched twice"
                self.runs[k].params[e["key"]] = e["value"]
            elif ev == "cb_tag":
                self.runs[k].tags[e["key"]] = e["value"]
                self.runs[k].n_tags += 1
            elif ev == "cb_metric":
                self.runs[k].metrics[e["key"]].append(
                    (e["step"], e["timestamp"], ledger_value(e["value"]))
                )
            elif ev == "cb_end":
                assert self.runs[k].end is None, f"run {k} ended twice"
                self.runs[k].end = e
            elif ev == "label":
                self.runs[k].labels.append(e)
        # a delivery may be reported before the ledger callback saw the run start
        for e in self.of("delivery"):
            assert e["run_key"] in self.runs, f"delivery of a run not in the ledger: {e}"
            self.runs[e["run_key"]].deliveries.append(e)

    def of(self, ev):
        return [e for e in self.events if e["ev"] == ev]

    def calls(self, op):
        return [e for e in self.events if e["ev"] == "call" and e["op"] == op]

    def labelled(self, label):
        found = self.all_labelled(label)
        assert len(found) == 1, f"{len(found)} runs labelled {label!r}"
        return found[0]

    def all_labelled(self, label):
        return [r for r in self.runs.values() if label in [e["label"] for e in r.labels]]

    def named(self, name):
        found = [r for r in self.runs.values() if r.name == name]
        assert len(found) == 1, f"{len(found)} runs named {name!r}"
        return found[0]

    @property
    def exit(self):
        (e,) = self.of("exit")
        return e

    @property
    def options(self):
        (e,) = self.of("options")
        return e

    @property
    def setup(self):
        (e,) = self.of("setup")
        return e

    @property
    def stats(self):
        (e,) = self.of("stats")
        return e

    @property
    def close(self):
        (e,) = self.of("close")
        return e


def check_calls(ledger):
    """The calls it_client made agree with what its callback saw: every call that returned MLT_OK
    was dispatched (a metric with its explicit timestamp, or a stamped one within the run's
    start and end), and no call that failed was."""
    cb_metrics = defaultdict(list)
    for e in ledger.of("cb_metric"):
        cb_metrics[(e["run_key"], e["key"], vrepr(ledger_value(e["value"])), e["step"])].append(
            e["timestamp"]
        )
    for c in ledger.calls("metric"):
        sig = (c["run_key"], c["key"], vrepr(ledger_value(c["value"])), c["step"])
        if c["rc"] != "MLT_OK":
            assert sig not in cb_metrics, f"failed metric call was dispatched: {c}"
            continue
        stamps = cb_metrics.get(sig, [])
        rec = ledger.runs[c["run_key"]]
        if "ts" in c:
            assert c["ts"] in stamps, f"metric call not dispatched with its timestamp: {c}"
            stamps.remove(c["ts"])
        else:
            ok = [t for t in stamps if rec.start["start_time"] <= t <= rec.end["end_time"]]
            assert ok, f"metric call not dispatched, or stamped outside its run: {c} {stamps}"
            stamps.remove(ok[0])
    for op in ("param", "tag"):
        seen = Counter((e["run_key"], e["key"], e["value"]) for e in ledger.of("cb_" + op))
        for c in ledger.calls(op):
            sig = (c["run_key"], c["key"], c["value"])
            if c["rc"] != "MLT_OK":
                assert seen[sig] == 0, f"failed {op} call was dispatched: {c['key'][:80]!r}"
            else:
                assert seen[sig] > 0, f"{op} call returned MLT_OK but was not dispatched: {c}"
                if op == "tag":
                    seen[sig] -= 1


# ---- comparing a run with the server --------------------------------------------------------------


def expected_user(env):
    for var in ("USER", "LOGNAME"):
        if env.get(var):
            return env[var]
    return pwd.getpwuid(os.getuid()).pw_name


class Ctx:
    """What a run's system tags depend on."""

    def __init__(self, programs, prog, env_extra, neg_zero_kept, git_heads):
        self.programs = programs
        self.prog = prog
        self.env = programs.env(env_extra)
        self.neg_zero_kept = neg_zero_kept
        self.git_heads = {h for h in git_heads if h}
        self.source = os.path.realpath(programs.path(prog))

    def system_tags(self, run_key, run_name, parent_run_id=None):
        tags = {
            "mlflow.user": expected_user(self.env),
            "mlflow.source.name": self.source,
            "mlflow.source.type": "LOCAL",
            "mltrack.client_run_key": run_key,
        }
        if run_name:
            tags["mlflow.runName"] = run_name
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        return tags


def check_tags(snap, ctx, expected):
    tags = dict(snap["tags"])
    commit = tags.pop("mlflow.source.git.commit", None)
    assert tags == expected
    if ctx.git_heads:  # the binary is in a git work tree
        assert commit in ctx.git_heads, f"mlflow.source.git.commit {commit} is not HEAD"


def metric_table(metrics, conv=float):
    return {k: sorted((s, t, vrepr(conv(v))) for (s, t, v) in pts) for k, pts in metrics.items()}


def check_run(reader, ledger, rec, ctx):
    """The server's copy of a ledger run (found by its client run key) is exactly what the
    library was given."""
    assert rec.end is not None, f"run {rec.name} ({rec.key}) never ended"
    assert RUN_ID_RE.match(rec.run_id or ""), (rec.run_id, rec.start)
    assert rec.known_ids <= {rec.run_id}, f"the program saw other ids {rec.known_ids}: {rec.key}"
    snap = reader.snapshot(rec.run_id)
    assert snap["run_id"] == rec.run_id
    assert snap["run_name"] == rec.name
    assert snap["status"] == rec.end["status"]
    assert snap["start_time"] == rec.start["start_time"]
    assert snap["end_time"] == rec.end["end_time"]
    assert snap["end_time"] >= snap["start_time"]
    assert snap["lifecycle_stage"] == "active"
    assert snap["params"] == rec.params
    parent_id = ledger.runs[rec.parent_key].run_id if rec.parent_key else None
    check_tags(snap, ctx, {**ctx.system_tags(rec.key, rec.name, parent_id), **rec.tags})
    want = metric_table(rec.metrics, lambda v: served(v, ctx.neg_zero_kept))
    assert metric_table(snap["metrics"]) == want
    return snap


def runs_by_key(runs):
    """{client run key: [server runs]} and [runs without the key tag]."""
    by_key, untagged = defaultdict(list), []
    for run in runs:
        key = {t["key"]: t.get("value") for t in run.get("data", {}).get("tags", [])}.get(
            CLIENT_KEY_TAG)
        (by_key[key] if key else untagged).append(run)
    return by_key, untagged


def find_run(reader, experiment_id, rec):
    """Finds a ledger run on the server by its client run key in an experiment that other runs
    share (the Default one): exactly one run has it. Sets and returns rec.run_id."""
    runs = reader.search_runs(experiment_id,
                              filter_string=f"tags.`{CLIENT_KEY_TAG}` = '{rec.key}'")
    assert len(runs) == 1, f"{len(runs)} runs with the client run key {rec.key}"
    rec.run_id = runs[0]["info"]["run_id"]
    return rec.run_id


def check_experiment(reader, name, ledgers, ctx):
    """The experiment holds exactly the ledgers' runs, one server run per client run key and
    nothing else, each exactly as logged."""
    exp, runs = reader.runs_of_experiment_named(name)
    assert exp is not None, f"experiment {name} was not created"
    assert exp["lifecycle_stage"] == "active"
    recs = [r for led in ledgers for r in led.runs.values()]
    by_key, untagged = runs_by_key(runs)
    assert not untagged, f"runs without the {CLIENT_KEY_TAG} tag: {untagged}"
    assert {k: len(v) for k, v in by_key.items()} == {r.key: 1 for r in recs}, (
        "the experiment does not hold exactly one run per ledger run"
    )
    for rec in recs:
        rec.run_id = by_key[rec.key][0]["info"]["run_id"]
    assert len({r.run_id for r in recs}) == len(recs)
    snaps = {}
    for led in ledgers:
        for rec in led.runs.values():
            snaps[rec.run_id] = check_run(reader, led, rec, ctx)
            assert snaps[rec.run_id]["experiment_id"] == exp["experiment_id"]
    return exp, snaps


def check_delivered(res, led):
    """An it_client run that delivered everything: every flush worked, every labelled run's id was
    known after its flush, the delivery callback (when set) reported each run's creation, logs and
    end acknowledged, nothing rejected, the queue's counters agree, and the queue is empty."""
    assert led.exit["rejected"] == 0, res
    for e in led.of("flush"):
        assert e["rc"] == "MLT_OK", (e, res)
    for rec in led.runs.values():
        for e in rec.labels:
            assert e["flush"] == "MLT_OK" and RUN_ID_RE.match(e["run_id"] or ""), (e, res)
    st = led.stats
    assert st["rejected"] == 0 and st["bytes_pending"] == 0, (st, res)
    assert st["acknowledged"] == st["queued"] > 0, (st, res)
    assert led.close["rc"] == "MLT_OK", res
    if led.setup["delivery_callback"]:
        for rec in led.runs.values():
            ds = rec.deliveries
            assert all(d["state"] == "acknowledged" and d["message"] is None for d in ds), ds
            creates = [d for d in ds if d["op"] == "create_run"]
            ends = [d for d in ds if d["op"] == "end_run"]
            logs = [d for d in ds if d["op"] == "log"]
            assert len(creates) == 1 and len(ends) == 1, (rec.name, ds)
            assert creates[0]["records"] == ends[0]["records"] == 1, ds
            assert RUN_ID_RE.match(creates[0]["run_id"] or ""), ds
            assert {d["run_id"] for d in ds} == {creates[0]["run_id"]}, ds
            assert len({d["experiment_id"] for d in ds}) == 1, ds
            # every param, metric point and tag went in an acknowledged log batch
            assert sum(d["records"] for d in logs) == rec.n_logged, (rec.name, ds)
    assert_queue_empty(res)


def check_rejected_run(res, led, what, sent):
    """it_client `simple` whose run the server refused to create: the run started and was logged
    locally (every call MLT_OK), its creation was rejected with the server's answer (what(msg)
    checks it), every record of the run is a dead letter (the other ones saying the run could not
    be created), the delivery callback reported each, and no run id ever became known; a final
    answer is not retried, and `sent` requests reached the server. Returns the answer."""
    assert res.rc == EXIT_REJECTED, res
    assert "rejected 6 records" in res.stderr, res
    check_calls(led)
    assert [c["rc"] for c in led.events if c["ev"] == "call"] == ["MLT_OK"] * 6
    assert led.exit["error_count"] == 0 and led.exit["failures"] == 0
    (rec,) = led.runs.values()
    assert rec.status == "FINISHED"
    assert rec.known_ids == set()
    (label,) = rec.labels
    assert label["flush"] == "MLT_OK" and label["run_id"] is None, label
    assert [e["rc"] for e in led.of("flush")] == ["MLT_OK", "MLT_OK"]
    assert f"run key: {rec.key} (not created: rejected by the server)\n" in res.stdout, res
    assert "run id:" not in res.stdout, res

    ds = rec.deliveries
    assert all(d["state"] == "rejected" and d["run_id"] is None for d in ds), ds
    assert ds[0]["op"] == "create_run" and ds[0]["records"] == 1, ds
    answer = ds[0]["message"]
    what(answer)
    # the run's logs are reported together (one report per batch), then its end
    ops = [d["op"] for d in ds[1:]]
    assert set(ops[:-1]) == {"log"} and ops[-1] == "end_run", ds
    assert sum(d["records"] for d in ds if d["op"] == "log") == 4, ds
    assert all(d["message"] == RUN_NOT_CREATED for d in ds[1:]), ds
    assert sum(d["records"] for d in ds) == 6 == led.exit["rejected"]
    assert led.stats == {"ev": "stats", "queued": 6, "sent": sent, "acknowledged": 0,
                         "retried": 0, "rejected": 6, "bytes_pending": 0}
    assert led.close["rc"] == "MLT_OK"

    # the journal stays, with one dead letter per record of the run, as logged
    (journal,) = journal_dirs(res.queue)
    dead = dead_letters(journal)
    assert [d["seq"] for d in dead] == list(range(1, 7)), dead
    assert {d["run_key"] for d in dead} == {rec.key}, dead
    assert dead[0]["type"] == "create_run" and dead[0]["answer"] == answer, dead[0]
    # the create is kept whole: enough to make the run again by hand
    assert dead[0]["start_time"] == rec.start["start_time"] and "tags" in dead[0], dead[0]
    assert dead[0].get("experiment_name") or dead[0].get("experiment_id"), dead[0]
    end = dead[-1]
    assert end["status"] == "FINISHED" and end["end_time"] == rec.end["end_time"], end
    rest = [{k: v for k, v in d.items() if k not in ("seq", "run_key", "status", "end_time")}
            for d in dead[1:]]
    (_s0, ts0, _v0), (_s1, ts1, _v1) = rec.metrics["m"]
    assert rest == [
        {"type": "param", "key": "p", "value": "v", "answer": RUN_NOT_CREATED},
        {"type": "metric", "key": "m", "value": 1.5, "timestamp": ts0, "step": 0,
         "answer": RUN_NOT_CREATED},
        {"type": "metric", "key": "m", "value": 2.5, "timestamp": ts1, "step": 1,
         "answer": RUN_NOT_CREATED},
        {"type": "tag", "key": "t", "value": "x", "answer": RUN_NOT_CREATED},
        {"type": "end_run", "answer": RUN_NOT_CREATED},
    ], dead
    assert ts1 == 1700000000000
    return answer


# ---- running it_client ---------------------------------------------------------------------------


@pytest.fixture
def client(programs, reader, ledger_path, exp_name, server_keeps_negative_zero, git_head):
    """client(scenario, *args, env=None, expect=0) runs it_client in the test's experiment and
    returns (result, ledger, ctx); the ledger's calls are checked against its callbacks."""

    def run(scenario, *args, env=None, expect=EXIT_OK, timeout=None, ledger=ledger_path):
        extra = {"MLFLOW_EXPERIMENT_NAME": exp_name, **(env or {})}
        head0 = git_head(programs.path("it_client"))
        res = programs.run(["it_client", "--ledger", ledger, scenario, *args], env=extra,
                           timeout=timeout)
        assert res.rc == expect, res
        led = Ledger(ledger)
        if expect == EXIT_OK:
            assert led.exit["code"] == 0 and led.exit["failures"] == 0, res
            check_calls(led)
            check_delivered(res, led)
        ctx = Ctx(programs, "it_client", extra, server_keeps_negative_zero,
                  {head0, git_head(programs.path("it_client"))})
        return res, led, ctx

    return run


# ==== 1. the examples =============================================================================


def train_model_accuracies(epochs=10, learning_rate=0.01):
    accuracy, out = 0.5, []
    for _ in range(epochs):
        accuracy += (1.0 - accuracy) * learning_rate * 10.0
        out.append(accuracy)
    return out


def train_jsonl_losses(epochs=20):
    loss, out = 1.0, []
    for _ in range(epochs):
        loss *= 0.9
        out.append(loss)
    return out


def train_callbacks_losses(epochs=15, lr=0.01):
    loss, out = 2.0, []
    for _ in range(epochs):
        loss -= lr * 10.0 * loss
        out.append(loss)
    return out


EXAMPLES = {
    # name: (params, {metric key: exact values by step}, extra metric keys with unknown values)
    "train_model": (
        {"epochs": "10", "learning_rate": "0.01"},
        {"accuracy": train_model_accuracies(), "result": [train_model_accuracies()[-1]]},
        {"duration_s"},
    ),
    "train_jsonl": ({"epochs": "20"}, {"loss": train_jsonl_losses()}, set()),
    "train_callbacks": ({"epochs": "15", "lr": "0.01"}, {"loss": train_callbacks_losses()}, set()),
}


@pytest.fixture
def example(programs, reader, exp_name, tmp_path, git_head, tracking_uri):
    """example(name) runs an example in a fresh working directory (and queue directory) and checks
    its one run against the server; returns (result, snapshot, experiment, cwd)."""

    def run(name):
        params, exact, unknown = EXAMPLES[name]
        env = {"MLFLOW_EXPERIMENT_NAME": exp_name, "USER": "mltrack-it-user",
               "LOGNAME": "mltrack-it-user"}
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        head0 = git_head(programs.path(name))
        res = programs.run([name], env=env, cwd=str(cwd))
        assert res.rc == 0, res
        # delivered within the example's own deadlines: nothing left queued, nothing rejected
        assert "not delivered" not in res.stdout + res.stderr, res
        assert_queue_empty(res)
        ctx = Ctx(programs, name, env, True, {head0, git_head(programs.path(name))})

        exp, runs = reader.runs_of_experiment_named(exp_name)
        assert exp is not None, res
        assert len(runs) == 1, f"{len(runs)} runs in the experiment, want 1"
        run_id = runs[0]["info"]["run_id"]
        snap = reader.snapshot(run_id)

        # printed once the run was delivered (train_model: from its delivery callback)
        ids = re.findall(r"^run id: (\S+)$", res.stdout, re.M)
        urls = re.findall(r"^run url: (\S+)$", res.stdout, re.M)
        assert ids == [run_id], res
        assert urls == [f"{tracking_uri}/#/experiments/{exp['experiment_id']}/runs/{run_id}"
                        + UI_RUN_TAIL]

        assert snap["run_name"] == name
        assert snap["status"] == "FINISHED"
        assert snap["end_time"] >= snap["start_time"] > 0
        assert snap["user_id"] == "mltrack-it-user"
        assert snap["params"] == params
        run_key = snap["tags"].get("mltrack.client_run_key", "")
        assert UUID_RE.match(run_key), snap["tags"]
        check_tags(snap, ctx, ctx.system_tags(run_key, name))

        metrics = snap["metrics"]
        assert set(metrics) == set(exact) | unknown
        for key, values in exact.items():
            got = [(s, v) for (s, _t, v) in metrics[key]]
            assert [s for s, _ in got] == list(range(len(values)))
            assert [vrepr(v) for _, v in got] == [vrepr(v) for v in values], key
        for key in unknown:
            ((step, _t, value),) = metrics[key]
            assert step == 0 and math.isfinite(value) and 0.0 <= value < 3600.0
        for key, pts in metrics.items():
            stamps = [t for (_s, t, _v) in pts]
            assert stamps == sorted(stamps), f"{key}: timestamps go back in step order"
            for t in stamps:
                assert snap["start_time"] <= t <= snap["end_time"], (key, t)
        return res, snap, exp, cwd

    return run


def test_example_train_model(example):
    res, snap, _exp, _cwd = example("train_model")
    final = train_model_accuracies()[-1]
    assert f"accuracy: {final:.4f}\n" in res.stdout
    ((_s, _t, result),) = snap["metrics"]["result"]
    assert result == final


def test_example_train_jsonl(example):
    res, snap, _exp, cwd = example("train_jsonl")
    log = cwd / "experiments.log"
    assert log.exists(), res
    events = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    kinds = Counter(e["event"] for e in events)
    assert kinds == Counter({"run_start": 1, "param": 1, "metric": 20, "run_end": 1}), kinds
    run_key = snap["tags"]["mltrack.client_run_key"]
    for e in events:
        assert e["run_key"] == run_key and e["run_name"] == "train_jsonl", e
    (start,) = [e for e in events if e["event"] == "run_start"]
    (end,) = [e for e in events if e["event"] == "run_end"]
    # at its start the run is only queued: its id is there only if the sender was quicker than
    # the JSON lines callback; the example flushes before the run ends, so the end has it
    assert start.get("run_id", snap["run_id"]) == snap["run_id"], start
    assert end["run_id"] == snap["run_id"]
    assert start["start_time"] == end["start_time"] == snap["start_time"]
    assert end["end_time"] == snap["end_time"]
    assert end["status"] == snap["status"] == "FINISHED"
    assert {e["key"]: e["value"] for e in events if e["event"] == "param"} == snap["params"]
    logged = sorted(
        (e["step"], e["timestamp"], vrepr(ledger_value(e["value"])))
        for e in events
        if e["event"] == "metric"
    )
    assert {e["key"] for e in events if e["event"] == "metric"} == {"loss"}
    assert logged == metric_table(snap["metrics"])["loss"]
    assert events[0]["event"] == "run_start" and events[-1]["event"] == "run_end"


def test_example_train_callbacks(example):
    res, snap, _exp, _cwd = example("train_callbacks")
    losses = train_callbacks_losses()
    out = res.stdout
    run_key = snap["tags"]["mltrack.client_run_key"]
    # the run id is known at the start only if the sender was quicker than the print callback
    started = re.findall(
        r"^\[mltrack\] run 'train_callbacks' started \(key ([^,)]+)(?:, id (\w+))?\)$", out, re.M)
    assert len(started) == 1, out
    assert started[0][0] == run_key and started[0][1] in ("", snap["run_id"]), out
    assert "[mltrack] run 'train_callbacks' param epochs=15\n" in out
    assert "[mltrack] run 'train_callbacks' param lr=0.01\n" in out
    printed = re.findall(r"^\[mltrack\] run 'train_callbacks' metric loss=(\S+) step=(\d+)$",
                         out, re.M)
    assert [int(s) for _, s in printed] == list(range(15))
    assert [float(v) for v, _ in printed] == losses
    assert re.search(r"^\[mltrack\] run 'train_callbacks' FINISHED in \d+\.\d{3} s$", out, re.M)
    best = min(losses)
    assert re.search(
        rf"^best loss of run 'train_callbacks': {best:.6f} at step {losses.index(best)} "
        r"\(FINISHED after \d+\.\d{3} s\)$",
        out,
        re.M,
    ), out


# The journal records of each example's one run: create, params, metric points, tags, end.
EXAMPLE_RECORDS = {
    "train_model": Counter({"create_run": 1, "param": 2, "metric": 12, "end_run": 1}),
    "train_jsonl": Counter({"create_run": 1, "param": 1, "metric": 20, "end_run": 1}),
    "train_callbacks": Counter({"create_run": 1, "param": 2, "metric": 15, "end_run": 1}),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_exits_nonzero_when_tracking_fails(name, programs, reader, exp_name):
    """An example whose run the server refuses (its experiment was deleted) must exit nonzero
    and log nothing on the server; the refusal, with the server's reason, is in the queue's dead
    letters (and, for train_model, on stderr from its delivery callback)."""
    exp_id = reader.create_experiment(exp_name)
    reader.delete_experiment(exp_id)
    t0 = time.monotonic()
    res = programs.run([name], env={"MLFLOW_EXPERIMENT_NAME": exp_name}, timeout=60)
    elapsed = time.monotonic() - t0
    assert res.rc == 1, f"{name} did not exit 1 although the server refused its run: {res!r}"
    assert reader.search_runs(exp_id) == []
    assert "run id:" not in res.stdout, res
    # a final answer is not retried: the example does not wait out its 5 s deadlines
    assert elapsed < 4 * slow_factor(), f"took {elapsed:.1f} s: was a final answer retried?"

    (journal,) = journal_dirs(res.queue)
    dead = dead_letters(journal)
    assert Counter(d["type"] for d in dead) == EXAMPLE_RECORDS[name], dead
    create = dead[0]
    assert create["type"] == "create_run", dead
    assert "deleted" in create["answer"] and exp_name in create["answer"], create
    assert {d["run_key"] for d in dead} == {create["run_key"]} and UUID_RE.match(create["run_key"])
    assert all(d["answer"] == RUN_NOT_CREATED for d in dead[1:]), dead
    if name == "train_model":
        refused = re.findall(r"^train_model: the server refused: (.*)$", res.stderr, re.M)
        # one line per delivery report: the create's, then one per batch of the run's records
        assert refused[0] == create["answer"] and len(refused) >= 2, res
        assert refused[1:] == [RUN_NOT_CREATED] * (len(refused) - 1), res
    else:
        # counted before the close delivers the run's end (the example flushed before it)
        refused = re.findall(rf"^{name}: the server refused (\d+) records", res.stderr, re.M)
        assert refused in ([str(len(dead) - 1)], [str(len(dead))]), res


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_bad_env(name, programs, reader, exp_name):
    res = programs.run(
        [name], env={"MLFLOW_EXPERIMENT_NAME": exp_name, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "abc"}
    )
    assert res.rc == 2, res
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in res.stderr, res
    assert reader.get_experiment_by_name(exp_name) is None
    assert_queue_untouched(res)


# ==== 2. exact values ==============================================================================

VALUES = [
    ("nan", math.nan),
    ("pinf", math.inf),
    ("ninf", -math.inf),
    ("negzero", -0.0),
    ("denorm_min", 5e-324),
    ("dbl_max", DBL_MAX),
    ("tenth", 0.1),
    ("third", 1 / 3),
]


def test_exact_values(client, reader, exp_name, server_keeps_negative_zero):
    res, led, ctx = client("values")
    rec = led.labelled("values")
    # the ledger holds what the test expects (an independent definition of the values)
    for key, v in VALUES:
        ((step, _t, got),) = rec.metrics[key]
        assert step == 0 and vrepr(got) == vrepr(v), key
        if v == 0.0:
            assert math.copysign(1.0, got) < 0
    assert [vrepr(v) for (_s, _t, v) in sorted(rec.metrics["all"])] == [vrepr(v) for _, v in VALUES]
    assert sorted(s for (s, _t, _v) in rec.metrics["steps"]) == sorted(
        [0, -1, TWO53P1, INT64_MAX, INT64_MIN]
    )
    assert sorted((s, t, v) for (s, t, v) in rec.metrics["ts"]) == [(0, 0, 7.0), (1, TWO53P1, 8.0)]
    assert sorted(rec.metrics["ts_extreme"]) == [(INT64_MIN, TWO53P1, 0.5), (INT64_MAX, 0, -0.5)]

    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    assert len(snaps) == 1

    # the raw answers: the server's own spelling, ints exact
    raw = {k: reader.metric_history(rec.run_id, k, decode=False) for k, _ in VALUES}
    assert raw["nan"][0]["value"] == "NaN"
    assert raw["pinf"][0]["value"] == DBL_MAX
    assert raw["ninf"][0]["value"] == -DBL_MAX
    assert raw["dbl_max"][0]["value"] == DBL_MAX
    assert raw["denorm_min"][0]["value"] == 5e-324
    assert raw["tenth"][0]["value"] == 0.1 and raw["third"][0]["value"] == 1 / 3
    assert raw["negzero"][0]["value"] == 0.0
    if server_keeps_negative_zero:
        assert math.copysign(1.0, raw["negzero"][0]["value"]) < 0
    steps = reader.metric_history(rec.run_id, "steps")
    assert all(isinstance(p["step"], int) for p in steps)
    assert sorted(p["step"] for p in steps) == sorted([0, -1, TWO53P1, INT64_MAX, INT64_MIN])
    ts = reader.metric_history(rec.run_id, "ts")
    assert sorted((p["step"], p["timestamp"]) for p in ts) == [(0, 0), (1, TWO53P1)]
    assert all(isinstance(p["timestamp"], int) for p in ts)
    ext = reader.metric_history(rec.run_id, "ts_extreme")
    assert sorted((p["step"], p["timestamp"]) for p in ext) == [(INT64_MIN, TWO53P1), (INT64_MAX, 0)]


# ==== 3. batch splitting ===========================================================================


def test_batch_split(client, reader, exp_name):
    n_metrics = 2500
    res, led, ctx = client("batch", n_metrics, 150, 150, timeout=300)
    rec = led.labelled("batch")
    keys = ["loss", "acc", "lr"]
    want = defaultdict(list)
    for i in range(n_metrics):
        want[keys[i % 3]].append((i // 3, i / 7.0))
    for k in keys:
        assert [(s, vrepr(v)) for (s, _t, v) in rec.metrics[k]] == [
            (s, vrepr(v)) for s, v in want[k]
        ]
    params = {f"param_{i:03d}": make_text(f"param {i}|", 6000) for i in range(150)}
    tags = {f"tag_{i:03d}": make_text(f"tag {i}|", 8000) for i in range(150)}
    assert all(len(v) == 6000 and v.endswith("\U0001d11e") for v in params.values())
    assert all(len(v) == 8000 and v.endswith("\U0001d11e") for v in tags.values())
    assert rec.params == params
    assert rec.tags == {**tags, "twice": "second", "twice_pending": "second"}

    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    snap = snaps[rec.run_id]
    assert len(snap["params"]) == 150
    assert snap["params"] == params  # byte-identical: nothing truncated
    for k, v in tags.items():
        assert snap["tags"][k].encode("utf-8") == v.encode("utf-8"), k
    assert snap["tags"]["twice"] == "second" and snap["tags"]["twice_pending"] == "second"
    assert sum(len(p) for p in snap["metrics"].values()) == n_metrics


# ==== 4. nested runs ===============================================================================


def test_nested_runs(client, reader, exp_name):
    res, led, ctx = client("nested")
    parent, a, b = (led.labelled(x) for x in ("parent", "child_a", "child_b"))
    assert parent.parent_key is None
    assert a.parent_key == parent.key and b.parent_key == parent.key
    assert (parent.status, a.status, b.status) == ("FINISHED", "FINISHED", "KILLED")
    assert b.end["end_time"] <= parent.end["end_time"]
    # the KILLED child ended before its parent did
    order = [e["run_key"] for e in led.of("cb_end")]
    assert order == [a.key, b.key, parent.key]
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    assert len(snaps) == 3
    assert snaps[a.run_id]["tags"]["mlflow.parentRunId"] == parent.run_id
    assert snaps[b.run_id]["tags"]["mlflow.parentRunId"] == parent.run_id
    assert "mlflow.parentRunId" not in snaps[parent.run_id]["tags"]
    assert snaps[b.run_id]["status"] == "KILLED"
    assert snaps[b.run_id]["tags"]["open"] == "yes"


# ==== 5. statuses, scopes, decorators ==============================================================

STATUSES = {
    "st_finished": "FINISHED",
    "st_failed": "FAILED",
    "st_killed": "KILLED",
    "st_marked": "FAILED",
    "st_with_break": "FAILED",
    "st_outer": "FINISHED",
    "st_inner": "FINISHED",
    "st_scoped_return": "FINISHED",
    "st_track_ok": "FINISHED",
    "st_track_fail": "FAILED",
    "tracked_fn": "FINISHED",
}


def test_statuses(client, reader, exp_name):
    res, led, ctx = client("statuses")
    recs = {label: led.labelled(label) for label in STATUSES}
    assert {label: r.status for label, r in recs.items()} == STATUSES
    assert len(led.runs) == len(STATUSES)
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    snap = {label: snaps[r.run_id] for label, r in recs.items()}
    assert {label: s["status"] for label, s in snap.items()} == STATUSES

    assert set(snap["st_with_break"]["metrics"]) == {"before_break"}  # nothing after the break
    assert snap["st_inner"]["tags"]["mlflow.parentRunId"] == recs["st_outer"].run_id
    for label in ("st_outer", "st_scoped_return", "st_with_break"):
        assert "mlflow.parentRunId" not in snap[label]["tags"]

    for label, code in (("st_track_ok", "0"), ("st_track_fail", "3")):
        s = snap[label]
        assert s["params"] == {"alpha": "1", "beta": "two"}
        assert s["tags"]["mltrack.return_code"] == code
        assert set(s["metrics"]) == {"inside", "duration_s"}
        ((step, _t, d),) = s["metrics"]["duration_s"]
        assert step == 0 and 0.0 <= d < 3600.0

    s = snap["tracked_fn"]
    assert s["params"] == {
        "n": "-7",
        "label": "h\u00e9llo w\u00f6rld",
        "x": "0.1",
        "flag": "true",
        "big": str(ULONG_MAX),
    }
    assert set(s["metrics"]) == {"inside", "result", "duration_s"}
    ((_s, _t, result),) = s["metrics"]["result"]
    assert vrepr(result) == vrepr(-7 * 0.1)
    ((_s, _t, inside),) = s["metrics"]["inside"]
    assert inside == 0.1
    (tr,) = led.of("tracked_result")
    assert vrepr(ledger_value(tr["value"])) == vrepr(-7 * 0.1)


def _check_tracked_f64(client, reader, exp_name, texts):
    res, led, ctx = client("tracked_f64", *texts)
    recs = led.all_labelled("tracked_f64")
    assert len(recs) == len(texts)
    check_experiment(reader, exp_name, [led], ctx)
    bad = []
    for text, rec in zip(texts, recs):
        x = float(text)
        got = rec.params["x"]
        assert float(got) == x, (text, got)  # reads back to the same value
        if sig_digits(got) != sig_digits(repr(x)):
            bad.append(f"{x!r} logged as {got!r}")
        snap = reader.snapshot(rec.run_id)
        assert snap["params"] == {"x": got}
        ((_s, _t, result),) = snap["metrics"]["result"]
        assert vrepr(result) == vrepr(served(x, True))
    assert not bad, "not the shortest text that reads back: " + "; ".join(bad)


def test_tracked_param_double_shortest(client, reader, exp_name):
    """MLT_TRACKED logs a double as 'the shortest text that reads back to the same value'."""
    _check_tracked_f64(
        client, reader, exp_name,
        ["0.1", "0.3", "-1.5", "1e-05", "123456.789", "1e+300", "0.30000000000000004",
         repr(1 / 3), "1e15", "2.2250738585072014e-308"],
    )


def test_tracked_param_double_subnormal_shortest(client, reader, exp_name):
    """The same rule for subnormal doubles (5e-324 is the shortest text of the smallest one)."""
    _check_tracked_f64(client, reader, exp_name, ["5e-324", "1e-310", "2.5e-320"])


# ==== 6. bad input =================================================================================


def test_bad_input(client, reader, exp_name):
    res, led, ctx = client("badinput")
    rec = led.labelled("badinput")
    k250, k251 = "k" * 250, "k" * 251
    bad_utf8_key = "bad\udcff\udcfekey"  # b"bad\xff\xfekey" read with surrogateescape
    expect = {
        "a//b": ({"MLT_ERR_INVALID_KEY"}, "'a//b'"),
        "": ({"MLT_ERR_INVALID_KEY"}, "''"),
        # a key over 250 characters: the header's codes allow either reading
        k251: ({"MLT_ERR_VALUE_TOO_LONG", "MLT_ERR_INVALID_KEY"}, "'" + "k" * 64),
        "bad#key": ({"MLT_ERR_INVALID_KEY"}, "'bad#key'"),
        bad_utf8_key: ({"MLT_ERR_INVALID_KEY", "MLT_ERR_INVALID_VALUE"}, "'bad\\xFF\\xFEkey'"),
    }
    calls = [c for c in led.events if c["ev"] == "call" and c["op"] in ("param", "metric", "tag")]
    failed = 0
    for c in calls:
        key = c["key"]
        if key in expect:
            codes, named = expect[key]
            assert c["rc"] in codes, (c["op"], key[:80], c["rc"], c["err"])
            assert named in c["err"], (c["op"], key[:80], c["err"])
            assert {"param": "param key", "metric": "metric key", "tag": "tag key"}[c["op"]] in c[
                "err"
            ]
            failed += 1
    assert failed == 15

    by_key = defaultdict(list)
    for c in calls:
        by_key[c["key"]].append(c)

    def one(key):
        (c,) = by_key[key]
        return c

    for key, code in (
        ("long_param", "MLT_ERR_VALUE_TOO_LONG"),
        ("long_tag", "MLT_ERR_VALUE_TOO_LONG"),
        ("bad_utf8_param", "MLT_ERR_INVALID_VALUE"),
        ("bad_utf8_tag", "MLT_ERR_INVALID_VALUE"),
        ("neg_ts", "MLT_ERR_INVALID_VALUE"),
    ):
        c = one(key)
        assert c["rc"] == code, (key, c["rc"], c["err"])
        assert f"'{key}'" in c["err"] or key == "neg_ts", c["err"]
    assert "-1" in one("neg_ts")["err"]
    conf = by_key["conf"]
    assert [c["rc"] for c in conf] == ["MLT_OK", "MLT_ERR_PARAM_CONFLICT"]
    assert "'conf'" in conf[1]["err"]
    assert [c["rc"] for c in by_key["same"]] == ["MLT_OK", "MLT_OK"]
    assert one(k250)["rc"] == "MLT_OK"
    assert one("max_param")["rc"] == "MLT_OK" and one("max_tag")["rc"] == "MLT_OK"

    n_failed = sum(1 for c in led.events if c["ev"] == "call" and c["rc"] != "MLT_OK")
    assert n_failed == 15 + 5 + 1
    assert led.exit["error_count"] == n_failed

    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    snap = snaps[rec.run_id]
    assert snap["params"] == {
        "ok_param": "1",
        k250: "key of 250",
        "max_param": "\u00e9" * 6000,
        "conf": "a",
        "same": "x",
    }
    assert set(snap["metrics"]) == {"ok_metric"}
    user_tags = {k: v for k, v in snap["tags"].items() if not k.startswith(("mlflow.", "mltrack."))}
    assert user_tags == {"ok_tag": "yes", "max_tag": "\u20ac" * 8000}
    assert snap["status"] == "FINISHED"


# ==== 7. calls the server rejects ===================================================================


def test_deleted_experiment(programs, reader, exp_name, ledger_path):
    """The run starts locally; the server refuses its creation (the experiment is deleted): the
    refusal, with the server's reason, becomes a dead letter and a delivery report, quickly (a
    final answer is not retried), and nothing lands on the server."""
    exp_id = reader.create_experiment(exp_name)
    reader.delete_experiment(exp_id)
    t0 = time.monotonic()
    res = programs.run(["it_client", "--ledger", ledger_path, "simple"],
                       env={"MLFLOW_EXPERIMENT_NAME": exp_name}, timeout=60)
    elapsed = time.monotonic() - t0
    led = Ledger(ledger_path)

    def what(msg):
        assert "deleted" in msg and exp_name in msg and f"id {exp_id}" in msg, msg

    check_rejected_run(res, led, what, sent=0)  # the experiment lookup refused it: no runs/create
    # a final answer is not retried (7 retries with the default backoff would take minutes)
    limit = 30 * (10 if os.environ.get("MLTRACK_TEST_WRAPPER") else 1)
    assert elapsed < limit, f"took {elapsed:.1f} s: was a final answer retried?"
    assert reader.search_runs(exp_id) == []


def test_nonexistent_experiment_id(programs, reader, ledger_path):
    with pytest.raises(MlflowError) as e:
        reader.get_experiment("987654")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # what the server answers to runs/create in an experiment that does not exist
    with pytest.raises(MlflowError) as e:
        reader.post("runs/create", {"experiment_id": "987654", "start_time": 1})
    assert (e.value.status, e.value.error_code) == (404, "RESOURCE_DOES_NOT_EXIST")

    res = programs.run(["it_client", "--ledger", ledger_path, "simple"],
                       env={"MLFLOW_EXPERIMENT_ID": "987654"}, timeout=60)
    led = Ledger(ledger_path)

    def what(msg):
        assert "987654" in msg and "RESOURCE_DOES_NOT_EXIST" in msg, msg

    check_rejected_run(res, led, what, sent=1)  # one runs/create, answered 404, not retried
    with pytest.raises(MlflowError):
        reader.get_experiment("987654")


# ==== 8. no server =================================================================================


@pytest.mark.parametrize("with_name", [True, False], ids=["experiment_name", "experiment_id"])
def test_server_not_there(with_name, programs, reader, unused_port, exp_name, ledger_path,
                          tracking_uri, server_keeps_negative_zero, git_head):
    """No server: the run starts and is logged locally (every call MLT_OK); the flushes and the
    close return at once with MLT_ERR_QUEUED (saying what is kept, where and why: not at their
    deadlines) and the data stays queued; `mltrack sync` then delivers it, and the server holds
    exactly what was logged."""
    uri = f"http://127.0.0.1:{unused_port}"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLTRACK_IT_FLUSH_MS": "60000",
        "MLTRACK_IT_CLOSE_MS": "60000",
    }
    if with_name:
        env["MLFLOW_EXPERIMENT_NAME"] = exp_name
    head0 = git_head(programs.path("it_client"))
    res = programs.run(["it_client", "--ledger", ledger_path, "simple"], env=env, timeout=100)
    assert res.rc == EXIT_QUEUED, res
    # the program does not wait for a server that is not there: its two 60 s flushes and its
    # 60 s close each return as soon as the sender found no server (they waited 180 s before)
    assert res.elapsed < 20, f"it_client took {res.elapsed:.1f} s: {res!r}"
    led = Ledger(ledger_path)
    check_calls(led)
    assert [c["rc"] for c in led.events if c["ev"] == "call"] == ["MLT_OK"] * 6
    # "kept in the queue" is not a failure of the calls: not counted
    assert (led.exit["error_count"], led.exit["failures"], led.exit["rejected"]) == (0, 0, 0)
    (rec,) = led.runs.values()
    assert rec.name == "simple" and rec.status == "FINISHED"
    assert rec.known_ids == set() and led.of("delivery") == []
    (label,) = rec.labels
    flushes = [label["flush"]] + [e["rc"] for e in led.of("flush")]
    assert flushes == ["MLT_ERR_QUEUED"] * 3, led.events
    # each says what is kept, where, and the real cause: the server cannot be reached
    msgs = [label["flush_err"]] + [e["err"] for e in led.of("flush")] + [led.close["err"]]
    for msg in msgs:
        assert msg.startswith("kept in the queue, not delivered yet: "), msg
        assert f"{uri} cannot be reached" in msg and "Couldn't connect to server" in msg, msg
        assert f"in {res.queue}: " in msg and f"`mltrack sync --queue {res.queue}`" in msg, msg
    assert "1 run and 2 points (6 records)" in led.close["err"], led.close
    assert led.close["rc"] == "MLT_ERR_QUEUED"
    st = led.stats
    assert (st["queued"], st["acknowledged"], st["rejected"]) == (6, 0, 0), st
    assert st["bytes_pending"] > 0, st
    assert f"run key: {rec.key} (queued: not delivered yet)\n" in res.stdout, res
    assert "run id:" not in res.stdout, res
    (journal,) = journal_dirs(res.queue)
    assert dead_letters(journal) == []

    summary = sync_queue(programs, res, tracking_uri)
    assert summary == {"runs_created": 1, "points_sent": 2, "rejected": 0, "left": 0}, summary
    ctx = Ctx(programs, "it_client", env, server_keeps_negative_zero,
              {head0, git_head(programs.path("it_client"))})
    if with_name:
        _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
        assert len(snaps) == 1
    else:
        find_run(reader, "0", rec)  # the Default experiment, shared with other runs
        snap = check_run(reader, led, rec, ctx)
        assert snap["experiment_id"] == "0"
    snap = reader.snapshot(rec.run_id)
    assert snap["params"] == {"p": "v"} and snap["tags"]["t"] == "x"
    assert [(s, t, v) for (s, t, v) in snap["metrics"]["m"] if s == 1] == [(1, 1700000000000, 2.5)]


# ==== 9. concurrency ===============================================================================


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_same_new_experiment(attempt, programs, reader, exp_name, tmp_path,
                                           server_keeps_negative_zero, git_head):
    env = {"MLFLOW_EXPERIMENT_NAME": exp_name}
    ledgers = [str(tmp_path / f"ledger{i}.jsonl") for i in range(2)]
    head0 = git_head(programs.path("it_client"))
    procs = [programs.start(["it_client", "--ledger", p, "simple"], env=env) for p in ledgers]
    results = [programs.wait(p) for p in procs]
    for res in results:
        assert res.rc == 0, res
    assert results[0].queue != results[1].queue
    leds = [Ledger(p) for p in ledgers]
    for res, led in zip(results, leds):
        check_calls(led)
        check_delivered(res, led)
    ctx = Ctx(programs, "it_client", env, server_keeps_negative_zero,
              {head0, git_head(programs.path("it_client"))})
    exp, snaps = check_experiment(reader, exp_name, leds, ctx)
    assert len(snaps) == 2
    for res, led in zip(results, leds):
        rec = led.labelled("simple")
        assert f"run url: {programs.tracking_uri}/#/experiments/{exp['experiment_id']}/runs/" \
               f"{rec.run_id}{UI_RUN_TAIL}\n" in res.stdout


def _check_threads(led, n, points, shared):
    for r in led.runs.values():
        assert r.status == "FINISHED"
    if shared:
        rec = led.labelled("shared")
        assert set(rec.metrics) == {f"m_{i}" for i in range(n)}
        assert rec.params == {f"p_{i}": str(i) for i in range(n)}
        for i in range(n):
            assert [(s, v) for (s, _t, v) in rec.metrics[f"m_{i}"]] == [
                (j, i * 1000.0 + j / 8.0) for j in range(points)
            ]
    else:
        for i in range(n):
            rec = led.labelled(f"thread_{i}")
            assert rec.params == {"p": str(i)}
            assert [(s, v) for (s, _t, v) in rec.metrics["m"]] == [
                (j, i * 1000.0 + j / 8.0) for j in range(points)
            ]


@pytest.mark.parametrize("shared", [False, True], ids=["four_runs", "one_run"])
def test_threads(shared, client, reader, exp_name):
    n, points = 4, 400
    res, led, ctx = client("threads_one" if shared else "threads", n, points, timeout=300)
    assert len(led.runs) == (1 if shared else n)
    _check_threads(led, n, points, shared)
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    total = sum(len(p) for s in snaps.values() for p in s["metrics"].values())
    assert total == n * points


# ==== 10. environment import =======================================================================


@pytest.mark.parametrize(
    "auth",
    [
        {"MLFLOW_TRACKING_TOKEN": "it-secret-token"},
        {"MLFLOW_TRACKING_USERNAME": "it-user", "MLFLOW_TRACKING_PASSWORD": "it-password"},
    ],
    ids=["token", "basic"],
)
@pytest.mark.parametrize("setup", ["options", "from_env"])
def test_env_auth_ignored_by_open_server(auth, setup, client, reader, exp_name):
    res, led, ctx = client("simple", env={**auth, "MLTRACK_IT_SETUP": setup})
    if setup == "options":
        opts = led.options
        assert opts["tracking_uri"] == reader.uri
        assert opts["experiment_name"] == exp_name
        if "MLFLOW_TRACKING_TOKEN" in auth:
            assert opts["token"] == "***"  # secrets read back masked
        else:
            assert opts["username"] == "it-user" and opts["password"] == "***"
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    (snap,) = snaps.values()
    assert snap["params"] == {"p": "v"} and snap["tags"]["t"] == "x"
    assert [(s, t, v) for (s, t, v) in snap["metrics"]["m"] if s == 1] == [(1, 1700000000000, 2.5)]


@pytest.mark.parametrize("setup", ["options", "from_env"])
def test_env_invalid_retries(setup, programs, reader, exp_name, ledger_path):
    res = programs.run(
        ["it_client", "--ledger", ledger_path, "simple"],
        env={"MLFLOW_EXPERIMENT_NAME": exp_name, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "abc",
             "MLTRACK_IT_SETUP": setup},
    )
    assert res.rc == EXIT_SETUP, res
    assert "MLT_ERR_BAD_OPTION" in res.stderr, res
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in res.stderr and "abc" in res.stderr, res
    assert reader.get_experiment_by_name(exp_name) is None
    assert_queue_untouched(res)


# ==== more: strings, open runs at close, no server, experiment names =============================

JSON_CHARS = ("q\"uote b\\ack n\nl t\tab c\x01trl d\x7fel </script> ls\u2028end \U0001f389")


def test_strings(client, reader, exp_name):
    """Run names at/over the limit; Unicode keys; values that need JSON escapes come back
    byte-identical."""
    res, led, ctx = client("strings")
    starts = {c["label"]: c for c in led.calls("start")}
    assert starts["name_251"]["rc"] == "MLT_ERR_VALUE_TOO_LONG"
    assert "run name" in starts["name_251"]["err"] and "251" in starts["name_251"]["err"]
    assert starts["name_bad_utf8"]["rc"] == "MLT_ERR_INVALID_VALUE"
    assert starts["name_250"]["rc"] == "MLT_OK"
    assert len(led.runs) == 1
    rec = led.labelled("name_250")
    assert rec.name == "\u00fc" * 250
    assert rec.params == {"param\u00e8tre": "v\u00e4lue", "json_chars": JSON_CHARS,
                          "empty_value": ""}
    assert rec.tags == {"json_chars": JSON_CHARS, "\u00e9tiquette": "\u65e5\u672c\u8a9e \U0001f389"}
    assert set(rec.metrics) == {"m\u00e9trique/\u00e9preuve: 1", "a-b_c.d e:f/g"}
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    snap = snaps[rec.run_id]
    assert snap["run_name"] == "\u00fc" * 250
    assert snap["params"]["json_chars"].encode("utf-8") == JSON_CHARS.encode("utf-8")
    assert snap["tags"]["json_chars"].encode("utf-8") == JSON_CHARS.encode("utf-8")


def test_close_with_open_runs(client, reader, exp_name):
    """mlt_tracker_close ends every run still open as KILLED, children before their parent."""
    res, led, ctx = client("close_open")
    parent, child, other = (led.labelled(x) for x in ("open_parent", "open_child", "open_other"))
    assert (parent.status, child.status, other.status) == ("KILLED", "KILLED", "KILLED")
    order = [e["run_key"] for e in led.of("cb_end")]
    assert order.index(child.key) < order.index(parent.key)
    assert not led.calls("end")
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    assert {s["status"] for s in snaps.values()} == {"KILLED"}
    assert snaps[child.run_id]["tags"]["mlflow.parentRunId"] == parent.run_id
    assert snaps[other.run_id]["params"] == {"p": "1"}


def test_offline_work_still_runs(programs, reader, unused_port, exp_name, ledger_path,
                                 tracking_uri, server_keeps_negative_zero, git_head):
    """No server: mlt_track's fn, a MLT_WITH_RUN block and an MLT_TRACKED body all run, and are
    tracked all the same: each gets its run (not NULL), every call succeeds, and the runs wait in
    the queue until `mltrack sync` delivers them exactly as logged."""
    uri = f"http://127.0.0.1:{unused_port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": exp_name,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
           "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLTRACK_IT_CLOSE_MS": "60000"}
    head0 = git_head(programs.path("it_client"))
    res = programs.run(["it_client", "--ledger", ledger_path, "offline"], env=env, timeout=100)
    assert res.rc == EXIT_QUEUED, res
    # the 60 s close returns as soon as the sender found no server
    assert res.elapsed < 20, f"it_client took {res.elapsed:.1f} s: {res!r}"
    led = Ledger(ledger_path)
    check_calls(led)
    (track,) = led.of("offline_track")
    assert (track["rc"], track["err"]) == ("MLT_OK", ""), track
    assert (track["called"], track["run_was_null"], track["fn_result"]) == (1, 0, 7)
    (scope,) = led.of("offline_scope")
    assert (scope["run_was_null"], scope["err"]) == (0, ""), scope
    assert led.of("offline_scope_after")[0]["ran"] == 1
    (body,) = led.of("offline_tracked_body")
    assert body == {"ev": "offline_tracked_body", "v": 21, "run_was_null": 0}
    (tracked,) = led.of("offline_tracked")
    assert (tracked["result"], tracked["err"]) == (42, ""), tracked
    assert led.exit["error_count"] == 0 and led.exit["failures"] == 0 and led.exit["rejected"] == 0

    # the three runs, as the callbacks saw them
    assert len(led.runs) == 3
    track_run, scope_run, tracked_run = (
        led.named(n) for n in ("offline_track", "offline_scope", "offline_tracked"))
    assert (track_run.status, scope_run.status, tracked_run.status) == (
        "FAILED", "FINISHED", "FINISHED")  # fn returned 7: FAILED
    assert track_run.params == {"p": "1"} and track_run.tags == {"mltrack.return_code": "7"}
    assert set(track_run.metrics) == {"duration_s"}
    assert (scope_run.params, scope_run.tags, dict(scope_run.metrics)) == ({}, {}, {})
    assert tracked_run.params == {"v": "21"} and tracked_run.tags == {}
    assert set(tracked_run.metrics) == {"result", "duration_s"}
    assert [(s, v) for (s, _t, v) in tracked_run.metrics["result"]] == [(0, 42.0)]
    assert all(r.known_ids == set() and r.parent_key is None for r in led.runs.values())

    # nothing reached a server: all of it is queued
    assert led.of("delivery") == []
    assert [e["rc"] for e in led.of("flush")] == ["MLT_ERR_QUEUED"]
    assert led.close["rc"] == "MLT_ERR_QUEUED" and uri in led.close["err"], led.close
    st = led.stats
    assert (st["queued"], st["acknowledged"], st["rejected"]) == (12, 0, 0), st
    (journal,) = journal_dirs(res.queue)
    assert dead_letters(journal) == []

    summary = sync_queue(programs, res, tracking_uri)
    assert summary == {"runs_created": 3, "points_sent": 3, "rejected": 0, "left": 0}, summary
    ctx = Ctx(programs, "it_client", env, server_keeps_negative_zero,
              {head0, git_head(programs.path("it_client"))})
    _exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    assert sorted((s["run_name"], s["status"]) for s in snaps.values()) == [
        ("offline_scope", "FINISHED"), ("offline_track", "FAILED"),
        ("offline_tracked", "FINISHED")]


def test_experiment_name_needing_url_encoding(client, reader, exp_name, tmp_path):
    """A name with spaces, &?#+%/ and non-ASCII is found again by name (get-by-name is
    URL-encoded right): a second process uses the same experiment instead of failing."""
    name = f"{exp_name} a+b&c=d?e#f%20g/h \u00fc\u65e5"
    ledgers = []
    for i in range(2):
        path = str(tmp_path / f"ledger{i}.jsonl")
        res, led, ctx = client("simple", env={"MLFLOW_EXPERIMENT_NAME": name}, ledger=path)
        ledgers.append(led)
    exp, snaps = check_experiment(reader, name, ledgers, ctx)
    assert exp["name"] == name
    assert len(snaps) == 2


def test_experiment_name_and_id(client, reader, exp_name, tmp_path):
    """MLFLOW_EXPERIMENT_NAME and MLFLOW_EXPERIMENT_ID together must name the same experiment."""
    exp_id = reader.create_experiment(exp_name)
    res, led, ctx = client("simple", env={"MLFLOW_EXPERIMENT_ID": exp_id})
    exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    assert exp["experiment_id"] == exp_id and len(snaps) == 1

    # the mismatch is found when the run is delivered: the server's experiment of that name has
    # another id, so the run's creation is refused (a dead letter) and nothing lands
    path = str(tmp_path / "mismatch.jsonl")
    res, led2, _ = client("simple", env={"MLFLOW_EXPERIMENT_ID": "987654"},
                          expect=EXIT_REJECTED, ledger=path)

    def what(msg):
        assert "987654" in msg and f"id {exp_id}" in msg and exp_name in msg, msg

    check_rejected_run(res, led2, what, sent=0)  # refused before any runs/create
    assert len(reader.search_runs(exp_id)) == 1


def test_tracking_uri_trailing_slash(client, reader, exp_name):
    res, led, ctx = client("simple", env={"MLFLOW_TRACKING_URI": reader.uri + "/"})
    exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    rec = led.labelled("simple")
    assert led.options["tracking_uri"] == reader.uri
    assert f"run url: {reader.uri}/#/experiments/{exp['experiment_id']}/runs/{rec.run_id}" \
           f"{UI_RUN_TAIL}\n" in res.stdout


# ==== the public header ============================================================================

HEADER_SNIPPETS = {
    "custom_name": """
int f(mlt_tracker *t);
int f(mlt_tracker *t)
{
    int n = 0;
    MLT_WITH_RUN(t, r, "x") { n += r != NULL; }
    return n;
}
""",
    "nested": """
int f(mlt_tracker *t);
int f(mlt_tracker *t)
{
    int n = 0;
    MLT_WITH_RUN(t, outer, "outer")
    {
        MLT_WITH_RUN(t, inner, "inner") { n += outer != NULL && inner != NULL; }
    }
    return n;
}
""",
}


@pytest.mark.parametrize("snippet", sorted(HEADER_SNIPPETS))
def test_with_run_macro_compiles(snippet, src_dir, tmp_path):
    """MLT_WITH_RUN(tracker, run, name) declares a variable of any name the caller picks, and
    nests (as the header says), warning-free under the project's warning flags."""
    cc = shlex.split(os.environ.get("CC") or "") or [shutil.which("cc") or shutil.which("gcc")]
    assert cc and cc[0], "no C compiler found (set CC)"
    src = tmp_path / "snippet.c"
    src.write_text("#include <mltrack.h>\n" + HEADER_SNIPPETS[snippet])
    cmd = cc + ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes",
                "-Wmissing-prototypes", "-Werror", "-fsyntax-only",
                "-I", os.path.join(src_dir, "include"), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
