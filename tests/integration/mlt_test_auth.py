"""The authorization function of the tests' MLflow server (`authorization_function` in the auth
config of `mlflow server --app-name basic-auth`; tests/integration is on the server's PYTHONPATH).

"Authorization: Bearer TOKEN" is accepted for the tokens of MLT_TEST_BEARER_TOKENS
("TOKEN:USER,TOKEN:USER"), as the user it names, and refused (401) for any other token; every
other request is authenticated by MLflow's own basic auth. Permissions are MLflow's either way."""

import os

from flask import Response, request
from werkzeug.datastructures import Authorization

from mlflow.server.auth import authenticate_request_basic_auth


def _tokens():
    pairs = (p.split(":", 1) for p in os.environ.get("MLT_TEST_BEARER_TOKENS", "").split(",") if p)
    return {token: user for token, user in pairs}


def authenticate():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user = _tokens().get(header[len("Bearer "):])
        if user:
            return Authorization("bearer", {"username": user})
        return Response("The bearer token is not valid.", 401, {"WWW-Authenticate": "Bearer"})
    return authenticate_request_basic_auth()
