"""terraform/ as python-hcl2 reads it: its resources, locals and variables, for the tests that
hold it against the code it deploys."""

from __future__ import annotations

import functools
import re
from typing import Any

from tests.support import REPO_ROOT

TF_DIR = REPO_ROOT / "terraform"


@functools.cache
def _parsed() -> dict[str, dict]:
    import hcl2
    from hcl2 import SerializationOptions

    out = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        with open(path) as handle:
            out[path.name] = hcl2.load(handle, serialization_options=SerializationOptions(strip_string_quotes=True))
    return out


def _all(kind: str) -> list[tuple[str, dict]]:
    """(file, block) of every top-level block of one kind (resource, locals, variable...)."""
    return [(name, block) for name, doc in _parsed().items() for block in doc.get(kind, [])]


def resources() -> dict[tuple[str, str], dict]:
    """{(type, name): body} of every resource."""
    out = {}
    for _, block in _all("resource"):
        for rtype, named in block.items():
            for rname, body in named.items():
                out[(rtype, rname)] = body
    return out


def resource(rtype: str, rname: str) -> dict:
    return resources()[(rtype, rname)]


def local(name: str) -> Any:
    found = [block[name] for _, block in _all("locals") if name in block]
    assert len(found) == 1, f"local.{name} is defined {len(found)} times"
    return found[0]


def variable(name: str) -> dict:
    found = [block[name] for _, block in _all("variable") if name in block]
    assert len(found) == 1, f"var.{name} is defined {len(found)} times"
    return found[0]


def one(body: dict, block: str) -> dict:
    """A nested block that appears once (python-hcl2 gives blocks as lists)."""
    value = body[block]
    assert isinstance(value, list) and len(value) == 1, f"{block}: {value!r}"
    return value[0]


def optional_defaults(type_expr: str) -> dict[str, str]:
    """{attribute: default as written} of an `object({a = optional(number, 1), ...})` type."""
    return dict(re.findall(r"(\w+)\s*=\s*optional\(\w+,\s*(\"[^\"]*\"|[^)]+)\)", type_expr))


def tf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TF_DIR.glob("*.tf")))
