"""Test doubles that let the real clients run end to end without the internet or an API key."""
