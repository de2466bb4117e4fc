"""Fixtures of the integration tests (run by `make check-integration`).

Environment (the harness contract):
  MLTRACK_TEST_TRACKING_URI  the running MLflow server; the tests skip when it is unset
  MLTRACK_BUILD_DIR          absolute build directory (examples/*, tests/it_client)
  MLTRACK_SRC_DIR            source directory (for the public header)
  MLTRACK_TEST_WRAPPER       optional command prefix for every C program, e.g. a valgrind command
                             line (split with shlex); its error exit fails the test
  MLTRACK_TEST_SERVER_DIR    optional state directory of the server (not needed here)
  MLTRACK_RELIABILITY_LOG    optional file: each passing fault test (fixture `reliability`)
                             appends one JSON line with its figures (scripts/reliability-report.py)
"""

import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid

import pytest

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__ where we can

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlflow_read import MlflowReader  # noqa: E402

PROGRAMS = {
    "train_model": "examples/train_model",
    "train_jsonl": "examples/train_jsonl",
    "train_callbacks": "examples/train_callbacks",
    "train_cpp": "examples/train_cpp",
    "it_client": "tests/it_client",
}

# What a sanitizer prints when it finds something (ASan, LSan, UBSan builds).
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _wrapper():
    return shlex.split(os.environ.get("MLTRACK_TEST_WRAPPER", "") or "")


def under_valgrind():
    w = _wrapper()
    return any(os.path.basename(a) == "valgrind" for a in w[:1])


def only_in(*labels):
    """Skips the calling test unless this run of the integration tests (MLTRACK_TEST_LABEL, set by
    scripts/test.sh: default, asan, tsan, valgrind) is one of labels: a slow test whose paths the
    other runs cover, kept out of CI's time budget."""
    label = os.environ.get("MLTRACK_TEST_LABEL", "default")
    if label not in labels:
        pytest.skip(f"run only in the {' and '.join(labels)} run{'s' if len(labels) > 1 else ''} "
                    f"of the integration tests (this is {label}): CI's time budget")


def slow_factor():
    """How much slower the programs run under the wrapper (timeouts only, never assertions)."""
    return 5 if _wrapper() else 1


def _free_port():
    """A TCP port on 127.0.0.1 nobody listens on (bound and released at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def tracking_uri():
    uri = os.environ.get("MLTRACK_TEST_TRACKING_URI", "")
    if not uri:
        pytest.skip("MLTRACK_TEST_TRACKING_URI is not set: no MLflow server to test against")
    return uri.rstrip("/")


@pytest.fixture(scope="session")
def reader(tracking_uri):
    r = MlflowReader(tracking_uri)
    deadline = time.monotonic() + 30
    while True:
        try:
            if r.health() == "OK":
                return r
        except OSError as e:
            err = e
        else:
            err = "health did not answer OK"
        if time.monotonic() > deadline:
            pytest.fail(f"the MLflow server at {tracking_uri} does not answer /health: {err}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def build_dir():
    d = os.environ.get("MLTRACK_BUILD_DIR", "")
    if not d:
        pytest.fail("MLTRACK_BUILD_DIR is not set (run through `make check-integration`)")
    d = os.path.abspath(d)
    missing = [p for p in PROGRAMS.values() if not os.access(os.path.join(d, p), os.X_OK)]
    if missing:
        pytest.fail(f"programs missing in {d}: {', '.join(missing)} (build them first)")
    return d


@pytest.fixture(scope="session")
def src_dir():
    d = os.environ.get("MLTRACK_SRC_DIR", "")
    if not d:
        d = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    return os.path.abspath(d)


class Result:
    def __init__(self, cmd, rc, stdout, stderr, elapsed):
        self.cmd, self.rc, self.stdout, self.stderr, self.elapsed = cmd, rc, stdout, stderr, elapsed

    def __repr__(self):
        return (
            f"<{' '.join(self.cmd)}: exit {self.rc} after {self.elapsed:.1f} s\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}>"
        )


def _check_tools(res):
    """Fails the test when the wrapper (valgrind) or a sanitizer found an error."""
    if _wrapper() and under_valgrind() and res.rc == 99:
        pytest.fail(f"valgrind found errors (exit 99): {res!r}")
    for mark in SANITIZER_MARKS:
        if mark in res.stderr:
            pytest.fail(f"a sanitizer found an error ({mark!r}): {res!r}")


class Programs:
    """Runs the C programs with MLTRACK_TEST_WRAPPER in front and a clean MLflow environment."""

    def __init__(self, build_dir, tracking_uri):
        self.build_dir = build_dir
        self.tracking_uri = tracking_uri

    def path(self, name):
        return os.path.join(self.build_dir, PROGRAMS.get(name, name))

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTRACK_IT_"))}
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        for var in ("no_proxy", "NO_PROXY"):
            env[var] = "127.0.0.1,localhost" + ("," + env[var] if env.get(var) else "")
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def command(self, args):
        args = [str(a) for a in args]
        prog = args[0] if os.path.isabs(args[0]) else self.path(args[0])
        return _wrapper() + [prog] + args[1:]

    def start(self, args, env=None, cwd=None):
        cmd = self.command(args)
        proc = subprocess.Popen(
            cmd,
            env=self.env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.mlt_cmd = cmd
        proc.mlt_t0 = time.monotonic()
        return proc

    def wait(self, proc, timeout=None):
        timeout = (timeout or 120) * slow_factor()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            res = Result(proc.mlt_cmd, None, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"), time.monotonic() - proc.mlt_t0)
            pytest.fail(f"did not finish within {timeout} s (hang?): {res!r}")
        res = Result(proc.mlt_cmd, proc.returncode, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"), time.monotonic() - proc.mlt_t0)
        _check_tools(res)
        return res

    def run(self, args, env=None, cwd=None, timeout=None):
        """Runs a program to its end: a Result (rc, stdout, stderr, elapsed). timeout is in
        seconds without a wrapper; it is multiplied when a wrapper (valgrind) slows things."""
        return self.wait(self.start(args, env=env, cwd=cwd), timeout=timeout)


@pytest.fixture(scope="session")
def programs(build_dir, tracking_uri):
    return Programs(build_dir, tracking_uri)


@pytest.fixture
def run_prog(programs):
    """run_prog(args, env=..., cwd=..., timeout=...) -> Result; args[0] is a program name
    (train_model, train_jsonl, train_callbacks, it_client) or an absolute path."""
    return programs.run


@pytest.fixture
def exp_name(request):
    """A new, unique experiment name for the test."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")[:120]
    return f"mltrack-it-{base}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ledger_path(tmp_path):
    return str(tmp_path / "ledger.jsonl")


@pytest.fixture(scope="session")
def server_keeps_negative_zero(reader):
    """Whether the server itself gives -0.0 back as -0.0 (probed with a plain REST write)."""
    exp_id = reader.create_experiment(f"mltrack-it-probe-negzero-{uuid.uuid4().hex[:10]}")
    run = reader.post("runs/create", {"experiment_id": exp_id, "start_time": 1})["run"]
    run_id = run["info"]["run_id"]
    reader.post(
        "runs/log-batch",
        {"run_id": run_id, "metrics": [{"key": "z", "value": -0.0, "timestamp": 1, "step": 0}]},
    )
    (point,) = reader.metric_history(run_id, "z")
    reader.delete_experiment(exp_id)
    return math.copysign(1.0, point["value"]) < 0


def _git_head(path):
    """`git rev-parse HEAD` of the work tree holding path, or None when it is in none."""
    d = path if os.path.isdir(path) else os.path.dirname(path)
    try:
        inside = subprocess.run(
            ["git", "-C", d, "rev-parse", "--is-inside-work-tree"],
            capture_output=True, text=True, timeout=30,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        head = subprocess.run(
            ["git", "-C", d, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() if head.returncode == 0 else None


@pytest.fixture(scope="session")
def git_head():
    """git_head(path): `git rev-parse HEAD` of the work tree holding path, or None."""
    return _git_head


@pytest.fixture
def unused_port():
    """A port on 127.0.0.1 that nobody listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def valgrind():
    """True when the programs run under valgrind (MLTRACK_TEST_WRAPPER)."""
    return under_valgrind()


# ---- MLflow servers of a test's own (the durable queue's tests stop and restart them) ----------

QUEUE_PROGRAMS = ("tests/it_queue", "tests/it_artifact", "tests/it_resume", "mltrack")


class MlflowServer:
    """A server of the test's own, driven by scripts/mlflow-server.sh: state in state_dir, on a
    fixed port once known (a restart keeps the port and the sqlite data). Never the shared server
    of the session (MLTRACK_TEST_TRACKING_URI)."""

    def __init__(self, script, state_dir, port=None, extra_args=None, env=None):
        self.script = script
        self.state_dir = str(state_dir)
        self.port = port
        self.extra_env = dict(env or {})  # for the server (e.g. MLFLOW_AUTH_CONFIG_PATH)
        if extra_args is None:
            extra_args = shlex.split(
                os.environ.get("MLTRACK_TEST_QUEUE_SERVER_ARGS", "--workers 1"))
        self.extra_args = list(extra_args)
        self.running = False

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.port}"

    def _env(self):
        env = dict(os.environ)
        bindir = os.path.dirname(sys.executable)
        if not env.get("MLT_MLFLOW") and os.access(os.path.join(bindir, "mlflow"), os.X_OK):
            env["MLT_MLFLOW"] = os.path.join(bindir, "mlflow")  # pytest runs in the server's venv
        env.setdefault("MLT_PYTHON", sys.executable)
        for var in ("no_proxy", "NO_PROXY"):
            env[var] = "127.0.0.1,localhost" + ("," + env[var] if env.get(var) else "")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        env.setdefault("DO_NOT_TRACK", "true")
        env.update(self.extra_env)
        return env

    def start(self, timeout=240):
        cmd = [self.script, "start", self.state_dir]
        if self.port:
            cmd.append(str(self.port))
        cmd += ["--"] + self.extra_args
        res = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        uri = res.stdout.strip().splitlines()[-1]
        self.port = int(uri.rsplit(":", 1)[1])
        self.running = True
        return self

    def stop(self, timeout=60):
        res = subprocess.run([self.script, "stop", self.state_dir], env=self._env(),
                             capture_output=True, text=True, timeout=timeout)
        self.running = False
        if res.returncode != 0:
            raise RuntimeError(f"stopping the server of {self.state_dir} failed:\n{res.stderr}")


@pytest.fixture
def server_factory(src_dir, tmp_path_factory):
    """server_factory(port=None, start=True, extra_args=None, env=None) -> MlflowServer of the
    test's own (extra_args: of `mlflow server`, default MLTRACK_TEST_QUEUE_SERVER_ARGS; env: more
    variables for the server); every server it made is stopped when the test ends."""
    made = []
    script = os.path.join(src_dir, "scripts", "mlflow-server.sh")

    def make(port=None, start=True, extra_args=None, env=None):
        srv = MlflowServer(script, tmp_path_factory.mktemp("mlflow-server"), port=port,
                           extra_args=extra_args, env=env)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        try:
            srv.stop()
        except Exception as e:  # noqa: BLE001 - teardown goes on with the other servers
            print(f"warning: {e}", file=sys.stderr)


@pytest.fixture(scope="module")
def module_server(src_dir, tmp_path_factory):
    """A server of the test module's own, started once for the module (never stopped by tests)."""
    script = os.path.join(src_dir, "scripts", "mlflow-server.sh")
    srv = MlflowServer(script, tmp_path_factory.mktemp("mlflow-module-server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def queue_build_dir(build_dir):
    """The build directory, with the durable queue's programs (tests/it_queue, mltrack) built."""
    missing = [p for p in QUEUE_PROGRAMS if not os.access(os.path.join(build_dir, p), os.X_OK)]
    if missing:
        pytest.fail(f"programs missing in {build_dir}: {', '.join(missing)} (build them first)")
    return build_dir


# ---- the figures of the fault tests (docs/reliability.md) ----------------------------------------

# What the read-back helpers verified during the current test: runs and metric points found on the
# server exactly as logged (assert_server_holds_exactly and the crash test add to it).
VERIFIED = {"runs": 0, "points": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.mlt_passed = rep.passed


@pytest.fixture
def reliability(request):
    """reliability(fault, faults=1, trials=1, checked="server"): the test injects `fault`; once it
    has PASSED, one line goes to $MLTRACK_RELIABILITY_LOG with the runs and points its read-back
    verified (on the server, or where `checked` says). lost
    and duplicated are 0 because the read-back asserts exactly that (a failing test writes
    nothing)."""
    VERIFIED.update(runs=0, points=0)
    notes = []

    def note(fault, faults=1, trials=1, checked="server"):
        notes.append({"fault": fault, "faults": faults, "trials": trials, "checked": checked})

    yield note
    path = os.environ.get("MLTRACK_RELIABILITY_LOG")
    if not path or not notes or not getattr(request.node, "mlt_passed", False):
        return
    with open(path, "a", encoding="utf-8") as f:
        for n in notes:
            f.write(json.dumps(dict(n, test=request.node.nodeid, runs=VERIFIED["runs"],
                                    points=VERIFIED["points"], lost=0, duplicated=0,
                                    wrapper=" ".join(_wrapper()[:1]))) + "\n")
