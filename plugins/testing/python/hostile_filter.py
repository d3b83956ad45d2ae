"""An event filter that misbehaves on demand, for the host's sandbox tests
(not an example to follow). The subscription parameter ``mode`` picks it:

- ``loop``: runs forever (the call's deadline must stop it);
- ``oom``: allocates until memory runs out (the memory cap must stop it);
- ``huge``: replaces the data with an 80 KiB object (the host refuses data over 64 KiB);
- ``raise``: raises (an uncaught exception fails the call);
- anything else: passes.
"""

from switchyard_plugin import PASS, replace_with, subscription_map


class WitWorld:
    def filter(self, event, subscription):
        mode = subscription_map(subscription).get("mode")
        if mode == "loop":
            n = 0
            while True:
                n = (n + 1) % 1_000_003
        if mode == "oom":
            hoard = []
            while True:
                hoard.append(bytearray(b"\x07" * (1 << 20)))
        if mode == "huge":
            return replace_with({"blob": "x" * (80 << 10)})
        if mode == "raise":
            raise RuntimeError("hostile filter raises on purpose")
        return PASS
