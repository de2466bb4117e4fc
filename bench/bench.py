#!/usr/bin/env python3
"""The benchmark suite of mltrack (issue 4), run by scripts/bench.sh against a local MLflow server.

    bench.py run --uri URI --build DIR [--rounds N] [--quick] [--only W1,W2,...] [--out FILE]
    bench.py hotpath --build DIR [--check PCT] [--write-baseline] [--baseline FILE]
    bench.py report RESULTS.json          (the table again, from a run's raw results)
    bench.py py-client VARIANT --uri URI --experiment NAME --steps N      (internal)
    bench.py cli --build DIR [--uri URI] [--rounds N]   (`mltrack run`: pass-through, protocol)
    bench.py art --build DIR --uri URI [--rounds N] [--mib 1024] [--files 1000] [--python PY]
                 (artifacts: ART1 one large file, ART2 many small files, OFFLINE the snapshot)
    bench.py scale --build DIR --uri URI --label TEXT [--rounds N] [--server-log FILE]
                   [--procs 16 --threads 4 --ranks 8 --runs 2 --points 600]
                   (many processes x threads at once: tests/integration/scale.py per round)

Workloads (every variant of a workload is measured in each round, side by side):
  W1  delivery: one run, 100 keys x 1000 steps, from the first call until the server acknowledged
      everything: mltrack (string keys, handles), the official Python client (synchronous
      log_metric on a 2000-point subset, async logging as configured by default and with 1 s
      buffering, MlflowClient.log_batch of 1000 metrics) and the ceiling: libcurl posting
      pre-serialized 1000-metric log-batch bodies on one keep-alive connection.
  W2  training-loop overhead: 1 ms busy steps with 100 metrics a step, without and with logging.
  W3  offline append, no server: 1M points, fsync=interval and fsync=always.
  W4  replay: `mltrack sync` of W3's fsync=interval backlog.
  MEM peak RSS of W1-style logging at 100k and at 1M points.
  HOT callgrind instructions per mlt_log_metric / mlt_log_metric_key call.
  SCALE (its own subcommand) PROCS processes x THREADS threads log at once into one server (8 of
      them ranks sharing one run), each process with its own queue directory: points/s from the
      first process's start until the last one's flush returned (everything acknowledged), and the
      server's error answers (its access log: 5xx, 4xx) and the library's retried/rejected
      counters; the server is read back and compared exactly with every process's ledger.
  ART (its own subcommand) artifacts through the tracking server's proxy. ART1: one file of MIB
      MiB, mltrack (mlt_log_artifact, then a flush until it is uploaded) against `curl -T` of the
      same bytes to the same proxy URL (the ceiling) and the official Python client's
      MlflowClient.log_artifact; MB/s and each one's peak RSS. ART2: FILES files of 4 KiB logged one
      by one against Python's log_artifacts of the same directory: files/s. OFFLINE: the time
      mlt_log_artifact takes to snapshot the MIB file into the queue (fsync=interval, no server)
      against `cp` of it. Every variant's artifacts are listed back (names, sizes); mltrack's are
      read back whole and compared by SHA-256.
  CLI `mltrack run` (its own subcommand): the child's stdout passed through (MiB/s, against the
      same command without mltrack), protocol lines taken (1M `mltrack:metric` lines into the
      queue, no server), and the time `mltrack run -- true` takes with the server up and away.

After each variant the server's contents are read back with urllib alone (neither mlflow nor
libmltrack): the experiment holds exactly one run, and each key's full history is exactly the
expected (step, value) set, every value compared bit for bit. A variant that fails this is FAIL in
the table and makes the exit status 1. Missing a performance target is reported, not an error.

Standard library only, except `py-client`, which imports mlflow (run it with the venv's python).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict

KEYS = 100
API = "/api/2.0/mlflow/"
HISTORY_PAGE = 25000
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(SRC, "bench", "hotpath-baseline.txt")
SETTLE_S = 1.0  # before each measurement: the server finishes what the previous one left it
HOTPATH_FUNCS = {"string": "mlt_log_metric", "handle": "mlt_log_metric_key",
                 "runtime": "mlt_log_metric", "shuffled": "mlt_log_metric"}
# Caps on top of the baseline, where the TSC stamps points: keys built at run time (100 distinct
# keys formatted into one buffer, in the same order at every step) must cost at most this many
# instructions a call. 'shuffled' (the same keys in a random order) is measured and kept within
# the baseline's limits, without a cap.
HOTPATH_CAPS = {"runtime": 150.0}


def key_name(k):
    return f"metric_{k:03d}"


def value(step, k):
    """Key k's value at step: the same binary64 operations as bench_value() in bench_util.h."""
    return step * 0.001 + k


# ---- the official Python client (runs in a fresh interpreter per variant and round) ----------


def py_client(variant, uri, experiment, steps):
    import resource

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.set_experiment(experiment).experiment_id
    t0 = time.perf_counter()
    if variant == "python-log-batch":
        client = MlflowClient(uri)
        run_id = client.create_run(exp_id).info.run_id
        batch = []
        for s in range(steps):
            for k in range(KEYS):
                batch.append(Metric(key_name(k), value(s, k), int(time.time() * 1000), s))
                if len(batch) == 1000:
                    client.log_batch(run_id, metrics=batch)
                    batch = []
        if batch:
            client.log_batch(run_id, metrics=batch)
        client.set_terminated(run_id)
    else:
        run_id = mlflow.start_run().info.run_id
        for s in range(steps):
            for k in range(KEYS):
                mlflow.log_metric(key_name(k), value(s, k), step=s)
        if variant != "python-sync":
            mlflow.flush_async_logging()
        mlflow.end_run()
    t1 = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status") as f:  # VmHWM: ru_maxrss would include the parent's (exec)
        hwm = [int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")]
    points = steps * KEYS
    print(json.dumps({"variant": variant, "points": points, "seconds": t1 - t0,
                      "cpu_s": ru.ru_utime + ru.ru_stime,
                      "cpu_us_per_point": (ru.ru_utime + ru.ru_stime) * 1e6 / points,
                      "max_rss_kb": hwm[0] if hwm else ru.ru_maxrss, "run_id": run_id}))


PY_ENV = {
    "python-sync": {"MLFLOW_ENABLE_ASYNC_LOGGING": "false"},
    "python-async": {"MLFLOW_ENABLE_ASYNC_LOGGING": "true"},
    "python-async-buf1s": {"MLFLOW_ENABLE_ASYNC_LOGGING": "true",
                           "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1"},
    "python-log-batch": {"MLFLOW_ENABLE_ASYNC_LOGGING": "false"},
}


# ---- reading the server back -------------------------------------------------------------------


class Rest:
    def __init__(self, uri):
        self.uri = uri.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, query=None, body=None):
        url = self.uri + API + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}") from None

    def experiment_id(self, name):
        try:
            ans = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
            return ans["experiment"]["experiment_id"]
        except RuntimeError:
            return None

    def create_run(self, experiment):
        exp_id = self.call("POST", "experiments/create", body={"name": experiment})
        ans = self.call("POST", "runs/create",
                        body={"experiment_id": exp_id["experiment_id"],
                              "start_time": int(time.time() * 1000)})
        return ans["run"]["info"]["run_id"]

    def runs(self, exp_id):
        runs, token = [], None
        while True:
            body = {"experiment_ids": [exp_id], "run_view_type": "ALL", "max_results": 1000}
            if token:
                body["page_token"] = token
            ans = self.call("POST", "runs/search", body=body)
            runs += ans.get("runs", [])
            token = ans.get("next_page_token")
            if not token:
                return runs

    def history(self, run_id, key):
        points, token = [], None
        while True:
            q = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE}
            if token:
                q["page_token"] = token
            ans = self.call("GET", "metrics/get-history", q)
            points += ans.get("metrics", [])
            token = ans.get("next_page_token")
            if not token:
                return points


def verify(rest, experiment, steps, run_id=None):
    """None if the experiment holds exactly one run (run_id if given) whose metrics are exactly
    the keys metric_000.. with steps 0..steps-1 and their values; else what is wrong."""
    exp_id = rest.experiment_id(experiment)
    if exp_id is None:
        return f"no experiment {experiment}"
    runs = rest.runs(exp_id)
    if len(runs) != 1:
        return f"{len(runs)} runs in experiment {experiment}, expected 1"
    rid = runs[0]["info"]["run_id"]
    if run_id and rid != run_id:
        return f"run {rid} is not the run {run_id} the variant reported"
    keys = sorted({m["key"] for m in runs[0].get("data", {}).get("metrics", [])})
    want_keys = [key_name(k) for k in range(KEYS)] if steps > 0 else []
    if keys != want_keys:
        return f"run {rid} has {len(keys)} metric keys, expected {len(want_keys)}"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the server answers 2-3 at a time
        histories = pool.map(lambda k: rest.history(rid, key_name(k)), range(len(want_keys)))
        for k, history in enumerate(histories):  # as they come: 1M points would not be small
            err = check_history(k, history, steps)
            if err:
                return err
    return None


def check_history(k, history, steps):
    if len(history) != steps:
        return f"{key_name(k)}: {len(history)} points, expected {steps}"
    want = {s: value(s, k) for s in range(steps)}
    for m in history:
        s, v = int(m.get("step", 0)), m.get("value")
        if s not in want or not isinstance(v, (int, float)) or float(v) != want[s]:
            return f"{key_name(k)} step {s}: value {v!r}, expected {want.get(s)!r}"
        del want[s]  # a step seen twice then fails as unexpected
    return None


# ---- running the programs ----------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_json(cmd, env=None, timeout=1800):
    """Runs cmd, returns the JSON object of its last stdout line (with "exit" set)."""
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{os.path.basename(cmd[0])} exit {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    res = json.loads(lines[-1])
    res["exit"] = proc.returncode
    if proc.returncode != 0:
        res["stderr"] = proc.stderr.strip()[-500:]
    return res


class Bench:
    def __init__(self, args):
        self.args = args
        self.rest = Rest(args.uri)
        self.prog = lambda name: os.path.join(args.build, "bench", name)
        self.session = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.work = tempfile.mkdtemp(prefix="work-", dir=args.work)
        self.results = {}
        self.failures = 0
        q = args.quick
        self.w1_steps = 100 if q else 1000
        self.sync_steps = 5 if q else 20  # python-sync and python-async: one request a point
        self.w2_steps = 300 if q else 1000
        self.w3_points = 100_000 if q else 1_000_000
        self.w3_always_s = 3.0 if q else 15.0
        self.mem_steps = (self.w1_steps, self.w1_steps * 10)
        # fewer calls than the ring has slots (65536): a full ring's wait would make the count
        # depend on the writer thread's timing
        self.hot_calls = 20_000 if q else 50_000

    def name(self, *parts):
        return "-".join(["bench", self.session, *[str(p) for p in parts]])

    def queue(self, *parts):
        d = os.path.join(self.work, "-".join(str(p) for p in parts))
        os.makedirs(d, exist_ok=True)
        return d

    def record(self, workload, variant, rnd, fn):
        """Runs one measurement fn() -> (result dict, verification error or None)."""
        time.sleep(SETTLE_S)
        t = time.monotonic()
        try:
            res, err = fn()
        except Exception as e:  # noqa: BLE001 - a crash is a FAIL row, never a silent skip
            res, err = {"variant": variant}, f"crashed: {e}"
        if err is None and res.get("exit", 0) != 0:
            err = f"exit {res['exit']}: {res.get('stderr', '')}"
        res["ok"] = err is None
        res["error"] = err
        res["round"] = rnd
        self.results.setdefault(workload, {}).setdefault(variant, []).append(res)
        if err is not None:
            self.failures += 1
        status = "ok" if err is None else f"FAIL: {err}"
        rate = f"{res['points'] / res['seconds']:,.0f} points/s" \
            if res.get("points") and res.get("seconds") else ""
        print(f"  {workload} {variant} round {rnd}: {res.get('seconds', 0):.2f} s {rate} "
              f"[{time.monotonic() - t:.0f} s with checks] {status}", file=sys.stderr, flush=True)
        return res

    # ---- W1 ----
    def w1_mltrack(self, rnd, handles, steps=None, tag="w1"):
        steps = steps or self.w1_steps
        exp = self.name(tag, "mltrack", "handle" if handles else "string", rnd, steps)
        cmd = [self.prog("w1_mltrack"), "--uri", self.args.uri, "--experiment", exp,
               "--queue", self.queue(tag, rnd, handles, steps), "--steps", str(steps)]
        res = run_json(cmd + (["--handles"] if handles else []))
        return res, verify(self.rest, exp, steps, res.get("run_id") or None)

    def w1_curl(self, rnd):
        exp = self.name("w1", "curl", rnd)
        run_id = self.rest.create_run(exp)
        res = run_json([self.prog("w1_curl"), "--uri", self.args.uri, "--run-id", run_id,
                        "--steps", str(self.w1_steps)])
        return res, verify(self.rest, exp, self.w1_steps, run_id)

    def w1_python(self, rnd, variant):
        exp = self.name("w1", variant, rnd)
        steps = self.sync_steps if variant in ("python-sync", "python-async") else self.w1_steps
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_ASYNC_")}
        env.update(PY_ENV[variant], MLFLOW_TRACKING_URI=self.args.uri)
        res = run_json([self.args.python, os.path.abspath(__file__), "py-client", variant,
                        "--uri", self.args.uri, "--experiment", exp, "--steps", str(steps)],
                       env=env)
        return res, verify(self.rest, exp, steps, res.get("run_id"))

    def w1(self, rnd):
        variants = [("mltrack-string", lambda: self.w1_mltrack(rnd, False)),
                    ("mltrack-handle", lambda: self.w1_mltrack(rnd, True)),
                    ("curl-ceiling", lambda: self.w1_curl(rnd))]
        variants += [(v, lambda v=v: self.w1_python(rnd, v)) for v in PY_ENV]
        k = rnd % len(variants)  # rotate the order from round to round
        for variant, fn in variants[k:] + variants[:k]:
            self.record("W1", variant, rnd, fn)

    # ---- W2 ----
    def w2(self, rnd):
        """none, string and handle log to the live server (its CPU use competes with the loop on
        a small machine); the -offline variants log to a closed port: the library alone."""
        variants = ["none", "string", "handle", "string-offline", "handle-offline"]
        k = rnd % len(variants)
        for v in variants[k:] + variants[:k]:
            def fn(v=v):
                exp = self.name("w2", v, rnd)
                mode, offline = v.split("-")[0], v.endswith("-offline")
                cmd = [self.prog("w2_overhead"), "--variant", mode, "--steps",
                       str(self.w2_steps)]
                if mode != "none":
                    uri = f"http://127.0.0.1:{free_port()}" if offline else self.args.uri
                    cmd += ["--uri", uri, "--experiment", exp, "--queue", self.queue("w2", v, rnd)]
                    cmd += ["--no-flush"] if offline else []
                res = run_json(cmd)
                res["variant"] = v
                check = mode != "none" and not offline
                return res, verify(self.rest, exp, self.w2_steps, res["run_id"]) if check else None
            self.record("W2", v, rnd, fn)

    # ---- W3 + W4 ----
    def w3(self, rnd, also_w4):
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        for fsync in ("interval", "always"):
            exp = self.name("w3", fsync, rnd)
            q = self.queue("w3", fsync, rnd)
            cmd = [self.prog("w3_offline"), "--uri", closed, "--experiment", exp, "--queue", q,
                   "--fsync", fsync, "--points", str(self.w3_points)]
            if fsync == "always":
                cmd += ["--max-seconds", str(self.w3_always_s)]
            res = self.record("W3", f"fsync={fsync}", rnd, lambda cmd=cmd: (run_json(cmd), None))
            if fsync == "interval" and also_w4 and res["ok"]:
                self.record("W4", "mltrack sync", rnd,
                            lambda: self.w4(q, exp, res["points"] // KEYS))
            shutil.rmtree(q, ignore_errors=True)

    def w4(self, queue, exp, steps):
        env = dict(os.environ, MLTRACK_QUEUE_DIR=queue)
        t0 = time.perf_counter()
        proc = subprocess.run([os.path.join(self.args.build, "mltrack"), "sync",
                               "--tracking-uri", self.args.uri], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t0
        res = {"variant": "mltrack sync", "points": steps * KEYS, "seconds": secs,
               "exit": proc.returncode, "summary": proc.stdout.strip().splitlines()[-4:]}
        if proc.returncode != 0:
            res["stderr"] = (proc.stdout + proc.stderr).strip()[-500:]
        return res, verify(self.rest, exp, steps)

    # ---- memory ----
    def mem(self):
        short, long = self.mem_steps
        w1 = [r for r in self.results.get("W1", {}).get("mltrack-string", []) if r["ok"]]
        if w1:  # W1's own runs are the short reference
            self.results.setdefault("MEM", {})[f"{short * KEYS} points"] = w1
        else:
            self.record("MEM", f"{short * KEYS} points", 0,
                        lambda: self.w1_mltrack(0, False, short, "mem"))
        self.record("MEM", f"{long * KEYS} points", 0,
                    lambda: self.w1_mltrack(0, False, long, "mem"))

    # ---- the whole suite ----
    def run(self):
        only = set(self.args.only.upper().split(",")) if self.args.only else None
        want = lambda w: only is None or w in only  # noqa: E731
        for rnd in range(self.args.rounds):
            print(f"== round {rnd + 1}/{self.args.rounds}", file=sys.stderr, flush=True)
            if want("W1"):
                self.w1(rnd)
            if want("W2"):
                self.w2(rnd)
            if want("W3") or want("W4"):
                self.w3(rnd, want("W4") and rnd < self.args.w4_rounds)
        if want("MEM"):
            self.mem()
        if want("HOTPATH") or want("HOT"):
            hot = hotpath(self.args.build, self.hot_calls, self.work)
            self.results["HOT"] = hot
            if self.args.write_baseline:
                kind = clock_kind()
                more = None
                if kind == "tsc":
                    more = hotpath(self.args.build, self.hot_calls, self.work,
                                   dict(os.environ, MLTRACK_NO_TSC="1"))
                write_baseline(hot, kind=kind, more=more)
        shutil.rmtree(self.work, ignore_errors=True)
        return self.results


# ---- callgrind ----------------------------------------------------------------------------------


def clock_kind():
    """How this machine's hot path stamps a point: "tsc" (x86-64 whose kernel clocksource is the
    TSC: one rdtsc) or "clock" (clock_gettime, some 25 instructions more). The baseline holds a
    count for each."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            source = f.read().strip()
    except OSError:
        source = ""
    if platform.machine() == "x86_64" and source == "tsc" and not os.environ.get("MLTRACK_NO_TSC"):
        return "tsc"
    return "clock"


def baseline_key(mode, kind):
    return mode if kind == "tsc" else f"{mode}.{kind}"


def hotpath(build, calls, work, env=None):
    """Instructions per call of mlt_log_metric (string key) and mlt_log_metric_key (handle)."""
    out = {}
    closed = f"http://127.0.0.1:{free_port()}"
    for mode, func in HOTPATH_FUNCS.items():
        d = tempfile.mkdtemp(prefix="hotpath-", dir=work)
        cg = os.path.join(d, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
               "--collect-atstart=no", f"--toggle-collect={func}",
               os.path.join(build, "bench", "hotpath"), "--mode", mode, "--uri", closed,
               "--queue", os.path.join(d, "queue"), "--calls", str(calls)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind {mode}: exit {proc.returncode}: {proc.stderr[-800:]}")
        total = None
        with open(cg) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
                    if line.startswith("totals:"):
                        break
        if total is None:
            raise RuntimeError(f"no totals in {cg}")
        out[mode] = {"function": func, "calls": calls, "instructions": total,
                     "per_call": total / calls}
        shutil.rmtree(d, ignore_errors=True)
    return out


def read_baseline(path=BASELINE):
    base = {}
    with open(path) as f:
        for line in f:
            parts = line.split("#", 1)[0].split()
            if len(parts) == 2:
                base[parts[0]] = float(parts[1])
    return base


def write_baseline(hot, path=BASELINE, kind="tsc", more=None):
    """Writes the counts of this machine's clock kind (hot) and, from a TSC machine, those of
    the clock_gettime path too (more); a kind not measured keeps its old line."""
    counts = read_baseline(path) if os.path.exists(path) else {}
    for mode in HOTPATH_FUNCS:
        counts[baseline_key(mode, kind)] = round(hot[mode]["per_call"], 1)
        if more:
            counts[baseline_key(mode, "clock")] = round(more[mode]["per_call"], 1)
    with open(path, "w") as f:
        f.write("# Callgrind instructions per call of the hot path (bench/hotpath.c, 50k calls,\n"
                "# the MLflow callback's durable queue, server unreachable), measured on the\n"
                "# default build (configure's default CFLAGS, -g -O2). The 'hotpath' stage of\n"
                "# scripts/test.sh fails when a count moves more than 5% away from these.\n"
                "# Regenerate (after a deliberate change): scripts/bench.sh --only hotpath "
                "--write-baseline\n"
                "# string: one key string; handle: a registered key; runtime: 100 keys formatted\n"
                "# into one buffer, in the same order at every step (also at most 150 with the\n"
                "# TSC); shuffled: the same keys in a random order.\n"
                "# Plain names: points stamped with the TSC (x86-64, TSC clocksource);\n"
                "# '.clock': stamped with clock_gettime (other machines, or MLTRACK_NO_TSC=1).\n")
        for key in sorted(counts, key=lambda k: ("." in k, k)):
            f.write(f"{key} {counts[key]:.1f}\n")
    print(f"wrote {path}", file=sys.stderr)


def check_hotpath(args):
    work = tempfile.mkdtemp(prefix="hotpath-")
    kind = clock_kind()
    try:
        hot = hotpath(args.build, args.calls, work)
        more = None
        if args.write_baseline and kind == "tsc":
            more = hotpath(args.build, args.calls, work, dict(os.environ, MLTRACK_NO_TSC="1"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.write_baseline:
        write_baseline(hot, args.baseline, kind, more)
        return 0
    base = read_baseline(args.baseline)
    bad = 0
    print(f"points stamped with: {'the TSC' if kind == 'tsc' else 'clock_gettime'}")
    for mode, h in hot.items():
        b = base.get(baseline_key(mode, kind))
        if b is None:
            print(f"{h['function']}: {h['per_call']:.1f} instructions/call, no baseline")
            bad += 1
            continue
        diff = (h["per_call"] - b) / b * 100
        cap = HOTPATH_CAPS.get(mode) if kind == "tsc" else None
        ok = abs(diff) <= args.check and (cap is None or h["per_call"] <= cap)
        bad += not ok
        print(f"{mode:<9} {h['function']:<20} {h['per_call']:10.1f} instructions/call, baseline "
              f"{b:.1f}, {diff:+.2f}% (limit +/-{args.check:g}%"
              f"{f', at most {cap:g}' if cap is not None else ''}) "
              f"{'ok' if ok else 'OUT OF RANGE'}")
    return 1 if bad else 0


# ---- the table ----------------------------------------------------------------------------------


def med(rows, f):
    vals = [v for v in (f(r) for r in rows if r.get("ok")) if v is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (None, None, None)


def rate(r):
    return r["points"] / r["seconds"]


def fmt(v, spec=",.0f"):
    return "-" if v is None else format(v, spec)


class Report:
    def __init__(self, results):
        self.r = results
        self.targets = []  # (what, measured text, target text, PASS/MISS/n/a)

    def target(self, what, measured, ok, target_text, spec=".2f", unit="x"):
        verdict = "n/a" if measured is None or ok is None else ("PASS" if ok else "MISS")
        self.targets.append((what, "-" if measured is None else f"{measured:{spec}}{unit}",
                             target_text, verdict))

    @staticmethod
    def table(head, rows):
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        line = lambda cells: "  ".join(  # noqa: E731
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
            enumerate(zip(cells, widths)))
        return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])

    def verified(self, rows):
        n_ok = sum(1 for r in rows if r.get("ok"))
        return f"{n_ok}/{len(rows)}" + ("" if n_ok == len(rows) else " FAIL")

    def w1(self):
        w = self.r.get("W1")
        if not w:
            return ""
        ref = {m: med(w.get(m, []), rate)[0] for m in ("mltrack-string", "mltrack-handle")}
        rows = []
        for v, rs in w.items():
            m, lo, hi = med(rs, rate)
            cpu = med(rs, lambda r: r.get("cpu_us_per_point"))[0]
            ratios = [fmt(ref[x] / m if ref[x] and m else None, ".2f") for x in ref]
            rows.append([v, rs[0].get("points", "-"), fmt(m), fmt(lo), fmt(hi),
                         fmt(cpu, ".2f"), *ratios, self.verified(rs)])
        out = self.table(["W1 delivery", "points", "median pts/s", "min", "max", "cpu us/pt",
                          "string/x", "handle/x", "verified"], rows)
        for mode, r in ref.items():
            def vs(other, factor, mode=mode, r=r):
                m = med(w.get(other, []), rate)[0]
                x = r / m if r and m else None
                self.target(f"W1 {mode} vs {other}", x, None if x is None else x >= factor,
                            f">= {factor:g}x")
            vs("curl-ceiling", 0.9)
            vs("python-sync", 30)
            vs("python-log-batch", 1)
        return out

    def w2(self):
        w = self.r.get("W2")
        if not w:
            return ""
        base = med(w.get("none", []), lambda r: r["seconds"])[0]
        rows = []
        for v, rs in w.items():
            m, lo, hi = med(rs, lambda r: r["seconds"])
            per = med(rs, lambda r: r["us_per_step"])[0]
            ov = (m - base) / base * 100 if base and m and v != "none" else None
            rows.append([v, rs[0].get("steps", "-"), fmt(m, ".3f"), fmt(lo, ".3f"),
                         fmt(hi, ".3f"), fmt(per, ".1f"), fmt(ov, "+.2f"),
                         "no server" if (v.endswith("-offline") or v == "none") and
                         all(r.get("ok") for r in rs) else self.verified(rs)])
            if v != "none":
                self.target(f"W2 overhead, {v} keys", ov, None if ov is None else ov <= 1.0,
                            "<= 1%", "+.2f", "%")
        return self.table(["W2 1 ms step + 100 metrics", "steps", "median s", "min", "max",
                           "us/step", "overhead %", "verified"], rows) + (
            "\n(-offline: tracking URI a closed port, so no server shares the CPU; the others "
            "deliver to the local server while the loop runs)")

    def w3(self):
        w = self.r.get("W3")
        if not w:
            return ""
        rows = []
        for v, rs in w.items():
            m, lo, hi = med(rs, lambda r: r["points_per_s"])
            bpp = med(rs, lambda r: r["bytes_per_point"])[2]  # the worst round
            rss = med(rs, lambda r: r["max_rss_kb"] / 1024)[2]
            pts = sorted({r.get("points") for r in rs if r.get("ok")})
            rows.append([v, ",".join(str(p) for p in pts) or "-", fmt(m), fmt(lo), fmt(hi),
                         fmt(bpp, ".1f"), fmt(rss, ".1f"), self.verified(rs)])
            if v == "fsync=interval":
                self.target("W3 fsync=interval points/s", m, None if m is None else m >= 1e6,
                            ">= 1,000,000/s", ",.0f", "")
            self.target(f"W3 {v} bytes on disk per point", bpp, None if bpp is None else
                        bpp <= 48, "<= 48 B", ".1f", " B")
            self.target(f"W3 {v} peak RSS", rss, None if rss is None else rss <= 32,
                        "<= 32 MiB", ".1f", " MiB")
        out = self.table(["W3 offline append", "points", "median pts/s", "min", "max",
                          "B/point (max)", "RSS MiB (max)", "verified"], rows)
        if "fsync=always" in w:
            out += ("\n(fsync=always logs for at most a fixed time: the points column is what "
                    "it logged)")
        return out

    def w4(self):
        w = self.r.get("W4")
        if not w:
            return ""
        w1 = med(self.r.get("W1", {}).get("mltrack-string", []), rate)[0]
        rows = []
        for v, rs in w.items():
            m, lo, hi = med(rs, rate)
            x = m / w1 if m and w1 else None
            rows.append([v, rs[0].get("points", "-"), fmt(m), fmt(lo), fmt(hi),
                         fmt(w1), fmt(x, ".2f"), self.verified(rs)])
            self.target("W4 sync rate vs W1 mltrack-string", x, None if x is None else x >= 0.9,
                        ">= 0.9x")
        return self.table(["W4 replay", "points", "median pts/s", "min", "max",
                           "W1 mltrack pts/s", "ratio", "verified"], rows)

    def mem(self):
        w = self.r.get("MEM")
        if not w:
            return ""
        rows, rss = [], []
        for v, rs in w.items():
            rss.append(med(rs, lambda r: r["max_rss_kb"] / 1024)[2])  # the worst round
            rows.append([v, len(rs), fmt(rss[-1], ".1f"), fmt(med(rs, rate)[0]),
                         self.verified(rs)])
        if len(rss) == 2:
            x = rss[1] / rss[0] if None not in rss else None
            self.target("MEM peak RSS, 10x longer run / shorter", x,
                        None if x is None else x <= 1.10, "<= 1.10x (flat)")
        return self.table(["MEM W1-style, string keys", "runs", "peak RSS MiB (max)", "pts/s",
                           "verified"], rows)

    def hot(self):
        h = self.r.get("HOT")
        if not h:
            return ""
        try:
            base = read_baseline()
        except OSError:
            base = {}
        rows = []
        for mode, x in h.items():
            b = base.get(baseline_key(mode, clock_kind()))
            rows.append([f"{mode} ({x['function']})", f"{x['calls']:,}", f"{x['per_call']:.1f}",
                         fmt(b, ".1f"), fmt((x["per_call"] - b) / b * 100 if b else None, "+.2f")])
        note = ("(the baseline counts 50,000 calls; fewer calls share the first calls' key "
                "registrations among fewer points)")
        return self.table(["HOT callgrind", "calls", "instr/call", "baseline", "diff %"], rows) + \
            ("\n" + note if any(x["calls"] != 50_000 for x in h.values()) else "")

    def render(self):
        parts = [p for p in (self.w1(), self.w2(), self.w3(), self.w4(), self.mem(), self.hot())
                 if p]
        if self.targets:
            parts.append(self.table(["target", "measured", "target", "verdict"], self.targets))
        return "\n\n".join(parts)


def header(meta):
    return (f"\nmltrack benchmarks: {meta['rounds']} round(s)"
            f"{' (--quick)' if meta['quick'] else ''}, {meta['seconds']:.0f} s, "
            f"{meta['cpus']} CPUs, {meta['started']}, server {meta['uri']}\n")


# ---- CLI: `mltrack run` ----------------------------------------------------------------------


def timed(cmd, env, stdout=subprocess.DEVNULL):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=1800)
    return time.perf_counter() - t0, res


def child_seconds(cmd, env):
    """Runs a shell pipeline whose child reports on stderr how long it took to write its output
    (`elapsed NS`): the time the reader, mltrack run or cat, let it take."""
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         timeout=1800, text=True)
    assert res.returncode == 0, res.stderr
    ns = [int(ln.split()[1]) for ln in res.stderr.splitlines() if ln.startswith("elapsed ")]
    assert ns, res.stderr
    return ns[-1] / 1e9


def cli_bench(args):
    """Figures of `mltrack run`: how long the child takes to write its stdout through it (against
    a plain pipe into cat), and how long `mltrack run -- true` takes."""
    mltrack = os.path.join(args.build, "mltrack")
    work = tempfile.mkdtemp(prefix="mltrack-bench-cli-")
    away = f"http://127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTRACK_"))}
    base.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"})
    size = args.mib << 20
    lines = args.lines
    awk = ("awk 'BEGIN { for (i = 0; i < %d; i++) printf \"mltrack:metric loss=%%.6f\\n\", "
           "i / %d }'" % (lines, lines))
    inner = {"bytes": f"head -c {size} /dev/zero", "protocol": awk}
    rows = {k: [] for k in ("bytes/pipe", "bytes/mltrack", "protocol/pipe", "protocol/mltrack",
                            "start_away", "start_up")}
    try:
        for rnd in range(args.rounds):
            env = dict(base, MLFLOW_TRACKING_URI=away, MLTRACK_QUEUE_DIR=f"{work}/q{rnd}")
            for what, cmd in inner.items():
                script = f"t0=$(date +%s%N); {cmd}; echo elapsed $(($(date +%s%N) - t0)) >&2"
                rows[f"{what}/pipe"].append(child_seconds(
                    ["sh", "-c", f"( {script} ) | cat > /dev/null"], env))
                rows[f"{what}/mltrack"].append(child_seconds(
                    [mltrack, "run", "--timeout", "0", "--", "sh", "-c", script], env))
            st = subprocess.run([mltrack, "status"], env=env, capture_output=True, text=True)
            total = [ln for ln in st.stdout.splitlines() if ln.startswith("total:")]
            records = int(total[0].split(",")[1].split()[0]) if total else -1
            assert records >= lines, f"the queue holds {records} records, not {lines}+"
            # the default --timeout (10 s): the server found away, nothing is waited for
            dt, res = timed([mltrack, "run", "--", "true"], env)
            assert res.returncode == 0 and b"kept in the queue" in res.stderr, res.stderr
            rows["start_away"].append(dt)
            if args.uri:
                env_up = dict(base, MLFLOW_TRACKING_URI=args.uri,
                              MLTRACK_QUEUE_DIR=f"{work}/up{rnd}")
                dt, res = timed([mltrack, "run", "--", "true"], env_up)
                assert res.returncode == 0 and all(
                    ln.startswith(b"mltrack: view run ") for ln in res.stderr.splitlines()), res
                rows["start_up"].append(dt)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = {k: statistics.median(v) for k, v in rows.items() if v}
    mib = size / (1 << 20)
    print(f"mltrack run, medians of {args.rounds} rounds ({os.cpu_count()} CPUs); the child's own "
          f"time to write its stdout, into a pipe read by cat or by mltrack run:")
    print(f"  {mib:,.0f} MiB of bytes:  pipe {mib / md['bytes/pipe']:,.0f} MiB/s, mltrack run "
          f"{mib / md['bytes/mltrack']:,.0f} MiB/s ({md['bytes/mltrack'] / md['bytes/pipe']:.2f}x "
          f"the time)")
    print(f"  {lines:,} metric lines: pipe {lines / md['protocol/pipe']:,.0f} lines/s, mltrack "
          f"run {lines / md['protocol/mltrack']:,.0f} lines/s, each logged into the queue "
          f"({md['protocol/mltrack'] / md['protocol/pipe']:.2f}x the time)")
    print(f"  `mltrack run -- true` (default --timeout 10), whole: "
          f"{md['start_away'] * 1000:,.0f} ms with the server away"
          + (f", {md['start_up'] * 1000:,.0f} ms with it up (run created, its id exported, the "
             f"run ended and delivered)" if "start_up" in md else ""))
    return 0


# ---- ART: artifacts ------------------------------------------------------------------------------

ART_PY = r"""
import json, resource, sys, time
from mlflow.tracking import MlflowClient
uri, run_id, what, path = sys.argv[1:5]
c = MlflowClient(uri)
t0 = time.perf_counter()
if what == "file":
    c.log_artifact(run_id, path)
else:
    c.log_artifacts(run_id, path)
dt = time.perf_counter() - t0
print(json.dumps({"total_s": dt, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def art_root(rest, run_id):
    uri = rest.call("GET", "runs/get", {"run_id": run_id})["run"]["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:"), f"the server does not proxy artifacts: {uri}"
    rest_ = uri[len("mlflow-artifacts:"):]
    return (rest_[2:].split("/", 1)[1] if rest_.startswith("//") else rest_).strip("/")


def art_list(rest, run_id):
    """{path: size} of a run's artifacts, walking the proxy's listing."""
    root, out = art_root(rest, run_id), {}

    def walk(rel):
        q = urllib.parse.urlencode({"path": root + ("/" + rel if rel else "")})
        with rest.opener.open(rest.uri + "/api/2.0/mlflow-artifacts/artifacts?" + q,
                              timeout=120) as resp:
            ans = json.loads(resp.read() or b"{}")
        for f in ans.get("files", []):
            p = (rel + "/" if rel else "") + f["path"]
            if f.get("is_dir"):
                walk(p)
            else:
                out[p] = int(f.get("file_size") or 0)
    walk("")
    return out


def art_sha(rest, run_id, path):
    """SHA-256 of one artifact as the server gives it back (streamed)."""
    url = (rest.uri + "/api/2.0/mlflow-artifacts/artifacts/" +
           urllib.parse.quote(art_root(rest, run_id) + "/" + path))
    h = hashlib.sha256()
    with rest.opener.open(url, timeout=600) as resp:
        while True:
            block = resp.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


def wait_rss(cmd, env=None):
    """Runs cmd to its end: (wall seconds, its stdout, its peak RSS in KiB, from wait4)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} exited {p.returncode}: "
                               f"{err.read().decode(errors='replace')[-800:]}")
    return dt, out.decode(), ru.ru_maxrss


def art_bench(args):
    """ART1, ART2 and OFFLINE, side by side in each round; a table of medians."""
    rest = Rest(args.uri)
    art = os.path.join(args.build, "bench", "art_mltrack")
    work = tempfile.mkdtemp(prefix="mltrack-bench-art-")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTRACK_"))}
    tag = uuid.uuid4().hex[:8]
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
    big_sha = file_sha(big)
    size = args.mib << 20
    small = os.path.join(work, "small")
    os.makedirs(small)
    for i in range(args.files):
        with open(os.path.join(small, f"f{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(4096))
    rows = defaultdict(list)
    failures = 0
    try:
        for rnd in range(args.rounds):
            exp = f"bench-art-{tag}-{rnd}"
            # ART1: mltrack
            q = os.path.join(work, f"q{rnd}")
            _, out, _ = wait_rss([art, "--uri", args.uri, "--experiment", exp + "-m", "--queue",
                                  q, "--run-name", "art1", big], base)
            m = json.loads(out)
            ok = (m["flush"] == "MLT_OK" and m["rejected"] == 0 and
                  art_list(rest, m["run_id"]) == {"big.bin": size} and
                  art_sha(rest, m["run_id"], "big.bin") == big_sha)
            failures += not ok
            rows["ART1/mltrack"].append(dict(m, ok=ok))
            # ART1: curl -T to the same proxy URL
            rid = rest.create_run(exp + "-c")
            url = (args.uri + "/api/2.0/mlflow-artifacts/artifacts/" +
                   art_root(rest, rid) + "/big.bin")
            dt, out, rss = wait_rss(["curl", "-sS", "-f", "-T", big, "-o", "/dev/null", url],
                                    base)
            ok = art_list(rest, rid) == {"big.bin": size}
            failures += not ok
            rows["ART1/curl"].append({"total_s": dt, "max_rss_kb": rss, "ok": ok})
            # ART1: the Python client
            rid = rest.create_run(exp + "-p")
            _, out, rss = wait_rss([args.python, "-c", ART_PY, args.uri, rid, "file", big],
                                   dict(base, MLFLOW_TRACKING_URI=args.uri))
            p = json.loads(out.strip().splitlines()[-1])
            ok = art_list(rest, rid) == {"big.bin": size}
            failures += not ok
            rows["ART1/python"].append(dict(p, ok=ok))
            # ART2: files one by one, mltrack and Python's log_artifacts
            _, out, _ = wait_rss([art, "--uri", args.uri, "--experiment", exp + "-m2", "--queue",
                                  os.path.join(work, f"q2-{rnd}"), "--run-name", "art2", small],
                                 base)
            m = json.loads(out)
            got = art_list(rest, m["run_id"])
            ok = (m["files"] == args.files and len(got) == args.files and
                  set(got.values()) == {4096})
            failures += not ok
            rows["ART2/mltrack"].append(dict(m, ok=ok))
            rid = rest.create_run(exp + "-p2")
            _, out, _ = wait_rss([args.python, "-c", ART_PY, args.uri, rid, "dir", small],
                                 dict(base, MLFLOW_TRACKING_URI=args.uri))
            p = json.loads(out.strip().splitlines()[-1])
            got = art_list(rest, rid)
            ok = len(got) == args.files and set(got.values()) == {4096}
            failures += not ok
            rows["ART2/python"].append(dict(p, ok=ok))
            # OFFLINE: the snapshot alone (fsync=interval, no server), against cp
            away = f"http://127.0.0.1:{free_port()}"
            _, out, _ = wait_rss([art, "--uri", away, "--experiment", exp, "--queue",
                                  os.path.join(work, f"off{rnd}"), "--fsync", "interval",
                                  "--no-flush", big], base)
            m = json.loads(out)
            rows["OFFLINE/mltrack"].append(dict(m, ok=m["files"] == 1))
            shutil.rmtree(os.path.join(work, f"off{rnd}"), ignore_errors=True)
            dt, _, _ = wait_rss(["cp", big, os.path.join(work, "copy.bin")], base)
            rows["OFFLINE/cp"].append({"total_s": dt, "ok": True})
            os.remove(os.path.join(work, "copy.bin"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def md(k, f="total_s"):
        v = [r[f] for r in rows[k] if r.get(f) is not None]
        return statistics.median(v) if v else float("nan")

    mb = size / 1e6
    print(f"artifacts, medians of {args.rounds} rounds ({os.cpu_count()} CPUs), every variant's "
          f"artifacts listed back, mltrack's read back and compared by SHA-256:"
          + ("" if not failures else f"  {failures} FAILED"))
    m1, c1, p1 = md("ART1/mltrack"), md("ART1/curl"), md("ART1/python")
    print(f"  ART1 one {args.mib:,} MiB file: mltrack {mb / m1:,.0f} MB/s (snapshot "
          f"{md('ART1/mltrack', 'log_s'):.2f} s + upload {md('ART1/mltrack', 'flush_s'):.2f} s), "
          f"curl -T {mb / c1:,.0f} MB/s, Python log_artifact {mb / p1:,.0f} MB/s: "
          f"{c1 / m1:.2f}x curl (target >= 0.9x) {'ok' if c1 / m1 >= 0.9 else 'MISS'}, "
          f"{p1 / m1:.2f}x Python (target >= 1x) {'ok' if p1 / m1 >= 1 else 'MISS'}")
    rss = md("ART1/mltrack", "max_rss_kb") / 1024
    print(f"       peak RSS: mltrack {rss:,.1f} MiB (target < 32 MiB) "
          f"{'ok' if rss < 32 else 'MISS'}, curl {md('ART1/curl', 'max_rss_kb') / 1024:,.1f} MiB, "
          f"Python {md('ART1/python', 'max_rss_kb') / 1024:,.1f} MiB")
    m2, p2 = md("ART2/mltrack"), md("ART2/python")
    print(f"  ART2 {args.files:,} files of 4 KiB, one call each: mltrack {args.files / m2:,.0f} "
          f"files/s (snapshots {md('ART2/mltrack', 'log_s'):.2f} s + uploads "
          f"{md('ART2/mltrack', 'flush_s'):.2f} s), Python log_artifacts {args.files / p2:,.0f} "
          f"files/s: {p2 / m2:.2f}x Python (target >= 1x) {'ok' if p2 / m2 >= 1 else 'MISS'}")
    o, cp = md("OFFLINE/mltrack", "log_s"), md("OFFLINE/cp")
    print(f"  OFFLINE snapshot of the {args.mib:,} MiB file into the queue (fsync=interval, no "
          f"server): {o:.2f} s ({mb / o:,.0f} MB/s, SHA-256 and sync included), cp {cp:.2f} s "
          f"({mb / cp:,.0f} MB/s, no sync)")
    return 1 if failures else 0


# ---- SCALE: many processes x threads at once -----------------------------------------------------


def scale_bench(args):
    """Rounds of tests/integration/scale.py against one server; a table of the figures."""
    script = os.path.join(SRC, "tests", "integration", "scale.py")
    work = tempfile.mkdtemp(prefix="mltrack-bench-scale-")
    rows, failures = [], 0
    try:
        for rnd in range(args.rounds):
            out = os.path.join(work, f"round-{rnd}.json")
            cmd = [sys.executable, "-B", script, "--uri", args.uri, "--build", args.build,
                   "--json", out, "--procs", str(args.procs), "--threads", str(args.threads),
                   "--ranks", str(args.ranks), "--runs", str(args.runs),
                   "--points", str(args.points)]
            if args.server_log:
                cmd += ["--server-log", args.server_log]
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=3600)
            if res.returncode != 0 or not os.path.exists(out):
                failures += 1
                print(res.stdout[-4000:], file=sys.stderr)
            if os.path.exists(out):
                with open(out) as f:
                    r = json.load(f)
                r["verified"] = res.returncode == 0
                rows.append(r)
            time.sleep(SETTLE_S)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not rows:
        print("SCALE: no round produced figures", file=sys.stderr)
        return 1
    rates = [r["points_per_s"] for r in rows]
    r0 = rows[0]
    tot = lambda k: sum(r[k] for r in rows)  # noqa: E731
    print(f"SCALE {args.label}: {r0['processes']} processes x {r0['threads']} threads "
          f"({r0['ranks_sharing_a_run']} of them ranks sharing one run), {len(rows)} round(s), "
          f"{os.cpu_count()} CPUs")
    print(Report.table(
        ["points/round", "runs", "params", "median pts/s", "min", "max", "median s",
         "server 5xx", "server 4xx", "retried", "rejected", "lost", "twice", "verified"],
        [[f"{r0['points_logged']:,}", str(r0["runs_expected"]), str(r0["params"]),
          fmt(statistics.median(rates)), fmt(min(rates)), fmt(max(rates)),
          f"{statistics.median(r['seconds'] for r in rows):.1f}", str(tot("server_5xx")),
          str(tot("server_4xx")), str(tot("retried")), str(tot("rejected")), str(tot("lost")),
          str(tot("duplicated")), f"{sum(r['verified'] for r in rows)}/{args.rounds}"]]))
    statuses = Counter()
    for r in rows:
        statuses.update({int(k): v for k, v in r["server_statuses"].items()})
    print(f"(server answers by HTTP status, all rounds: {dict(sorted(statuses.items()))}; "
          f"errors summed over the rounds)")
    return 1 if failures else 0


def relay_round(args, n_writers, work):
    """One round of RELAY: n_writers it_queue processes with no network at all (unshare -n) log
    RUNS x POINTS each into a queue that one relay (`mltrack sync --follow`) delivers, while a
    probe writer logs a point every 100 ms. Returns the figures (throughput from the first
    writer's start to the last point on the server; latency of the probe's points, first seen on
    the server, polled every 100 ms, minus their timestamp)."""
    queue = os.path.join(work, f"queue-{n_writers}-{uuid.uuid4().hex[:6]}")
    exp = f"bench-relay-{n_writers}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, MLTRACK_QUEUE_DIR=queue, MLFLOW_EXPERIMENT_NAME=exp,
               MLTRACK_LEASE_MS="10000", MLFLOW_TRACKING_URI=args.uri)
    env.pop("IT_QUEUE_LEDGER", None)
    rest = Rest(args.uri)
    mltrack = os.path.join(args.build, "mltrack")
    it_queue = os.path.join(args.build, "tests", "it_queue")
    relay = subprocess.Popen([mltrack, "sync", "--follow", "--queue", queue, "--tracking-uri",
                              args.uri], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    probe = None
    try:
        deadline = time.monotonic() + 30
        while not (os.path.isdir(queue) and any(f.startswith("relay-") for f in os.listdir(queue))):
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not start")
            time.sleep(0.05)
        t0 = time.monotonic()
        writers = [subprocess.Popen(["unshare", "-n", it_queue, "--close-ms", "600000", "log",
                                     str(args.runs), str(args.points)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for _ in range(n_writers)]
        probe = subprocess.Popen(["unshare", "-n", it_queue, "--delay-ms", "100", "--close-ms",
                                  "600000", "forever", "probe", "100000"],
                                 env=dict(env, IT_QUEUE_FOREVER_MAX_S="3600"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen, probe_run = {}, None
        exp_id = None
        while True:
            done = all(w.poll() is not None for w in writers)
            now_ms = time.time() * 1000
            try:
                exp_id = exp_id or rest.experiment_id(exp)
                if exp_id and not probe_run:
                    probe_run = next((r["info"]["run_id"] for r in rest.runs(exp_id)
                                      if r["info"]["run_name"] == "probe-0"), None)
                if probe_run:
                    for pt in rest.history(probe_run, "acc"):
                        seen.setdefault(pt["step"], now_ms - pt["timestamp"])
            except RuntimeError:
                pass
            if done:
                break
            time.sleep(0.1)
        logged_s = time.monotonic() - t0
        for w in writers:
            if w.returncode != 0:
                raise RuntimeError(f"a writer failed: {w.stderr.read()[-500:]!r}")
        # delivered: every writer's run holds its points (the probe's run is still going)
        want = n_writers * args.runs * args.points
        while True:
            got = 0
            for r in rest.runs(exp_id):
                if r["info"]["run_name"].startswith("run-") and \
                        r["info"]["status"] == "FINISHED":
                    got += len(rest.history(r["info"]["run_id"], "loss"))
                    got += len(rest.history(r["info"]["run_id"], "acc"))
            if got >= want or time.monotonic() - t0 > 1800:
                break
            time.sleep(0.5)
        delivered_s = time.monotonic() - t0
    finally:
        if probe:
            probe.kill()
            probe.wait()
        relay.terminate()
        relay.wait(timeout=120)
    lat = sorted(seen.values())
    return {"writers": n_writers, "points": want, "got": got, "logged_s": logged_s,
            "delivered_s": delivered_s, "points_per_s": want / delivered_s,
            "lat_n": len(lat), "lat_p50": lat[len(lat) // 2] if lat else None,
            "lat_p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "lat_max": lat[-1] if lat else None}


def proc_rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def relay_memory(args, work):
    """The relay's memory with many live journals: args.journals writers with no network each
    log one run of 20 points and stay (--hold) while one relay follows them all; the relay's RSS
    once it follows them all, with a quarter, half and all of them, and after they ended and it
    removed their journals."""
    queue = os.path.join(work, f"queue-mem-{uuid.uuid4().hex[:6]}")
    exp = f"bench-relay-mem-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, MLTRACK_QUEUE_DIR=queue, MLFLOW_EXPERIMENT_NAME=exp,
               MLTRACK_LEASE_MS="10000", MLFLOW_TRACKING_URI=args.uri)
    mltrack = os.path.join(args.build, "mltrack")
    it_queue = os.path.join(args.build, "tests", "it_queue")
    hold = os.path.join(work, "hold")
    relay = subprocess.Popen([mltrack, "sync", "--follow", "--queue", queue, "--tracking-uri",
                              args.uri], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    writers, rss = [], {}
    try:
        steps = sorted({max(1, args.journals // 4), max(1, args.journals // 2), args.journals})
        for n in range(1, args.journals + 1):
            writers.append(subprocess.Popen(
                ["unshare", "-n", it_queue, "--hold", hold, "--close-ms", "600000", "log", "1",
                 "20"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if n in steps:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:  # every journal so far followed, delivered
                    live = [d for d in os.listdir(queue) if d.startswith("j-")] \
                        if os.path.isdir(queue) else []
                    acked = 0
                    for d in live:
                        try:
                            with open(os.path.join(queue, d, "acked")) as f:
                                acked += int(f.read().split()[0] or 0) > 0
                        except (OSError, ValueError, IndexError):
                            pass
                    if len(live) >= n and acked >= n:
                        break
                    time.sleep(0.5)
                time.sleep(2)
                rss[n] = proc_rss_kib(relay.pid)
        open(hold, "w").close()
        for w in writers:
            w.wait(timeout=600)
        deadline = time.monotonic() + 300
        while any(d.startswith("j-") for d in os.listdir(queue)) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        rss["after"] = proc_rss_kib(relay.pid)
        rss["peak"] = proc_rss_kib(relay.pid, "VmHWM")
    finally:
        open(hold, "w").close()
        for w in writers:
            if w.poll() is None:
                w.kill()
        relay.terminate()
        relay.wait(timeout=120)
    return rss


def relay_bench(args):
    """RELAY: throughput and latency of live delivery by a relay, with 1, 4, 8... writers."""
    work = tempfile.mkdtemp(prefix="mltrack-bench-relay-")
    rows, failures = [], 0
    try:
        for n in [int(x) for x in args.writers.split(",")]:
            try:
                rows.append(relay_round(args, n, work))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures += 1
                print(f"RELAY {n} writers: {e}", file=sys.stderr)
            time.sleep(SETTLE_S)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"RELAY: writers with no network (unshare -n), each {args.runs} run(s) x "
          f"{args.points:,} points as fast as they can, one relay (`mltrack sync --follow`); a "
          f"probe writer logs a point every 100 ms; {os.cpu_count()} CPUs")
    ms = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    print(Report.table(
        ["writers", "points", "on the server", "logged in s", "delivered in s", "points/s",
         "probe latency p50 ms", "p99 ms", "max ms", "probe points"],
        [[str(r["writers"]), f"{r['points']:,}", f"{r['got']:,}", f"{r['logged_s']:.1f}",
          f"{r['delivered_s']:.1f}", fmt(r["points_per_s"]), ms(r["lat_p50"]), ms(r["lat_p99"]),
          ms(r["lat_max"]), str(r["lat_n"])] for r in rows]))
    bad = [r for r in rows if r["got"] != r["points"]]
    if args.journals:
        work2 = tempfile.mkdtemp(prefix="mltrack-bench-relay-mem-")
        try:
            rss = relay_memory(args, work2)
        finally:
            shutil.rmtree(work2, ignore_errors=True)
        cells = [f"{k} live: {v / 1024:.1f} MiB" for k, v in rss.items() if isinstance(k, int)]
        print(f"RELAY memory (RSS of `mltrack sync --follow`), following {args.journals} live "
              f"journals of writers with no network: " + ", ".join(cells) +
              f"; after they ended and were removed: {rss['after'] / 1024:.1f} MiB; peak "
              f"{rss['peak'] / 1024:.1f} MiB")
    return 1 if failures or bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--uri", required=True)
    r.add_argument("--build", required=True)
    r.add_argument("--python", default=sys.executable, help="python with mlflow installed")
    r.add_argument("--rounds", type=int, default=None)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", default="", help="W1,W2,W3,W4,MEM,HOTPATH")
    r.add_argument("--out", default=None, help="raw results as JSON")
    r.add_argument("--work", default=None, help="scratch directory for queues")
    r.add_argument("--w4-rounds", type=int, default=1,
                   help="rounds that replay W3's backlog (1M points each, minutes apiece)")
    r.add_argument("--write-baseline", action="store_true")
    h = sub.add_parser("hotpath")
    h.add_argument("--build", required=True)
    h.add_argument("--calls", type=int, default=50_000)
    h.add_argument("--check", type=float, default=5.0, help="allowed difference, percent")
    h.add_argument("--baseline", default=BASELINE)
    h.add_argument("--write-baseline", action="store_true")
    t = sub.add_parser("report")
    t.add_argument("results")
    p = sub.add_parser("py-client")
    p.add_argument("variant", choices=sorted(PY_ENV))
    p.add_argument("--uri", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--steps", type=int, required=True)
    c = sub.add_parser("cli")
    c.add_argument("--build", required=True)
    c.add_argument("--uri", default=None, help="a running server, for the start-up time")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--mib", type=int, default=512)
    c.add_argument("--lines", type=int, default=1_000_000)
    a = sub.add_parser("art")
    a.add_argument("--build", required=True)
    a.add_argument("--uri", required=True)
    a.add_argument("--python", default=sys.executable, help="python with mlflow installed")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--mib", type=int, default=1024)
    a.add_argument("--files", type=int, default=1000)
    sc = sub.add_parser("scale")
    sc.add_argument("--build", required=True)
    sc.add_argument("--uri", required=True)
    sc.add_argument("--label", default="", help="the server's setup, for the table's title")
    sc.add_argument("--server-log", default=None, help="the server's log (its access lines)")
    sc.add_argument("--rounds", type=int, default=3)
    sc.add_argument("--procs", type=int, default=16)
    sc.add_argument("--threads", type=int, default=4)
    sc.add_argument("--ranks", type=int, default=8)
    sc.add_argument("--runs", type=int, default=2)
    sc.add_argument("--points", type=int, default=600)
    rl = sub.add_parser("relay")
    rl.add_argument("--build", required=True)
    rl.add_argument("--uri", required=True)
    rl.add_argument("--writers", default="1,4,8", help="writer counts, one round each")
    rl.add_argument("--runs", type=int, default=2)
    rl.add_argument("--points", type=int, default=50_000)
    rl.add_argument("--journals", type=int, default=200,
                    help="live journals for the memory figure (0: none)")
    args = ap.parse_args()

    if args.cmd == "relay":
        return relay_bench(args)
    if args.cmd == "scale":
        return scale_bench(args)
    if args.cmd == "cli":
        return cli_bench(args)
    if args.cmd == "art":
        return art_bench(args)
    if args.cmd == "py-client":
        py_client(args.variant, args.uri, args.experiment, args.steps)
        return 0
    if args.cmd == "hotpath":
        return check_hotpath(args)
    if args.cmd == "report":
        with open(args.results) as f:
            raw = json.load(f)
        print(header(raw["meta"]))
        print(Report(raw["results"]).render())
        return 1 if raw["meta"]["failures"] else 0

    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    args.work = args.work or os.path.join(args.build, "bench-work")
    os.makedirs(args.work, exist_ok=True)
    bench = Bench(args)
    started = time.time()
    results = bench.run()
    meta = {"uri": args.uri, "rounds": args.rounds, "quick": args.quick, "only": args.only,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": time.time() - started, "host": os.uname().nodename,
            "cpus": os.cpu_count(), "failures": bench.failures}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    print(header(meta))
    print(Report(results).render())
    if bench.failures:
        print(f"\n{bench.failures} variant run(s) FAILED (crashed or the server's contents were "
              f"not exactly the points logged)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
