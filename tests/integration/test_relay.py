"""The relay: `mltrack sync --follow` delivers, live and exactly once, the journals of writers that
have no network at all (each in a network namespace of its own: `unshare -n`), sharing the queue
directory with it, as compute nodes share a file system with a login node.

Writers are tests/it_queue (forever, with threads; one ledger line per call that returned), run
under `unshare -n`: their tracking URI names the test's server, which they cannot reach. Relays
run outside, against a real MLflow server of the test's own. Read back independently (mlflow_read,
urllib) and compared exactly with the ledgers (test_queue.assert_ledgers_on_server): none lost,
none doubled, no run twice.
"""

import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import _free_port, only_in, slow_factor, under_valgrind
from mlflow_read import MlflowReader
from test_queue import Queue, assert_ledgers_on_server, journal_dirs, wait_until

LEASE_MS = 2000
ENV = {
    "MLTRACK_LEASE_MS": str(LEASE_MS),
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def label():
    return os.environ.get("MLTRACK_TEST_LABEL", "default")


class Relays:
    """`mltrack sync --follow` processes on the test's queue, killed and started again at will."""

    def __init__(self, q, tmp_path, env=None):
        self.q = q
        self.tmp = tmp_path
        self.env = dict(ENV, **(env or {}))
        self.procs = {}
        self.started = 0
        self.kills = 0

    def start(self, slot):
        n = self.started
        self.started += 1
        out = open(self.tmp / f"relay-{n}.out", "wb")
        err = open(self.tmp / f"relay-{n}.err", "wb")
        cmd = self.q.programs.command(["mltrack", "-v", "sync", "--follow", "--queue", self.q.dir,
                                       "--tracking-uri", self.q.uri, "--poll-ms", "100"])
        proc = subprocess.Popen(cmd, env=self.q.programs.env(self.q.env(self.env)),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.close()
        err.close()
        self.procs[slot] = (n, proc)
        # its mark in the queue (writers look for it when the server is away from them)
        wait_until(lambda: any(f.startswith("relay-") for f in os.listdir(self.q.dir))
                   if os.path.isdir(self.q.dir) else False, 60 * slow_factor(),
                   f"relay {n} to mark the queue")
        return proc

    def kill(self, slot):
        n, proc = self.procs.pop(slot)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        self.kills += 1

    def stop_all(self):
        """SIGTERM: each exits 0 and says it stopped."""
        for slot in list(self.procs):
            n, proc = self.procs.pop(slot)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120 * slow_factor())
            err = (self.tmp / f"relay-{n}.err").read_text(errors="replace")
            assert rc == 0, f"relay {n} exited {rc}: {err[-3000:]}"
            assert "relay: stopped" in err, err[-3000:]

    def kill_all(self):
        """For a test that failed: no relay outlives it."""
        for slot in list(self.procs):
            n, proc = self.procs.pop(slot)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)

    def logs(self):
        return "\n".join((self.tmp / f"relay-{n}.err").read_text(errors="replace")[-1500:]
                         for n in range(self.started))


@pytest.fixture
def relays_for(tmp_path):
    """relays_for(q) -> Relays on q's queue; none outlives the test, failed or not."""
    made = []

    def make(q, env=None):
        r = Relays(q, tmp_path, env)
        made.append(r)
        return r

    yield make
    for r in made:
        r.kill_all()


def writer(q, tmp_path, tag, env, threads=2, per_run=100, delay_ms=20):
    """One it_queue forever writer with no network (its own network namespace)."""
    ledger = str(tmp_path / f"ledger-{tag}.jsonl")
    out = open(tmp_path / f"w-{tag}.out", "wb")
    err = open(tmp_path / f"w-{tag}.err", "wb")
    cmd = ["unshare", "-n"] + q.programs.command(
        ["tests/it_queue", "--ledger", ledger, "--delay-ms", str(delay_ms), "forever", tag,
         str(per_run), str(threads)])
    proc = subprocess.Popen(cmd, env=q.programs.env(q.env(dict(ENV, **env))),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    out.close()
    err.close()
    tags = [f"{tag}.{k}" for k in range(threads)] if threads > 1 else [tag]
    return proc, [(t, ledger) for t in tags]


def first_seen_latency(reader, exp_name, run_name, key, stop, seen, interval=0.25):
    """Polls the server for run_name's metric key until stop is set; seen[(step)] = (time the
    point was first on the server in ms, its timestamp)."""
    run_id = None
    while not stop.is_set():
        try:
            if run_id is None:
                _, runs = reader.runs_of_experiment_named(exp_name)
                for r in runs:
                    if r["info"].get("run_name") == run_name:
                        run_id = r["info"]["run_id"]
            if run_id is not None:
                now = time.time() * 1000
                for p in reader.metric_history(run_id, key):
                    seen.setdefault(p["step"], (now, p["timestamp"]))
        except Exception:  # noqa: BLE001 - the server may be flapping: looked at again
            pass
        stop.wait(interval)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else None


def test_relay_delivers_networkless_writers_live_and_exactly_once(queue_build_dir, exp_name,
                                                                  server_factory, tmp_path,
                                                                  relays_for, reliability):
    """4 writers x 2 threads with no network for a minute (shorter under the sanitizers and
    valgrind); two relays race for their journals; relays are SIGKILLed and started again at
    random, writers SIGKILLed at random (and new ones started), the server flaps. Points are on
    the server within seconds while the writers run; at the end every ledger is on the server
    exactly."""
    # races are TSan's; ASan and valgrind run the relay's shorter tests below (CI's time)
    only_in("default", "tsan")
    slow = slow_factor()
    lbl = label()
    seconds = 60 if lbl == "default" else 24  # a minute, as the issue asks; TSan: 24 s
    rng = random.Random(20261206)
    srv = server_factory()
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    reader = MlflowReader(srv.uri)
    env = {"IT_QUEUE_FOREVER_MAX_S": str(seconds)}
    relays = relays_for(q)
    relays.start("a")
    relays.start("b")
    procs = []  # (tag, ledger) for the check
    writers = {}  # slot -> (tag, Popen)
    n_writers = 0

    def new_writer(slot, seconds_left):
        nonlocal n_writers
        tag = f"p{n_writers}"
        n_writers += 1
        proc, tl = writer(q, tmp_path, tag, {"IT_QUEUE_FOREVER_MAX_S": str(max(3, seconds_left))})
        procs.extend(tl)
        writers[slot] = (tag, proc)

    t0 = time.monotonic()
    for slot in range(4):
        new_writer(slot, seconds)
    # the latency probe: a writer of its own, one point every 100 ms, its "acc" stamped by the
    # library at the call
    lat_steps = seconds * 10 // 2
    lat_proc, lat_tl = writer(q, tmp_path, "lat", env, threads=1, per_run=lat_steps * 2,
                              delay_ms=100)
    procs.extend(lat_tl)
    stop_probe = threading.Event()
    seen = {}
    probe = threading.Thread(target=first_seen_latency,
                             args=(reader, q.exp_name, "lat-0", "acc", stop_probe, seen),
                             daemon=True)
    probe.start()

    stable_until = t0 + seconds / 3
    flap_from, flap_to = t0 + seconds * 0.6, t0 + seconds * 0.8
    chaos = {"relay_kills": 0, "writer_kills": 0, "flaps": 0}
    windows = {"flap": [], "relay_kill": []}  # wall-clock ms
    try:
        time.sleep(max(0, stable_until - time.monotonic()))
        while time.monotonic() < t0 + seconds - 2:
            now = time.monotonic()
            if flap_from <= now < flap_to and srv.running:
                srv.stop()
                chaos["flaps"] += 1
                windows["flap"].append([time.time() * 1000, None])
                time.sleep(rng.uniform(1, 3))
                srv.start()
                windows["flap"][-1][1] = time.time() * 1000
                continue
            what = rng.random()
            if what < 0.5:
                slot = rng.choice(sorted(relays.procs))
                windows["relay_kill"].append(time.time() * 1000)
                relays.kill(slot)
                chaos["relay_kills"] += 1
                time.sleep(rng.uniform(0, 1.0))
                relays.start(slot)
            else:
                slot = rng.randrange(4)
                tag, proc = writers[slot]
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=60)
                    chaos["writer_kills"] += 1
                new_writer(slot, int(t0 + seconds - time.monotonic()))
            time.sleep(rng.uniform(0.5, 2.5) / slow)
        if not srv.running:
            srv.start()
        # the writers end by themselves: their close waits for the relays
        for tag, proc in list(writers.values()) + [("lat", lat_proc)]:
            rc = proc.wait(timeout=300 * slow)
            errtxt = (tmp_path / f"w-{tag}.err").read_text(errors="replace")
            assert rc in (0, -signal.SIGKILL), f"writer {tag} exited {rc}: {errtxt[-2000:]}"
        wait_until(lambda: not journal_dirs(q.dir), 180 * slow,
                   f"the relays to deliver and remove every journal: {journal_dirs(q.dir)}\n"
                   f"{relays.logs()}", interval=0.5)
    finally:
        stop_probe.set()
        probe.join(timeout=30)
        for tag, proc in writers.values():
            if proc.poll() is None:
                proc.kill()
        if lat_proc.poll() is None:
            lat_proc.kill()
    relays.stop_all()

    by_key, extras, ledgers = assert_ledgers_on_server(reader, q.exp_name, procs)

    # latency: first seen on the server minus the library's stamp, while no relay had just died
    # and the server was up
    def disturbed(ts):
        if any(a - 1000 <= ts <= (b or a) + 1000 for a, b in windows["flap"]):
            return True
        return any(k - 1000 <= ts <= k + LEASE_MS + 3000 for k in windows["relay_kill"])

    calm = [first - ts for first, ts in seen.values() if not disturbed(ts)]
    all_lat = [first - ts for first, ts in seen.values()]
    assert len(calm) >= 10, f"too few latency samples: {len(calm)} of {len(seen)}"
    print(f"relay test: {seconds} s, {n_writers} writers x 2 threads + the probe, "
          f"{sum(len(e) for e in ledgers.values())} ledger lines, {len(by_key)} runs, "
          f"{extras} calls in flight landed; chaos {chaos}; latency (ms, commit to server, polled "
          f"every 250 ms) calm p50 {pct(calm, 50):.0f} p99 {pct(calm, 99):.0f} max "
          f"{max(calm):.0f} ({len(calm)} points), all p50 {pct(all_lat, 50):.0f} max "
          f"{max(all_lat):.0f}")
    # the bound docs/hpc.md gives: within 5 s while a relay and the server are up (typically
    # well under 1 s; the probe polls every 0.25 s, and a slow build runs slower)
    assert max(calm) <= 5000 * slow, f"calm latency above the documented bound: {max(calm)}"
    assert chaos["relay_kills"] >= 2 and chaos["writer_kills"] >= 1 and chaos["flaps"] >= 1, chaos
    reliability("SIGKILL of a relay, of a networkless writer, two relays racing, the server "
                "flapping (relay, live delivery)", trials=n_writers + 1,
                faults=chaos["relay_kills"] + chaos["writer_kills"] + chaos["flaps"])


def networkless_log(q, env, points):
    """it_queue log 1 POINTS with no network (unshare -n), closed with a 60 s deadline: (the
    completed process, its seconds)."""
    cmd = ["unshare", "-n"] + q.programs.command(["tests/it_queue", "--close-ms", "60000", "log",
                                                  "1", str(points)])
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=q.programs.env(q.env(env)), capture_output=True, text=True,
                          timeout=180 * slow_factor())
    assert done.returncode == 0, done.stderr
    return done, time.monotonic() - t0


def lease_files(journal):
    return sorted(f for f in os.listdir(journal) if f.startswith("lease."))


def read_lease(journal):
    """The newest generation's file, as its fields: magic gen id role pid beat state host crc."""
    names = lease_files(journal)
    assert names, f"no lease in {journal}: {os.listdir(journal)}"
    with open(os.path.join(journal, names[-1])) as f:
        return f.read().split()


def test_a_writer_that_reaches_the_server_delivers_itself_and_the_relay_leaves_it(
        queue_build_dir, exp_name, module_server, tmp_path, relays_for):
    """The writer reaches the server: it takes its journal's lease at once and keeps it; a relay
    running on the queue never delivers that journal. Once the writer closes, its journal is
    gone, delivered by itself."""
    q = Queue(queue_build_dir, tmp_path, exp_name, module_server.uri)
    relays = relays_for(q)
    relays.start("a")
    hold = tmp_path / "hold"
    proc = q.start_it_queue(["--flush-ms", "60000", "--hold", str(hold), "log", "2", "40"],
                            env=ENV)
    wait_until(lambda: (tmp_path / "hold.ready").exists(), 120 * slow_factor(), "the writer")
    (journal,) = journal_dirs(q.dir)
    fields = read_lease(journal)
    assert fields[3] == "writer" and fields[6] == "delivering", fields
    assert int(fields[4]) == proc.pid or under_valgrind(), fields
    time.sleep(3 * LEASE_MS / 1000)  # the relay looked at it a few times: it stays the writer's
    fields2 = read_lease(journal)
    assert fields2[1] == fields[1] and fields2[3] == "writer", (fields, fields2)
    assert int(fields2[5]) > int(fields[5]), "the writer's lease was not renewed"
    hold.touch()
    out, err = proc.communicate(timeout=120 * slow_factor())
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "close MLT_OK" in out, out
    wait_until(lambda: not journal_dirs(q.dir), 30, "the writer to remove its journal")
    relays.stop_all()
    assert "delivering it" not in relays.logs(), relays.logs()
    reader = MlflowReader(module_server.uri)
    _, runs = reader.runs_of_experiment_named(q.exp_name)
    assert sorted(r["info"]["run_name"] for r in runs) == ["run-0", "run-1"]


def test_a_writer_whose_server_is_away_keeps_its_journal_when_no_relay_serves_the_queue(
        queue_build_dir, exp_name, module_server, tmp_path):
    """The server away and no relay's mark in the queue: the writer keeps its journal's lease
    (renewed, never released) and retries on its own, with no hold-back for a relay. Its close
    returns MLT_ERR_QUEUED, and `mltrack sync` delivers what it logged."""
    q = Queue(queue_build_dir, tmp_path, exp_name, module_server.uri)
    hold = tmp_path / "hold"
    away = f"http://127.0.0.1:{_free_port()}"
    proc = q.start_it_queue(["--close-ms", "1000", "--hold", str(hold), "log", "1", "20"],
                            env=ENV, uri=away)
    wait_until(lambda: (tmp_path / "hold.ready").exists(), 120 * slow_factor(), "the writer")
    (journal,) = journal_dirs(q.dir)
    seen = []
    for _ in range(6):  # 3 s: more than a let-go's hold-back, and a few failed requests
        fields = read_lease(journal)
        assert fields[3] == "writer" and fields[6] != "released", fields
        assert int(fields[4]) == proc.pid or under_valgrind(), fields
        seen.append(fields)
        time.sleep(0.5)
    assert seen[-1][1] == seen[0][1], "the writer's lease changed hands"
    assert int(seen[-1][5]) > int(seen[0][5]), "the writer's lease was not renewed"
    assert seen[-1][6] == "away", seen[-1]  # it says so in its lease, and status shows it
    st = q.status()
    assert re.search(r"delivered by: the writer on \S+ \(pid \d+\), which finds the server away",
                     st.stdout), st.stdout
    hold.touch()
    out, err = proc.communicate(timeout=120 * slow_factor())
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "close MLT_ERR_QUEUED" in out, out
    assert not [f for f in os.listdir(q.dir) if f.startswith("relay-")]
    q.sync()
    reader = MlflowReader(module_server.uri)
    _, runs = reader.runs_of_experiment_named(q.exp_name)
    assert [r["info"]["run_name"] for r in runs] == ["run-0"], runs


def test_a_networkless_writer_closes_once_the_relay_delivered_or_at_once_when_it_cannot(
        queue_build_dir, exp_name, server_factory, tmp_path, relays_for):
    """With no network (and no tracking URI: the queue only), the writer's close returns
    MLT_ERR_QUEUED at once when no relay serves the queue, and MLT_OK as soon as the relay
    delivered its journal when one does; with the relay's server away, MLT_ERR_QUEUED at once,
    naming the relay. A relay stopped with SIGTERM gives its leases up: the next one takes over
    without waiting."""
    srv = server_factory()
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    no_uri = dict(ENV, MLFLOW_TRACKING_URI=None)  # the queue only: nothing else configured
    # 0: no tracking URI and no relay yet: kept in the queue, at once
    done, took = networkless_log(q, no_uri, 10)
    assert "close MLT_ERR_QUEUED" in done.stdout, (done.stdout, done.stderr)
    assert took < 30 * slow_factor(), f"the close waited {took:.1f} s"
    relays = relays_for(q)
    relays.start("a")
    wait_until(lambda: not journal_dirs(q.dir), 30 * slow_factor(),
               "the relay to deliver the journal of a writer that had no tracking URI")
    # 1: the relay delivers, the close waits for it (no tracking URI set either)
    done, took = networkless_log(q, no_uri, 30)
    assert "close MLT_OK" in done.stdout, (done.stdout, done.stderr)
    reader = MlflowReader(srv.uri)
    _, runs = reader.runs_of_experiment_named(q.exp_name)
    assert [r["info"]["status"] for r in runs] == ["FINISHED", "FINISHED"], runs
    wait_until(lambda: not journal_dirs(q.dir), 30 * slow_factor(),
               "the relay to remove the delivered journal")
    print(f"networkless writer: 30 points, closed MLT_OK after {took:.1f} s in all")
    # 2: the server away from the relay too: the close says so at once
    srv.stop()
    done, took = networkless_log(q, ENV, 30)
    assert "close MLT_ERR_QUEUED" in done.stdout, (done.stdout, done.stderr)
    assert took < 45 * slow_factor(), f"the close waited {took:.1f} s"
    (journal,) = journal_dirs(q.dir)
    fields = read_lease(journal)
    assert fields[3] == "relay" and fields[6] == "away", fields
    st = q.status()
    assert re.search(r"delivered by: the relay on \S+ \(pid \d+\), which finds the server "
                     r"away", st.stdout), st
    # 3: SIGTERM gives the lease up; the next relay delivers at once once the server is back
    relays.stop_all()
    fields = read_lease(journal)
    assert fields[6] == "released", fields
    srv.start()
    relays.start("b")
    wait_until(lambda: not journal_dirs(q.dir), (LEASE_MS / 1000 + 30) * slow_factor(),
               "the next relay to deliver the journal")
    relays.stop_all()
    _, runs = reader.runs_of_experiment_named(q.exp_name)
    assert [r["info"]["status"] for r in runs] == ["FINISHED"] * 3, runs


def test_mltrack_run_with_no_network_waits_for_the_relay_to_deliver(
        queue_build_dir, exp_name, module_server, tmp_path, relays_for):
    """`mltrack run` on a node with no network and no tracking URI, a relay serving the queue:
    it waits (up to --timeout) until the relay delivered the run, and says nothing is kept. Its
    wait is a series of short flushes (a signal cuts it short within 100 ms): a flush whose own
    deadline passes while the relay still delivers is a timeout, to be waited on, not "kept in
    the queue"."""
    q = Queue(queue_build_dir, tmp_path, exp_name, module_server.uri)
    relays = relays_for(q)
    relays.start("a")
    no_uri = dict(ENV, MLFLOW_TRACKING_URI=None)
    child = "for i in 1 2 3; do echo \"mltrack:metric loss=0.$i step=$i\"; sleep 0.3; done"
    cmd = ["unshare", "-n"] + q.programs.command(
        ["mltrack", "run", "--run-name", "relayed", "--timeout", str(60 * slow_factor()), "--",
         "sh", "-c", child])
    done = subprocess.run(cmd, env=q.programs.env(q.env(no_uri)), capture_output=True, text=True,
                          timeout=180 * slow_factor())
    assert done.returncode == 0, done.stderr
    assert "kept in the queue" not in done.stderr, done.stderr
    reader = MlflowReader(module_server.uri)
    _, runs = reader.runs_of_experiment_named(q.exp_name)
    assert [(r["info"]["run_name"], r["info"]["status"]) for r in runs] == [
        ("relayed", "FINISHED")], runs
    loss = [(step, value) for step, _, value in reader.full_metrics(runs[0])["loss"]]
    assert loss == [(1, 0.1), (2, 0.2), (3, 0.3)], loss
    relays.stop_all()


def test_a_requeued_networkless_job_resumes_its_run_through_the_shared_queue(
        queue_build_dir, exp_name, server_factory, tmp_path, relays_for, reliability):
    """A job with no network (no tracking URI: the queue alone), killed with SIGKILL and started
    again with the same key and MLTRACK_RESUME=allow, as a scheduler requeues it on other nodes
    sharing the queue; a relay delivers every attempt live. Each restart goes on from its own
    checkpoint (the last step that returned; the relay has delivered the rest, so the queue no
    longer knows). One run on the server, RUNNING again at each start, FINISHED at the end, every
    step once."""
    # not under valgrind (CI's time budget): the relay's paths are the networkless close test's,
    # and a resumed start's are test_resume's, which valgrind runs
    only_in("default", "asan", "tsan")
    from test_resume import STEPS, check_one_run  # noqa: PLC0415 - its checks, shared

    rng = random.Random(61206)
    kills = 6
    srv = server_factory()
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    relays = relays_for(q)
    relays.start("a")
    key = "job-" + exp_name[-10:]
    env = dict(ENV, MLFLOW_TRACKING_URI=None, MLTRACK_RUN_KEY=key, MLTRACK_RESUME="allow",
               IT_RESUME_TS_BASE="1700000000000", IT_RESUME_CLOSE_MS="60000")
    printed = set()
    statuses = []
    for n in range(kills + 1):
        e = dict(env, IT_RESUME_FROM=str(max(printed) + 1 if printed else 0))
        out_p, err_p = tmp_path / f"job-{n}.out", tmp_path / f"job-{n}.err"
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            cmd = ["unshare", "-n"] + q.programs.command(["tests/it_resume", str(STEPS), "15"])
            proc = subprocess.Popen(cmd, env=q.programs.env(q.env(e)), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err)
            if n < kills:
                # killed a moment after it logs (a start under valgrind takes seconds: the
                # moment is not scaled, or the attempt would run to its end first)
                wait_until(lambda: "step " in out_p.read_text(errors="replace") or
                           proc.poll() is not None, 120 * slow_factor(),
                           f"attempt {n} to log a step")
                time.sleep(rng.uniform(0.2, 0.8))
                proc.send_signal(signal.SIGKILL)
            rc = proc.wait(timeout=300 * slow_factor())
        text = out_p.read_text(errors="replace")
        assert rc in (0, -signal.SIGKILL), (rc, text[-1000:], err_p.read_text()[-2000:])
        printed |= {int(line.split()[1]) for line in text.splitlines()
                    if line.startswith("step ")}
        if n == kills:
            assert rc == 0 and "close MLT_OK" in text, (text[-1000:], err_p.read_text()[-2000:])
        else:
            assert rc == -signal.SIGKILL, f"attempt {n} ended before its kill: {text[-500:]}"
        # the run as the server has it between two attempts (the relay delivers the killed
        # attempt's journal once its lease lapses or it sees the writer gone)
        reader = MlflowReader(srv.uri)
        _, runs = reader.runs_of_experiment_named(q.exp_name)
        statuses.append(sorted(r["info"]["status"] for r in runs))
    wait_until(lambda: not journal_dirs(q.dir), 60 * slow_factor(),
               "the relay to deliver every attempt's journal")
    relays.stop_all()
    assert printed == set(range(STEPS)), sorted(set(range(STEPS)) - printed)[:20]
    check_one_run(srv.uri, q.exp_name, key, printed)
    assert all(len(s) <= 1 for s in statuses), f"more than one run at some point: {statuses}"
    print(f"requeued networkless job: {kills} kills, runs seen between attempts {statuses}")
    reliability("resume by key through the relay: a networkless job SIGKILLed and requeued",
                faults=kills, checked="server")


def test_a_relay_paused_past_its_lease_hands_over_and_stops(queue_build_dir, exp_name,
                                                            server_factory, tmp_path, relays_for,
                                                            reliability):
    """A relay stopped (SIGSTOP: a hung mount, a frozen VM) longer than its lease while it
    delivers a live journal: the other relay takes over after lease_ms and a settle time; when the
    first continues, it finds the newer generation and stops delivering that journal. The
    writer's ledger is on the server exactly: nothing lost, nothing twice."""
    only_in("default")  # CI's time: the lease's takeover is check_lease's, in every run
    srv = server_factory()
    q = Queue(queue_build_dir, tmp_path, exp_name, srv.uri)
    relays = relays_for(q)
    a = relays.start("a")
    proc, procs = writer(q, tmp_path, "w", {"IT_QUEUE_FOREVER_MAX_S": "12"}, threads=1,
                         per_run=40, delay_ms=10)
    (journal,) = wait_until(lambda: journal_dirs(q.dir), 30 * slow_factor(), "the journal")
    wait_until(lambda: lease_files(journal) and read_lease(journal)[3] == "relay",
               30 * slow_factor(), "relay a to take the journal up")
    b = relays.start("b")
    time.sleep(1)
    assert int(read_lease(journal)[4]) == a.pid, read_lease(journal)
    a.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: int(read_lease(journal)[4]) == b.pid,
                   (3 * LEASE_MS / 1000 + 10) * slow_factor(), "relay b to take over")
    finally:
        a.send_signal(signal.SIGCONT)
    rc = proc.wait(timeout=120 * slow_factor())
    assert rc == 0, (tmp_path / "w-w.err").read_text(errors="replace")[-2000:]
    wait_until(lambda: not journal_dirs(q.dir), 60 * slow_factor(),
               "the relays to deliver and remove the journal")
    relays.stop_all()
    logs = relays.logs()
    assert "another party delivers it now" in logs, logs
    reader = MlflowReader(srv.uri)
    by_key, extras, ledgers = assert_ledgers_on_server(reader, q.exp_name, procs)
    assert extras == 0, extras
    reliability("a relay paused (SIGSTOP) past its lease while delivering a live journal",
                faults=1, checked="server")
