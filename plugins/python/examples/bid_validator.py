"""Example ``bid-validator`` plugin: increment tiers, a per-tenant maximum and
anti-sniping; the Python twin of plugins/examples/bid-validator.

Rules, in order:

1. Maximum. With ``max_amount`` set, a bid over it is rejected with
   ``over_limit``.
2. First bid. With no current bid, a bid under the starting price is rejected
   with ``too_low`` (the host checks this too).
3. Increments. Otherwise a bid must beat the current bid by the increment of
   the tier the current bid is in, and by at least the product's own
   ``min_increment`` (and by at least 1); if not, it is rejected with
   ``increment_too_small``.
4. Anti-sniping. An accepted bid at most the snipe window before ``ends_at``
   moves the end to ``now + extend_ms``, when that is later than the current
   end.

Configuration (all optional; a value that does not parse is ignored with a
warning): ``tiers`` (``from:increment`` pairs, e.g.
``0:100,10000:500,100000:1000``, also used when the value does not parse;
unset: only the product's ``min_increment``), ``max_amount``,
``snipe_window_ms`` (default: the product's ``anti_snipe_ms``; ``0``: off),
``extend_ms`` (default: the window; at most 7 days).
"""

import json
from dataclasses import dataclass, field
from typing import List, Optional

from switchyard_plugin import accept, config, config_int, format_amount, parse_int64, reject, warn

DEFAULT_TIERS = "0:100,10000:500,100000:1000"
"""Suggested tiers, used when ``tiers`` is set but does not parse."""

MAX_EXTENSION_MS = 7 * 24 * 3_600_000
"""The host refuses an ``extend_to`` more than 7 days ahead: longer
extensions are capped."""

_I64_MAX = 2**63 - 1


def _saturating_add(a: int, b: int) -> int:
    return min(a + b, _I64_MAX)


@dataclass
class Tier:
    """From a current bid of ``start`` on, bids rise by at least ``increment``."""

    start: int
    increment: int


def parse_tiers(text: str) -> List[Tier]:
    """Parses ``from:increment`` pairs separated by commas (whitespace
    allowed): ``from`` at least 0, ``increment`` at least 1, no ``from``
    twice; sorted by ``from``. Raises ValueError saying what is wrong."""
    tiers = []
    for raw in text.split(","):
        entry = raw.strip()
        start_text, colon, increment_text = entry.partition(":")
        if not colon:
            raise ValueError(f"{json.dumps(entry)} is not from:increment")
        start = parse_int64(start_text)
        if start is None:
            raise ValueError(f"{json.dumps(entry)}: {json.dumps(start_text)} is not an integer")
        increment = parse_int64(increment_text)
        if increment is None:
            raise ValueError(f"{json.dumps(entry)}: {json.dumps(increment_text)} is not an integer")
        if start < 0 or increment < 1:
            raise ValueError(f"{json.dumps(entry)}: from must be at least 0 and increment at least 1")
        tiers.append(Tier(start, increment))
    tiers.sort(key=lambda t: t.start)
    if any(a.start == b.start for a, b in zip(tiers, tiers[1:])):
        raise ValueError("a tier's start repeats")
    return tiers


@dataclass
class Settings:
    """The validator's configuration."""

    tiers: List[Tier] = field(default_factory=list)
    max_amount: Optional[int] = None
    snipe_window_ms: Optional[int] = None
    extend_ms: Optional[int] = None

    @staticmethod
    def load() -> "Settings":
        """Reads the configuration, warning about each value that does not
        parse (and using the default instead)."""
        text = config("tiers")
        tiers: List[Tier] = []
        if text is not None:
            try:
                tiers = parse_tiers(text)
            except ValueError as err:
                warn(f'config "tiers": {err}; using the suggested {DEFAULT_TIERS}')
                tiers = parse_tiers(DEFAULT_TIERS)
        return Settings(
            tiers=tiers,
            max_amount=config_int("max_amount"),
            snipe_window_ms=config_int("snipe_window_ms"),
            extend_ms=config_int("extend_ms"),
        )


def min_increment(tiers: List[Tier], current: int, floor: int) -> int:
    """The smallest raise over ``current``: the increment of the last tier
    starting at or below it, but at least ``floor`` and at least 1."""
    tier = 0
    for t in tiers:
        if t.start > current:
            break
        tier = t.increment
    return max(tier, floor, 1)


def extension(settings: Settings, product, now: int) -> Optional[int]:
    """Where an accepted bid at ``now`` moves the auction's end, if anywhere."""
    window = product.anti_snipe_ms if settings.snipe_window_ms is None else settings.snipe_window_ms
    ends_at = product.ends_at
    if ends_at is None or window <= 0 or now > ends_at or ends_at - now > window:
        return None
    wanted = settings.extend_ms if settings.extend_ms is not None and settings.extend_ms > 0 else window
    extend_to = _saturating_add(now, min(wanted, MAX_EXTENSION_MS))
    return extend_to if extend_to > ends_at else None


def decide(settings: Settings, bid, product, now: int):
    """The verdict on ``bid`` for ``product`` (as it stands before the bid)."""
    amount, title = bid.amount, product.title
    if settings.max_amount is not None and amount > settings.max_amount:
        return reject(
            "over_limit",
            f"Bids are limited to {format_amount(settings.max_amount)}; "
            f"{format_amount(amount)} is over the limit.",
        )
    current = product.current_bid
    if current is None:
        if amount < product.starting_price:
            return reject(
                "too_low",
                f"The first bid on “{title}” must be at least the starting price of "
                f"{format_amount(product.starting_price)}; {format_amount(amount)} is too low.",
            )
    else:
        increment = min_increment(settings.tiers, current, product.min_increment)
        required = _saturating_add(current, increment)
        if amount < required:
            return reject(
                "increment_too_small",
                f"Bids on “{title}” must rise by at least {format_amount(increment)} over the current "
                f"{format_amount(current)}, to {format_amount(required)} or more; "
                f"{format_amount(amount)} is too small.",
            )
    return accept(extension(settings, product, now))


class WitWorld:
    """The slot's export."""

    def validate(self, bid, product, now):
        return decide(Settings.load(), bid, product, now)
