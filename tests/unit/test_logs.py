"""journeys.logs: JOURNEYS_LOG_FORMAT=json gives one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from journeys.logs import configure, logging_config, uvicorn_logging


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("json", "info")
        logging.getLogger("journeys.test").warning("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    obj = json.loads(line)
    assert (obj["level"], obj["logger"], obj["message"]) == ("WARNING", "journeys.test",
                                                             "hello world")
    assert obj["time"] and obj["process"]


def test_text_keeps_each_runners_own_format() -> None:
    assert logging_config("text") is None and uvicorn_logging("text") == {}
    assert uvicorn_logging("json")["log_config"]["root"]["handlers"] == ["stderr"]
