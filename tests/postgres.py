"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, on a free port.

It uses the server binaries of Debian's postgresql package (make test installs it, through
scripts/system-deps.sh). Running as root, the server runs as the postgres user, as PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from candor_cli.processes import free_port


def server_binaries() -> Path:
    """The folder with initdb and pg_ctl: the newest Debian PostgreSQL, else the PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL server binaries not found; install Debian's postgresql package")
    return Path(found).parent


class PostgresServer:
    """One PostgreSQL server, started on construction; ``stop`` removes it and its data."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="candor-pg-"))
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        bin_dir = server_binaries()
        data = self.folder / "data"
        self._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "candor", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
        self._start = [*self._pg_ctl, "-o", options, "-l", str(self.folder / "server.log"), "-w", "start"]
        self._run(*self._start)

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as_owner, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for one database of this server."""
        return f"host=127.0.0.1 port={self.port} user=candor dbname={database}"

    def new_database(self) -> str:
        """Create an empty database; returns its connection string."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def pause(self) -> None:
        """Stop the server, keeping its data, as an outage or a database restart would."""
        self._run(*self._pg_ctl, "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server again after ``pause``."""
        self._run(*self._start)

    def stop(self) -> None:
        """Stop the server and delete its data."""
        self._run(*self._pg_ctl, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
