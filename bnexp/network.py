"""One question asked of the network, by both sides of the process boundary (no TensorFlow here): does a
host answer at all? Asked once, briefly, so that an offline machine fails in seconds with a clear line
instead of letting a downloader retry for minutes."""

from __future__ import annotations

import socket


def reachable(host: str, timeout_s: float, port: int = 443) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False
