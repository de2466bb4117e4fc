"""Artifacts through the durable queue, against a real MLflow server that proxies artifacts.

Each test logs files, directories and bytes with tests/it_artifact (the library) or
`mltrack log-artifact` (the command), then reads every artifact back through the server's artifact
proxy with urllib alone (mlflow_read.list_artifacts / read_artifact) and compares its SHA-256 with
the bytes as they were at the call.
"""

import hashlib
import json
import os
import random
import sys
import time
import unicodedata

import pytest

from conftest import slow_factor
from mlflow_read import artifact_digests, list_artifacts, read_artifact
from test_queue import Queue, journal_dirs, parse_sync  # noqa: F401 - helpers, not tests


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return sha(data)


def parse(res):
    """it_artifact's stdout: ([(action, err, msg)], run_key, run_id, close_err)."""
    calls, key, rid, close = [], None, None, None
    for line in res.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "run_key":
            key = rest
        elif word == "run_id":
            rid = rest
        elif word == "close":
            close = rest
        else:
            err, _, msg = rest.partition(" ")
            calls.append((word, err, msg))
    return calls, key, rid, close


@pytest.fixture
def queue_at(queue_build_dir, tmp_path, exp_name):
    return lambda uri: Queue(queue_build_dir, tmp_path, exp_name, uri)


def it_artifact(q, args, env=None, uri=None, timeout=300):
    return q.programs.run(["tests/it_artifact"] + [str(a) for a in args], env=q.env(env, uri),
                          timeout=timeout)


def the_run(reader, exp_name, name):
    _, runs = reader.runs_of_experiment_named(exp_name)
    mine = [r for r in runs if r["info"].get("run_name") == name]
    assert len(mine) == 1, f"expected one run {name!r}, found {len(mine)}"
    return mine[0]


def make_tree(base):
    """Files of every kind the tests log: {relative path: sha256}."""
    rng = random.Random(14)
    files = {
        "empty.bin": b"",
        "binary.bin": bytes(rng.getrandbits(8) for _ in range(300000)),
        "résumé ü.txt": "naïve café\n".encode(),
        "a b+c;d=e&f,g@h!.txt": b"needs encoding\n",
        "nested/deeper/still/leaf.json": b'{"k": [1, 2, 3]}\n',
        "nested/x.csv": b"a,b\n1,2\n",
    }
    return {p: write(os.path.join(base, p), d) for p, d in files.items()}


def test_files_directories_and_bytes_land_exactly(queue_at, tracking_uri, reader, tmp_path):
    q = queue_at(tracking_uri)
    src = str(tmp_path / "src")
    tree = make_tree(src)
    mut = str(tmp_path / "mutable.txt")
    gone = str(tmp_path / "gone.txt")
    mut_sha = write(mut, b"as logged\n")
    gone_sha = write(gone, b"deleted after the call\n")
    big = str(tmp_path / "big.bin")
    big_sha = write(big, os.urandom(20 << 20))
    res = it_artifact(q, [
        "run-a",
        "file", os.path.join(src, "binary.bin"), "-",
        "file", os.path.join(src, "résumé ü.txt"), "docs/ünïcode dir",
        "dir", src, "tree",
        "bytes", "config/params.json", '{"lr": 0.1}',
        "file", mut, "-", "change", mut, "changed after the call\n",
        "file", gone, "-", "delete", gone,
        "file", big, "large",
    ])
    calls, key, rid, close = parse(res)
    assert res.rc == 0 and all(c[1] == "MLT_OK" for c in calls), res
    assert close == "MLT_OK", res
    want = {"binary.bin": tree["binary.bin"],
            "docs/ünïcode dir/résumé ü.txt": tree["résumé ü.txt"],
            "config/params.json": sha(b'{"lr": 0.1}'),
            "mutable.txt": mut_sha, "gone.txt": gone_sha, "large/big.bin": big_sha}
    want.update({"tree/" + p: d for p, d in tree.items()})
    run = the_run(reader, q.exp_name, "run-a")
    got = artifact_digests(reader, run)
    got = {unicodedata.normalize("NFC", p): d for p, d in got.items()}
    assert got == want
    sizes = list_artifacts(reader, run)
    assert sizes.get("large/big.bin") == 20 << 20
    # delivered: nothing is left in the queue
    assert journal_dirs(q.dir) == [], os.listdir(q.dir)


def test_bad_input_is_refused_at_the_call_and_nothing_is_queued(queue_at, unused_port, tmp_path):
    q = queue_at(f"http://127.0.0.1:{unused_port}")  # nobody listens: everything would stay
    d = str(tmp_path / "d")
    os.makedirs(d)
    ok = str(tmp_path / "ok.txt")
    write(ok, b"ok")
    bad_tree = str(tmp_path / "badtree")
    write(os.path.join(bad_tree, "fine.txt"), b"fine")
    write(os.path.join(bad_tree, "no#hash.txt"), b"refused name")
    res = it_artifact(q, [
        "run-bad",
        "file", str(tmp_path / "missing.txt"), "-",
        "file", d, "-",
        "file", "/dev/null", "-",
        "file", ok, "/abs",
        "file", ok, "../up",
        "file", ok, "a//b",
        "bytes", "x#y", "z",
        "bytes", "pct%41", "z",
        "bytes", "", "z",
        "bytes", "dir/", "z",
        "dir", bad_tree, "-",
        "dir", ok, "-",
    ], env={"IT_ARTIFACT_CLOSE_MS": "0"})
    calls, key, rid, close = parse(res)
    errs = [c[1] for c in calls]
    assert errs == ["MLT_ERR_IO", "MLT_ERR_IO", "MLT_ERR_IO", "MLT_ERR_INVALID_ARG",
                    "MLT_ERR_INVALID_ARG", "MLT_ERR_INVALID_ARG", "MLT_ERR_INVALID_ARG",
                    "MLT_ERR_INVALID_ARG", "MLT_ERR_INVALID_ARG", "MLT_ERR_INVALID_ARG",
                    "MLT_ERR_INVALID_ARG", "MLT_ERR_IO"], res
    msgs = [c[2] for c in calls]
    assert "No such file or directory" in msgs[0]
    assert "is a directory" in msgs[1]
    assert "'#'" in msgs[6] and "no#hash.txt" in msgs[10], msgs
    # the run's create and end are queued; no artifact record and no snapshot is
    for j in journal_dirs(q.dir):
        art = os.path.join(j, "art")
        assert not os.path.isdir(art) or os.listdir(art) == [], os.listdir(art)


def test_offline_then_sync_uploads_what_was_logged(queue_at, unused_port, server_factory, reader,
                                                   tmp_path):
    port = unused_port
    q = queue_at(f"http://127.0.0.1:{port}")
    src = str(tmp_path / "src")
    tree = make_tree(src)
    f = str(tmp_path / "model.bin")
    f_sha = write(f, os.urandom(1 << 20))
    res = it_artifact(q, ["run-offline", "dir", src, "-", "file", f, "models", "change", f, "x"],
                      env={"IT_ARTIFACT_CLOSE_MS": "3000"})
    calls, key, rid, close = parse(res)
    assert all(c[1] == "MLT_OK" for c in calls) and close == "MLT_ERR_QUEUED", res
    [j] = journal_dirs(q.dir)
    assert len(os.listdir(os.path.join(j, "art"))) == len(tree) + 1
    srv = server_factory(port=port)
    res, summary = q.sync(uri=srv.uri)
    assert summary["rejected"] == 0, res
    rd = type(reader)(srv.uri)
    run = the_run(rd, q.exp_name, "run-offline")
    got = {unicodedata.normalize("NFC", p): d for p, d in artifact_digests(rd, run).items()}
    want = dict(tree)
    want["models/model.bin"] = f_sha
    assert got == want
    assert journal_dirs(q.dir) == []
    # a second sync has nothing to do: nothing is uploaded twice
    res, summary = q.sync(uri=srv.uri)
    assert summary["runs_created"] == 0 and summary["left"] == 0, res


def test_a_server_without_the_artifact_proxy_makes_dead_letters_that_say_so(
        queue_at, server_factory, reader, tmp_path):
    store = tmp_path / "plain-artifacts"
    srv = server_factory(extra_args=["--workers", "1", "--no-serve-artifacts",
                                     "--default-artifact-root", str(store)])
    q = queue_at(srv.uri)
    f = str(tmp_path / "plot.png")
    write(f, b"\x89PNG fake")
    res = it_artifact(q, ["run-noproxy", "file", f, "-", "bytes", "notes.txt", "hi"])
    calls, key, rid, close = parse(res)
    assert [c[1] for c in calls] == ["MLT_OK", "MLT_OK"] and close == "MLT_OK", res
    rd = type(reader)(srv.uri)
    run = the_run(rd, q.exp_name, "run-noproxy")
    assert run["info"]["status"] == "FINISHED"
    [j] = journal_dirs(q.dir)
    with open(os.path.join(j, "dead.jsonl"), encoding="utf-8") as fh:
        dead = [json.loads(line) for line in fh]
    assert sorted(d["path"] for d in dead) == ["notes.txt", "plot.png"]
    for d in dead:
        assert d["type"] == "artifact" and "--serve-artifacts" in d["answer"], d
        snap = os.path.join(j, d["snapshot"])
        with open(snap, "rb") as fh:
            assert sha(fh.read()) == d["sha256"]


def test_mltrack_log_artifact_logs_into_the_run_of_mltrack_run(queue_at, tracking_uri, reader,
                                                                 tmp_path):
    q = queue_at(tracking_uri)
    src = str(tmp_path / "out")
    tree = make_tree(src)
    f = str(tmp_path / "metrics.csv")
    f_sha = write(f, b"step,loss\n0,1.0\n")
    script = (f"mltrack log-artifact {f!r} && mltrack log-artifact {src!r} --artifact-path res"
              f" && echo changed > {f!r}")
    res = q.programs.run(["mltrack", "run", "--experiment", q.exp_name, "--run-name", "cli-art",
                          "--", "sh", "-c", script], env=q.env({"PATH": os.path.dirname(
                              q.programs.path("mltrack")) + os.pathsep + os.environ["PATH"]}))
    assert res.rc == 0, res
    run = the_run(reader, q.exp_name, "cli-art")
    got = {unicodedata.normalize("NFC", p): d for p, d in artifact_digests(reader, run).items()}
    want = {"res/out/" + p: d for p, d in tree.items()}
    want["metrics.csv"] = f_sha
    assert got == want


# ---- mltrack run: the console and --artifact -----------------------------------------------------

def mltrack_run(q, flags, script, env=None, timeout=300):
    return q.programs.run(["mltrack", "run", "--experiment", q.exp_name, *flags, "--", "sh", "-c",
                           script], env=q.env(env), timeout=timeout)


def console_pieces(reader, run):
    """The console pieces of a run, in order: [(name, bytes)]."""
    names = sorted(p for p in list_artifacts(reader, run) if p.startswith("logs/"))
    return [(n, read_artifact(reader, run, n)) for n in names]


def test_mltrack_run_keeps_50_mb_of_console_in_pieces_that_add_up(queue_at, tracking_uri, reader,
                                                                    tmp_path):
    q = queue_at(tracking_uri)
    # 50 MB on stdout, with lines on stderr between: every byte passes through and is kept
    script = ("i=0; while [ $i -lt 5 ]; do head -c 10000000 /dev/zero | tr '\\0' x; "
              "echo; echo \"err $i\" >&2; i=$((i+1)); done")
    res = q.programs.start(["mltrack", "run", "--experiment", q.exp_name, "--run-name", "big-out",
                            "--", "sh", "-c", script], env=q.env())
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err[-2000:]
    assert len(out) == 5 * 10000001 and out.count(b"x") == 5 * 10000000
    run = the_run(reader, q.exp_name, "big-out")
    pieces = console_pieces(reader, run)
    names = [n for n, _ in pieces]
    assert names == [f"logs/output-{i:06d}.log" for i in range(1, len(pieces) + 1)], names
    # pieces close once they hold 16 MiB (a read of the pipe at most past it), then the rest
    for _, d in pieces[:-1]:
        assert (16 << 20) <= len(d) <= (16 << 20) + 65536, len(d)
    assert len(pieces) == 3
    kept = b"".join(d for _, d in pieces)
    errs = [f"err {i}\n".encode() for i in range(5)]
    assert len(kept) == len(out) + sum(len(e) for e in errs)
    for e in errs:
        assert e in kept and e in err
    # stdout's bytes, in order, once stderr's lines are taken out
    for e in errs:
        kept = kept.replace(e, b"", 1)
    assert kept == out


def test_mltrack_run_without_capture_logs_no_console(queue_at, tracking_uri, reader):
    q = queue_at(tracking_uri)
    res = mltrack_run(q, ["--run-name", "quiet", "--no-capture"], "echo out; echo err >&2")
    assert res.rc == 0 and res.stdout == "out\n" and "err\n" in res.stderr, res
    run = the_run(reader, q.exp_name, "quiet")
    assert list_artifacts(reader, run) == {}


def test_mltrack_run_logs_artifact_globs_whatever_the_status(queue_at, tracking_uri, reader,
                                                           tmp_path):
    q = queue_at(tracking_uri)
    d = tmp_path / "work"
    d.mkdir()
    script = ("mkdir -p ckpt/sub && echo 1 > ckpt/a.pt && echo 2 > ckpt/b.pt && echo 3 > ckpt/sub/c && "
              "echo r > report.txt && exit 4")
    res = q.programs.run(["mltrack", "run", "--experiment", q.exp_name, "--run-name", "globs",
                          "--no-capture", "--artifact", "ckpt/*.pt", "--artifact", "report.*",
                          "--artifact", "ckpt/sub", "--artifact", "none-*", "--", "sh", "-c",
                          script], env=q.env(), cwd=str(d))
    assert res.rc == 4, res
    assert "--artifact none-*: no file matches" in res.stderr, res
    run = the_run(reader, q.exp_name, "globs")
    assert run["info"]["status"] == "FAILED"
    got = artifact_digests(reader, run)
    assert got == {"a.pt": sha(b"1\n"), "b.pt": sha(b"2\n"), "report.txt": sha(b"r\n"),
                   "sub/c": sha(b"3\n")}


def test_a_crash_of_mltrack_run_keeps_every_closed_piece_of_the_console(queue_at, tracking_uri,
                                                                          reader):
    q = queue_at(tracking_uri)
    script = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done"
    proc = q.programs.start(["mltrack", "run", "--experiment", q.exp_name, "--run-name",
                             "crashed", "--capture-every", "0.5", "--", "sh", "-c", script],
                            env=q.env())
    time.sleep(3 * slow_factor())
    proc.kill()  # SIGKILL: the piece being written is lost, the closed ones are in the queue
    proc.communicate(timeout=60)
    res, summary = q.sync()
    run = the_run(reader, q.exp_name, "crashed")
    pieces = console_pieces(reader, run)
    assert len(pieces) >= 2, pieces
    names = [n for n, _ in pieces]
    assert names == [f"logs/output-{i:06d}.log" for i in range(1, len(pieces) + 1)], names
    text = b"".join(d for _, d in pieces).decode()
    lines = text.splitlines()
    assert text.endswith("\n") and lines == [f"line {i}" for i in range(len(lines))], lines[-3:]


# ---- faults --------------------------------------------------------------------------------------

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fault_proxy import FaultProxy  # noqa: E402

# The largest artifact of the tests: 1 GiB in the default run of the integration tests, less
# under the sanitizers and valgrind (MLTRACK_TEST_LABEL, set by scripts/test.sh), where every byte
# is slower; MLTRACK_TEST_BIG_BYTES overrides.
BIG = int(os.environ.get("MLTRACK_TEST_BIG_BYTES") or (
    (1 << 30) if os.environ.get("MLTRACK_TEST_LABEL", "default") == "default" else (32 << 20)))


def big_file(path, size=BIG):
    """A file of random bytes (written in pieces; memory stays small); its sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            block = os.urandom(n)
            h.update(block)
            f.write(block)
            left -= n
    return h.hexdigest()


def server_port(uri):
    return int(uri.rsplit(":", 1)[1])


def test_an_upload_cut_halfway_completes_once_and_whole(queue_at, tracking_uri, reader,
                                                          tmp_path, reliability):
    with FaultProxy(server_port(tracking_uri)) as proxy:
        proxy.add_rule("/mlflow-artifacts/artifacts/", "cut_body", count=1, method="PUT")
        q = queue_at(proxy.uri)
        f = str(tmp_path / "big.bin")
        want = big_file(f)
        res = it_artifact(q, ["cut", "file", f, "-"], timeout=900)
        calls, key, rid, close = parse(res)
        assert calls == [("file", "MLT_OK", "")] and close == "MLT_OK", res
        puts = proxy.requests("/mlflow-artifacts/artifacts/")
        assert [p["action"] for p in puts] == ["cut_body", "pass"], puts
    run = the_run(reader, q.exp_name, "cut")
    assert artifact_digests(reader, run) == {"big.bin": want}
    assert list_artifacts(reader, run) == {"big.bin": BIG}
    reliability("an artifact upload cut halfway (fault proxy)", faults=1, checked="server")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_upload_is_a_dead_letter_that_requeue_brings_back(queue_at, tracking_uri, reader,
                                                                    tmp_path, status):
    f = str(tmp_path / "model.bin")
    want = write(f, os.urandom(100000))
    with FaultProxy(server_port(tracking_uri)) as proxy:
        proxy.add_rule("/mlflow-artifacts/artifacts/", "status", count=None, method="PUT",
                       status=status)
        q = queue_at(proxy.uri)
        res = it_artifact(q, ["refused", "file", f, "-", "bytes", "notes.txt", "kept"])
        calls, key, rid, close = parse(res)
        assert [c[1] for c in calls] == ["MLT_OK", "MLT_OK"] and close == "MLT_OK", res
        # one PUT each: a refusal is not tried again
        assert len(proxy.requests("/mlflow-artifacts/artifacts/")) == 2
    run = the_run(reader, q.exp_name, "refused")
    assert list_artifacts(reader, run) == {}
    [j] = journal_dirs(q.dir)
    with open(os.path.join(j, "dead.jsonl"), encoding="utf-8") as fh:
        dead = [json.loads(line) for line in fh]
    assert sorted(d["path"] for d in dead) == ["model.bin", "notes.txt"]
    assert all(str(status) in d["answer"] for d in dead), dead
    os.remove(f)  # the bytes are in the queue: the file is not needed any more
    res = q.programs.run(["mltrack", "requeue", "--queue", q.dir], env=q.env(), timeout=120)
    assert res.rc == 0, res
    res, summary = q.sync(uri=tracking_uri)  # the proxy is gone: straight to the server
    assert summary["rejected"] == 0, res
    assert artifact_digests(reader, run) == {"model.bin": want, "notes.txt": sha(b"kept")}
    assert journal_dirs(q.dir) == []


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def art_names(q):
    out = []
    for j in journal_dirs(q.dir):
        d = os.path.join(j, "art")
        out += os.listdir(d) if os.path.isdir(d) else []
    return out


def test_kill_9_during_the_snapshot_leaves_nothing_half_made(queue_at, tracking_uri, reader,
                                                              tmp_path, reliability):
    q = queue_at(tracking_uri)
    f = str(tmp_path / "big.bin")
    big_file(f, max(BIG, 256 << 20))  # its snapshot lasts long enough to be caught at it
    proc = q.programs.start(["tests/it_artifact", "snap-kill", "file", f, "-"], env=q.env())
    wait_for(lambda: any(n.startswith("tmp-") for n in art_names(q)), 120 * slow_factor(),
             "the snapshot to begin")
    proc.kill()
    proc.communicate(timeout=60)
    res, summary = q.sync()
    run = the_run(reader, q.exp_name, "snap-kill")
    # the call never returned: nothing is owed, and nothing half made is uploaded or left
    assert list_artifacts(reader, run) == {}
    assert run["info"]["status"] == "KILLED"
    assert journal_dirs(q.dir) == []
    reliability("kill -9 during an artifact's snapshot", faults=1, checked="server")


def test_kill_9_during_the_upload_then_sync_uploads_it_once_and_whole(queue_at, tracking_uri,
                                                                       reader, tmp_path,
                                                                       reliability):
    f = str(tmp_path / "big.bin")
    want = big_file(f)
    with FaultProxy(server_port(tracking_uri)) as proxy:
        # the upload is held at the proxy until the program is killed
        proxy.add_rule("/mlflow-artifacts/artifacts/", "delay", count=1, method="PUT", delay=600)
        q = queue_at(proxy.uri)
        proc = q.programs.start(["tests/it_artifact", "up-kill", "file", f, "-"], env=q.env())
        assert proxy.wait_for(lambda: proxy.requests("/mlflow-artifacts/artifacts/"),
                              300 * slow_factor()), "no upload began"
        proc.kill()
        proc.communicate(timeout=60)
        proxy.release()
    res, summary = q.sync(uri=tracking_uri)  # the proxy is gone: straight to the server
    run = the_run(reader, q.exp_name, "up-kill")
    assert artifact_digests(reader, run) == {"big.bin": want}
    assert journal_dirs(q.dir) == []
    reliability("kill -9 during an artifact's upload, then mltrack sync", faults=1,
                checked="server")
