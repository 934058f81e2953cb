"""Voice: sentence streaming, Wyoming STT/TTS clients, the streaming endpoint."""
