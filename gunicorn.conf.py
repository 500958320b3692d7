"""gunicorn settings for the predictor (`gunicorn -c gunicorn.conf.py`; `make serve`).

Environment: HOST (default 0.0.0.0; `make serve` uses 127.0.0.1), PORT (8000),
WEB_CONCURRENCY (worker processes, default 2), GUNICORN_WORKER_CLASS (gevent),
GUNICORN_WORKER_CONNECTIONS (per worker, 1000), GUNICORN_THREADS (gthread only, 4),
GUNICORN_TIMEOUT (s, default 30), ACCESS_LOG ("-" = stdout, "" = off), plus the
app's own settings (MODEL_DIR, MAX_BATCH_SIZE, ... see flask_app/settings.py).

The app is loaded once in the master before forking (`preload_app`): the model files are
checked there, so a missing, truncated or foreign model stops the server at start with one
line naming the file and the problem (exit status 4), never a crash loop of workers. ONNX
Runtime is started only in the workers, after the fork (it does not survive a fork), each
with its own session; /metrics sums the counts of every worker (prometheus_client multiprocess
mode, see _metrics_dir below).
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path


def _remove_in_master(path: Path, master_pid: int) -> None:
    if os.getpid() == master_pid:  # forked workers inherit atexit handlers
        shutil.rmtree(path, ignore_errors=True)


def _metrics_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for prometheus_client's multiprocess mode, emptied at server
    start. Runs when gunicorn reads this file, before it imports the app (prometheus_client
    chooses its mode at import). A value set by the caller is used (and emptied of *.db
    files) as is; otherwise a private directory under $TMPDIR, removed when the master exits."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get("MLOPERATION_METRICS_OWNER") == str(os.getpid()):
        return given  # a config reload (SIGHUP) of this master: keep the counts
    if given:
        path = Path(given)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for old in [*path.glob("*.db"), *path.glob("drift-window.json")]:
                old.unlink()  # counters, and the drift window based on them
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
        atexit.register(_remove_in_master, path, os.getpid())  # also if the app fails to load
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    os.environ["MLOPERATION_METRICS_OWNER"] = str(os.getpid())
    return str(path)


_metrics_dir()

wsgi_app = "flask_app.wsgi:app"
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent: each connection is a greenlet, so clients that send their headers or body slowly
# cost memory, not a thread; gthread's 4 threads were all held by 8 such clients, leaving
# /health unanswered (benchmarks/slow_clients.py, docs/serving.md). The headers of each
# request must arrive within `keepalive` s (gunicorn's gevent worker), a body within
# BODY_TIMEOUT. GUNICORN_WORKER_CLASS=gthread brings back the threaded worker.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))  # gthread only
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
    """Worker: start ONNX Runtime and score a test record; /ready follows the worker's
    life (503 once it is draining after SIGTERM).

    A model that ONNX Runtime cannot run stops the worker with gunicorn's boot-error
    status (3), on which the master shuts down instead of respawning.
    """
    from src.serving.model import ModelLoadError

    # Until the worker installs its own handlers (after this hook), it runs the master's,
    # which only queue signals: a stop during boot would be ignored until graceful_timeout.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    state = _state(server)
    state.draining = lambda: not worker.alive
    try:
        state.model.open_session()
    except ModelLoadError as exc:
        print(f"mloperation predictor: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


def worker_exit(server, worker):
    """Worker, as it exits: the drift counts it has not flushed yet go to the counters."""
    monitor = _state(server).drift
    if monitor is not None:
        monitor.flush()


def child_exit(server, worker):
    """Master: drop an exited worker's live gauges; its counters' files stay and are
    still summed, so counters never go backwards when a worker is replaced."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_request(worker, req, environ, resp):
    """gevent worker: after each request, let every other connection with data waiting run
    first. A greenlet yields only when a read would block, so a keep-alive client that sends
    its next request at once kept the worker to itself: p99 at 8 wrk connections went from
    ~30 ms (gthread) to 500-700 ms; with gevent.idle() it is back to 20-80 ms."""
    if worker_class == "gevent":
        import gevent

        gevent.idle()
