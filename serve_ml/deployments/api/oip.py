"""Open Inference Protocol v2 (KServe, Triton, MLServer): request and response
tensors translated to and from serve-ml's columnar scoring. Pure functions, no
HTTP: the routes in ``routes/v2.py`` call them.

Inputs come in two shapes. One tensor per feature, named by the feature, of shape
``[n]`` or ``[n, 1]`` (``[n, steps]`` for a sequence bundle); or one tensor of shape
``[n, features]`` (``[n, steps, features]``) whose ``parameters.features`` names the
feature order, or without it, in the order of the model's metadata inputs. Numbers may be any FP or INT type. Data comes as JSON (``data``,
flat or nested, row-major) or in the binary tensor extension (``binary_data_size``
and the bytes after the JSON header).

Outputs, each ``[n]`` in row order unless said: ``anomaly`` (BOOL), ``score``
(FP64, NaN for rows that could not be scored), ``error_<modality>`` per modality
scored (FP64), ``fault_label`` (BYTES, empty where the classifier gave none) and
``fault_probabilities`` (FP64 ``[n, classes]``, classes in its ``parameters``)
when the classifier ran, ``rul``/``rul_lower``/``rul_upper`` (FP64) when the bundle
has a remaining-useful-life head.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serve_ml.core.errors import FeatureError, InvalidQuery, PayloadTooLarge

HEADER_LENGTH = "inference-header-content-length"
BINARY_MEDIA_TYPE = "application/octet-stream"

NUMERIC: dict[str, np.dtype] = {
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
}
OUTPUT_TYPES = {"anomaly": "BOOL", "fault_label": "BYTES"}  # every other output is FP64


class ProtocolError(InvalidQuery):
    """A request that is not valid Open Inference Protocol v2 (HTTP 400)."""

    status_code = 400


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    columns: dict[str, np.ndarray]
    n: int
    power: str | None
    model_version: str | None
    binary_outputs: dict[str, bool]  # output name -> binary; empty: all, as ``binary_default``
    binary_default: bool
    requested: list[str] | None  # names asked for; None: every output


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tail of a request (the tail is empty when
    ``Inference-Header-Content-Length`` is absent)."""
    if header_length is None:
        head, tail = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {header_length[:20]!r} is not a length within "
                                f"the {len(body)}-byte body")
        cut = int(header_length)
        head, tail = body[:cut], body[cut:]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the inference request must be a JSON object")
    return doc, tail


def parse_infer(doc: Mapping[str, Any], tail: bytes, *, max_rows: int,
                model_features: Callable[[], Sequence[str]] = tuple) -> InferRequest:
    """A V2 inference request as float64 feature columns of one common row count.

    ``model_features()`` is the model's input order (its metadata), asked for only when
    a tensor of more than one column names no features: one not named after a feature,
    of shape ``[n, len(features)]``, is read in that order (clients such as tritonclient
    cannot set an input's parameters)."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    params = _params(doc.get("parameters"), "request")
    offset = 0
    columns: dict[str, np.ndarray] = {}
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise ProtocolError(f"inputs[{i}] must be an object")
        array, offset = _tensor(t, i, tail, offset)
        tparams = _params(t.get("parameters"), f"input {t['name']!r}")
        order = tparams.get("features")
        if order is None and array.ndim > 1:
            features = model_features()
            if t["name"] not in features and array.shape[-1] == len(features):
                order = list(features)
        if order is None:
            _add(columns, t["name"], _feature_column(array, t["name"]))
            continue
        names = [s.strip() for s in order.split(",")] if isinstance(order, str) else order
        if not isinstance(names, list) or not all(isinstance(s, str) and s for s in names):
            raise ProtocolError(f"input {t['name']!r}: parameters.features must name the features, comma-separated")
        if array.ndim not in (2, 3) or array.shape[-1] != len(names):
            raise ProtocolError(f"input {t['name']!r} has shape {list(array.shape)}; with {len(names)} features "
                                f"named it must be [n, {len(names)}] (or [n, steps, {len(names)}])")
        for j, name in enumerate(names):
            _add(columns, name, array[..., j])
    if offset != len(tail):
        raise ProtocolError(f"the binary data is {len(tail)} bytes; the inputs' binary_data_size add up to {offset}")
    shapes = {c.shape for c in columns.values()}
    if len(shapes) > 1:
        raise FeatureError({"inputs": f"tensors differ in rows (or steps): {sorted(shapes)}"})
    shape = shapes.pop()
    n = shape[0]
    if n == 0:
        raise FeatureError({"inputs": "expected at least one row"})
    values = n * (shape[1] if len(shape) == 2 else 1)
    if values > max_rows:
        raise PayloadTooLarge(f"inference request has {values} values per feature; the limit is {max_rows}")
    outputs = doc.get("outputs")
    requested: list[str] | None = None
    binary_outputs: dict[str, bool] = {}
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        requested = [o["name"] for o in outputs]
        for o in outputs:
            flag = _params(o.get("parameters"), f"output {o['name']!r}").get("binary_data")
            if flag is not None:
                binary_outputs[o["name"]] = bool(flag)
    return InferRequest(
        id=doc.get("id") if isinstance(doc.get("id"), str) else None, columns=columns, n=n,
        power=_str_param(params, "power"), model_version=_str_param(params, "model_version"),
        binary_outputs=binary_outputs, binary_default=bool(params.get("binary_data_output", False)),
        requested=requested)


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} parameters must be an object")
    return value


def _str_param(params: Mapping[str, Any], key: str) -> str | None:
    v = params.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ProtocolError(f"parameter {key!r} must be a non-empty string")
    return v


def _tensor(t: Mapping[str, Any], i: int, tail: bytes, offset: int) -> tuple[np.ndarray, int]:
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"inputs[{i}] has no name")
    if datatype not in NUMERIC:
        raise FeatureError({name: f"datatype {str(datatype)[:20]!r} is not numeric: sensor readings are one of "
                                  f"{', '.join(NUMERIC)}"})
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape) or not 1 <= len(shape) <= 3):
        raise ProtocolError(f"input {name!r}: shape must be 1 to 3 non-negative integers, got {shape!r}")
    count = int(np.prod(shape))
    dtype = NUMERIC[datatype]
    size = _params(t.get("parameters"), f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} is not {count} x {dtype.itemsize} bytes "
                                f"for shape {shape} of {datatype}")
        if offset + size > len(tail):
            raise ProtocolError(f"input {name!r}: the binary data ends before its {size} bytes")
        flat = np.frombuffer(tail, dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape).astype(np.float64), offset + size
    data = t.get("data")
    if data is None:
        raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    try:
        flat = np.asarray(data, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FeatureError({name: "data must be numbers (flat or nested row-major)"}) from None
    if flat.size != count:
        raise ProtocolError(f"input {name!r}: shape {shape} needs {count} values, data has {flat.size}")
    return flat.reshape(shape), offset


def _feature_column(array: np.ndarray, name: str) -> np.ndarray:
    """One feature's tensor: ``[n]``, ``[n, 1]`` or ``[n, steps]``."""
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        return array[:, 0] if array.shape[1] == 1 else array
    raise ProtocolError(f"input {name!r} has shape {list(array.shape)}: one feature's tensor is [n], [n, 1] or "
                        "[n, steps]; for [n, features] name the features in parameters.features")


def _add(columns: dict[str, np.ndarray], name: str, column: np.ndarray) -> None:
    if name in columns:
        raise ProtocolError(f"feature {name!r} is given twice")
    columns[name] = column


def outputs_of(result: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """serve-ml's columns answer as named output tensors, each with its parameters."""
    n = result["rows"]
    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        "anomaly": (np.asarray(result["anomaly"], dtype=bool), {}),
        "score": (_floats(result["score"]), {}),
    }
    for name, m in result["modalities"].items():
        if "error" in m:
            out[f"error_{name}"] = (_floats(m["error"]), {"threshold": m.get("threshold")})
    classifiers = result["classifier"] if isinstance(result["classifier"], list) else [result["classifier"]]
    ran = [c for c in classifiers if c.get("status") == "ran"]
    if ran:
        classes = ran[0]["classes"]
        # Whole columns at a time: labels through a lookup of the few class names,
        # probabilities as one array (no Python work per row; ``bench score`` audits it).
        encoded = {None: b"", **{k: k.encode() for k in classes}}
        labels = np.full(n, b"", dtype=object)
        probs = np.full((n, len(classes)), np.nan)
        for c in ran:
            rows = np.arange(n) if "rows" not in c else np.asarray(c["rows"], dtype=np.int64)
            if c["classes"] != classes:  # power classes trained on different fault sets
                raise ProtocolError("rows fall into power classes whose classifiers know different faults; send "
                                    "one power per request (parameters.power)")
            labels[rows] = list(map(encoded.__getitem__, c["label"]))
            probs[rows] = _probabilities(c["probabilities"], len(classes))
        out["fault_label"] = (labels, {})
        out["fault_probabilities"] = (probs, {"classes": ",".join(classes)})
    rul = result.get("rul")
    if rul:
        for key, name in (("value", "rul"), ("lower", "rul_lower"), ("upper", "rul_upper")):
            out[name] = (_floats(rul[key]), {"unit": rul["unit"]})
    return out


def _floats(values: Sequence[float | None]) -> np.ndarray:
    """JSON numbers, null for a row that could not be scored, as float64 with NaN there
    (numpy reads None as NaN for a float dtype)."""
    return np.asarray(values, dtype=np.float64)


def _probabilities(rows: Sequence[Sequence[float | None] | None], classes: int) -> np.ndarray:
    """``[n, classes]`` float64; a row the classifier did not run on (null) is NaN."""
    try:
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), classes)
    except (TypeError, ValueError):  # null rows among lists: ragged, so row by row
        return np.asarray([[np.nan] * classes if p is None else p for p in rows], dtype=np.float64)


def encode_response(model_name: str, req: InferRequest, result: Mapping[str, Any]) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON header's length when binary data follows it."""
    tensors = outputs_of(result)
    names = list(tensors) if req.requested is None else req.requested
    unknown = [name for name in names if name not in tensors]
    if unknown:
        raise ProtocolError(f"unknown output(s) {', '.join(map(repr, unknown))}; this request has "
                            f"{', '.join(tensors)}")
    outputs, chunks = [], []
    for name in names:
        array, params = tensors[name]
        datatype = OUTPUT_TYPES.get(name, "FP64")
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        params = {k: v for k, v in params.items() if v is not None}
        if req.binary_outputs.get(name, req.binary_default):
            raw = _to_bytes(array, datatype)
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _to_json(array, datatype)
        if params:
            entry["parameters"] = params
        outputs.append(entry)
    version = result["model_version"]
    power = result["power"]
    parameters: dict[str, Any] = {"power": power if isinstance(power, str) else ",".join(sorted(set(power)))}
    if result["errors"]:
        parameters["row_errors"] = orjson.dumps(result["errors"]).decode()
    head: dict[str, Any] = {"model_name": model_name,
                            "model_version": version if isinstance(version, str) else ",".join(sorted(set(version))),
                            "outputs": outputs, "parameters": parameters}
    if req.id is not None:
        head["id"] = req.id
    header = orjson.dumps(head)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _to_json(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return list(map(bytes.decode, flat.tolist()))
    if datatype == "BOOL":
        return flat.tolist()
    # JSON has no NaN: a row that could not be scored is null
    missing = np.isnan(flat)
    if not missing.any():
        return flat.tolist()
    boxed = flat.astype(object)
    boxed[missing] = None
    return boxed.tolist()


def _to_bytes(array: np.ndarray, datatype: str) -> bytes:
    flat = array.reshape(-1)
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        framed = {v: struct.pack("<I", len(v)) + v for v in set(flat.tolist())}  # few distinct labels
        return b"".join(map(framed.__getitem__, flat.tolist()))
    if datatype == "BOOL":
        return flat.astype(np.bool_).tobytes()
    return flat.astype("<f8").tobytes()


def model_metadata(name: str, bundles: Sequence[Mapping[str, Any]], *, classifier_enabled: bool) -> dict[str, Any]:
    """``GET /v2/models/{name}``: versions, the inputs the live bundles need and the
    outputs they give (``bundles``: this equipment's described bundles; the fault
    outputs only where the server runs classifiers)."""
    features = list(dict.fromkeys(f for b in bundles if b["live"] for f in b["features"])) or \
        list(dict.fromkeys(f for b in bundles for f in b["features"]))
    steps = max((b.get("window_steps", 1) for b in bundles), default=1)
    shape = [-1] if steps == 1 else [-1, steps]
    outputs: list[dict[str, Any]] = [{"name": "anomaly", "datatype": "BOOL", "shape": [-1]},
                                     {"name": "score", "datatype": "FP64", "shape": [-1]}]
    modalities = list(dict.fromkeys(m for b in bundles for m in b["modalities"]))
    outputs += [{"name": f"error_{m}", "datatype": "FP64", "shape": [-1]} for m in modalities]
    classes = next((b["classifier"]["classes"] for b in bundles if b.get("classifier")), None) \
        if classifier_enabled else None
    if classes:
        outputs += [{"name": "fault_label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "fault_probabilities", "datatype": "FP64", "shape": [-1, len(classes)],
                     "parameters": {"classes": ",".join(classes)}}]
    if any(b.get("rul") for b in bundles):
        outputs += [{"name": n, "datatype": "FP64", "shape": [-1]} for n in ("rul", "rul_lower", "rul_upper")]
    return {
        "name": name, "platform": "serve-ml",
        "versions": sorted({b["model_version"] for b in bundles}),
        "inputs": [{"name": f, "datatype": "FP64", "shape": shape} for f in features],
        "outputs": outputs,
        "parameters": {"powers": ",".join(sorted({b["power"] for b in bundles})),
                       "live": ",".join(f"{b['power']}={b['model_version']}" for b in bundles if b["live"])},
    }
