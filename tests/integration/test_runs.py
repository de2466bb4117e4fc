"""Integration tests of libmltrack against a real MLflow tracking server.

Every test runs C programs (the examples, or tests/it_client with a scenario) and then reads the
server back over REST (mlflow_read.py, standard library only) and compares EXACTLY: params, full
metric histories (key, value, step, timestamp), tags, status, start and end time, run name and the
number of runs in the test's own experiment.

it_client writes a ledger (JSON lines) of what it logged and what a callback of its own saw, with
the timestamps the library stamped; the tests check the ledger against values they compute
themselves, and the server against the ledger.
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

# it_client's exit codes
EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_START = 0, 1, 2, 3


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
    """One run as it_client's ledger callback saw it."""

    def __init__(self, start):
        self.start = start
        self.end = None
        self.params = {}
        self.tags = {}
        self.metrics = defaultdict(list)  # key -> [(step, timestamp, value)]
        self.labels = []

    key = property(lambda self: self.start["run_key"])
    run_id = property(lambda self: self.start["run_id"])
    name = property(lambda self: self.start["run_name"])
    parent_key = property(lambda self: self.start["parent_run_key"])
    status = property(lambda self: self.end["status"] if self.end else None)


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
            elif ev == "cb_metric":
                self.runs[k].metrics[e["key"]].append(
                    (e["step"], e["timestamp"], ledger_value(e["value"]))
                )
            elif ev == "cb_end":
                assert self.runs[k].end is None, f"run {k} ended twice"
                self.runs[k].end = e
            elif ev == "label":
                self.runs[k].labels.append(e["label"])

    def of(self, ev):
        return [e for e in self.events if e["ev"] == ev]

    def calls(self, op):
        return [e for e in self.events if e["ev"] == "call" and e["op"] == op]

    def labelled(self, label):
        found = [r for r in self.runs.values() if label in r.labels]
        assert len(found) == 1, f"{len(found)} runs labelled {label!r}"
        return found[0]

    def all_labelled(self, label):
        return [r for r in self.runs.values() if label in r.labels]

    @property
    def exit(self):
        (e,) = self.of("exit")
        return e

    @property
    def options(self):
        (e,) = self.of("options")
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
    """The server's copy of a ledger run is exactly what the library was given."""
    assert rec.end is not None, f"run {rec.name} ({rec.key}) never ended"
    assert RUN_ID_RE.match(rec.run_id or ""), rec.start
    snap = reader.snapshot(rec.run_id)
    assert snap["run_id"] == rec.run_id == rec.end["run_id"]
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


def check_experiment(reader, name, ledgers, ctx):
    """The experiment holds exactly the ledgers' runs, each exactly as logged."""
    exp, runs = reader.runs_of_experiment_named(name)
    assert exp is not None, f"experiment {name} was not created"
    assert exp["lifecycle_stage"] == "active"
    recs = [r for led in ledgers for r in led.runs.values()]
    assert sorted(r["info"]["run_id"] for r in runs) == sorted(r.run_id for r in recs)
    snaps = {}
    for led in ledgers:
        for rec in led.runs.values():
            snaps[rec.run_id] = check_run(reader, led, rec, ctx)
            assert snaps[rec.run_id]["experiment_id"] == exp["experiment_id"]
    return exp, snaps


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
        ctx = Ctx(programs, "it_client", extra, server_keeps_negative_zero,
                  {head0, git_head(programs.path("it_client"))})
        return res, led, ctx

    return run


def start_failure(res):
    """(error name, message) from it_client's 'run start failed: NAME: message' line."""
    m = re.search(r"it_client: run start failed: (MLT_\w+): (.*)", res.stderr)
    assert m, res
    return m.group(1), m.group(2)


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
    """example(name) runs an example in a fresh working directory and checks its one run against
    the server; returns (result, snapshot, experiment, cwd)."""

    def run(name):
        params, exact, unknown = EXAMPLES[name]
        env = {"MLFLOW_EXPERIMENT_NAME": exp_name, "USER": "mltrack-it-user",
               "LOGNAME": "mltrack-it-user"}
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        head0 = git_head(programs.path(name))
        res = programs.run([name], env=env, cwd=str(cwd))
        assert res.rc == 0, res
        ctx = Ctx(programs, name, env, True, {head0, git_head(programs.path(name))})

        exp, runs = reader.runs_of_experiment_named(exp_name)
        assert exp is not None, res
        assert len(runs) == 1, f"{len(runs)} runs in the experiment, want 1"
        run_id = runs[0]["info"]["run_id"]
        snap = reader.snapshot(run_id)

        ids = re.findall(r"^run id: (\S+)$", res.stdout, re.M)
        urls = re.findall(r"^run url: (\S+)$", res.stdout, re.M)
        assert ids == [run_id], res
        assert urls == [f"{tracking_uri}/#/experiments/{exp['experiment_id']}/runs/{run_id}"]

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
    assert start["run_id"] == end["run_id"] == snap["run_id"]
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
    assert (
        f"[mltrack] run 'train_callbacks' started (key {run_key}, id {snap['run_id']})\n" in out
    ), out
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


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_exits_nonzero_when_tracking_fails(name, programs, reader, exp_name):
    """An example whose run cannot start (its experiment was deleted) must say why and exit
    nonzero, and log nothing."""
    exp_id = reader.create_experiment(exp_name)
    reader.delete_experiment(exp_id)
    res = programs.run([name], env={"MLFLOW_EXPERIMENT_NAME": exp_name}, timeout=60)
    assert res.rc not in (0, None), f"{name} exited 0 although no run could start: {res!r}"
    assert "deleted" in res.stderr, f"{name} does not say the experiment is deleted: {res!r}"
    assert reader.search_runs(exp_id) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_bad_env(name, programs, reader, exp_name):
    res = programs.run(
        [name], env={"MLFLOW_EXPERIMENT_NAME": exp_name, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "abc"}
    )
    assert res.rc == 2, res
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in res.stderr, res
    assert reader.get_experiment_by_name(exp_name) is None


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
    exp_id = reader.create_experiment(exp_name)
    reader.delete_experiment(exp_id)
    t0 = time.monotonic()
    res = programs.run(["it_client", "--ledger", ledger_path, "simple"],
                       env={"MLFLOW_EXPERIMENT_NAME": exp_name}, timeout=60)
    elapsed = time.monotonic() - t0
    assert res.rc == EXIT_START, res
    name, msg = start_failure(res)
    assert name in ("MLT_ERR_REJECTED", "MLT_ERR_NOT_FOUND"), res
    assert "deleted" in msg and exp_name in msg, msg
    # a final answer is not retried (7 retries with the default backoff would take minutes)
    limit = 30 * (10 if os.environ.get("MLTRACK_TEST_WRAPPER") else 1)
    assert elapsed < limit, f"took {elapsed:.1f} s: was a final answer retried?"
    assert reader.search_runs(exp_id) == []
    led = Ledger(ledger_path)
    assert led.runs == {}
    assert led.calls("start")[0]["rc"] == name


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
    assert res.rc == EXIT_START, res
    name, msg = start_failure(res)
    assert name == "MLT_ERR_NOT_FOUND", res
    assert "987654" in msg, msg
    assert Ledger(ledger_path).runs == {}


# ==== 8. no server =================================================================================


@pytest.mark.parametrize("with_name", [True, False], ids=["experiment_name", "experiment_id"])
def test_server_not_there(with_name, programs, unused_port, exp_name, ledger_path):
    uri = f"http://127.0.0.1:{unused_port}"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }
    if with_name:
        env["MLFLOW_EXPERIMENT_NAME"] = exp_name
    res = programs.run(["it_client", "--ledger", ledger_path, "simple"], env=env, timeout=60)
    assert res.rc == EXIT_START, res
    name, msg = start_failure(res)
    assert name == "MLT_ERR_NETWORK", res
    assert uri in msg, msg
    assert Ledger(ledger_path).runs == {}


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
    leds = [Ledger(p) for p in ledgers]
    for led in leds:
        check_calls(led)
    ctx = Ctx(programs, "it_client", env, server_keeps_negative_zero,
              {head0, git_head(programs.path("it_client"))})
    exp, snaps = check_experiment(reader, exp_name, leds, ctx)
    assert len(snaps) == 2
    for res, led in zip(results, leds):
        rec = led.labelled("simple")
        assert f"run url: {programs.tracking_uri}/#/experiments/{exp['experiment_id']}/runs/" \
               f"{rec.run_id}\n" in res.stdout


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


def test_offline_work_still_runs(programs, unused_port, ledger_path):
    """No server: mlt_track's fn, a MLT_WITH_RUN block and an MLT_TRACKED body all still run
    (with a NULL run), and mlt_last_error() says why tracking failed: the server's URL."""
    uri = f"http://127.0.0.1:{unused_port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
    res = programs.run(["it_client", "--ledger", ledger_path, "offline"], env=env, timeout=60)
    assert res.rc == 0, res
    led = Ledger(ledger_path)
    assert led.runs == {}
    (track,) = led.of("offline_track")
    assert track["rc"] == "MLT_ERR_NETWORK" and uri in track["err"], track
    assert (track["called"], track["run_was_null"], track["fn_result"]) == (1, 1, 7)
    (scope,) = led.of("offline_scope")
    assert scope["run_was_null"] == 1 and uri in scope["err"], scope
    assert led.of("offline_scope_after")[0]["ran"] == 1
    (body,) = led.of("offline_tracked_body")
    assert body == {"ev": "offline_tracked_body", "v": 21, "run_was_null": 1}
    (tracked,) = led.of("offline_tracked")
    assert tracked["result"] == 42
    assert led.exit["error_count"] >= 3
    # the cause, not a follow-up failure of the macro's own param logging on the NULL run
    assert uri in tracked["err"], (
        "after an MLT_TRACKED function whose run could not start, mlt_last_error() is "
        f"{tracked['err']!r} instead of the reason the run did not start"
    )


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

    path = str(tmp_path / "mismatch.jsonl")
    res, led2, _ = client("simple", env={"MLFLOW_EXPERIMENT_ID": "987654"}, expect=EXIT_START,
                          ledger=path)
    name, msg = start_failure(res)
    assert name == "MLT_ERR_BAD_OPTION", res
    assert "987654" in msg and exp_id in msg, msg
    assert led2.runs == {}
    assert len(reader.search_runs(exp_id)) == 1


def test_tracking_uri_trailing_slash(client, reader, exp_name):
    res, led, ctx = client("simple", env={"MLFLOW_TRACKING_URI": reader.uri + "/"})
    exp, snaps = check_experiment(reader, exp_name, [led], ctx)
    rec = led.labelled("simple")
    assert led.options["tracking_uri"] == reader.uri
    assert f"run url: {reader.uri}/#/experiments/{exp['experiment_id']}/runs/{rec.run_id}\n" \
        in res.stdout


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
