"""The HTTP API: the app factory (:mod:`engines.http.app`), shared identity, errors and
responses, and one router module per domain."""

from engines.http.app import build_app, create_app

__all__ = ["build_app", "create_app"]
