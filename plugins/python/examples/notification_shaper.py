"""Example ``notification-shaper`` plugin: privacy-preserving previews and
outbid digests; the Python twin of plugins/examples/notification-shaper.

- ``message`` (a user's message): one notification of kind ``message`` to
  ``to``, whose preview is the body with whitespace collapsed, e-mail
  addresses, card numbers and phone numbers replaced by ``[email]``,
  ``[card]`` and ``[phone]``, cut to 140 chars; data
  ``{"from", "to", "product_id"}``.
- ``outbid`` (the host's digest of one user's outbids in one decision round;
  the body is JSON ``{"product_id", "title", "times", "amount", "leader"}``):
  one ``bid.outbid`` notification to ``to``, previewed as
  ``Outbid 3 times on “Lamp”: the bid is now 12.50``; data
  ``{"product_id", "amount", "times"}``. A body that is not such a digest
  gives a ``bid.outbid`` notification previewing the body as a message
  would, with data ``{"product_id"}``, and a warning.
- any other kind: one notification of that kind, shaped like ``message``.

A message without a recipient gives no notification. No configuration.
"""

from dataclasses import dataclass
from typing import Optional

from redact import collapse, cut, preview
from switchyard_plugin import debug, format_amount, notification, parse_object, warn

PREVIEW_CHARS = 140
"""The longest preview, in characters."""

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class OutbidDigest:
    """The body of an ``outbid`` message."""

    product_id: Optional[str]
    title: str
    times: int
    amount: int
    leader: Optional[str]

    @staticmethod
    def parse(body: str) -> Optional["OutbidDigest"]:
        """``None`` unless ``body`` is a JSON object with a string ``title``,
        an integer ``times`` of at least 1 and an integer ``amount``
        (``product_id`` and ``leader``, if present, strings or null)."""
        obj = parse_object(body)
        if obj is None:
            return None
        optional = {}
        for key in ("product_id", "leader"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                return None
            optional[key] = value
        title, times, amount = obj.get("title"), obj.get("times"), obj.get("amount")
        if not isinstance(title, str):
            return None
        if not _is_int(times) or not 1 <= times < 2**64:
            return None
        if not _is_int(amount) or not _I64_MIN <= amount <= _I64_MAX:
            return None
        return OutbidDigest(optional["product_id"], title, times, amount, optional["leader"])

    def preview(self) -> str:
        """``Outbid 3 times on “Lamp”: the bid is now 12.50``, at most
        PREVIEW_CHARS."""
        times = "" if self.times == 1 else f" {self.times} times"
        title = collapse(self.title)
        on = f" on “{title}”" if title else ""
        return cut(f"Outbid{times}{on}: the bid is now {format_amount(self.amount)}", PREVIEW_CHARS)


def _plain(message, kind):
    return notification(
        message.to,
        kind,
        preview(message.body, PREVIEW_CHARS),
        {"from": message.from_, "to": message.to, "product_id": message.product_id},
    )


def _outbid(message):
    digest = OutbidDigest.parse(message.body)
    if digest is None:
        warn(f"message {message.id}: the outbid digest is malformed; sending its text")
        return notification(
            message.to, "bid.outbid", preview(message.body, PREVIEW_CHARS), {"product_id": message.product_id}
        )
    product_id = digest.product_id if digest.product_id is not None else message.product_id
    return notification(
        message.to,
        "bid.outbid",
        digest.preview(),
        {"product_id": product_id, "amount": digest.amount, "times": digest.times},
    )


def shape(message):
    """The notifications for ``message``."""
    if not message.to:
        debug(f"message {message.id}: no recipient")
        return []
    return [_outbid(message) if message.kind == "outbid" else _plain(message, message.kind)]


class WitWorld:
    """The slot's export."""

    def shape(self, message):
        return shape(message)
