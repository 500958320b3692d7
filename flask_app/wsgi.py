"""WSGI entry point for gunicorn (`flask_app.wsgi:app`, see gunicorn.conf.py).

A model or setting the server cannot use stops the process here, before any worker is
forked, with one line naming the file and the problem and exit status 4 (gunicorn's
"application failed to load": it never respawns workers into a crash loop).
"""

from __future__ import annotations

import sys

from flask_app import ConfigError, ModelLoadError, create_app

APP_LOAD_ERROR = 4

try:
    app = create_app(open_session=False)  # each worker opens its own after fork
except (ModelLoadError, ConfigError) as exc:
    print(f"mloperation predictor: cannot start: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
