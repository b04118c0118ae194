"""Real processes for the job-service tests: a throwaway PostgreSQL cluster and the API server (uvicorn).

PostgreSQL refuses to run as root, so as root (CI) the cluster runs as the ``postgres`` system user
that Debian's package creates, in a temp dir owned by it; as any other user it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresCluster:
    """initdb + pg_ctl in a temp dir, on a free loopback port, trust auth; ``stop`` shuts it down cleanly."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="pg_", dir="/tmp"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")  # KeyError: no postgres user (the caller skips)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class ApiServer:
    """``solrl serve api`` in a subprocess against an existing Ray cluster; kill/start it at will."""

    home: Path
    database_url: str
    ray_address: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        cmd = [sys.executable, "-m", "orchestration.cli", "serve", "api", "--host", "127.0.0.1",
               "--port", str(self.port), "--home", str(self.home), "--database-url", self.database_url,
               "--ray-address", self.ray_address]
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **self.env}, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"API server not ready after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
            self.proc = None

    def log_tail(self, chars: int = 4000) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def solrl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``solrl ARGS`` against this server (and its database, for ``admin``)."""
        env = {**os.environ, "SOLRL_API_URL": self.url, "SOLRL_DATABASE_URL": self.database_url,
               "SOLRL_HOME": str(self.home)}
        proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"solrl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def create_token(self, name: str, admin: bool = False) -> str:
        out = self.solrl("admin", "token", "create", "--name", name, *(["--admin"] if admin else [])).stdout
        return out.strip().splitlines()[-1]  # the secret is the last line

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)
