"""A stream authorizer that misbehaves on demand, for the host's sandbox tests
(not an example to follow). The request's query parameter ``mode`` picks it:

- ``loop``: runs forever (the call's deadline must stop it);
- ``oom``: allocates until memory runs out (the memory cap must stop it);
- ``raise``: raises (an uncaught exception fails the call);
- ``garbage``: refuses with a code the host does not accept;
- ``sleep``: sleeps 30 s (``time.sleep``: a WASI clock pollable, which the
  host answers at once and counts against the call's deadline);
- ``naps``: sleeps a millisecond at a time, forever;
- anything else: allows.
"""

import time

from switchyard_plugin import ALLOW, param, refuse


class WitWorld:
    def authorize(self, request):
        mode = param(request, "mode")
        if mode == "loop":
            n = 0
            while True:
                n = (n + 1) % 1_000_003
        if mode == "oom":
            hoard = []
            while True:
                hoard.append(bytearray(b"\x07" * (1 << 20)))
        if mode == "sleep":
            time.sleep(30)
        if mode == "naps":
            while True:
                time.sleep(0.001)
        if mode == "raise":
            raise RuntimeError("hostile authorizer raises on purpose")
        if mode == "garbage":
            return refuse("Not A Code!", "bad")
        return ALLOW
