"""The real Wyoming voice servers (piper TTS, faster-whisper STT) on loopback.

scripts/setup-voice installs them on first use (~30 s); after that this module
takes a few seconds: both servers start once per run (conftest), and each request is
well under 1 s.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from custom_components.majordome.voice import wyoming_client
from devtools.voice_servers import (
    STT_RATE,
    PiperServer,
    WhisperServer,
    async_describe,
    async_synthesize,
    async_transcribe,
    resample_pcm16,
    silence,
    spoken_command,
    wav_bytes,
)

from .pipeline_helpers import words

REPO_ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_describe(
    socket_enabled: None, piper_server: PiperServer, whisper_server: WhisperServer
) -> None:
    tts_info = asyncio.run(async_describe(piper_server.host, piper_server.port))
    assert tts_info.tts
    assert any(voice.name == "en_US-joe-medium" for voice in tts_info.tts[0].voices)
    asr_info = asyncio.run(async_describe(whisper_server.host, whisper_server.port))
    assert asr_info.asr
    assert not asr_info.tts
    assert piper_server.uri == f"tcp://127.0.0.1:{piper_server.port}"


def test_majordome_describes_the_real_servers(
    socket_enabled: None, piper_server: PiperServer, whisper_server: WhisperServer
) -> None:
    """What the household options ask each server: piper describes every voice it knows
    (about 250 kB), which the client's limits must let through."""

    async def describe(server: PiperServer | WhisperServer) -> wyoming_client.Info:
        address = wyoming_client.ServerAddress.parse(f"{server.host}:{server.port}")
        return await wyoming_client.async_describe(address)

    tts_info = asyncio.run(describe(piper_server))
    assert "en_US-joe-medium" in wyoming_client.installed_voices(tts_info)
    assert asyncio.run(describe(whisper_server)).asr


def test_round_trip(
    socket_enabled: None, piper_server: PiperServer, whisper_server: WhisperServer
) -> None:
    pcm, rate = asyncio.run(
        async_synthesize(piper_server.host, piper_server.port, "turn on the kitchen light")
    )
    assert rate == 22050
    assert 0.5 < len(pcm) / 2 / rate < 4  # about a second of speech
    command = resample_pcm16(pcm, rate, STT_RATE)
    assert abs(len(command) / 2 / STT_RATE - len(pcm) / 2 / rate) < 0.01
    text = asyncio.run(
        async_transcribe(whisper_server.host, whisper_server.port, command + silence(1.0))
    )
    assert "kitchen light" in words(text), text


def test_spoken_command(
    socket_enabled: None, piper_server: PiperServer, whisper_server: WhisperServer
) -> None:
    pcm = spoken_command(piper_server, "what is the temperature in the living room")
    assert len(pcm) % 2 == 0
    assert pcm.endswith(silence(1.0))
    text = asyncio.run(async_transcribe(whisper_server.host, whisper_server.port, pcm))
    assert "living room" in words(text), text
    wav = wav_bytes(pcm, STT_RATE)
    assert wav.startswith(b"RIFF")
    assert len(wav) == 44 + len(pcm)


def test_silence(socket_enabled: None, whisper_server: WhisperServer) -> None:
    text = asyncio.run(async_transcribe(whisper_server.host, whisper_server.port, silence(2.0)))
    # tiny.en answers "" here; whisper is known to hallucinate on silence, so
    # only require that it is short and not our command.
    assert "kitchen" not in text.lower()
    assert len(text) < 40, text


def test_unknown_voice_is_an_error(socket_enabled: None, piper_server: PiperServer) -> None:
    with pytest.raises(RuntimeError, match="error"):
        asyncio.run(
            async_synthesize(piper_server.host, piper_server.port, "hello", voice="xx_XX-none-low")
        )


def test_stop_leaves_no_process(socket_enabled: None) -> None:
    server = PiperServer(warm_up=False)
    server.start()
    pid = server.pid
    assert pid is not None
    assert not _gone(pid)
    server.stop()
    assert server.pid is None
    assert _gone(pid)
    server.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_server_dies_with_its_parent(socket_enabled: None) -> None:
    """A parent killed outright (no atexit, no stop()) takes its server with it."""
    script = (
        "import sys, time\n"
        "from devtools.voice_servers import PiperServer\n"
        "server = PiperServer(warm_up=False)\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid)
    finally:
        parent.kill()
        parent.wait()
