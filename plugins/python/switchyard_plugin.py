"""The Python side of Switchyard plugins: what `switchyard-plugin` gives Rust
authors, for an app built with componentize-py.

An app module defines the class ``WitWorld`` with its slot's method
(``validate``, ``shape``, ``filter`` or ``authorize``) and imports what it needs from here::

    from switchyard_plugin import config_int, format_amount, reject, accept

    class WitWorld:
        def validate(self, bid, product, now):
            ...

Values arrive as componentize-py passes them: records as dataclasses with
snake_case fields (``bid.product_id``, ``message.from_``), integers as
``int``, ``option<T>`` as the value or ``None``, and ``data`` fields as JSON
text. The constructors below build the variants the host expects back.
"""

import json
import re
from typing import Any, Optional

from wit_world.imports import host, types

__all__ = [
    "log", "debug", "info", "warn", "error",
    "config", "config_all", "config_int", "config_bool", "parse_int64",
    "subscription_map", "parse_object", "object_field", "to_json", "format_amount",
    "accept", "reject", "notification", "PASS", "DROP", "replace_with",
    "ALLOW", "refuse", "claims_of", "param", "types",
]


def log(level: host.Level, message: str) -> None:
    """Writes one log line through the host."""
    host.log(level, str(message))


def debug(message: str) -> None:
    """Writes a log line at level ``debug``."""
    host.log(host.Level.DEBUG, str(message))


def info(message: str) -> None:
    """Writes a log line at level ``info``."""
    host.log(host.Level.INFO, str(message))


def warn(message: str) -> None:
    """Writes a log line at level ``warn``."""
    host.log(host.Level.WARN, str(message))


def error(message: str) -> None:
    """Writes a log line at level ``error``."""
    host.log(host.Level.ERROR, str(message))


def config(key: str) -> Optional[str]:
    """One value of the plugin's configuration, ``None`` when it is not set."""
    return host.config(key)


def config_all() -> dict:
    """All of the plugin's configuration as a dict, in key order."""
    return dict(host.config_all())


_INT = re.compile(r"[+-]?[0-9]+")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def parse_int64(text: str) -> Optional[int]:
    """A decimal integer in the range of ``s64`` (surrounding whitespace
    allowed); ``None`` for anything else (``int()`` would also take ``1_000``
    and non-ASCII digits)."""
    t = text.strip()
    if not _INT.fullmatch(t):
        return None
    n = int(t)
    return n if _I64_MIN <= n <= _I64_MAX else None


def config_int(key: str) -> Optional[int]:
    """A configuration value read as an integer. ``None`` when the key is not
    set, or when its value is not an integer; the latter also logs a warning
    naming the key."""
    value = config(key)
    if value is None:
        return None
    n = parse_int64(value)
    if n is None:
        warn(f"config {json.dumps(key)}: {json.dumps(value)} is not an integer; ignored")
    return n


def config_bool(key: str) -> Optional[bool]:
    """A configuration value read as a flag: ``true``, ``yes``, ``on``, ``1``
    or ``false``, ``no``, ``off``, ``0`` (any case). ``None`` when not set or
    none of those; the latter also logs a warning naming the key."""
    value = config(key)
    if value is None:
        return None
    flag = value.strip().lower()
    if flag in ("true", "yes", "on", "1"):
        return True
    if flag in ("false", "no", "off", "0"):
        return False
    warn(f"config {json.dumps(key)}: {json.dumps(value)} is not a flag; ignored")
    return None


def subscription_map(subscription) -> dict:
    """A subscription (the stream's query parameters the host does not own, a
    list of ``(name, value)`` pairs sorted by name) as a dict. A name given
    twice keeps its last value; read the list itself to see every one."""
    return dict(subscription)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_object(text: str) -> Optional[dict]:
    """Parses JSON text that should hold one object; ``None`` otherwise.
    Strict JSON: ``NaN`` and ``Infinity`` are refused, as the host does."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def object_field(text: str, key: str) -> Any:
    """One top-level field of the JSON object in ``text``; ``None`` when
    ``text`` is not a JSON object or has no such field (or it is ``null``)."""
    obj = parse_object(text)
    return None if obj is None else obj.get(key)


def to_json(value: Any) -> str:
    """Compact JSON with every object's keys sorted, as the Rust SDK writes
    it, so a plugin's output is the same whichever language wrote it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_amount(minor: int) -> str:
    """An amount in minor units as text: ``1250`` → ``"12.50"``."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def accept(extend_to: Optional[int] = None) -> types.Verdict:
    """Accepts the bid; with ``extend_to`` (ms), moves the auction's end there."""
    return types.Verdict_Accept(types.Effects(extend_to=extend_to))


def reject(code: str, message: str) -> types.Verdict:
    """Rejects the bid with a machine-readable ``code`` and a ``message``."""
    return types.Verdict_Reject(types.Rejection(code=code, message=message))


def notification(recipient: str, kind: str, preview: str, data: Optional[dict] = None) -> types.Notification:
    """A notification of type ``kind`` for ``recipient``; ``data`` is a dict."""
    return types.Notification(recipient=recipient, kind=kind, preview=preview, data=to_json(data or {}))


PASS = types.FilterResult_Pass()
"""The event is delivered as it is."""

DROP = types.FilterResult_Drop()
"""The event is not delivered on this subscription."""


def replace_with(data: dict) -> types.FilterResult:
    """The event is delivered with ``data`` (a dict) as its data."""
    return types.FilterResult_Replace(to_json(data))


ALLOW = types.Authorization_Allow()
"""The stream request goes ahead."""


def refuse(code: str, message: str) -> types.Authorization:
    """Refuses the stream request: the caller gets ``403`` with this
    machine-readable ``code`` (``a-z``, ``0-9``, ``_``) and ``message``."""
    return types.Authorization_Refuse(types.Rejection(code=code, message=message))


def claims_of(request) -> Optional[dict]:
    """The caller's verified claims as a dict; ``None`` when anonymous."""
    return parse_object(request.caller) if request.caller is not None else None


def param(request, name: str) -> Optional[str]:
    """The value of the request's query parameter ``name``, if given."""
    for key, value in request.params:
        if key == name:
            return value
    return None
