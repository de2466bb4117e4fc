"""TLS for real: Debian's nginx, with certificates of a CA made here, terminates TLS in front of
the real MLflow server (plain HTTP behind it, read back directly). Verification is on by
default, so a server signed by an unknown CA is refused with a clear error;
MLFLOW_TRACKING_SERVER_CERT_PATH makes it work; MLFLOW_TRACKING_INSECURE_TLS works and says so
once; a client certificate (MLFLOW_TRACKING_CLIENT_CERT_PATH) is presented when asked."""

import os
import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import Programs, _free_port
from mlflow_read import MlflowReader

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(d):
    """ca.pem/ca.key; server.pem/server.key for 127.0.0.1; client.pem (certificate and key)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=mltrack test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=mltrack test {name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
                 f"{name}.pem", cwd=d)
    with open(os.path.join(d, "client-bundle.pem"), "w") as out:
        for part in ("client.pem", "client.key"):
            with open(os.path.join(d, part)) as f:
                out.write(f.read())


class Nginx:
    """nginx in the foreground: port `open` serves TLS to anyone, port `mutual` asks for a client
    certificate of the test CA; both proxy to the plain-HTTP MLflow server."""

    def __init__(self, d, upstream):
        self.d = d
        self.open = _free_port()
        self.mutual = _free_port()
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
        proxy = (f"location / {{ proxy_pass {upstream}; proxy_http_version 1.1; "
                 f"proxy_set_header Connection \"\"; client_max_body_size 64m; }}")
        tls = f"ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;"
        conf = f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{ listen 127.0.0.1:{self.open} ssl; {tls} {proxy} }}
    server {{
        listen 127.0.0.1:{self.mutual} ssl; {tls}
        ssl_client_certificate {d}/ca.pem; ssl_verify_client on;
        {proxy}
    }}
}}
"""
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-c", self.conf, "-p", d, "-e", f"{d}/error.log"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                for port in (self.open, self.mutual):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace")
                    pytest.fail(f"nginx did not start: {err}")
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def tls(tmp_path_factory, tracking_uri):
    if not os.access(NGINX, os.X_OK):
        pytest.fail("nginx is missing: scripts/test.sh installs Debian's nginx-light")
    d = str(tmp_path_factory.mktemp("tls"))
    _make_pki(d)
    srv = Nginx(d, tracking_uri)
    yield srv
    srv.stop()


class Tls:
    def __init__(self, build_dir, tmp_path, exp_name, tracking_uri, tls):
        self.programs = Programs(build_dir, tracking_uri)
        self.queue = str(tmp_path / "queue")
        self.exp_name = exp_name
        self.reader = MlflowReader(tracking_uri)  # behind nginx, in plain HTTP
        self.tls = tls

    def run(self, port, name, env=None):
        """mltrack run through https://127.0.0.1:port, the command a plain `true`."""
        full = {"MLTRACK_QUEUE_DIR": self.queue, "MLFLOW_TRACKING_URI":
                f"https://127.0.0.1:{port}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
        full.update(env or {})
        return self.programs.run(["mltrack", "run", "--experiment", self.exp_name, "--run-name",
                                  name, "--param", "p=1", "--timeout", "5", "--", "true"],
                                 env=full, timeout=120)

    def landed(self, name):
        _, runs = self.reader.runs_of_experiment_named(self.exp_name)
        return [r for r in runs if r["info"].get("run_name") == name]

    def path(self, f):
        return os.path.join(self.tls.d, f)


@pytest.fixture
def t(build_dir, tmp_path, exp_name, tracking_uri, tls):
    return Tls(build_dir, tmp_path, exp_name, tracking_uri, tls)


def test_verification_is_on_by_default_and_an_unknown_ca_is_refused(t):
    res = t.run(t.tls.open, "refused")
    assert res.rc == 0, res  # the command ran; its run waits in the queue
    assert "SSL certificate problem" in res.stderr, res
    assert "kept in the queue, not delivered yet: 1 run" in res.stderr, res
    assert t.landed("refused") == [], "a server of an unknown CA was trusted"


def test_server_cert_path_makes_it_work(t):
    res = t.run(t.tls.open, "trusted", env={"MLFLOW_TRACKING_SERVER_CERT_PATH": t.path("ca.pem")})
    assert res.rc == 0 and "kept in the queue" not in res.stderr, res
    runs = t.landed("trusted")
    assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED", runs
    assert MlflowReader.params(runs[0]) == {"p": "1"}


def test_insecure_tls_works_and_says_so_once(t):
    res = t.run(t.tls.open, "insecure", env={"MLFLOW_TRACKING_INSECURE_TLS": "true"})
    assert res.rc == 0 and "kept in the queue" not in res.stderr, res
    said = [ln for ln in res.stderr.splitlines() if "verification is off" in ln]
    assert len(said) == 1, f"said {len(said)} times: {res.stderr!r}"
    assert len(t.landed("insecure")) == 1


def test_a_client_certificate_is_presented_when_asked(t):
    ca = {"MLFLOW_TRACKING_SERVER_CERT_PATH": t.path("ca.pem")}
    res = t.run(t.tls.mutual, "no-client-cert", env=ca)
    # nginx refuses with its own 400 page, which says why (the run is set aside as refused)
    assert res.rc == 0 and "No required SSL certificate was sent" in res.stderr, res
    assert t.landed("no-client-cert") == []
    res = t.run(t.tls.mutual, "client-cert",
                env=dict(ca, MLFLOW_TRACKING_CLIENT_CERT_PATH=t.path("client-bundle.pem")))
    assert res.rc == 0 and "kept in the queue" not in res.stderr, res
    assert len(t.landed("client-cert")) == 1
