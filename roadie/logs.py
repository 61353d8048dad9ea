"""One JSON object per log line, in every process, with the request id and without secrets.

``configure_logging(service)`` is called once at process start: by the API's app factory, the
``roadie`` CLI (the relay) and Celery's ``setup_logging`` signal (workers and beat). It routes
the standard library's logging (ours, uvicorn's, Celery's, warnings) through structlog's
processors: context variables (``request_id``, ``job_id``, ...), level, logger, UTC timestamp,
the service name and pid, then :func:`redact`, then one line of JSON on stderr.

The request id travels with a job: the API binds it (``X-Request-ID``), stores it on the job,
the relay sends it in the Celery message headers and the worker binds it for the whole task,
so ``grep <request id>`` shows a job's story across every process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

#: The Celery message header that carries the request id from the relay to the worker.
REQUEST_ID_HEADER = "roadie_request_id"
#: Request ids a client may choose: short and printable, so they are safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

REDACTED = "[REDACTED]"
#: Keys whose values are never logged, whatever their type.
_SECRET_NAME = r"pass(?:word|wd|phrase)?|secret|token|key|private|authori[sz]ation|credential|cookie|mnemonic"  # noqa: S105
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)


def _mask_pair(match: re.Match[str]) -> str:
    key_quote, key, separator, value_quote = match.group(1, 2, 3, 4)
    quote = value_quote or ""
    return f"{key_quote}{key}{key_quote}{separator}{quote}{REDACTED}{quote}"


_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Roadie API keys anywhere in a text.
    (re.compile(r"rk_live_[A-Za-z0-9_-]+"), "rk_live_" + REDACTED),
    # "Authorization: Bearer x", "'authorization': 'Basic x'", "Authorization=x".
    (
        re.compile(
            r"""(?i)((?:proxy-)?authori[sz]ation["']?\s*[:=]\s*["']?)((?:bearer|basic|token)\s+)?[^\s"',;}\]]+"""
        ),
        r"\1\2" + REDACTED,
    ),
    # Bearer or Basic credentials on their own.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # key: value pairs in reprs, JSON, query strings and kwargs whose key name ends in a secret word.
    (
        re.compile(
            r"""(?i)(["']?)([\w.-]*(?:pass(?:word|wd|phrase)?|secret|token|key|private|credential|cookie|mnemonic)"""
            r"""(?:pair)?s?)\1(\s*[:=]\s*)(?:(["'])(?:\\.|(?!\4).)*\4|\[[^\]]*\]|[^\s&,;'"()\[\]{}]+)"""
        ),
        _mask_pair,
    ),
    # A 64-byte keypair written as a JSON array (the Solana CLI keypair file format).
    (re.compile(r"\[\s*(?:\d{1,3}\s*,\s*){63}\d{1,3}\s*\]"), "[REDACTED keypair]"),
)

#: ASCII text that holds none of these (once lower-cased) is left as it is: each pattern needs one.
_MAYBE_SECRET = re.compile(r"rk_live_|authori[sz]ation|bearer|basic|" + _SECRET_NAME + r"|\[\s*\d")

_state: dict[str, Any] = {"configured": False, "service": "roadie"}


def redact_text(text: str) -> str:
    """Mask API keys, Authorization credentials, secret-named values and keypairs in free text."""
    # Most values (ids, names, paths) cannot hold a secret: one case-sensitive scan instead of five
    # case-insensitive substitutions. Non-ASCII text always takes the full way, as Unicode case
    # folding (the long s, U+017F, matches "s") is more than lower().
    if text.isascii() and _MAYBE_SECRET.search(text.lower()) is None:
        return text
    return _substitute(text)


def _substitute(text: str) -> str:
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@lru_cache(maxsize=4096)
def _secret_name(key: str) -> bool:
    """Whether a field name says its value is secret (field names repeat: the answer is remembered)."""
    return _SECRET_KEY.search(key) is not None


def _is_keypair(value: Any) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value) == 64
    return (
        isinstance(value, list | tuple)
        and len(value) == 64
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value)
    )


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` safe to log: secret-named keys masked, texts scrubbed, keypairs dropped."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _is_keypair(value):
        return "[REDACTED keypair]"
    if depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: (REDACTED if _secret_name(str(key)) and val is not None else redact_value(val, depth + 1))
            for key, val in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, depth + 1) for item in value]
    return redact_text(str(value))


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last step before rendering, so nothing secret reaches a log line."""
    cleaned = redact_value(event_dict)
    assert isinstance(cleaned, dict)
    return cleaned


def _add_service(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("service", _state["service"])
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _drop_noise(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    return event_dict


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the ``sys.stderr`` of the moment (test runners and click's CliRunner swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service,
    ]


def configure_logging(service: str | None = None, level: str | int | None = None, to_file: Path | None = None) -> None:
    """Send every log record of this process to stderr as one JSON object per line (idempotent).

    ``service`` names the process in each line (``api``, ``relay``, ``worker``, ``beat``, ``cli``);
    None keeps the name it has. ``to_file``: append the lines there instead, so that a command that
    talks to a person (``roadie demo``, ``roadie up``) is not interleaved with library warnings.
    """
    if service is not None:
        _state["service"] = service
    if level is None:
        from roadie.settings import get_settings

        level = get_settings().log_level
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if _state["configured"]:
        return
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_noise],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler: logging.Handler = _StderrHandler(sys.stderr)
    if to_file is not None:
        to_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(to_file, encoding="utf-8")
    handler.setFormatter(formatter)
    handler.set_name("roadie-json")
    for existing in list(root.handlers):
        if type(existing) is logging.StreamHandler:  # a basicConfig or default handler; not pytest's
            root.removeHandler(existing)
    root.addHandler(handler)
    # Servers that configure their own handlers (uvicorn, Celery) log through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.redirected"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _state["configured"] = True


def json_line(event: str, *, level: str = "info", logger: str = "roadie") -> str:
    """One log line built without the logging machinery (safe inside a signal handler)."""
    import datetime as dt

    line = {
        "event": event,
        "level": level,
        "logger": logger,
        "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "service": _state["service"],
        "pid": os.getpid(),
    }
    return json.dumps(redact_value(line), default=str)


def is_configured() -> bool:
    return bool(_state["configured"])


def set_service(service: str) -> None:
    """Rename the process in later lines (a Celery process learns late whether it is a worker or beat)."""
    _state["service"] = service


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """A caller's request id if it is safe to log and echo, else None."""
    return value if value and _VALID_REQUEST_ID.match(value) else None


def current_request_id() -> str | None:
    """The request id bound to the running request or task, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


def bind(**values: Any) -> Mapping[str, Any]:
    """Bind values to every later line of this request or task; returns tokens for :func:`unbind`."""
    return structlog.contextvars.bind_contextvars(**values)


def unbind(tokens: Mapping[str, Any]) -> None:
    structlog.contextvars.reset_contextvars(**tokens)


def clear() -> None:
    structlog.contextvars.clear_contextvars()


def context() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()
