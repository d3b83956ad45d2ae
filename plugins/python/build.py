"""Builds the Python plugins with componentize-py: the four examples and the
hostile test components, one component each.

    target/python/bin/python plugins/python/build.py [--out DIR]

(from the repository root; by default into target/plugins-lang/python/).
componentize-py comes from the virtual environment this runs in
(``scripts/setup --tests`` makes it at target/python from requirements.txt).
It generates the world's bindings (the ``wit_world`` package) itself, so none
are kept in the repository; ``componentize-py -d wit/switchyard.wit -w
event-filter bindings DIR`` writes them out for an editor.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parent
ROOT = PLUGINS.parent
WIT = ROOT / "wit" / "switchyard.wit"

# name, world, app module, directory of the app (the SDK, switchyard_plugin,
# is beside this file).
COMPONENTS = [
    ("bid_validator", "bid-validator", "bid_validator", HERE / "examples"),
    ("notification_shaper", "notification-shaper", "notification_shaper", HERE / "examples"),
    ("event_filter", "event-filter", "event_filter", HERE / "examples"),
    ("stream_authorizer", "stream-authorizer", "stream_authorizer", HERE / "examples"),
    ("hostile_filter", "event-filter", "hostile_filter", PLUGINS / "testing" / "python"),
    ("hostile_authorizer", "stream-authorizer", "hostile_authorizer", PLUGINS / "testing" / "python"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "plugins-lang" / "python")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tool = Path(sys.executable).parent / "componentize-py"
    for name, world, app, app_dir in COMPONENTS:
        started = time.monotonic()
        target = out / f"{name}.wasm"
        cmd = [
            str(tool), "-q", "-d", str(WIT), "-w", world,
            "componentize", app, "-p", str(app_dir), "-p", str(HERE), "-o", str(target),
        ]
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"componentize-py failed for {name}", file=sys.stderr)
            return 1
        took = int((time.monotonic() - started) * 1000)
        print(f"{name}.wasm ({world}): {target.stat().st_size} bytes in {took} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
