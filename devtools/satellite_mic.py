"""A fake microphone for wyoming-satellite's --mic-command (stdlib only).

usage: satellite_mic.py SPEECH_WAV PLAY_TRIGGER

Writes raw 16 kHz s16le mono PCM to stdout in real time: silence forever, and the
speech of SPEECH_WAV (read afresh each time, so it can be replaced between turns)
once each time the file PLAY_TRIGGER appears (it is deleted). wyoming-satellite reads
the command's stdout as fast as it comes, so the pacing must happen here.

It runs under the satellite venv's interpreter: no imports from this repository.
It ends when the satellite stops reading (broken pipe) or dies (parent-death signal).
"""

import ctypes
import os
from pathlib import Path
import signal
import sys
import time
import wave

RATE = 16000
SAMPLES_PER_CHUNK = 1024  # 64 ms, what wyoming-satellite reads by default
CHUNK_BYTES = 2 * SAMPLES_PER_CHUNK
MAX_LAG_S = 0.5  # further behind than this (a starved CPU), restart the clock


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_speech(path: str) -> bytes:
    with wave.open(path, "rb") as wav:
        got = (wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
        if got != (RATE, 2, 1):
            sys.exit(f"satellite_mic: {path} is {got}, need 16 kHz s16le mono")
        return wav.readframes(wav.getnframes())


def main() -> None:
    """Run until the satellite lets go of us."""
    speech_path, trigger = sys.argv[1], Path(sys.argv[2])
    _die_with_parent()
    out = sys.stdout.buffer
    silence = bytes(CHUNK_BYTES)
    pending = b""
    start, sent = time.monotonic(), 0
    while True:
        if not pending and trigger.exists():
            trigger.unlink(missing_ok=True)
            pending = _read_speech(speech_path)
            print(f"satellite_mic: playing {len(pending) / 2 / RATE:.2f} s", file=sys.stderr)
        if pending:
            chunk, pending = pending[:CHUNK_BYTES], pending[CHUNK_BYTES:]
            chunk = chunk.ljust(CHUNK_BYTES, b"\0")
        else:
            chunk = silence
        out.write(chunk)
        out.flush()
        sent += 1
        delay = start + sent * SAMPLES_PER_CHUNK / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -MAX_LAG_S:
            start, sent = time.monotonic(), 0


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        # The satellite closed our stdout: exit quietly, without a flush error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
