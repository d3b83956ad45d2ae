"""Example ``event-filter`` plugin: per-subscription amount floors and field
redaction; the Python twin of plugins/examples/event-filter.

Subscription parameters (a stream's query parameters the host does not own):

- ``min_amount=N``: drops events whose data has a numeric ``amount`` below N.
  Events without one pass. A non-numeric N is ignored (every event passes
  it) with a warning.
- ``redact=bidder`` or ``redact=bidder,leader``: delivers the data without
  those fields, at the top level and inside a nested ``product`` object.
  Each name also removes the same name with ``_id`` appended. Data that is
  not a JSON object cannot be redacted, so such an event is dropped, with a
  warning.

Without either parameter, every event passes untouched. Data is replaced
only when a field was removed. The plugin reads no configuration.
"""

import math
import re

from switchyard_plugin import DROP, PASS, object_field, parse_int64, parse_object, replace_with, warn

# A decimal number as Rust's ``f64`` parser reads it (``float()`` would also
# take ``1_000``, ``nan`` and ``infinity``).
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_floor(text: str):
    """A ``min_amount`` floor (an int or a finite float); ``None`` if it is
    not a number."""
    t = text.strip()
    n = parse_int64(t)
    if n is not None:
        return n
    if not _DECIMAL.fullmatch(t):
        return None
    f = float(t)
    return f if math.isfinite(f) else None


def parse_params(subscription):
    """The floors (each must be met) and the field names to redact."""
    floors, redact = [], set()
    for name, value in subscription:
        if name == "min_amount":
            floor = parse_floor(value)
            if floor is None:
                warn(f"min_amount={value!r} is not a number; not filtering by amount")
            else:
                floors.append(floor)
        elif name == "redact":
            for field in (f.strip() for f in value.split(",")):
                if field:
                    redact.add(field)
                    redact.add(f"{field}_id")
    return floors, redact


def _excluded(floors, amount) -> bool:
    # JSON's true and false are ints in Python; they are no amount.
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return False
    return any(amount < floor for floor in floors)


def _remove(obj: dict, fields: set) -> bool:
    gone = [key for key in obj if key in fields]
    for key in gone:
        del obj[key]
    return bool(gone)


def decide(event, floors, redact):
    """What happens to ``event`` on subscriptions asking for these."""
    if not floors and not redact:
        return PASS
    if not redact:
        return DROP if _excluded(floors, object_field(event.data, "amount")) else PASS
    data = parse_object(event.data)
    if data is None:
        warn(f"event {event.id}: data is not a JSON object and cannot be redacted; dropped")
        return DROP
    if _excluded(floors, data.get("amount")):
        return DROP
    changed = _remove(data, redact)
    product = data.get("product")
    if isinstance(product, dict):
        changed = _remove(product, redact) or changed
    return replace_with(data) if changed else PASS


class WitWorld:
    """The slot's export."""

    def filter(self, event, subscription):
        return decide(event, *parse_params(subscription))
