"""Development harness for Majordome: local LLM server, real Home Assistant, demo house."""
