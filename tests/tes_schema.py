"""Validate responses against the TES v1.1 OpenAPI document in ../shared/specs.

The document refers to the GA4GH service-info schema by URL, which cannot be
fetched here; :data:`SERVICE_INFO` transcribes the parts of
ga4gh-discovery/ga4gh-service-info v1.0.0 (``Service``, ``ServiceType``,
``Organization``) that a response must satisfy.  TES response objects are checked
with ``additionalProperties: false`` so an unknown field is caught too.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "specs" / "tes-1.1.openapi.yaml",
    Path(__file__).resolve().parent / "data" / "tes-1.1.openapi.yaml",
]

SERVICE_INFO = {
    "ServiceType": {
        "type": "object",
        "required": ["group", "artifact", "version"],
        "properties": {
            "group": {"type": "string"},
            "artifact": {"type": "string"},
            "version": {"type": "string"},
        },
    },
    "Organization": {
        "type": "object",
        "required": ["name", "url"],
        "properties": {"name": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
    },
    "Service": {
        "type": "object",
        "required": ["id", "name", "type", "organization", "version"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"$ref": "#/components/schemas/ServiceType"},
            "description": {"type": "string"},
            "organization": {"$ref": "#/components/schemas/Organization"},
            "contactUrl": {"type": "string"},
            "documentationUrl": {"type": "string"},
            "createdAt": {"type": "string"},
            "updatedAt": {"type": "string"},
            "environment": {"type": "string"},
            "version": {"type": "string"},
        },
    },
}

CLOSED = (
    "tesTask",
    "tesTaskLog",
    "tesExecutorLog",
    "tesOutputFileLog",
    "tesListTasksResponse",
    "tesCreateTaskResponse",
    "tesInput",
    "tesOutput",
    "tesExecutor",
    "tesResources",
)


def spec_path() -> Path:
    for path in SPEC_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError(f"TES OpenAPI document not found in {SPEC_CANDIDATES}")


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("https://"):
                out[key] = "#/components/schemas/" + value.rsplit("/", 1)[-1]
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


@cache
def spec() -> dict[str, Any]:
    doc = _rewrite_refs(yaml.safe_load(spec_path().read_text()))
    schemas = doc["components"]["schemas"]
    schemas.update(copy.deepcopy(SERVICE_INFO))
    for name in CLOSED:
        schemas[name]["additionalProperties"] = False
    return doc


def validate(body: Any, schema_name: str, minimal: bool = False) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` matches the named schema.

    ``minimal``: the MINIMAL view holds only ``id`` and ``state`` by definition, so
    ``tesTask.executors`` is not required there.
    """
    doc = spec()
    components = doc["components"]
    if minimal:
        components = copy.deepcopy(components)
        components["schemas"]["tesTask"]["required"] = []
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)


def operation_schema(path: str, method: str) -> str:
    """The response schema name of an operation, e.g. ('/tasks', 'get') -> tesListTasksResponse."""
    op = spec()["paths"][path][method]
    ref = op["responses"][200]["content"]["application/json"]["schema"]["$ref"]
    return str(ref.rsplit("/", 1)[-1])
