import json
import os
import stat

import pytest

from src.utils import PipelineError, atomic_write, current_umask, load_params, write_json

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("old")

    def broken(path):
        path.write_text("half-wri")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"], "temp file left behind"


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic_write(target, lambda p: p.write_text("one"))
    atomic_write(target, lambda p: p.write_text("two"))
    assert target.read_text() == "two"


def test_write_json_is_deterministic(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1.5, "a": [1, 2]})
    write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1.5})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1.5}


def test_load_params_names_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_load_params_rejects_non_mapping(tmp_path):
    (tmp_path / "p.yaml").write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match="mapping"):
        load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_mode_of_any_new_file(umask, tmp_path):
    """Not mkstemp's private 0600: a server user or a teammate must be able to read outputs
    as the umask allows, the same as a file written directly."""
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "out.json", {"a": 1})
        (tmp_path / "direct.txt").write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "out.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "direct.txt").stat().st_mode)
    assert current_umask() == previous
