"""A small HTTP/1.1 proxy on loopback: the faults a real MLflow server cannot make on demand.

It sits between the library and the REAL server (both on 127.0.0.1) and, per request whose path
contains a given substring, can:

  pass          forward the request, return the answer (what every other request gets)
  pass_close    as pass, then close the connection ("Connection: close"): the client's next
                request goes on a fresh connection (libcurl resends a request by itself only on a
                reused one)
  cut_before    close the client's connection without forwarding (the server did NOT act)
  cut_after     forward, read the whole answer, then close the client's connection without a
                byte of it (the server DID act: an ambiguous failure)
  delay         forward, then hold the answer `delay` seconds before returning it (stop() and
                release() end the wait early; a client that gave up meanwhile just sees nothing)
  garble        forward, then return 200 with a body that is not JSON (the server DID act)
  status        do not forward; answer `status` (503 by default) with an MLflow-style JSON error
                (the error_code MLflow gives that status: PERMISSION_DENIED for 403...)
                and, if retry_after is given, a Retry-After header (the server did NOT act)
  cut_body      an upload cut halfway: forward the head and the first half of the body (by its
                Content-Length), then close both connections (the server got half an upload)

Rules are tried in the order they were added; a rule applies to the requests it matches after
skipping `skip` of them, `count` times (None: forever), then it is spent. Requests no rule takes
are passed through.

Use, imported (stdlib only):

    with FaultProxy(upstream_port) as proxy:          # listens on 127.0.0.1:<free port>
        proxy.add_rule("runs/create", "cut_after", count=1)
        ... point the program at proxy.uri ...
        proxy.requests("runs/search")                 # what went through, and what was done

or from a shell (rules as MATCH:ACTION[:COUNT[:ARG]], ARG is delay seconds, or the status code):

    python3 tests/fault_proxy.py --upstream 5000 [--port 5001] --rule runs/log-batch:status:2:503

HTTP handling: one request at a time per client connection, keep-alive (libcurl reuses its
connections), Content-Length or chunked bodies both ways, `Expect: 100-continue` answered by the
proxy itself, interim 1xx answers of the server skipped. Each forwarded request uses a fresh
connection to the server ("Connection: close"), so no stale server-side connection is ever reused.
It only ever listens on and connects to 127.0.0.1, and stop() closes every socket and thread.
"""

import argparse
import json
import socket
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
ACTIONS = ("pass", "pass_close", "cut_before", "cut_after", "delay", "garble", "status",
           "cut_body")
MAX_HEAD = 64 * 1024
GARBLED = b'{"run": {"info": {"run_id": "\x00\xff garbled by fault_proxy'
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class HttpError(Exception):
    """A malformed message or a connection that ended in the middle of one."""


class _Conn:
    """A socket with a read buffer: lines and exact byte counts."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self):
        """The header block (up to and including the blank line), or None at a clean EOF."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise HttpError("header block too large")
            if not self._fill():
                if not self.buf:
                    return None
                raise HttpError("connection closed inside a header block")
        i = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:i], self.buf[i:]
        return head

    def read_exact(self, n):
        """n bytes: what is buffered, then straight from the socket into one buffer (a body of a
        gigabyte is read in linear time)."""
        if len(self.buf) >= n:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        out = bytearray(n)
        have = len(self.buf)
        out[:have] = self.buf
        self.buf = b""
        view = memoryview(out)
        while have < n:
            got = self.sock.recv_into(view[have:], min(n - have, 1 << 20))
            if not got:
                raise HttpError(f"connection closed with {n - have} body bytes missing")
            have += got
        return bytes(out)

    def read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise HttpError("line too long")
            if not self._fill():
                raise HttpError("connection closed inside a chunked body")
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_to_eof(self):
        while self._fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def read_chunked(self):
        body = b""
        while True:
            size_line = self.read_line().split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise HttpError(f"bad chunk size {size_line!r}") from None
            if size == 0:
                while self.read_line() != b"\r\n":  # trailers
                    pass
                return body
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise HttpError("chunk not followed by CRLF")


def _parse_head(head):
    """(start line as 3 strings, [(name, value)]) of a header block."""
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) < 2:
        raise HttpError(f"bad start line {lines[0]!r}")
    while len(start) < 3:
        start.append("")
    headers = []
    for ln in lines[1:]:
        if not ln:
            continue
        name, sep, value = ln.partition(":")
        if not sep:
            raise HttpError(f"bad header line {ln!r}")
        headers.append((name.strip(), value.strip()))
    return start, headers


def _header(headers, name):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _without(headers, *names):
    names = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in names]


def _read_body(conn, headers, *, is_response, status=200, method="GET"):
    """The body of a message whose headers were read; for a response without a length, up to EOF
    (second value True: the connection is finished)."""
    if is_response and (100 <= status < 200 or status in (204, 304) or method == "HEAD"):
        return b"", False
    te = (_header(headers, "Transfer-Encoding") or "").lower()
    if "chunked" in te:
        return conn.read_chunked(), False
    cl = _header(headers, "Content-Length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise HttpError(f"bad Content-Length {cl!r}") from None
        return conn.read_exact(n), False
    if is_response:
        return conn.read_to_eof(), True
    return b"", False


def _serialize(start, headers, body):
    """A message with the given start line and headers, body framed by Content-Length."""
    headers = _without(headers, "Content-Length", "Transfer-Encoding")
    headers.append(("Content-Length", str(len(body))))
    out = " ".join(start).rstrip(" ") + "\r\n"
    out += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return out.encode("latin-1") + body


class Rule:
    def __init__(self, match, action, count=1, skip=0, delay=0.0, status=503, retry_after=None,
                 method=None):
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        self.match, self.action, self.count, self.skip = match, action, count, skip
        self.delay, self.status, self.retry_after, self.method = delay, status, retry_after, method
        self.applied = 0

    def __repr__(self):
        return (f"Rule({self.match!r}, {self.action!r}, count={self.count}, skip={self.skip}, "
                f"applied={self.applied})")


class FaultProxy:
    """See the module's docstring. Thread-safe: rules may be added while requests flow."""

    def __init__(self, upstream_port, listen_port=0, upstream_timeout=120.0):
        self.upstream = (LOOPBACK, int(upstream_port))
        self.upstream_timeout = upstream_timeout
        self._listen_port = int(listen_port)
        self._lock = threading.Lock()
        self._rules = []
        self._log = []  # dicts: t, method, path, action, status (None: no answer), rule
        self._stop = threading.Event()
        self._release = threading.Event()
        self._sockets = set()
        self._threads = []
        self._listener = None
        self.port = None

    # ---- life cycle ----

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, self._listen_port))
        s.listen(64)
        self._listener = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        self._release.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            self._close(s)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self):
        return self.start() if self.port is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def uri(self):
        return f"http://{LOOPBACK}:{self.port}"

    # ---- control ----

    def add_rule(self, match, action, count=1, skip=0, delay=0.0, status=503, retry_after=None,
                 method=None):
        """Adds a rule (see the module's docstring); returns it (rule.applied counts its uses)."""
        rule = Rule(match, action, count, skip, delay, status, retry_after, method)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self):
        with self._lock:
            self._rules.clear()

    def release(self):
        """Ends every wait of a `delay` rule now and from now on (held answers are returned)."""
        self._release.set()

    def requests(self, match=None):
        """The requests seen so far, in the order they arrived (dicts: t (arrival, monotonic),
        t_done, method, path, action ("pending" while being handled), status (None: no answer)),
        optionally only those whose path contains match."""
        with self._lock:
            return [dict(e) for e in self._log if match is None or match in e["path"]]

    def wait_for(self, pred, timeout):
        """Polls pred() until true; False after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    # ---- internals ----

    def _pick(self, method, path):
        with self._lock:
            for rule in self._rules:
                if rule.match not in path or (rule.method and rule.method != method):
                    continue
                if rule.count is not None and rule.applied >= rule.count:
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.applied += 1
                return rule
        return None

    def _note(self, method, path, rule):
        """Logs a request as it arrives; the caller fills in what was done (_done)."""
        entry = {"t": time.monotonic(), "method": method, "path": path, "action": "pending",
                 "status": None, "rule": repr(rule), "t_done": None}
        with self._lock:
            self._log.append(entry)
        return entry

    def _done(self, entry, action, status):
        with self._lock:
            entry["action"], entry["status"], entry["t_done"] = action, status, time.monotonic()

    def _track(self, s):
        with self._lock:
            self._sockets.add(s)

    def _close(self, s):
        with self._lock:
            self._sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, addr = self._listener.accept()
            except OSError:
                return
            if addr[0] != LOOPBACK:
                client.close()
                continue
            self._track(client)
            t = threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn",
                                 daemon=True)
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _forward(self, method, target, version, headers, body):
        """Sends the request to the server on a new connection; (status, start, headers, body)."""
        up = socket.create_connection(self.upstream, timeout=self.upstream_timeout)
        self._track(up)
        try:
            hdrs = _without(headers, "Expect", "Connection", "Keep-Alive", "Proxy-Connection")
            hdrs.append(("Connection", "close"))
            up.sendall(_serialize([method, target, version or "HTTP/1.1"], hdrs, body))
            conn = _Conn(up)
            while True:
                head = conn.read_head()
                if head is None:
                    raise HttpError("the server closed the connection without an answer")
                start, rh = _parse_head(head)
                try:
                    status = int(start[1])
                except ValueError:
                    raise HttpError(f"bad status line {start!r}") from None
                if 100 <= status < 200:
                    continue  # interim answer: the final one follows
                rbody, _ = _read_body(conn, rh, is_response=True, status=status, method=method)
                return status, start, rh, rbody
        finally:
            self._close(up)

    def _cut_body(self, conn, method, target, version, headers):
        """Forwards the head and half the body, then closes the server's connection."""
        n = int(_header(headers, "Content-Length") or 0)
        half = conn.read_exact(n // 2)
        up = socket.create_connection(self.upstream, timeout=self.upstream_timeout)
        self._track(up)
        try:
            hdrs = _without(headers, "Expect", "Connection", "Keep-Alive", "Proxy-Connection")
            hdrs.append(("Connection", "close"))
            start = " ".join([method, target, version or "HTTP/1.1"]) + "\r\n"
            up.sendall((start + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n")
                       .encode("latin-1") + half)
        finally:
            self._close(up)

    def _serve(self, client):
        conn = _Conn(client)
        try:
            while not self._stop.is_set():
                head = conn.read_head()
                if head is None:
                    return
                (method, target, version), headers = _parse_head(head)
                if (_header(headers, "Expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                rule = self._pick(method, target)
                action = rule.action if rule else "pass"
                entry = self._note(method, target, rule)
                if action == "cut_body":
                    self._cut_body(conn, method, target, version, headers)
                    self._done(entry, action, None)
                    return
                body, _ = _read_body(conn, headers, is_response=False)
                if action == "cut_before":
                    self._done(entry, action, None)
                    return
                if action == "status":
                    code = {503: "TEMPORARILY_UNAVAILABLE", 401: "UNAUTHENTICATED",
                            403: "PERMISSION_DENIED", 400: "INVALID_PARAMETER_VALUE"}
                    err = {"error_code": code.get(rule.status, "INTERNAL_ERROR"),
                           "message": f"fault_proxy: {rule.status}"}
                    rh = [("Content-Type", "application/json")]
                    if rule.retry_after is not None:
                        rh.append(("Retry-After", str(rule.retry_after)))
                    reason = REASONS.get(rule.status, "Error")
                    client.sendall(_serialize(["HTTP/1.1", str(rule.status), reason], rh,
                                              json.dumps(err).encode()))
                    self._done(entry, action, rule.status)
                    continue
                try:
                    status, start, rh, rbody = self._forward(method, target, version, headers, body)
                except (OSError, HttpError) as e:
                    # the server is away (or broke the answer): the client sees a cut connection
                    self._done(entry, f"upstream failed: {e}", None)
                    return
                if action == "cut_after":
                    self._done(entry, action, None)
                    return
                if action == "delay":
                    self._release.wait(rule.delay)
                    if self._stop.is_set():
                        self._done(entry, "delay (stopped)", None)
                        return
                if action == "garble":
                    start = ["HTTP/1.1", "200", "OK"]
                    rbody = GARBLED
                    rh = _without(rh, "Content-Encoding")
                    status = 200
                rh = _without(rh, "Connection", "Keep-Alive")
                if action == "pass_close":
                    rh.append(("Connection", "close"))
                client.sendall(_serialize(start, rh, rbody))
                self._done(entry, action, status)
                client_close = (_header(headers, "Connection") or "").lower() == "close"
                if action == "pass_close" or client_close:
                    return
        except (OSError, HttpError):
            return
        finally:
            self._close(client)


def _parse_rule(text):
    parts = text.split(":")
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"rule {text!r}: MATCH:ACTION[:COUNT[:ARG]]")
    match, action = parts[0], parts[1]
    count = int(parts[2]) if len(parts) > 2 and parts[2] else None
    kw = {"count": count}
    if len(parts) > 3:
        if action == "delay":
            kw["delay"] = float(parts[3])
        elif action == "status":
            kw["status"] = int(parts[3])
    if len(parts) > 4 and action == "status":
        kw["retry_after"] = parts[4]
    return match, action, kw


def main(argv=None):
    ap = argparse.ArgumentParser(description="A fault-injecting HTTP proxy on 127.0.0.1.")
    ap.add_argument("--upstream", type=int, required=True, help="port of the server on 127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: free one)")
    ap.add_argument("--rule", action="append", default=[], type=_parse_rule,
                    help="MATCH:ACTION[:COUNT[:ARG[:RETRY_AFTER]]] (COUNT empty: forever)")
    args = ap.parse_args(argv)
    proxy = FaultProxy(args.upstream, args.port).start()
    for match, action, kw in args.rule:
        proxy.add_rule(match, action, **kw)
    print(proxy.uri, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
