"""The voice bench's parts (devtools/bench_voice.py), not the bench itself.

What a satellite fetches and when, and the summary keys of the "simple command, all
stages" scenario (its counting proxy is tested in test_model_proxy).
"""

from __future__ import annotations

from devtools.bench_voice import (
    PathRun,
    SimpleRound,
    first_sentence,
    satellite_fetch_url,
    summarize_simple,
)
from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType

STREAM_URL = "/api/tts_proxy/abc.wav"


def _run_start(*, stream_response: bool | None) -> PipelineEvent:
    output: dict[str, object] = {"token": "abc.wav", "url": STREAM_URL}
    if stream_response is not None:  # older releases do not say
        output["stream_response"] = stream_response
    return PipelineEvent(PipelineEventType.RUN_START, {"tts_output": output})


def test_a_satellite_fetches_a_streamed_reply_when_streaming_starts() -> None:
    """With `stream_response`, the URL is fetched at `tts_start_streaming`, not at `tts-end`."""
    kept = satellite_fetch_url(_run_start(stream_response=True), "")
    assert kept == STREAM_URL
    progress = PipelineEvent(
        PipelineEventType.INTENT_PROGRESS, {"chat_log_delta": {"content": "Hi"}}
    )
    assert satellite_fetch_url(progress, kept) == ""
    streaming = PipelineEvent(PipelineEventType.INTENT_PROGRESS, {"tts_start_streaming": True})
    assert satellite_fetch_url(streaming, kept) == STREAM_URL


def test_a_reply_that_is_not_streamed_is_fetched_at_tts_end() -> None:
    """Without streaming (an older release, or a short local answer), `tts-end` gives the URL."""
    for stream_response in (None, False):
        assert satellite_fetch_url(_run_start(stream_response=stream_response), "") == ""
    end = PipelineEvent(PipelineEventType.TTS_END, {"tts_output": {"url": "/api/tts_proxy/x.wav"}})
    assert satellite_fetch_url(end, "") == "/api/tts_proxy/x.wav"
    assert satellite_fetch_url(PipelineEvent(PipelineEventType.TTS_START, {}), STREAM_URL) == ""


def test_first_sentence_of_the_spoken_answer() -> None:
    """The floor speaks the answer's first sentence; an answer without an end is whole."""
    assert first_sentence("Turned on the light. Anything else?") == "Turned on the light."
    assert first_sentence("It is 3.5 degrees! Cold.") == "It is 3.5 degrees!"
    assert first_sentence(" Turned on the light ") == "Turned on the light"


def test_the_simple_summary_keys_are_medians_over_the_rounds() -> None:
    """Medians of both paths and of STT + TTS; the light counts only when on in every run."""

    def _round(p: float, s: float, stt: float, tts: float, *, on: bool = True) -> SimpleRound:
        return SimpleRound(
            PathRun("pipeline", first_audio_s=p, reply="Turned on the light.", light_on=on),
            PathRun("streaming", first_audio_s=s, reply="Turned on the light.", light_on=True),
            stt_s=stt,
            tts_s=tts,
        )

    rounds = [_round(1.0, 0.6, 0.3, 0.2), _round(1.2, 0.5, 0.35, 0.25), _round(0.9, 0.7, 0.4, 0.2)]
    summary = summarize_simple(rounds)
    assert summary["simple_pipeline_s"] == 1.0
    assert summary["simple_streaming_s"] == 0.6
    assert summary["simple_floor_s"] == 0.6  # of 0.5, 0.6, 0.6
    assert summary["simple_streaming_over_floor"] == 1.0
    assert summary["simple_floor_stt_s"] == 0.35
    assert summary["simple_light_on"] is True
    assert summary["simple_replies"] == ["Turned on the light."]
    assert summary["simple_model_requests"] == 0
    assert summarize_simple([*rounds, _round(1, 1, 1, 1, on=False)])["simple_light_on"] is False
