"""Speak a reply sentence by sentence: each goes to TTS the moment it is complete.

Sentences are synthesized one after the other, in order, while the model keeps
writing the next ones; audio goes out chunk by chunk with its loudness so a page
can animate while it plays.
"""

from __future__ import annotations

import array
import asyncio
from collections.abc import Callable
import contextlib
import math
import sys
import time
from typing import Any

from ..const import LOGGER
from .wyoming_client import AudioFormat, ServerAddress, SpeechError, async_synthesize

type SendJson = Callable[[dict[str, Any]], None]
type SendAudio = Callable[[bytes], None]


def audio_level(pcm: bytes, width: int) -> float:
    """Loudness of a chunk of 16-bit PCM in 0..1 (RMS, scaled so speech spans the range)."""
    if width != 2 or len(pcm) < 2:
        return 0.0
    samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()  # Wyoming audio is little-endian
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    # Speech RMS sits around 0.05-0.3 of full scale: stretch it for the eye.
    return round(min(1.0, rms * 4), 3)


class Speaker:
    """Turn sentences into audio events, in order, starting with the first at once."""

    def __init__(
        self,
        address: ServerAddress,
        voice: str | None,
        send_json: SendJson,
        send_audio: SendAudio,
    ) -> None:
        """Start the worker; say() queues a sentence, finish() waits for the last."""
        self._address = address
        self._voice = voice
        self._send_json = send_json
        self._send_audio = send_audio
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.first_audio_at: float | None = None  # monotonic time of the first audio byte
        self.error: SpeechError | None = None
        self._task = asyncio.create_task(self._async_run(), name="majordome voice speaker")

    def say(self, sentence: str) -> None:
        """Queue a sentence to be spoken after those already queued."""
        self._sentences.put_nowait(sentence)

    async def finish(self) -> None:
        """Wait until every queued sentence has been spoken."""
        self._sentences.put_nowait(None)
        await self._task

    async def async_cancel(self) -> None:
        """Stop speaking now (barge-in), and wait until the TTS server is hung up on."""
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _async_run(self) -> None:
        index = 0
        while (sentence := await self._sentences.get()) is not None:
            self._send_json({"type": "sentence", "index": index, "text": sentence})
            if self.error is None:
                try:
                    await self._async_speak(index, sentence)
                except SpeechError as err:
                    # The text still reaches the user; speech stops for this reply
                    # instead of waiting on a dead server for every sentence.
                    LOGGER.warning("Text-to-speech failed: %s", err)
                    self.error = err
            index += 1

    async def _async_speak(self, index: int, sentence: str) -> None:
        started: AudioFormat | None = None
        # Closed here, not later by the garbage collector, when speech is cut short.
        async with contextlib.aclosing(
            async_synthesize(self._address, sentence, self._voice)
        ) as audio:
            async for audio_format, pcm in audio:
                self._play(index, started, audio_format, pcm)
                started = audio_format
        if started is not None:
            self._send_json({"type": "audio_end", "index": index})

    def _play(
        self, index: int, started: AudioFormat | None, audio_format: AudioFormat, pcm: bytes
    ) -> None:
        """Send a chunk, after an audio_start when its format is new."""
        if started != audio_format:
            self._send_json(
                {
                    "type": "audio_start",
                    "index": index,
                    "rate": audio_format.rate,
                    "width": audio_format.width,
                    "channels": audio_format.channels,
                }
            )
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self._send_json(
            {"type": "level", "index": index, "value": audio_level(pcm, audio_format.width)}
        )
        self._send_audio(pcm)
