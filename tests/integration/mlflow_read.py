"""Read an MLflow tracking server back over its REST API, with the Python standard library only.

Independent of libmltrack (and of the mlflow package) on purpose: what the tests compare against
is what the server really holds, as its own JSON says.

Wire details handled here:
  - int64 fields (steps, timestamps) are JSON numbers; Python's json keeps them exact.
  - NaN comes back as the string "NaN", +/-Inf as +/-1.7976931348623157e308: decode_value()
    turns those into float nan/+inf/-inf (so a real +/-DBL_MAX decodes to +/-inf too).
  - metrics/get-history is always asked with max_results=25000 and followed through
    next_page_token; runs/search is followed through next_page_token too.
"""

import hashlib
import json
import math
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request

API = "/api/2.0/mlflow/"
DBL_MAX = sys.float_info.max
HISTORY_PAGE = 25000


class MlflowError(Exception):
    """An answer other than 2xx: HTTP status, MLflow error_code (may be None) and message."""

    def __init__(self, status, error_code, message, body):
        super().__init__(f"HTTP {status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.body = body


def decode_value(v):
    """A metric value as the server sends it, as a Python float."""
    if isinstance(v, str):
        if v == "NaN":
            return math.nan
        if v in ("Infinity", "inf", "+Infinity"):
            return math.inf
        if v in ("-Infinity", "-inf"):
            return -math.inf
        return float(v)
    v = float(v)
    if v == DBL_MAX:
        return math.inf
    if v == -DBL_MAX:
        return -math.inf
    return v


def value_key(v):
    """A hashable, exact identity of a float: NaNs are all one, -0.0 and 0.0 differ."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    return struct.pack(">d", v).hex()


def same_value(a, b):
    return value_key(a) == value_key(b)


class MlflowReader:
    def __init__(self, uri, timeout=60, authorization=None):
        """authorization: the Authorization header to send (e.g. "Basic ..."), or None."""
        self.uri = uri.rstrip("/")
        self.timeout = timeout
        self.authorization = authorization
        # the server is always on loopback: never go through a configured proxy
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ---- transport ----

    def _request(self, method, path, query=None, body=None):
        url = self.uri + API + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None
        headers = {"Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            code = msg = None
            try:
                j = json.loads(raw.decode("utf-8"))
                code, msg = j.get("error_code"), j.get("message")
            except (ValueError, UnicodeDecodeError, AttributeError):
                msg = raw[:300].decode("utf-8", "replace")
            raise MlflowError(e.code, code, msg, raw) from None
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}

    def get(self, path, **query):
        return self._request("GET", path, query=query)

    def post(self, path, body):
        return self._request("POST", path, body=body)

    def health(self):
        with self._opener.open(self.uri + "/health", timeout=self.timeout) as resp:
            return resp.read().decode("utf-8", "replace").strip()

    # ---- experiments ----

    def get_experiment_by_name(self, name):
        """The experiment dict, or None when the server has no experiment of that name."""
        try:
            return self.get("experiments/get-by-name", experiment_name=name)["experiment"]
        except MlflowError as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST" or e.status == 404:
                return None
            raise

    def get_experiment(self, experiment_id):
        return self.get("experiments/get", experiment_id=experiment_id)["experiment"]

    def create_experiment(self, name):
        return self.post("experiments/create", {"name": name})["experiment_id"]

    def delete_experiment(self, experiment_id):
        self.post("experiments/delete", {"experiment_id": str(experiment_id)})

    # ---- runs ----

    def search_runs(self, experiment_ids, filter_string="", run_view_type="ALL", page_size=1000):
        """Every run of the experiments (deleted ones too by default), all pages."""
        if isinstance(experiment_ids, (str, int)):
            experiment_ids = [experiment_ids]
        runs, token = [], None
        while True:
            body = {
                "experiment_ids": [str(e) for e in experiment_ids],
                "filter": filter_string,
                "run_view_type": run_view_type,
                "max_results": page_size,
            }
            if token:
                body["page_token"] = token
            ans = self.post("runs/search", body)
            runs.extend(ans.get("runs", []))
            token = ans.get("next_page_token")
            if not token:
                return runs

    def runs_of_experiment_named(self, name):
        """(experiment, runs) for an experiment name; (None, []) if there is none."""
        exp = self.get_experiment_by_name(name)
        if exp is None:
            return None, []
        return exp, self.search_runs(exp["experiment_id"])

    def get_run(self, run_id):
        return self.get("runs/get", run_id=run_id)["run"]

    def metric_history(self, run_id, key, decode=True):
        """Every point of a metric: dicts with key, value (decoded), timestamp, step."""
        points, token = [], None
        while True:
            query = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE}
            if token:
                query["page_token"] = token
            ans = self.get("metrics/get-history", **query)
            for m in ans.get("metrics", []):
                m = dict(m)
                m["raw_value"] = m.get("value")
                if decode:
                    m["value"] = decode_value(m.get("value"))
                m.setdefault("step", 0)
                m.setdefault("timestamp", 0)
                points.append(m)
            token = ans.get("next_page_token")
            if not token:
                return points

    # ---- views of a run ----

    @staticmethod
    def params(run):
        return {p["key"]: p.get("value", "") for p in run.get("data", {}).get("params", [])}

    @staticmethod
    def tags(run):
        return {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}

    @staticmethod
    def metric_keys(run):
        return sorted({m["key"] for m in run.get("data", {}).get("metrics", [])})

    def full_metrics(self, run):
        """{key: [(step, timestamp, value), ...]} for every metric of the run, sorted."""
        run_id = run["info"]["run_id"]
        out = {}
        for key in self.metric_keys(run):
            pts = self.metric_history(run_id, key)
            out[key] = sorted(
                ((p["step"], p["timestamp"], p["value"]) for p in pts),
                key=lambda t: (t[0], t[1], value_key(t[2])),
            )
        return out

    def snapshot(self, run_id):
        """Everything about one run the tests compare: a plain dict."""
        run = self.get_run(run_id)
        info = run["info"]
        return {
            "run_id": info["run_id"],
            "experiment_id": info["experiment_id"],
            "run_name": info.get("run_name"),
            "user_id": info.get("user_id"),
            "status": info.get("status"),
            "start_time": info.get("start_time"),
            "end_time": info.get("end_time"),
            "lifecycle_stage": info.get("lifecycle_stage"),
            "params": self.params(run),
            "tags": self.tags(run),
            "metrics": self.full_metrics(run),
        }


# ---- artifacts (through the server's artifact proxy, read with urllib alone) -----------------------

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


def artifact_root(run):
    """The proxy path of a run's artifacts ("<exp>/<run>/artifacts"), from its artifact_uri."""
    uri = run["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:"), f"artifacts not proxied: {uri}"
    rest = uri[len("mlflow-artifacts:"):]
    if rest.startswith("//"):
        rest = rest[2:].split("/", 1)[1]
    return rest.strip("/")


def _raw(reader, url):
    headers = {}
    if reader.authorization:
        headers["Authorization"] = reader.authorization
    req = urllib.request.Request(url, headers=headers)
    with reader._opener.open(req, timeout=reader.timeout) as resp:
        return resp.read()


def list_artifacts(reader, run):
    """Every artifact file of a run: {path: size or None}, walking artifacts/list."""
    root = artifact_root(run)
    out = {}

    def walk(rel):
        q = urllib.parse.urlencode({"path": root + ("/" + rel if rel else "")})
        js = json.loads(_raw(reader, reader.uri + ARTIFACTS_API + "?" + q) or b"{}")
        for f in js.get("files", []):
            p = (rel + "/" if rel else "") + f["path"]
            if f.get("is_dir"):
                walk(p)
            else:
                out[p] = f.get("file_size")
    walk("")
    return out


def read_artifact(reader, run, path):
    """The bytes of one artifact of a run."""
    url = reader.uri + ARTIFACTS_API + "/" + urllib.parse.quote(artifact_root(run) + "/" + path)
    return _raw(reader, url)


def artifact_digests(reader, run):
    """{path: sha256 hex} of every artifact of a run, from the bytes the server gives back."""
    return {p: hashlib.sha256(read_artifact(reader, run, p)).hexdigest()
            for p in list_artifacts(reader, run)}
