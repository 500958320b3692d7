import time

import pytest

from src.models.tracking import check_tracking_server
from src.utils import PipelineError
from tests.repo_tools import free_port


def test_unreachable_server_fails_fast_with_a_clear_message():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(PipelineError, match=f"MLflow tracking server {uri} is unreachable"):
        check_tracking_server(uri)
    assert time.monotonic() - start < 10
