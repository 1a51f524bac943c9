"""Log output of every role: text (the default), or one JSON object per line for log
shippers (JOURNEYS_LOG_FORMAT=json), through python-json-logger."""

from __future__ import annotations

import logging.config
from typing import Any

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def logging_config(log_format: str, level: str = "info") -> dict[str, Any] | None:
    """A logging.config.dictConfig for `log_format`; None for text (each runner keeps
    its own text format: Faust's, uvicorn's)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's loggers get no handlers of their own: they propagate to the root
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure(log_format: str, level: str = "info") -> None:
    """Apply `logging_config` to this process (no-op for text)."""
    config = logging_config(log_format, level)
    if config is not None:
        logging.config.dictConfig(config)


def uvicorn_logging(log_format: str) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run: its own text format, or JSON."""
    config = logging_config(log_format)
    return {} if config is None else {"log_config": config}
