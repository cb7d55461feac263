"""Schemathesis hooks for api/fuzz.sh.

A few refusals of schema-valid requests are the contract, stated in
api/stock_service.yaml in prose because JSON Schema cannot express them: they depend on
the store's state, on several members at once, or on the media type. Schemathesis
reports them as "schema-valid request rejected" (ST202) or "missing required header
accepted" (ST203); this hook drops exactly those reports, and only for the check that
raised them. Every other failure is kept. Dropped reports are counted in schemathesis'
summary ("Filtered").
"""

import json
from pathlib import Path

import jsonschema_rs
import schemathesis
import yaml

SPEC = yaml.safe_load(Path(__file__).with_name("stock_service.yaml").read_text())

# The refusals that answer a well-formed request because of state or of a rule across
# members, each documented on its operations:
STATED_REFUSALS = {
    # the Idempotency-Key was used before for another request (422, every mutating route)
    "idempotency_key_reused",
    # two lines of one reservation name the same product and warehouse (400, ReserveRequest)
    "duplicate_line",
    # the reservation expired before it was released or committed (410)
    "reservation_expired",
}


def _media_type(case, headers):
    """The request's media type: the generated body's, else a `Content-Type` header."""
    return (case.media_type or headers.get("content-type", "")).lower()


def _problem_code(response):
    try:
        return json.loads(bytes(response.content)).get("code")
    except (ValueError, AttributeError):
        return None


def _data_validator(kind):
    root = {"$ref": f"#/components/schemas/{kind}Data", "components": SPEC["components"]}
    return jsonschema_rs.Draft202012Validator(root)


# In binary mode the body is `data` and the `ce-type` header decides which members it
# needs; OpenAPI cannot tie a body schema to a header value, so the body's schema is the
# union of every type's `data` (the table of `POST /v1/events` states the pairing).
DATA_VALIDATORS = {
    kind: _data_validator(kind)
    for kind in ["CartItemAdded", "CartItemUpdated", "CartItemRemoved", "CartAbandoned",
                 "OrderConfirmed"]
}


def _binary_data_of_another_type(case):
    """A binary-mode event whose body is not the `data` its `ce-type` needs."""
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    media = _media_type(case, headers)
    if "ce-specversion" not in headers or media.startswith("application/cloudevents+json"):
        return False
    validator = DATA_VALIDATORS.get(headers.get("ce-type", "").rsplit(".", 1)[-1])
    return validator is not None and not validator.is_valid(case.body)


# The binary-mode attribute headers, which `POST /v1/events` lists as required although
# structured mode does not read them (stated on `ce-specversion`).
CE_HEADERS = {"ce-specversion", "ce-id", "ce-source", "ce-type"}


def _structured_without_ce_headers(case):
    """A structured-mode event that omits some binary-mode attribute headers."""
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    structured = _media_type(case, headers).startswith("application/cloudevents+json")
    return structured and not CE_HEADERS <= headers.keys()


def _header_not_utf8(case):
    """A header value whose bytes (sent as Latin-1) are not UTF-8: Spin answers such a
    request itself, with 500 and an empty body, before any component runs (stated in the
    OpenAPI file; the test host does the same)."""
    for value in (case.headers or {}).values():
        try:
            str(value).encode("latin-1").decode("utf-8")
        except UnicodeError:
            return True
    return False


# The checks Spin's answer to a header that is not UTF-8 fails: a 5xx, not JSON, no
# Content-Type.
PLATFORM_500_CHECKS = {"ST101", "ST104", "ST109"}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps a failure unless it is ST202 for one of the STATED_REFUSALS or for a
    binary-mode event whose body is another type's `data`, ST203 for a structured-mode
    event without the `ce-*` headers, or Spin's own 500 for a header that is not UTF-8."""
    if failure.code in PLATFORM_500_CHECKS and _header_not_utf8(case):
        return False
    if failure.code == "ST203":
        return not _structured_without_ce_headers(case)
    if failure.code != "ST202" or response is None:
        return True
    if _problem_code(response) in STATED_REFUSALS:
        return False
    return not _binary_data_of_another_type(case)
