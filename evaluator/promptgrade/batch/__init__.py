"""Batch jobs (Gemini, Bedrock, OpenAI): a second executor of a sweep's requests, filling the same answer cache."""
