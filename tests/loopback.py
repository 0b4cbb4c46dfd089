"""Servers the tests start on 127.0.0.1: a free port, and a wait until one answers its health check."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from typing import Callable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float,
                       explain: Callable[[], str] = lambda: "") -> None:
    """Poll ``url`` until it answers 200; fail with ``explain()`` if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, f"{url} never answered\n{explain()}"
        time.sleep(0.5)
