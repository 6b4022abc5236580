"""Lago-style 422 error details: pydantic's validation errors as Lago's `error_details`."""

from __future__ import annotations

from pydantic import ValidationError

from meterline.core.catalog.plans import CHARGE_MODEL_NAMES

__all__ = ["lago_error_details"]

# Mapping from pydantic error types to Lago error codes. Anything not listed and not a pydantic
# built-in is one of our own PydanticCustomError types (already a Lago-style code such as
# invalid_graduated_ranges or invalid_timezone) and is passed through unchanged.
#   missing, union_tag_not_found                          -> value_is_mandatory
#   *_type, int_from_float, is_instance_of, model_type    -> invalid_type
#   *_parsing, string_pattern_mismatch, timezone_*        -> invalid_format
#   extra_forbidden                                       -> unknown_field (Lago ignores
#                                                            these; we refuse: core.lago_model)
#   every other built-in (literal_error, greater_than_equal,
#   too_short, value_error, union_tag_invalid, ...)       -> invalid_value
_EXACT_CODES = {
    "unaddressable_key": "invalid_format",
    "missing": "value_is_mandatory",
    "union_tag_not_found": "value_is_mandatory",
    "extra_forbidden": "unknown_field",
    "int_from_float": "invalid_type",
    "is_instance_of": "invalid_type",
    "string_pattern_mismatch": "invalid_format",
    "timezone_aware": "invalid_format",
    "timezone_naive": "invalid_format",
    "datetime_from_date_parsing": "invalid_format",
}
_OUR_CODES_PREFIXES = ("invalid_", "missing_", "value_is_", "duplicated_", "unknown_")


def _lago_code(error_type: str) -> str:
    if error_type in _EXACT_CODES:
        return _EXACT_CODES[error_type]
    if error_type.endswith("_type"):
        return "invalid_type"
    if error_type.endswith("_parsing"):
        return "invalid_format"
    if error_type.startswith(_OUR_CODES_PREFIXES):
        return error_type
    return "invalid_value"


def _error_field(loc: tuple[int | str, ...]) -> str:
    """Dotted field path ('charges.0.properties.graduated_ranges'), without the union tags
    pydantic inserts for discriminated unions; 'base' for whole-object errors (Lago's key)."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if index and loc[index - 1] == "properties" and part in CHARGE_MODEL_NAMES:
            continue
        parts.append(str(part))
    return ".".join(parts) or "base"


def lago_error_details(exc: ValidationError) -> dict[str, list[str]]:
    """Translate a pydantic ValidationError into Lago's `error_details` ({"field": ["code"]})."""
    details: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(error["loc"])
        # A bad charge_model is reported on charge_model itself; the union-tag error it causes
        # on `properties` (we inject the tag) would only be noise.
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and loc and loc[-1] in ("properties",):
            continue
        codes = details.setdefault(_error_field(loc), [])
        code = _lago_code(error["type"])
        if code not in codes:
            codes.append(code)
    return details
