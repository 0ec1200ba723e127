"""A real ``mlflow server`` process for the tests that need a tracking server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers.net import free_port


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: its backend and artifacts survive a kill, so a restart on the
    same port is the same server coming back."""

    def __init__(self, folder: Path, migrated: Path | None = None) -> None:
        """``migrated``: an empty, migrated sqlite store to start from (the server's own migration of a
        new file costs seconds of CPU on every start)."""
        self.folder = folder
        if migrated is not None and not (folder / "backend.db").exists():
            shutil.copy(migrated, folder / "backend.db")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'backend.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL the server and every worker it started: nothing is flushed, nothing says goodbye."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
