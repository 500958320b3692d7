"""The team MLflow tracking server: a PostgreSQL backend store and S3-compatible artifacts.

    python -m src.mlflow_server            (make mlflow-server)

Configured by the environment (README, "Team MLflow server and model registry"):

    MLFLOW_BACKEND_STORE_URI     postgresql://USER:PASSWORD@HOST:5432/DB (required; any
                                 SQLAlchemy URI MLflow accepts, e.g. ?host=/socket/dir)
    MLFLOW_ARTIFACTS_DESTINATION s3://bucket/prefix (required), or gs://bucket/prefix,
                                 wasbs://container@account.blob.core.windows.net/prefix
    MLFLOW_S3_ENDPOINT_URL       an S3-compatible store's endpoint (MinIO, Ceph, moto);
                                 unset for AWS S3. Credentials: AWS_ACCESS_KEY_ID/
                                 AWS_SECRET_ACCESS_KEY (or any boto3 credential source)
    MLFLOW_HOST, MLFLOW_PORT     where to listen (default 127.0.0.1:5000; 0.0.0.0 for a team)
    MLFLOW_WORKERS               server worker processes (default 2)
    MLFLOW_ALLOWED_HOSTS         Host headers accepted (MLflow's --allowed-hosts), when the
                                 server is reached by a DNS name
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION
                                 MLflow 3's GenAI job runner (default here: false)

The artifacts are proxied by the server (`--artifacts-destination`): clients (the pipeline,
CI) need only MLFLOW_TRACKING_URI (and a token, behind an authenticating proxy), never the
bucket's keys. Before MLflow starts, the database and the bucket are checked, and a problem
is one line naming it (exit 1), instead of MLflow's tracebacks from inside its workers.
Then this process becomes `mlflow server` (exec), so signals reach it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from src.utils import PipelineError, run_cli

BACKEND_SCHEMES = ("postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql", "sqlite")
ARTIFACT_SCHEMES = {
    "s3": "boto3 (installed)",
    "gs": "google-cloud-storage (pip install it into the server's venv)",
    "wasbs": "azure-storage-blob and azure-identity (pip install them into the server's venv)",
}
CHECK_TIMEOUT_S = 10


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def server_command(env: Mapping[str, str]) -> list[str]:
    """The `mlflow server` command line for this environment; PipelineError if it is unusable."""
    backend = env.get("MLFLOW_BACKEND_STORE_URI", "")
    artifacts = env.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not backend:
        raise PipelineError(
            "MLFLOW_BACKEND_STORE_URI is not set: the team server's database, e.g. "
            "postgresql://mlflow:PASSWORD@db.example.com:5432/mlflow"
        )
    if not artifacts:
        raise PipelineError(
            "MLFLOW_ARTIFACTS_DESTINATION is not set: the team server's artifact bucket, e.g. "
            "s3://my-bucket/mlflow (or gs://..., wasbs://...)"
        )
    scheme = urlsplit(backend).scheme
    if scheme not in BACKEND_SCHEMES:
        raise PipelineError(
            f"MLFLOW_BACKEND_STORE_URI {redact(backend)!r}: scheme {scheme!r} is not one of "
            f"{', '.join(BACKEND_SCHEMES)}"
        )
    art_scheme = urlsplit(artifacts).scheme
    if art_scheme not in ARTIFACT_SCHEMES:
        raise PipelineError(
            f"MLFLOW_ARTIFACTS_DESTINATION {artifacts!r}: must be s3://, gs:// or wasbs://"
        )
    host = env.get("MLFLOW_HOST") or "127.0.0.1"
    port = env.get("MLFLOW_PORT") or "5000"
    workers = env.get("MLFLOW_WORKERS") or "2"
    for key, value in (("MLFLOW_PORT", port), ("MLFLOW_WORKERS", workers)):
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise PipelineError(f"{key}={value!r}: must be a positive integer")
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow) if mlflow.is_file() else "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        port,
        "--workers",
        workers,
    ]
    if env.get("MLFLOW_ALLOWED_HOSTS"):
        cmd += ["--allowed-hosts", env["MLFLOW_ALLOWED_HOSTS"]]
    return cmd


def check_backend(uri: str) -> None:
    """Connect to the database once (SQLAlchemy, as MLflow will)."""
    import sqlalchemy

    args = {"connect_timeout": CHECK_TIMEOUT_S} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # the driver's own errors: OperationalError, missing module
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise PipelineError(
            f"MLFLOW_BACKEND_STORE_URI {redact(uri)}: cannot connect ({reason})"
        ) from None


def check_artifacts(uri: str, env: Mapping[str, str]) -> None:
    """For s3://, the bucket must exist and the credentials reach it (one HEAD request)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        return  # gs:// and wasbs:// are checked by MLflow on first use
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
        config=Config(connect_timeout=CHECK_TIMEOUT_S, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=parts.netloc)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        where = env.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
        raise PipelineError(
            f"MLFLOW_ARTIFACTS_DESTINATION {uri}: bucket {parts.netloc!r} at {where} is not "
            f"usable ({reason})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the stores, do not start")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    # `mlflow server` starts its workers by name (uvicorn/gunicorn): this venv's, first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # MLflow 3 also starts a job runner (a huey consumer per job kind) for its GenAI jobs
    # (trace scoring, prompt optimisation), none of which tracking and the registry use.
    # Measured here, one worker: 10 processes and 1308 MB RSS with it, 2 and 506 MB without.
    # MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true turns it back on.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = server_command(env)
    check_backend(env["MLFLOW_BACKEND_STORE_URI"])
    check_artifacts(env["MLFLOW_ARTIFACTS_DESTINATION"], env)
    where = f"http://{cmd[cmd.index('--host') + 1]}:{cmd[cmd.index('--port') + 1]}"
    if args.check:
        print(f"mlflow server: database and artifact store usable; would listen on {where}")
        return 0
    print(
        f"mlflow server on {where}: backend {redact(env['MLFLOW_BACKEND_STORE_URI'])}, "
        f"artifacts {env['MLFLOW_ARTIFACTS_DESTINATION']}",
        flush=True,
    )
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover (exec does not return)


if __name__ == "__main__":
    run_cli(main)
