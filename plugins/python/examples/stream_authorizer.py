"""Example ``stream-authorizer`` plugin: a product's bid stream for its
bidders only; the Python twin of plugins/examples/stream-authorizer.

A request naming a topic ``bids:{id}`` is allowed only when the caller's
verified claims list ``{id}`` under the claim ``bid_on`` (a JSON array of
strings, or one comma-separated string), which the identity provider fills
with the products the user has bid on. Anonymous callers are refused with
``login_required``; others, and publisher tokens (claims with ``svc``), with
``not_a_bidder``. Every other topic is allowed.

Configuration: ``claim`` (default ``bid_on``), ``prefix`` (default ``bids:``).
"""

from switchyard_plugin import ALLOW, claims_of, config, refuse


def products(claims: dict, claim: str) -> list:
    """The product ids the claims list under ``claim``."""
    value = claims.get(claim)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return []


def decide(request, claim: str, prefix: str):
    """The decision for ``request``, with the claim's name and the prefix."""
    wanted = [t[len(prefix):] for t in request.topics if t.startswith(prefix)]
    if not wanted:
        return ALLOW
    claims = claims_of(request)
    if claims is None:
        return refuse("login_required", "a product's bid stream is for its bidders: sign in")
    if "svc" in claims:
        return refuse("not_a_bidder", "a publisher token cannot read a product's bid stream")
    mine = products(claims, claim)
    for product in wanted:
        if product not in mine:
            return refuse(
                "not_a_bidder",
                f"the bid stream of product {product} is for those who have bid on it",
            )
    return ALLOW


class WitWorld:
    """The slot's export."""

    def authorize(self, request):
        return decide(request, config("claim") or "bid_on", config("prefix") or "bids:")
