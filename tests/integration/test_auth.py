"""Auth for real: MLflow's own authentication (`mlflow server --app-name basic-auth`), with users
made through its REST API. Basic auth from MLFLOW_TRACKING_USERNAME/PASSWORD delivers; a bearer
token (MLFLOW_TRACKING_TOKEN) is sent as "Authorization: Bearer" (the server's authorization
function, tests/integration/mlt_test_auth.py, accepts a known token and nothing else in that
header); a wrong password or a user without permission on the experiment is a permanent error:
dead letters, not an endless retry, and the rest of the queue is delivered. The credentials reach
no file of the queue, no dead letter, no log line or error message, no argv of the child of
`mltrack run` and nothing the server keeps."""

import base64
import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import VERIFIED, MlflowServer, only_in
from mlflow_read import MlflowError, MlflowReader
from test_queue import (Queue, assert_server_holds_exactly, expected_runs, journal_dirs,
                        parse_it_queue, read_ledger)

ADMIN = "admin"
# distinctive, so that a grep finds them anywhere they leak to
ADMIN_PW = "adm-" + uuid.uuid4().hex
ALICE_PW = "alice-pw-" + uuid.uuid4().hex
BOB_PW = "bob-pw-" + uuid.uuid4().hex
CAROL_TOKEN = "carol-token-" + uuid.uuid4().hex
WRONG_PW = "wrong-pw-" + uuid.uuid4().hex
SECRETS = (ADMIN_PW, ALICE_PW, BOB_PW, CAROL_TOKEN, WRONG_PW)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AuthServer:
    """An MLflow server with basic auth, of the module's own, and an admin's reader."""

    def __init__(self, src_dir, d):
        config = os.path.join(d, "auth.ini")
        with open(config, "w") as f:
            f.write(f"""[mlflow]
default_permission = READ
database_uri = sqlite:///{d}/basic_auth.db
admin_username = {ADMIN}
admin_password = {ADMIN_PW}
authorization_function = mlt_test_auth:authenticate
""")
        here = os.path.dirname(os.path.abspath(__file__))
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": config,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
            "MLT_TEST_BEARER_TOKENS": f"{CAROL_TOKEN}:carol",
            "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.server = MlflowServer(os.path.join(src_dir, "scripts", "mlflow-server.sh"),
                                   os.path.join(d, "server"),
                                   extra_args=["--app-name", "basic-auth", "--workers", "1"],
                                   env=env)
        self.server.start()
        self.admin = MlflowReader(self.server.uri, authorization=basic(ADMIN, ADMIN_PW))
        for user, pw in (("alice", ALICE_PW), ("bob", BOB_PW), ("carol", "c-" + uuid.uuid4().hex)):
            self.admin.post("users/create", {"username": user, "password": pw})

    @property
    def uri(self):
        return self.server.uri


@pytest.fixture(scope="module")
def auth(src_dir, tmp_path_factory):
    try:
        import flask_wtf  # noqa: F401 - the basic-auth app needs it (mlflow[auth])
    except ImportError:
        pytest.fail("the venv lacks mlflow[auth] (Flask-WTF): scripts/test.sh installs it")
    srv = AuthServer(src_dir, str(tmp_path_factory.mktemp("auth")))
    yield srv
    srv.server.stop()


@pytest.fixture
def q(queue_build_dir, tmp_path, exp_name, auth):
    return Queue(queue_build_dir, tmp_path, exp_name, auth.uri)


def alice(extra=None):
    env = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": ALICE_PW}
    env.update(extra or {})
    return env


def dead_letters(queue):
    out = []
    for j in journal_dirs(queue):
        path = os.path.join(j, "dead.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                out += [json.loads(line) for line in f if line.strip()]
    return out


def landed(auth, exp_name):
    try:
        _, runs = auth.admin.runs_of_experiment_named(exp_name)
    except MlflowError as e:
        if e.status == 404:
            return []
        raise
    return runs


def check_delivered(auth, q, ledger):
    runs = expected_runs(read_ledger(ledger))
    assert runs, "the ledger is empty"
    assert_server_holds_exactly(auth.admin, q.exp_name, runs)


def test_the_server_refuses_requests_without_credentials(auth):
    with pytest.raises(MlflowError) as e:
        MlflowReader(auth.uri).get("experiments/get-by-name", experiment_name="Default")
    assert e.value.status == 401


def test_basic_auth_from_the_environment_delivers_everything(auth, q):
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "60000", "log", "2", "200"], env=alice())
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["close"][0] == "MLT_OK" and out["stats"]["rejected"] == 0, res
    check_delivered(auth, q, ledger)


def test_a_bearer_token_is_sent_as_authorization_bearer(auth, q):
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "60000", "log", "1", "100"],
                     env={"MLFLOW_TRACKING_TOKEN": CAROL_TOKEN})
    assert res.rc == 0, res
    assert parse_it_queue(res)["stats"]["rejected"] == 0, res
    check_delivered(auth, q, ledger)


def test_basic_auth_wins_over_the_token(auth, q):
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--close-ms", "60000", "log", "1", "10"],
                     env=alice({"MLFLOW_TRACKING_TOKEN": "not-a-token"}))
    assert res.rc == 0 and parse_it_queue(res)["stats"]["rejected"] == 0, res
    check_delivered(auth, q, ledger)


@pytest.mark.parametrize("how", ["password", "token"])
def test_wrong_credentials_are_dead_letters_not_an_endless_retry(auth, q, how, reliability):
    env = (alice({"MLFLOW_TRACKING_PASSWORD": WRONG_PW}) if how == "password"
           else {"MLFLOW_TRACKING_TOKEN": WRONG_PW})
    ledger = str(q.tmp / "ledger.jsonl")
    # a flush that waits up to a minute: MLT_OK once nothing is left to retry
    res = q.it_queue(["--ledger", ledger, "--verbose", "--flush-ms", "60000", "log", "2", "30"],
                     env=env)
    assert res.rc == 0, res
    out = parse_it_queue(res)
    assert out["flush"][0] == "MLT_OK", f"delivery was still retrying: {res!r}"
    st = out["stats"]
    n = len(read_ledger(ledger))
    assert st["queued"] == n and st["rejected"] == n and st["acknowledged"] == 0, st
    assert st["bytes_pending"] == 0, st
    dead = dead_letters(q.dir)
    assert len(dead) == n, f"{len(dead)} dead letters for {n} records"
    assert sorted(d["type"] for d in dead if d["type"] in ("create_run", "end_run")) == [
        "create_run", "create_run", "end_run", "end_run"], dead
    creates = [d for d in dead if d["type"] == "create_run"]
    assert all("401" in d["answer"] for d in creates), creates
    # a clear error: the library says what the server answered
    assert "MLT_ERR_AUTH" in res.stderr or "401" in res.stderr, res
    assert landed(auth, q.exp_name) == []
    VERIFIED["runs"] += 2
    VERIFIED["points"] += sum(d["type"] == "metric" for d in dead)
    reliability(f"wrong credentials ({how}): dead letters, no endless retry",
                checked="dead letters")


def test_dead_letters_of_a_wrong_password_are_requeued_and_land_once_it_is_right(auth, q,
                                                                                reliability):
    """The records refused for a wrong password are all in dead.jsonl, whole: `mltrack requeue`
    puts them back and `mltrack sync` with the right password delivers exactly what was logged
    (run names, start and end times, tags, every point), once."""
    ledger = str(q.tmp / "ledger.jsonl")
    res = q.it_queue(["--ledger", ledger, "--flush-ms", "60000", "log", "2", "100"],
                     env=alice({"MLFLOW_TRACKING_PASSWORD": WRONG_PW}))
    assert res.rc == 0, res
    n = len(read_ledger(ledger))
    assert len(dead_letters(q.dir)) == n
    requeue = q.programs.run(["mltrack", "requeue", "--queue", q.dir], env=q.env(), timeout=60)
    assert requeue.rc == 0, requeue
    assert f"requeued: {n}\nkept: 0\n" in requeue.stdout, requeue
    assert dead_letters(q.dir) == [], "the dead letters were not taken out"
    res, summary = q.sync(env=alice())
    assert summary["rejected"] == 0 and summary["runs_created"] == 2, res
    check_delivered(auth, q, ledger)
    again = q.programs.run(["mltrack", "requeue", "--queue", q.dir], env=q.env(), timeout=60)
    assert again.rc == 0 and "requeued: 0\n" in again.stdout, again
    reliability("wrong password, then `mltrack requeue` and `mltrack sync` with the right one")


def test_no_permission_dead_letters_that_run_and_the_rest_of_the_queue_lands(auth, q, tmp_path,
                                                                            reliability):
    """Two journals made while the server is away: bob's run in an experiment he may only read
    and bob's run in one of his own. `mltrack sync` as bob sets the first aside and delivers the
    second."""
    denied = f"{q.exp_name}-admins"
    auth.admin.create_experiment(denied)  # bob has the default READ on it
    bob = {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": BOB_PW}
    ledgers = {"denied": str(tmp_path / "denied.jsonl"), "own": str(tmp_path / "own.jsonl")}
    auth.server.stop()
    try:
        for which, exp in (("denied", denied), ("own", q.exp_name)):
            res = q.it_queue(["--ledger", ledgers[which], "--close-ms", "0", "log", "1", "50"],
                             env=dict(bob, MLFLOW_EXPERIMENT_NAME=exp))
            assert res.rc == 0, res
    finally:
        auth.server.start()
    assert len(journal_dirs(q.dir)) == 2, journal_dirs(q.dir)
    res, summary = q.sync(env=bob)
    n_denied = len(read_ledger(ledgers["denied"]))
    assert summary["runs_created"] == 1 and summary["rejected"] == n_denied, res
    assert summary["left"] == 0 and summary["delivered"], res
    assert res.stdout.count("dead letters: ") == 1, res
    dead = dead_letters(q.dir)
    assert len(dead) == n_denied, dead
    (create,) = [d for d in dead if d["type"] == "create_run"]
    assert "403" in create["answer"] and "Permission denied" in create["answer"], create
    assert landed(auth, denied) == []
    check_delivered(auth, q, ledgers["own"])
    reliability("no permission on the experiment (403): that run set aside, the rest lands")


def test_credentials_reach_no_file_log_error_argv_or_server_field(auth, q, tmp_path):
    """Everything the programs leave behind, with the credentials in every form they take,
    grepped for the secrets (as text and base64-encoded in a Basic header)."""
    # not under valgrind (CI's time budget): the same programs and paths as the other auth tests,
    # which valgrind runs; what this one checks is the text they leave, the same in every build
    only_in("default", "asan", "tsan")
    outputs = []
    argv_file = tmp_path / "child-argv"
    # mltrack run: alice's password, a verbose wrapper, a child that records its argv
    res = q.programs.run(
        ["mltrack", "--verbose", "run", "--experiment", q.exp_name, "--param", "p=1", "--",
         "sh", "-c", f"tr '\\0' ' ' </proc/$$/cmdline >{argv_file}; echo 'mltrack:metric m=1'"],
        env=q.env(alice()), timeout=120)
    assert res.rc == 0, res
    outputs.append(res)
    # mltrack run with a wrong password: the child runs, the run is refused and set aside
    res = q.programs.run(["mltrack", "--verbose", "run", "--experiment", q.exp_name, "--", "true"],
                         env=q.env(alice({"MLFLOW_TRACKING_PASSWORD": WRONG_PW})), timeout=120)
    assert res.rc == 0 and "refused" in res.stderr and "401" in res.stderr, res
    outputs.append(res)
    # wrong password and wrong token: the errors, verbose, and their dead letters
    for env in (alice({"MLFLOW_TRACKING_PASSWORD": WRONG_PW}),
                {"MLFLOW_TRACKING_TOKEN": CAROL_TOKEN + "x"},
                {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": BOB_PW,
                 "MLFLOW_EXPERIMENT_NAME": "Default"}):
        res = q.it_queue(["--verbose", "--close-ms", "60000", "log", "1", "5"], env=env)
        assert res.rc == 0, res
        outputs.append(res)
    # the user:password@ form of the URI, offline then synced, and the status
    user_uri = auth.uri.replace("http://", f"http://alice:{ALICE_PW}@")
    res = q.it_queue(["--verbose", "--close-ms", "0", "log", "1", "5"],
                     env={"MLFLOW_TRACKING_URI": user_uri})
    outputs.append(res)
    res, summary = q.sync(uri=user_uri, env={"MLFLOW_TRACKING_URI": user_uri})
    outputs.append(res)
    outputs.append(q.programs.run(["mltrack", "--verbose", "status", "--queue", q.dir],
                                  env=q.env(alice()), timeout=60))
    assert summary["rejected"] == 0, res

    encoded = [base64.b64encode(f"{u}:{p}".encode()).decode()
               for u, p in (("alice", ALICE_PW), ("bob", BOB_PW), ("alice", WRONG_PW))]
    needles = [s.encode() for s in SECRETS + tuple(encoded)]

    def leaks(what, data):
        found = [n.decode() for n in needles if n in data]
        assert not found, f"{what} holds a credential: {found}"

    files = 0
    for root, _, names in os.walk(q.dir):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                leaks(os.path.join(root, name), f.read())
            files += 1
    assert files > 0 and dead_letters(q.dir), "nothing to look at: no journal, no dead letter"
    for res in outputs:
        leaks(f"the output of {' '.join(res.cmd)}", (res.stdout + res.stderr).encode())
    argv = argv_file.read_bytes()
    assert b"sh -c" in argv, argv
    leaks("the argv of mltrack run's child", argv)
    # what the server keeps of the runs: params, tags (mltrack.command...), run names
    _, runs = auth.admin.runs_of_experiment_named(q.exp_name)
    assert runs
    leaks("the runs on the server", json.dumps(runs).encode())
