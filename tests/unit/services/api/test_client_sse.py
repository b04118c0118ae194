"""The CLI client's reading of the service's server-sent events."""

from __future__ import annotations

import pytest

pytest.importorskip("httpx", reason="the client needs httpx")

from orchestration.api_client import ApiClientError, _parse_sse  # noqa: E402


def test_events_with_multiline_data_and_keepalives() -> None:
    lines = [": waiting", "", "event: log", "data: line 1", "data: line 2", "", "event: end",
             'data: {"status": "SUCCEEDED"}', ""]
    assert list(_parse_sse(iter(lines))) == [("log", "line 1\nline 2"), ("end", '{"status": "SUCCEEDED"}')]


def test_problem_errors_read_well() -> None:
    err = ApiClientError(422, {"title": "Invalid job spec", "detail": "bad", "errors": [
        {"field": "config.iterations", "message": "must be an integer"}]})
    assert str(err) == "422 Invalid job spec: bad\n  config.iterations: must be an integer"
