"""`promptgrade fake-gemini` serves scripted answers on its own, for demos and offline runs."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers.net import free_port
from promptgrade.providers.base import CompletionRequest, ImageInput
from promptgrade.providers.gemini import GeminiProvider


def test_the_command_answers_the_real_client_with_scripted_and_default_answers(
    tmp_path: Path, fake_api_key: str
) -> None:
    """With ``--keep-alive`` (the flag the throughput benchmark gives its server) one connection serves request
    after request."""
    image = ImageInput(b"\xff\xd8\xff tray", "image/jpeg")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({image.sha256: "Category: soup\nFood %: 40%"}), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "promptgrade.cli", "fake-gemini", "--port", str(port)]
    command += ["--answers", str(answers), "--default-answer", '{"categories": ["stew"], "grade": 5}']
    command += ["--keep-alive"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the fake server did not start"
                time.sleep(0.2)
        provider = GeminiProvider("gemini-2.5-flash", base_url=f"http://127.0.0.1:{port}")
        scripted = asyncio.run(provider.complete(CompletionRequest(prompt="grade", image=image)))
        other = ImageInput(b"\xff\xd8\xff other", "image/jpeg")
        default = asyncio.run(provider.complete(CompletionRequest(prompt="grade", image=other)))
        assert scripted.error is None and scripted.text == "Category: soup\nFood %: 40%"
        assert default.text == '{"categories": ["stew"], "grade": 5}'
        assert scripted.input_tokens > 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        path = "/v1beta/models/gemini-2.5-flash:generateContent"
        body = json.dumps({"contents": [{"parts": [{"text": "grade"}]}]})
        sockets = []
        for _ in range(2):
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["candidates"]
            sockets.append(connection.sock)
        assert sockets[0] is not None and sockets[0] is sockets[1]  # not closed and reopened
        connection.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
