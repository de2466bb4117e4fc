#!/usr/bin/env python3
"""Scale-out check (issue 6, item 5): many processes x threads log at once through libmltrack into
one MLflow server (PostgreSQL behind it, several workers: scripts/check-scale.sh starts them), and
the server ends up holding exactly what was logged.

    scale.py --uri URI --build DIR [--procs 16] [--threads 4] [--ranks 8] [--runs 2]
             [--points 600] [--server-log FILE] [--work DIR] [--json FILE] [--drop-ledger-line]

What runs, all at once (each process is tests/it_queue `scale`, with a queue directory of its own,
MLTRACK_QUEUE_DIR, as on separate nodes, and a ledger of every call that returned MLT_OK):
  - PROCS - RANKS independent nodes p00, p01, ...: each its own top-level run;
  - RANKS ranks r00, r01, ... of one distributed job: `mltrack run --run-name job` (the launcher,
    with a queue of its own) makes the job's run and stays up while the ranks log; even ranks
    attach to it by MLTRACK_RUN_KEY alone (the sender finds the run by its
    mltrack.client_run_key tag), odd ranks by MLFLOW_RUN_ID alone. Every rank logs the param
    job=scale into it (the same value, at once) and metrics under keys of its own.
Each process runs THREADS threads; each thread logs POINTS points into the process's top run and
then makes RUNS child runs of POINTS points each (params, tags, a progress tag). Half the
processes log by key handle and string with the library stamping the points; the other half
(--ring) leave the MLflow callback alone, so that points take the lock-free ring, and stamp them.
Each process flushes (waits until the server acknowledged everything) before it exits.

Then the server is read back over REST with urllib (mlflow_read.py: neither mlflow nor the
library) and compared with the ledgers: one run per client run key and no other run, names,
statuses, start and end times (when the ledger knows them), parents (mlflow.parentRunId), params,
user tags, and every metric's full history: each ledger point (key, step, timestamp, value bit for
bit) exactly once, nothing else. Printed: points, runs, processes x threads, seconds, points/s,
the server's error answers (from its access log: 5xx, 4xx) and the library's counters (retried,
rejected), lost and duplicated points. Exit 0 only when the server holds exactly the ledgers.

--faults puts tests/fault_proxy.py between the processes and the server (the read-back goes
direct): it answers 503 TEMPORARILY_UNAVAILABLE (what MLflow answers for "database is locked" and
any other database OperationalError) to one log-batch in FAULT_EVERY and to some run creations,
run searches and experiment look-ups (the server did not act), and cuts the connection after the
server answered some log-batches and run creations (the server DID act: the library cannot know,
sends again, and must still not double anything). The check is the same: nothing lost, nothing
twice.

--drop-ledger-line removes one metric line from one ledger before the comparison: the check must
then fail (a self-test of the checker). --json writes the figures.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlflow_read import MlflowReader, value_key  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fault_proxy import FaultProxy  # noqa: E402

CLIENT_KEY_TAG = "mltrack.client_run_key"
PARENT_TAG = "mlflow.parentRunId"
SYSTEM_TAG_PREFIXES = ("mlflow.", "mltrack.")
ACCESS_RX = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')


FAULT_EVERY = 30  # one log-batch in this many answers 503 (--faults)


def add_faults(proxy):
    """The rules of --faults. A rule sees every matching request that no earlier rule took, so a
    fault meant for the N-th matching request (1-based) is a rule skipping N - 1 - (the rules of
    that path added before it, all spent by then)."""

    def at(path, plan):
        for i, (n, action) in enumerate(sorted(plan)):
            proxy.add_rule(path, action, skip=n - 1 - i, status=503)

    batches = [(k * FAULT_EVERY, "status") for k in range(1, 41)]
    batches += [(k * FAULT_EVERY * 4 + FAULT_EVERY // 2, "cut_after") for k in range(10)]
    at("runs/log-batch", batches)
    at("runs/create", [(4, "status"), (9, "cut_after"), (18, "status"), (23, "cut_after"),
                       (42, "status"), (47, "cut_after")])
    at("runs/search", [(2, "status"), (3, "status")])
    at("experiments/get-by-name", [(3, "status"), (4, "status")])


def log(msg):
    print(f"scale: {msg}", file=sys.stderr, flush=True)


# ---- the processes -------------------------------------------------------------------------------


class Proc:
    def __init__(self, tag, work, attach=None, ring=False):
        self.tag = tag
        self.attach = attach  # None, "key" or "id"
        self.ring = ring
        self.queue = os.path.join(work, f"queue-{tag}")
        self.ledger = os.path.join(work, f"ledger-{tag}.jsonl")
        self.out_path = os.path.join(work, f"out-{tag}.txt")
        self.err_path = os.path.join(work, f"err-{tag}.txt")
        self.popen = None
        self.rc = None
        self.stats = None
        self.ended = None


def base_env(uri, exp):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "MLTRACK_", "IT_QUEUE_"))}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=exp,
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    for var in ("no_proxy", "NO_PROXY"):
        env[var] = "127.0.0.1,localhost" + ("," + env[var] if env.get(var) else "")
    return env


def start_launcher(args, work, exp, uri):
    """`mltrack run` making the job's run; returns (popen, run key, run id or None, done file)."""
    ids, done = os.path.join(work, "job-ids"), os.path.join(work, "job-done")
    script = ('printf "%s %s\\n" "$MLTRACK_RUN_KEY" "${MLFLOW_RUN_ID:--}" > "$1.tmp" && '
              'mv "$1.tmp" "$1" && while [ ! -e "$2" ]; do sleep 0.1; done')
    env = base_env(uri, exp)
    env["MLTRACK_QUEUE_DIR"] = os.path.join(work, "queue-launcher")
    cmd = [os.path.join(args.build, "mltrack"), "run", "--experiment", exp, "--run-name", "job",
           "--param", f"world_size={args.ranks}", "--tag", "job=distributed", "--timeout", "120",
           "--", "sh", "-c", script, "sh", ids, done]
    out = open(os.path.join(work, "out-launcher.txt"), "wb")
    err = open(os.path.join(work, "err-launcher.txt"), "wb")
    popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    out.close()
    err.close()
    deadline = time.monotonic() + 60
    while not os.path.exists(ids):
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            popen.wait()
            sys.exit(f"scale: the launcher did not start the job (see {work}/err-launcher.txt)")
        time.sleep(0.05)
    key, run_id = open(ids).read().split()
    return popen, key, (None if run_id == "-" else run_id), done


def start_proc(args, p, exp, uri, job_key, job_id):
    env = base_env(uri, exp)
    env["MLTRACK_QUEUE_DIR"] = p.queue
    if p.attach == "id" and job_id:
        env["MLFLOW_RUN_ID"] = job_id
    elif p.attach:
        env["MLTRACK_RUN_KEY"] = job_key
    cmd = [os.path.join(args.build, "tests", "it_queue"), "--ledger", p.ledger,
           "--flush-ms", str(args.timeout * 1000), "--close-ms", "5000"]
    if p.ring:
        cmd.append("--ring")
    cmd += ["scale", p.tag, str(args.threads), str(args.runs), str(args.points)]
    with open(p.out_path, "wb") as out, open(p.err_path, "wb") as err:
        p.popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def parse_out(p):
    for line in open(p.out_path, encoding="utf-8", errors="replace"):
        parts = line.split()
        if parts and parts[0] == "stats" and len(parts) > 2:
            p.stats = {k: int(v) for k, v in (x.split("=") for x in parts[1:])}
        elif parts and parts[0] == "flush":
            p.flush = parts[1]


# ---- the ledgers ---------------------------------------------------------------------------------


def read_ledger(path):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    lines = data.split("\n")
    if lines[-1] != "":
        raise SystemExit(f"scale: {path}: the last ledger line is cut: {lines[-1]!r}")
    return [json.loads(ln) for ln in lines[:-1]]


class Want:
    """What the server should hold for one run."""

    def __init__(self, key):
        self.key = key
        self.name = None
        self.start = None
        self.end = None
        self.parent = None
        self.attached = False
        self.params = {}
        self.tags = {}
        self.metrics = defaultdict(list)  # key -> [(step, ts, value_key)]


def expected(procs, job_key, problems):
    """{run key: Want} from every ledger; the job's run gathers what its ranks logged."""
    runs = {}
    if job_key:
        job = runs[job_key] = Want(job_key)
        job.name, job.attached = "job", True
        job.params["world_size"] = str(len(procs.ranks))
        job.tags["job"] = "distributed"
    for p in procs.all:
        entries = read_ledger(p.ledger)
        remap = {}
        for e in entries:
            if e["kind"] == "start" and "parent" not in e and p.attach:
                remap[e["run"]] = job_key  # the rank's top run is the job's run, attached
        tags_of = defaultdict(dict)  # this process's tags, last write wins
        for e in entries:
            k = remap.get(e["run"], e["run"])
            kind = e["kind"]
            if kind == "start":
                if k == job_key:
                    continue
                if k in runs:
                    problems.append(f"{p.tag}: run key {k} started twice in the ledgers")
                    continue
                w = runs[k] = Want(k)
                w.name, w.start = e["name"], e["start"]
                w.parent = remap.get(e.get("parent"), e.get("parent"))
                continue
            w = runs[k]
            if kind == "param":
                old = w.params.get(e["key"])
                if old is not None and old != e["value"]:
                    problems.append(f"{p.tag}: param {e['key']} logged with two values")
                w.params[e["key"]] = e["value"]
            elif kind == "tag":
                tags_of[k][e["key"]] = e["value"]
            elif kind == "metric":
                w.metrics[e["key"]].append((e["step"], e["ts"], value_key(float(e["value"]))))
            elif kind == "end":
                if k != job_key:
                    w.end = e["end"]
            else:
                problems.append(f"{p.tag}: unknown ledger entry {e}")
        for k, tags in tags_of.items():
            for tk, tv in tags.items():
                if k == job_key and tk in runs[k].tags and runs[k].tags[tk] != tv:
                    problems.append(f"{p.tag}: tag {tk} of the job set by two ranks")
                runs[k].tags[tk] = tv
    return runs


# ---- the comparison ------------------------------------------------------------------------------


def compare(reader, exp_name, runs, problems, workers=4):
    """Checks the experiment against runs; returns (runs on the server, points on the server,
    lost, duplicated, extra)."""
    exp, server = reader.runs_of_experiment_named(exp_name)
    if exp is None:
        problems.append(f"no experiment {exp_name} on the server")
        return 0, 0, sum(len(v) for w in runs.values() for v in w.metrics.values()), 0, 0
    by_key = defaultdict(list)
    for run in server:
        k = reader.tags(run).get(CLIENT_KEY_TAG)
        if not k:
            problems.append(f"run {run['info']['run_id']} has no {CLIENT_KEY_TAG} tag")
        by_key[k].append(run)
    for k, rs in by_key.items():
        if k and len(rs) > 1:
            problems.append(f"client run key {k}: {len(rs)} runs on the server")
    for k in sorted(set(by_key) - set(runs) - {None}):
        problems.append(f"run {k} is on the server but in no ledger")
    id_of = {k: rs[0]["info"]["run_id"] for k, rs in by_key.items() if k}

    def check(w):
        mine = []
        rs = by_key.get(w.key)
        if not rs:
            pts = sum(len(v) for v in w.metrics.values())
            return [f"run {w.name} ({w.key}) is not on the server"], 0, pts, 0, 0
        run = rs[0]
        info = run["info"]
        where = f"run {w.name} ({w.key}): "
        if info.get("run_name") != w.name:
            mine.append(where + f"name {info.get('run_name')!r}")
        if info.get("status") != "FINISHED":
            mine.append(where + f"status {info.get('status')}")
        if w.start is not None and w.start >= 0 and info.get("start_time") != w.start:
            mine.append(where + f"start time {info.get('start_time')} != {w.start}")
        if w.end is not None and w.end >= 0 and info.get("end_time") != w.end:
            mine.append(where + f"end time {info.get('end_time')} != {w.end}")
        tags = reader.tags(run)
        if w.parent and tags.get(PARENT_TAG) != id_of.get(w.parent):
            mine.append(where + f"parent {tags.get(PARENT_TAG)} != {id_of.get(w.parent)}")
        if reader.params(run) != w.params:
            mine.append(where + f"params {reader.params(run)} != {w.params}")
        user = {k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)}
        if user != w.tags:
            mine.append(where + f"tags {user} != {w.tags}")
        got = reader.full_metrics(run)
        n_server = lost = dup = extra = 0
        for key in sorted(set(got) | set(w.metrics)):
            have = Counter((s, t, value_key(v)) for s, t, v in got.get(key, []))
            want = Counter(w.metrics.get(key, []))
            n_server += sum(have.values())
            for pt, c in want.items():
                if c > 1:
                    mine.append(where + f"metric {key}: the ledger has {pt} {c} times")
            k_lost = sum(max(0, c - have[pt]) for pt, c in want.items())
            k_dup = sum(c - 1 for pt, c in have.items() if c > 1)
            k_extra = sum(c for pt, c in have.items() if pt not in want)
            if k_lost or k_dup or k_extra:
                mine.append(where + f"metric {key}: {k_lost} points lost, {k_dup} twice, "
                            f"{k_extra} not in the ledger")
            lost, dup, extra = lost + k_lost, dup + k_dup, extra + k_extra
        return mine, n_server, lost, dup, extra

    totals = [0, 0, 0, 0]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for mine, n, lost, dup, extra in pool.map(check, runs.values()):
            problems.extend(mine)
            for i, v in enumerate((n, lost, dup, extra)):
                totals[i] += v
    return len(server), *totals


def access_counts(path, offset):
    """{status: count} of the server's access log lines after offset."""
    counts = Counter()
    if not path or not os.path.exists(path):
        return counts
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            m = ACCESS_RX.search(line.decode("utf-8", "replace"))
            if m:
                counts[int(m.group(2))] += 1
    return counts


# ---- main ----------------------------------------------------------------------------------------


class Procs:
    def __init__(self, nodes, ranks):
        self.nodes, self.ranks = nodes, ranks
        self.all = nodes + ranks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--build", required=True, help="the build directory (tests/it_queue, mltrack)")
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--ranks", type=int, default=8, help="processes that share the job's run")
    ap.add_argument("--runs", type=int, default=2, help="child runs per thread")
    ap.add_argument("--points", type=int, default=600, help="points per thread per run")
    ap.add_argument("--timeout", type=int, default=600, help="seconds for the processes")
    ap.add_argument("--server-log", help="the MLflow server's log (its access lines are counted)")
    ap.add_argument("--work", help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--reliability", help="on success, append a line of figures for "
                    "scripts/reliability-report.py here")
    ap.add_argument("--experiment", help="experiment name (default: scale-TIME-PID)")
    ap.add_argument("--faults", action="store_true",
                    help="through tests/fault_proxy.py: 503s and cut connections (see above)")
    ap.add_argument("--drop-ledger-line", action="store_true",
                    help="self-test: drop one metric line of one ledger; the check must fail")
    args = ap.parse_args()
    if not 0 <= args.ranks <= args.procs:
        ap.error("--ranks must be between 0 and --procs")

    own_work = not args.work
    work = args.work or tempfile.mkdtemp(prefix="mltrack-scale.")
    os.makedirs(work, exist_ok=True)
    exp = args.experiment or f"scale-{int(time.time())}-{os.getpid()}"
    reader = MlflowReader(args.uri)
    log_offset = os.path.getsize(args.server_log) if args.server_log and \
        os.path.exists(args.server_log) else 0

    nodes = [Proc(f"p{i:02d}", work, ring=i % 2 == 1) for i in range(args.procs - args.ranks)]
    ranks = [Proc(f"r{i:02d}", work, attach="key" if i % 2 == 0 else "id", ring=i % 4 >= 2)
             for i in range(args.ranks)]
    procs = Procs(nodes, ranks)
    launcher = proxy = None
    job_key = job_id = done = None
    problems = []
    uri = args.uri
    try:
        if args.faults:
            proxy = FaultProxy(int(args.uri.rstrip("/").rsplit(":", 1)[1])).start()
            add_faults(proxy)
            uri = proxy.uri
        if ranks:
            launcher, job_key, job_id, done = start_launcher(args, work, exp, uri)
            if not job_id:
                log("the launcher had no run id yet: the odd ranks attach by key too")
        log(f"experiment {exp}: {len(nodes)} nodes and {len(ranks)} ranks of one job, "
            f"{args.threads} threads each, work in {work}")
        t0 = time.monotonic()
        for p in procs.all:
            start_proc(args, p, exp, uri, job_key, job_id)
        deadline = t0 + args.timeout + 60
        for p in procs.all:
            try:
                p.rc = p.popen.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.rc = p.popen.wait()
                problems.append(f"{p.tag}: killed after {args.timeout + 60} s")
            p.ended = time.monotonic()
        seconds = max(p.ended for p in procs.all) - t0
        if launcher:
            open(done, "w").close()
            try:
                rc = launcher.wait(timeout=180)
            except subprocess.TimeoutExpired:
                launcher.kill()
                rc = launcher.wait()
            if rc != 0:
                problems.append(f"the launcher (mltrack run) exited {rc}: "
                                f"{open(os.path.join(work, 'err-launcher.txt')).read()[-2000:]}")
            launcher = None
        for p in procs.all:
            parse_out(p)
            err = open(p.err_path, encoding="utf-8", errors="replace").read()
            if p.rc != 0:
                problems.append(f"{p.tag}: exit {p.rc}: {err[-2000:]}")
            if p.stats is None:
                problems.append(f"{p.tag}: no queue stats printed")
            elif p.stats["bytes_pending"] or p.stats["acknowledged"] != p.stats["queued"]:
                problems.append(f"{p.tag}: not everything acknowledged: {p.stats}")
        if args.drop_ledger_line:
            victim = procs.all[-1].ledger
            lines = open(victim).read().split("\n")
            i = next(i for i, ln in enumerate(lines) if '"kind":"metric"' in ln)
            log(f"self-test: dropping line {i + 1} of {victim}: {lines[i]}")
            del lines[i]
            open(victim, "w").write("\n".join(lines))

        t1 = time.monotonic()
        runs = expected(procs, job_key, problems)
        logged = sum(len(v) for w in runs.values() for v in w.metrics.values())
        n_runs, on_server, lost, dup, extra = compare(reader, exp, runs, problems)
        read_s = time.monotonic() - t1
    finally:
        if launcher:
            if done:
                open(done, "w").close()
            launcher.kill()
            launcher.wait()
        for p in procs.all:
            if p.popen and p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        faults = Counter()
        if proxy:
            proxy.stop()
            faults = Counter((e["action"], e["status"]) for e in proxy.requests()
                             if e["action"] not in ("pass", "pending"))

    statuses = access_counts(args.server_log, log_offset)
    stat = Counter()
    for p in procs.all:
        stat.update(p.stats or {})
    figures = {
        "experiment": exp, "processes": args.procs, "threads": args.threads,
        "ranks_sharing_a_run": args.ranks, "runs_expected": len(runs), "runs_on_server": n_runs,
        "points_logged": logged, "points_on_server": on_server, "seconds": round(seconds, 2),
        "points_per_s": round(logged / seconds, 1) if seconds > 0 else None,
        "params": sum(len(w.params) for w in runs.values()),
        "server_5xx": sum(c for s, c in statuses.items() if s >= 500),
        "server_4xx": sum(c for s, c in statuses.items() if 400 <= s < 500),
        "server_requests": sum(statuses.values()),
        "server_statuses": {str(s): c for s, c in sorted(statuses.items())},
        "faults_injected": {f"{a}:{st}": c for (a, st), c in sorted(faults.items(), key=str)},
        "retried": stat["retried"], "rejected": stat["rejected"],
        "lost": lost, "duplicated": dup, "not_in_ledger": extra,
        "read_back_s": round(read_s, 1), "problems": len(problems),
    }
    print(f"scale: {args.procs} processes x {args.threads} threads ({len(nodes)} nodes with runs "
          f"of their own, {len(ranks)} ranks sharing one run), {len(runs)} runs, "
          f"{figures['params']} params, {logged} points logged in {seconds:.1f} s: "
          f"{figures['points_per_s']:,.0f} points/s delivered", flush=True)
    print(f"scale: server answers: {figures['server_requests']} requests, "
          f"{figures['server_5xx']} 5xx, {figures['server_4xx']} 4xx "
          f"{figures['server_statuses']}; library: retried={stat['retried']} "
          f"rejected={stat['rejected']}")
    if proxy:
        print(f"scale: faults injected by the proxy: {sum(faults.values())} "
              f"{figures['faults_injected']} (status:503 = a 503 the server never saw; "
              f"cut_after = the server acted, the answer was cut)")
    print(f"scale: read back in {read_s:.1f} s: {n_runs} runs, {on_server} points on the server; "
          f"lost={lost} duplicated={dup} not_in_ledger={extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    if problems:
        print(f"scale: FAIL: {len(problems)} problems; the first ones:", file=sys.stderr)
        for pr in problems[:25]:
            print(f"  {pr}", file=sys.stderr)
        print(f"scale: files kept in {work}", file=sys.stderr)
        return 1
    print("scale: PASS: the server holds exactly what the ledgers say, every point once")
    if args.reliability:
        n_faults = sum(faults.values())
        fault = (f"{args.procs} processes x {args.threads} threads at once on PostgreSQL, "
                 + (f"{n_faults} 503s and cut answers injected" if proxy else "no fault injected"))
        with open(args.reliability, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": "tests/integration/scale.py", "fault": fault,
                                "trials": 1, "faults": n_faults, "runs": n_runs,
                                "points": on_server, "lost": lost, "duplicated": dup,
                                "checked": "server"}) + "\n")
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
