"""gunicorn settings for the predictor (`gunicorn -c gunicorn.conf.py`; `make serve`).

Environment: HOST (default 0.0.0.0; `make serve` uses 127.0.0.1), PORT (8000),
WEB_CONCURRENCY (worker processes, default 2), GUNICORN_THREADS (threads per worker,
default 4), GUNICORN_TIMEOUT (s, default 30), ACCESS_LOG ("-" = stdout, "" = off), plus the
app's own settings (MODEL_DIR, MAX_BATCH_SIZE, ... see flask_app/settings.py).

The app is loaded once in the master before forking (`preload_app`): the model files are
checked there, so a missing, truncated or foreign model stops the server at start with one
line naming the file and the problem (exit status 4), never a crash loop of workers. ONNX
Runtime is started only in the workers, after the fork (it does not survive a fork), each
with its own session; /metrics sums the counts of every worker (prometheus_client multiprocess
mode, see _metrics_dir below).
"""

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path


def _metrics_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for prometheus_client's multiprocess mode, emptied at server
    start. Runs when gunicorn reads this file, before it imports the app (prometheus_client
    chooses its mode at import). A value set by the caller is used (and emptied of *.db
    files) as is; otherwise a private directory under $TMPDIR, removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get("MLOPERATION_METRICS_OWNER") == str(os.getpid()):
        return given  # a config reload (SIGHUP) of this master: keep the counts
    if given:
        path = Path(given)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for old in path.glob("*.db"):
                old.unlink()
        except OSError as exc:
            print(
                f"mloperation predictor: cannot start: PROMETHEUS_MULTIPROC_DIR={given!r}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(4) from None
    else:
        path = Path(tempfile.mkdtemp(prefix="mloperation-metrics-"))
        os.environ["MLOPERATION_METRICS_CREATED"] = str(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    os.environ["MLOPERATION_METRICS_OWNER"] = str(os.getpid())
    return str(path)


_metrics_dir()

wsgi_app = "flask_app.wsgi:app"
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread: keep-alive connections, and a slow client holds one thread, not a whole worker.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a silent worker is replaced
graceful_timeout = 10
keepalive = 5
backlog = 2048
max_requests = 0  # no leak to work around; restarts would cost cold starts under load
accesslog = os.environ.get("ACCESS_LOG", "-") or None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
control_socket_disable = True  # several servers may share a machine (tests, benchmarks)
proc_name = "mloperation-predictor"


def _state(server):
    return server.app.wsgi().extensions["mloperation"]


def post_fork(server, worker):
    """Worker: start ONNX Runtime and score a test record.

    A model that ONNX Runtime cannot run stops the worker with gunicorn's boot-error
    status (3), on which the master shuts down instead of respawning.
    """
    from src.serving.model import ModelLoadError

    # Until the worker installs its own handlers (after this hook), it runs the master's,
    # which only queue signals: a stop during boot would be ignored until graceful_timeout.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    state = _state(server)
    try:
        state.model.open_session()
    except ModelLoadError as exc:
        print(f"mloperation predictor: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


def child_exit(server, worker):
    """Master: drop an exited worker's live gauges; its counters' files stay and are
    still summed, so counters never go backwards when a worker is replaced."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Master, at shutdown: remove the metrics directory this file created."""
    created = os.environ.get("MLOPERATION_METRICS_CREATED")
    if created:
        shutil.rmtree(created, ignore_errors=True)
