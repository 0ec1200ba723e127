"""Gemini batch jobs: a second executor of a sweep's requests, filling the same answer cache."""
