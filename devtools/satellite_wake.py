"""A fake local wake-word detector for wyoming-satellite's --wake-command (stdlib only).

usage: satellite_wake.py TRIGGER [NAME]

wyoming-satellite writes the mic audio to our stdin and takes every line we print as
a detection. A blank line counts too, and so does EOF (its readline() returns b""):
so this never exits on its own and never prints a blank line. Prints NAME once each
time the file TRIGGER appears (it is deleted).

It runs under the satellite venv's interpreter: no imports from this repository.
It ends when its stdin closes (the satellite let go of it) or the satellite dies.
"""

import ctypes
import os
from pathlib import Path
import signal
import sys
import threading
import time

POLL_S = 0.02


def _drain_stdin() -> None:
    """Read the audio we are sent (an unread pipe would block the satellite)."""
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)  # stdin closed: the satellite disconnected from us


def main() -> None:
    """Run until the satellite lets go of us."""
    trigger = Path(sys.argv[1])
    name = (sys.argv[2] if len(sys.argv) > 2 else "") or "fake_wake"
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    threading.Thread(target=_drain_stdin, daemon=True).start()
    while True:
        if trigger.exists():
            trigger.unlink(missing_ok=True)
            print("satellite_wake: detection", file=sys.stderr, flush=True)
            print(name, flush=True)
        time.sleep(POLL_S)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        os._exit(0)
