"""Multipart uploads of large artifacts, against a real MLflow server whose artifact destination is
a real S3-compatible store on 127.0.0.1: the moto server (scripts/lib.sh, mlt_venv_s3), reached
through tests/fault_proxy.py, so that the parts (PUT straight to the store at the presigned URLs
the server hands out) can be cut and refused.

Every artifact is read back through the tracking server's artifact proxy with urllib alone
(mlflow_read) and compared by SHA-256 with the bytes at the call; what the store saw (parts,
completes, aborts, uploads left open) is read from the fault proxy's log and from the store's own
S3 answers.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import MlflowServer, _free_port, only_in
from mlflow_read import MlflowReader, artifact_digests, list_artifacts
from test_artifacts import it_artifact, parse, sha, the_run
from test_queue import Queue, journal_dirs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fault_proxy import FaultProxy  # noqa: E402

BUCKET = "mlt-artifacts"
CHUNK = 5 << 20  # S3's smallest part (but the last)
# what the tests' programs are told: parts of 5 MiB from 8 MiB up
MPU_ENV = {
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(8 << 20),
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(CHUNK),
}


def moto_server_path():
    path = os.environ.get("MLT_MOTO_SERVER") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mltrack", "venv-s3",
        "bin", "moto_server")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no moto server at {path}: scripts/test.sh installs it (mlt_venv_s3)")
    return path


def wait_http(url, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory):
    """The moto server on 127.0.0.1 with the bucket made; yields its port."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", no_proxy="127.0.0.1,localhost")
    proc = subprocess.Popen([moto_server_path(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 60)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def s3_server(s3_store, src_dir, tmp_path_factory):
    """A fault proxy in front of the store, and an MLflow server of the module's own whose
    artifacts go to the bucket through it (so the presigned URLs name the proxy)."""
    script = os.path.join(src_dir, "scripts", "mlflow-server.sh")
    with FaultProxy(s3_store) as proxy:
        srv = MlflowServer(
            script, tmp_path_factory.mktemp("mlflow-s3-server"),
            extra_args=["--workers", "1", "--artifacts-destination", f"s3://{BUCKET}/arts"],
            env={"MLFLOW_S3_ENDPOINT_URL": proxy.uri, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}).start()
        try:
            yield srv.uri, proxy
        finally:
            srv.stop()


class Seen:
    """What the store was sent during one test (the proxy's log from the test's start on)."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.start = len(proxy.requests())

    def requests(self, match=None):
        return [r for r in self.proxy.requests()[self.start:]
                if match is None or match in r["path"]]


@pytest.fixture
def s3_mlflow(s3_server):
    """(server uri, proxy with no rules, Seen of this test)."""
    uri, proxy = s3_server
    proxy.clear_rules()
    yield uri, proxy, Seen(proxy)
    proxy.clear_rules()


def parts_seen(seen):
    """{part number: [actions]} of the part PUTs the store was sent, in order."""
    out = {}
    for r in seen.requests("partNumber="):
        if r["method"] == "PUT":
            n = int(re.search(r"partNumber=(\d+)", r["path"]).group(1))
            out.setdefault(n, []).append(r["action"])
    return out


def open_uploads(port):
    """The multipart uploads the store still holds open (S3 ListMultipartUploads)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{BUCKET}?uploads", timeout=30) as r:
        body = r.read().decode()
    return re.findall(r"<UploadId>([^<]+)</UploadId>", body)


def big(path, size):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return sha(data)


def test_a_large_artifact_goes_in_parts_and_a_cut_part_is_sent_again_alone(
        s3_mlflow, s3_store, queue_build_dir, tmp_path, exp_name, reliability):
    uri, proxy, seen = s3_mlflow
    size = 4 * CHUNK + 12345  # five parts
    f = str(tmp_path / "model.ckpt")
    want = big(f, size)
    proxy.add_rule("partNumber=2", "cut_body", count=1, method="PUT")
    proxy.add_rule("partNumber=4", "status", count=1, method="PUT", status=503)
    q = Queue(queue_build_dir, tmp_path, exp_name, uri)
    res = it_artifact(q, ["mpu", "file", f, "ckpt"], env=MPU_ENV)
    calls, key, rid, close = parse(res)
    assert calls == [("file", "MLT_OK", "")] and close == "MLT_OK", res
    # each part once, but the cut one and the refused one: twice
    assert parts_seen(seen) == {1: ["pass"], 2: ["cut_body", "pass"], 3: ["pass"],
                                4: ["status", "pass"], 5: ["pass"]}
    # one upload made and completed by the server (S3 CreateMultipartUpload, Complete...)
    assert [r["method"] for r in seen.requests("?uploads")] == ["POST"]
    completes = [r for r in seen.requests("uploadId=") if r["method"] == "POST"]
    assert len(completes) == 1, completes
    assert open_uploads(s3_store) == []
    reader = MlflowReader(uri)
    run = the_run(reader, exp_name, "mpu")
    assert artifact_digests(reader, run) == {"ckpt/model.ckpt": want}
    assert list_artifacts(reader, run) == {"ckpt/model.ckpt": size}
    assert journal_dirs(q.dir) == []
    reliability("multipart: a part cut halfway and a part refused with 503", faults=2,
                checked="server")


def test_a_part_refused_for_good_aborts_the_upload_and_requeue_sends_it_again(
        s3_mlflow, s3_store, queue_build_dir, tmp_path, exp_name, reliability):
    uri, proxy, seen = s3_mlflow
    size = 2 * CHUNK + 7  # three parts
    f = str(tmp_path / "weights.bin")
    want = big(f, size)
    proxy.add_rule("partNumber=3", "status", count=None, method="PUT", status=403)
    q = Queue(queue_build_dir, tmp_path, exp_name, uri)
    res = it_artifact(q, ["refused", "file", f, "-"], env=MPU_ENV)
    calls, key, rid, close = parse(res)
    assert calls == [("file", "MLT_OK", "")] and close == "MLT_OK", res
    assert parts_seen(seen)[3] == ["status"]  # refused: not tried again
    # the server aborted the store's upload (S3 AbortMultipartUpload): nothing left open
    aborts = [r for r in seen.requests("uploadId=") if r["method"] == "DELETE"]
    assert len(aborts) == 1, seen.requests("uploadId=")
    assert open_uploads(s3_store) == []
    reader = MlflowReader(uri)
    run = the_run(reader, exp_name, "refused")
    assert list_artifacts(reader, run) == {}
    [j] = journal_dirs(q.dir)
    with open(os.path.join(j, "dead.jsonl"), encoding="utf-8") as fh:
        dead = [json.loads(line) for line in fh]
    assert [d["path"] for d in dead] == ["weights.bin"]
    assert "part 3 of 3" in dead[0]["answer"] and "aborted" in dead[0]["answer"], dead
    # the store takes it again: requeue, then sync delivers it whole
    proxy.clear_rules()
    os.remove(f)  # the bytes are in the queue
    res = q.programs.run(["mltrack", "requeue", "--queue", q.dir], env=q.env(MPU_ENV),
                         timeout=120)
    assert res.rc == 0, res
    res, summary = q.sync(env=MPU_ENV)
    assert summary["rejected"] == 0, res
    assert artifact_digests(reader, run) == {"weights.bin": want}
    assert open_uploads(s3_store) == []
    assert journal_dirs(q.dir) == []
    reliability("multipart: a part refused for good (aborted, requeued)", faults=1,
                checked="server")


def test_a_store_that_cannot_do_multipart_gets_one_put(queue_build_dir, tracking_uri, reader,
                                                      tmp_path, exp_name):
    """The shared server keeps artifacts in a local directory: asked for multipart anyway
    (MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true), it answers 501, and the file goes whole."""
    only_in("default")  # no thread, no part: the single PUT every artifact test makes
    f = str(tmp_path / "local.bin")
    want = big(f, 9 << 20)
    q = Queue(queue_build_dir, tmp_path, exp_name, tracking_uri)
    env = dict(MPU_ENV, MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true")
    res = it_artifact(q, ["local", "file", f, "-"], env=env)
    calls, key, rid, close = parse(res)
    assert calls == [("file", "MLT_OK", "")] and close == "MLT_OK", res
    run = the_run(reader, exp_name, "local")
    assert artifact_digests(reader, run) == {"local.bin": want}
