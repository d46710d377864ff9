"""The three PATCH flavours the Kubernetes API accepts, for the emulator.

- JSON merge patch (RFC 7386): maps merge, null deletes, lists are replaced.
- Strategic merge patch: like merge, but lists of objects with a merge key (containers by name,
  ports by containerPort...) merge element-wise, with the directives client-go's three-way patch
  emits (`$patch`, `$setElementOrder/<list>`, `$retainKeys`, `$deleteFromPrimitiveList/<list>`).
  The merge keys come from field names, which is precise enough for the kinds the chart uses.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy
from typing import Any

# patchMergeKey of the Kubernetes types, by list field name.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "topologySpreadConstraints": "topologyKey",
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return "containerPort" if any("containerPort" in item for item in items) else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field, []) if item not in value]
        elif key in {"$retainKeys", "$patch"}:
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for field, order in orders.items():
        result[field] = _apply_order(field, result.get(field, []), order)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch"))
        ]
    objects = [item for item in patch if isinstance(item, dict)]
    key = _merge_key(field, objects + [i for i in current or [] if isinstance(i, dict)])
    if key is None or not objects or not isinstance(current, list):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "delete")
        ]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _apply_order(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    if not order or not isinstance(order[0], dict):
        ranked = {value: index for index, value in enumerate(order)}
        return sorted(items, key=lambda item: ranked.get(item, len(ranked)))
    key = _merge_key(field, order + [i for i in items if isinstance(i, dict)])
    if key is None:
        return items
    ranked = {entry.get(key): index for index, entry in enumerate(order)}
    return sorted(items, key=lambda item: ranked.get(item.get(key), len(ranked)))


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _parent(document: Any, parts: list[str]) -> tuple[Any, str]:
    node = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


class JsonPatchError(ValueError):
    pass


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    result = copy.deepcopy(document)
    for operation in operations:
        op, parts = operation["op"], _pointer(operation["path"])
        try:
            if op == "test":
                node = result
                for part in parts:
                    node = node[int(part)] if isinstance(node, list) else node[part]
                if node != operation["value"]:
                    raise JsonPatchError(f"test failed at {operation['path']}")
                continue
            if op in {"move", "copy"}:
                source = _pointer(operation["from"])
                parent, last = _parent(result, source)
                value = parent[int(last)] if isinstance(parent, list) else parent[last]
                if op == "move":
                    del parent[int(last) if isinstance(parent, list) else last]
                op, operation = "add", {"value": copy.deepcopy(value)}
            parent, last = _parent(result, parts)
            if op == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), operation["value"])
                else:
                    parent[last] = operation["value"]
            elif op == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif op == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = operation["value"]
                else:
                    if last not in parent:
                        raise JsonPatchError(f"replace: {operation['path']} does not exist")
                    parent[last] = operation["value"]
            else:
                raise JsonPatchError(f"unknown JSON patch op {op!r}")
        except (KeyError, IndexError, ValueError, TypeError) as error:
            raise JsonPatchError(f"{op} {operation.get('path')}: {error}") from None
    return result
