"""Decode the protobuf bodies client-go sends for core kinds (helm stores releases as Secrets
written with `application/vnd.kubernetes.protobuf`). Only what those bodies hold: the envelope
(`k8s\\0` + runtime.Unknown), ObjectMeta, Secret and ConfigMap. Answers stay JSON, which
client-go accepts alongside protobuf.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(data, position)
            out.append((number, value))
        elif wire == 2:
            length, position = _varint(data, position)
            out.append((number, data[position : position + length]))
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return value.decode()


def _entry(value: int | bytes) -> tuple[str, bytes]:
    assert isinstance(value, bytes)
    parts = dict(fields(value))
    key, item = parts.get(1, b""), parts.get(2, b"")
    assert isinstance(key, bytes) and isinstance(item, bytes)
    return key.decode(), item


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, value in fields(data):
        if number in names:
            meta[names[number]] = _text(value)
        elif number == 7:
            meta["generation"] = value
        elif number in {11, 12}:
            key, item = _entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = item.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def _secret(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret"}
    for number, value in fields(data):
        if number == 1:
            assert isinstance(value, bytes)
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            key, item = _entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(item).decode()
        elif number == 3:
            obj["type"] = _text(value)
        elif number == 4:
            key, item = _entry(value)
            obj.setdefault("stringData", {})[key] = item.decode()
        elif number == 5:
            obj["immutable"] = bool(value)
    return obj


def _configmap(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap"}
    for number, value in fields(data):
        if number == 1:
            assert isinstance(value, bytes)
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            key, item = _entry(value)
            obj.setdefault("data", {})[key] = item.decode()
        elif number == 3:
            key, item = _entry(value)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(item).decode()
        elif number == 4:
            obj["immutable"] = bool(value)
    return obj


def decode(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    envelope = dict(fields(body[len(MAGIC) :]))
    type_meta, raw = envelope.get(1, b""), envelope.get(2, b"")
    assert isinstance(type_meta, bytes) and isinstance(raw, bytes)
    meta = {number: _text(value) for number, value in fields(type_meta)}
    kind = meta.get(2, "")
    if kind == "Secret":
        return _secret(raw)
    if kind == "ConfigMap":
        return _configmap(raw)
    raise ProtobufError(f"the emulator decodes protobuf Secrets and ConfigMaps, not {kind!r}")
