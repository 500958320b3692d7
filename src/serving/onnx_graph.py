"""What an ONNX file declares about itself, read without ONNX Runtime or the `onnx` package.

The predictor checks its manifest against the graph in the gunicorn master, before any
worker is forked, and ONNX Runtime must not start before the fork (see model.py), so the
graph is read here with protobuf (a dependency of onnxruntime, already in the serving
image). The serving image has no `onnx` package (it would add ~30 MB for these few fields);
this declares only the fields of onnx.proto that the check reads, with their onnx.proto
field numbers, and protobuf decodes them (unknown fields are skipped).
tests/serving/test_manifest_integrity.py checks this reader against `onnx.load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

# ONNX TensorProto.DataType values the serving contract uses
ELEM_TYPES = {1: "float32", 8: "string", 7: "int64", 11: "float64"}
CONTRACT_KEY = "mloperation.contract"  # metadata_props entry written by the export stage

_F = descriptor_pb2.FieldDescriptorProto
# message -> [(field, number, type, label, message type name)], from onnx/onnx.proto3
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "StringStringEntryProto": [
        ("key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("value", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
    ],
    "Dimension": [
        ("dim_value", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, ""),
        ("dim_param", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
    ],
    "TensorShapeProto": [("dim", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Dimension")],
    "TensorType": [
        ("elem_type", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, ""),
        ("shape", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TensorShapeProto"),
    ],
    "TypeProto": [("tensor_type", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TensorType")],
    "ValueInfoProto": [
        ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("type", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TypeProto"),
    ],
    "AttributeProto": [
        ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("ints", 8, _F.TYPE_INT64, _F.LABEL_REPEATED, ""),
        ("strings", 9, _F.TYPE_BYTES, _F.LABEL_REPEATED, ""),
    ],
    "NodeProto": [
        ("output", 2, _F.TYPE_STRING, _F.LABEL_REPEATED, ""),
        ("op_type", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("attribute", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "AttributeProto"),
        ("domain", 7, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
    ],
    "GraphProto": [
        ("node", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "NodeProto"),
        ("input", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto"),
        ("output", 12, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto"),
    ],
    "ModelProto": [
        ("graph", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "GraphProto"),
        ("metadata_props", 14, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "StringStringEntryProto"),
    ],
}
_PACKAGE = "mloperation_onnx_subset"


def _model_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2"
    )
    for message, fields in _MESSAGES.items():
        proto = file.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            field = proto.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()  # private: no clash with the `onnx` package's
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ModelProto"))


_ModelProto = _model_class()


class GraphReadError(ValueError):
    """The bytes are not an ONNX model this reader can decode."""


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # ELEM_TYPES' name, or "type <n>"
    shape: tuple[int | None, ...]  # None for a symbolic or unknown dimension


@dataclass(frozen=True)
class GraphFacts:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    metadata: dict[str, str]
    # the class labels of each classifier node (ai.onnx.ml *Classifier, classlabels_*)
    class_labels: tuple[tuple[str, ...], ...]


def _tensor(value_info: Any) -> Tensor:
    tensor = value_info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return Tensor(
        value_info.name, ELEM_TYPES.get(tensor.elem_type, f"type {tensor.elem_type}"), dims
    )


def read_graph(onnx_bytes: bytes) -> GraphFacts:
    """Inputs, outputs, metadata_props and classifier class labels of an ONNX model."""
    model = _ModelProto()
    try:
        model.ParseFromString(onnx_bytes)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise GraphReadError(f"not an ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise GraphReadError("not an ONNX model (no graph)")
    labels = []
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or not node.op_type.endswith("Classifier"):
            continue
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings":
                labels.append(tuple(s.decode("utf-8", "replace") for s in attribute.strings))
            elif attribute.name == "classlabels_int64s":
                labels.append(tuple(str(i) for i in attribute.ints))
    return GraphFacts(
        inputs=tuple(_tensor(i) for i in model.graph.input),
        outputs=tuple(_tensor(o) for o in model.graph.output),
        metadata={p.key: p.value for p in model.metadata_props},
        class_labels=tuple(labels),
    )
