"""The README's route table and the served OpenAPI document describe the same API."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `(/api/[^`]*)` \|", re.M)


def test_readme_lists_exactly_the_documented_routes(api):
    doc = api.http.get("/api/openapi.json").get_json()
    documented = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    in_readme = set(_ROW.findall(README.read_text()))
    assert in_readme == documented
