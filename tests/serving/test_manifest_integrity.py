"""The serving manifest cannot be trusted blindly: tampered or mismatched exports are refused.

model.json carries its own checksum and the ONNX file's, and at load it is checked against
what the ONNX graph declares (inputs, output shape, the classifier's class labels, the
serving contract stored in the graph's metadata). Each tampered export below must be
refused with one line naming the problem: by the reader (ServingModel.load, what the
export stage and the server call) and by the real server start (gunicorn, exit status 4,
no worker started), never served with wrong labels.

Mechanics on the fixture tables' models (tests/fixture_data.py), not the configured data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from src.models.export_model import export
from src.serving.manifest import CHECKSUM_KEY, MANIFEST_FILE
from src.serving.model import ModelLoadError, ServingModel
from src.serving.onnx_graph import CONTRACT_KEY, read_graph
from tests.conftest import train_bundle
from tests.serving.conftest import FIXTURE_SERVING_TRAIN, PARITY_TOLERANCE, rewrite_export

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


@pytest.fixture(scope="session")
def binary_serving_dir(fixture_cases, tmp_path_factory) -> Path:
    """The binary fixture table's model, exported like `fixture_serving_dir`."""
    case = fixture_cases["binary"]
    params = {**case.params, "train": {**case.params["train"], **FIXTURE_SERVING_TRAIN}}
    out = tmp_path_factory.mktemp("binary-serving") / "model"
    export(train_bundle(params, case.train), out, {"test": case.test}, PARITY_TOLERANCE, "3" * 64)
    return out


@pytest.fixture
def exports(fixture_serving_dir, regression_serving_dir, binary_serving_dir) -> dict[str, Path]:
    return {
        "multiclass": fixture_serving_dir,
        "regression": regression_serving_dir,
        "binary": binary_serving_dir,
    }


def _categorical(manifest: dict) -> dict:
    return next(f for f in manifest["schema"]["features"] if f["type"] == "categorical")


def _numeric(manifest: dict) -> dict:
    return next(f for f in manifest["schema"]["features"] if f["type"] == "numeric")


def _reverse_classes(m: dict) -> None:
    m["classes"].reverse()
    m["schema"]["classes"].reverse()  # consistent within the manifest: only the graph knows


def _swap_features(m: dict) -> None:  # order of schema features and inputs, consistently
    for listing in (m["schema"]["features"], m["onnx"]["inputs"]):
        listing[0], listing[-1] = listing[-1], listing[0]


def _numeric_as_categorical(m: dict) -> None:
    feature = _numeric(m)
    for key in ("min", "max"):
        del feature[key]
    feature.update(type="categorical", categories=["1", "2"])
    entry = next(i for i in m["onnx"]["inputs"] if i["feature"] == feature["name"])
    entry["dtype"] = "string"


def _delete(*path: str | int) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]

    return edit


def _drop_category(m: dict) -> None:
    _categorical(m)["categories"].pop()


def _strip_contract(source: Path) -> bytes:
    import onnx

    model = onnx.load(source / "model.onnx")
    del model.metadata_props[:]
    return model.SerializeToString()


# name -> (edit of the multiclass fixture export's manifest, graph from another export (or a
# function of the export dir), recompute checksums, what the one line must say)
CASES: dict[str, tuple] = {
    "reversed classes, checksums recomputed": (
        _reverse_classes,
        None,
        True,
        r"the graph's classifier has classes \[\"alpha\", \"beta\", \"gamma\"\], the manifest "
        r"\[\"gamma\", \"beta\", \"alpha\"\]",
    ),
    "reversed classes, checksum left": (
        _reverse_classes,
        None,
        False,
        r"model.json was changed after export: its content hashes to \w+…, its "
        r"manifest_sha256 says",
    ),
    "a category removed": (
        _drop_category,
        None,
        True,
        r"schema\.features\[\d\]\.categories is \[.*\] in the manifest, \[.*\] in the graph",
    ),
    "features reordered": (
        _swap_features,
        None,
        True,
        r"does not match its manifest: inputs\[0\]\.\w+ is \S+ in the manifest, \S+ in the graph",
    ),
    "numeric input declared a string": (
        _numeric_as_categorical,
        None,
        True,
        r"input '\w+' is float32 in the graph, string in the manifest",
    ),
    "categories missing": (
        lambda m: _categorical(m).pop("categories"),
        None,
        True,
        r"model.json is invalid: lacks schema\.features\[\d\]\.categories",
    ),
    "classes missing": (_delete("classes"), None, True, r"invalid: lacks classes"),
    "onnx.inputs missing": (_delete("onnx", "inputs"), None, True, r"invalid: lacks onnx\.inputs"),
    "schema missing": (_delete("schema"), None, True, r"invalid: lacks schema;"),
    "checksum missing": (_delete(CHECKSUM_KEY), None, False, r"lacks its checksum"),
    "classes a string": (
        lambda m: m.update(classes="alpha,beta,gamma"),
        None,
        True,
        r"invalid: classes must be a list, found str",
    ),
    "nullable a string": (
        lambda m: _numeric(m).update(nullable="yes"),
        None,
        True,
        r"schema\.features\[\d\]\.nullable must be true or false, found str",
    ),
    "min a string": (
        lambda m: _numeric(m).update(min="0"),
        None,
        True,
        r"schema\.features\[\d\]\.min must be an integer or a number, found str",
    ),
    "model a list": (lambda m: m.update(model=[]), None, True, r"invalid: model must be an object"),
    "onnx.file a path": (
        lambda m: m["onnx"].update(file="../model.onnx"),
        None,
        True,
        r"onnx\.file '\.\./model\.onnx' must be a file name in the model directory",
    ),
    "regression graph swapped in": (
        None,
        "regression",
        True,
        r"model.onnx does not match its manifest: the graph has no output 'probabilities'",
    ),
    "binary graph swapped in": (
        None,
        "binary",
        True,
        r"output 'probabilities' is float32 of shape \[None, 2\], the manifest expects float32 "
        r"with 3 column\(s\)",
    ),
    "graph swapped, sha256 left": (
        None,
        "binary",
        False,
        r"model.onnx does not match its manifest .*model.json: sha256 \w+… expected",
    ),
    "graph without the contract": (
        None,
        _strip_contract,
        True,
        rf"carries no MLOperation serving contract \(metadata '{CONTRACT_KEY}'\)",
    ),
}


def tampered(name: str, exports: dict[str, Path], dest: Path) -> Path:
    edit, graph_from, checksums, _ = CASES[name]
    source = exports["multiclass"]
    if graph_from is None:
        graph = None
    elif callable(graph_from):
        graph = graph_from(source)
    else:
        graph = (exports[graph_from] / "model.onnx").read_bytes()
    return rewrite_export(source, dest, edit, graph, checksums)


def test_the_untampered_export_loads(exports):
    for model_dir in exports.values():
        ServingModel.load(model_dir, open_session=False)


@pytest.mark.parametrize("name", CASES)
def test_the_reader_refuses_a_tampered_export_naming_the_problem(name, exports, tmp_path):
    model_dir = tampered(name, exports, tmp_path / "m")
    with pytest.raises(ModelLoadError) as caught:
        ServingModel.load(model_dir, open_session=False)  # what the pre-fork master runs
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(CASES[name][3], message), message
    assert str(model_dir) in message  # names the file


def test_a_checksum_over_canonical_json_survives_reformatting(exports, tmp_path):
    """The checksum is of the content, not the bytes: re-indenting the file is no tamper."""
    source = exports["multiclass"]
    model_dir = rewrite_export(source, tmp_path / "m", checksums=False)  # json.dumps(indent=2)
    assert (model_dir / MANIFEST_FILE).read_bytes() != (source / MANIFEST_FILE).read_bytes()
    assert ServingModel.load(model_dir, open_session=False).classes == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_the_graph_reader_agrees_with_the_onnx_package(task, exports):
    import onnx

    path = exports[task] / "model.onnx"
    facts = read_graph(path.read_bytes())
    model = onnx.load(path)
    assert [t.name for t in facts.inputs] == [i.name for i in model.graph.input]
    assert [t.name for t in facts.outputs] == [o.name for o in model.graph.output]
    for ours, theirs in zip(
        facts.inputs + facts.outputs, [*model.graph.input, *model.graph.output], strict=True
    ):
        tensor = theirs.type.tensor_type
        assert ours.dtype == onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name.replace(
            "object", "string"
        )
        assert ours.shape == tuple(
            d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
        )
    assert facts.metadata == {p.key: p.value for p in model.metadata_props}
    labels = [
        tuple(s.decode() for s in a.strings)
        for n in model.graph.node
        for a in n.attribute
        if a.name == "classlabels_strings"
    ]
    assert list(facts.class_labels) == labels
    assert bool(labels) == (task != "regression")


def test_the_graph_reader_refuses_what_is_not_onnx():
    from src.serving.onnx_graph import GraphReadError

    for junk in (b"\x08\x07not an onnx graph", b"{}", b"\xff" * 64):
        with pytest.raises(GraphReadError, match="not an ONNX model"):
            read_graph(junk)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_the_server_refuses_a_tampered_export_with_exit_4(name, exports, start_server, tmp_path):
    model_dir = tampered(name, exports, tmp_path / "m")
    server = start_server(model_dir)
    code = server.proc.wait(timeout=30)
    log = server.log()
    assert code == 4, log  # gunicorn's "application failed to load" (docs/serving.md)
    (line,) = [x for x in log.splitlines() if "cannot start" in x]  # one line...
    assert re.search(CASES[name][3], line), log  # ...naming the problem
    assert "Traceback" not in log and "Booting worker" not in log
    assert "/predict" not in log
