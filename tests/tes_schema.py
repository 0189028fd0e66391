"""Validate responses against the published TES v1.1 OpenAPI document.

The document and the GA4GH service-info document it refers to by URL are read from
``$BRIDGE_TES_SPEC_DIR``, else ``../shared/specs/`` beside the checkout; the
repository carries no copy.  Where they are absent, the tests that need them skip
and say so.  The remote ``$ref``s to service-info are resolved to the local file.
TES response objects are checked with ``additionalProperties: false`` so an
unknown field is caught too.
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

TES_FILE = "tes-1.1.openapi.yaml"
SERVICE_INFO_FILE = "ga4gh-service-info-1.0.0.yaml"


def spec_dir() -> Path:
    configured = os.environ.get("BRIDGE_TES_SPEC_DIR")
    return (
        Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "specs"
    )


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


def spec_path(name: str = TES_FILE) -> Path:
    path = spec_dir() / name
    if not path.is_file():
        pytest.skip(f"the published {name} is not in {spec_dir()} (set BRIDGE_TES_SPEC_DIR)")
    return path


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
    service_info = yaml.safe_load(spec_path(SERVICE_INFO_FILE).read_text())
    schemas.update(_rewrite_refs(service_info["components"]["schemas"]))
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
