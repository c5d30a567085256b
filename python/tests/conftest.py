"""Fixtures: a real kvtier daemon on a temporary Unix socket.

The daemon binary is $KVTIER_BIN, else bin/kvtier at the repository root
(built with `go build` when missing).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))


def daemon_bin() -> str:
    b = os.environ.get("KVTIER_BIN") or str(ROOT / "bin" / "kvtier")
    if not os.path.exists(b):
        subprocess.run(["go", "build", "-o", b, "./cmd/kvtier"], cwd=ROOT, check=True)
    return b


class Daemon:
    """A running daemon: socket path, process, log."""

    def __init__(self, tmp: pathlib.Path, *args: str):
        self.socket = str(tmp / "kvtier.sock")
        self.log = tmp / "daemon.log"
        cmd = [daemon_bin(), "serve", "--socket", self.socket, "--nvme-dir", "", "--metrics-addr", "",
               "--hbm", "off", "--dram-bytes", "256MiB", *args]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"daemon did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(tmp: pathlib.Path, *args: str) -> Daemon:
    return Daemon(tmp, *args)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = Daemon(tmp_path_factory.mktemp("kvtierd"), "--lease-ttl", "1s")
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon):
    import kvtier

    with kvtier.Client(socket=daemon.socket, namespace="test") as c:
        yield c


@pytest.fixture
def inline_client(daemon: Daemon):
    import kvtier

    with kvtier.Client(socket=daemon.socket, namespace="test", shm=False) as c:
        yield c
