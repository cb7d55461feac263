#!/usr/bin/env python3
"""Checks `api/stock_service.yaml` against itself and against a running instance.

1. The document is valid OpenAPI 3.1 (openapi-spec-validator).
2. Every example in it (parameters, request bodies, responses, headers, schemas)
   validates against its schema.
3. With --base-url, every operation is driven over HTTP (happy paths and errors) and
   each answer is checked: its status is documented for the operation (or is the
   documented 405 / catch-all 404), its media type and headers are the documented ones,
   and its body validates against the response schema *strictly* (a member the schema
   does not list is an error).

    pip install openapi-spec-validator jsonschema pyyaml
    python3 api/check_examples.py
    python3 api/check_examples.py --base-url http://127.0.0.1:9003 \
        --admin-token a --service-token s

Exits non-zero on any failure.
"""

import argparse
import copy
import http.client
import json
import re
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("stock_service.yaml")
# The `http` crate's names of the statuses problem.rs uses.
STATUS = {"BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
          "METHOD_NOT_ALLOWED": 405, "CONFLICT": 409, "GONE": 410, "PAYLOAD_TOO_LARGE": 413,
          "UNSUPPORTED_MEDIA_TYPE": 415, "UNPROCESSABLE_ENTITY": 422,
          "INTERNAL_SERVER_ERROR": 500, "SERVICE_UNAVAILABLE": 503}
METHODS = ["get", "put", "post", "delete", "patch", "head", "options"]
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: JSON types only."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _unique_members(where):
    """A json object hook that reports duplicate member names (RFC 8259 §4)."""
    def hook(pairs):
        names = [name for name, _ in pairs]
        for name in sorted({n for n in names if names.count(n) > 1}):
            fail(f"{where}: member {name!r} appears {names.count(name)} times in one object")
        return dict(pairs)
    return hook


def esc(token):
    return token.replace("~", "~0").replace("/", "~1")


def strict(node):
    """Closes every object schema that does not say otherwise."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        kind = node.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
        if is_object and "properties" in node and "additionalProperties" not in node:
            node["unevaluatedProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


class Spec:
    def __init__(self, path):
        self.doc = yaml.load(path.read_text(), Loader=_Loader)
        self.strict_doc = strict(copy.deepcopy(self.doc))
        self.registries = {
            name: Registry().with_resource(
                "urn:spec", Resource.from_contents(doc, default_specification=DRAFT202012)
            )
            for name, doc in [("plain", self.doc), ("strict", self.strict_doc)]
        }
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p)
            for p in self.doc["paths"]
        ]

    def at(self, pointer):
        node = self.doc
        for part in pointer.strip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def errors(self, pointer, instance, mode="plain"):
        validator = Draft202012Validator(
            {"$ref": "urn:spec#" + pointer}, registry=self.registries[mode]
        )
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(instance)
        ]

    def deref(self, pointer):
        """Follows a `$ref` of a response, parameter or header object."""
        node = self.at(pointer)
        while "$ref" in node:
            pointer = node["$ref"][1:]
            node = self.at(pointer)
        return pointer, node

    def route(self, path):
        for rx, template in self.templates:
            if rx.match(path):
                return template
        return None


def check_against_code(spec):
    """The document's routes and problem codes are the ones the code has."""
    import tomllib

    root = SPEC_PATH.parent.parent
    manifest = tomllib.loads((root / "spin.toml").read_text())
    routes = {t["route"] for t in manifest["trigger"]["http"] if isinstance(t["route"], str)}
    routes = {re.sub(r":(\w+)", r"{\1}", r) for r in routes - {"/..."}}
    documented = set(spec.doc["paths"])
    for route in sorted(routes - documented):
        fail(f"spin.toml route {route} is not documented")
    for path in sorted(documented - routes):
        fail(f"documented path {path} has no route in spin.toml")

    src = (root / "crates/stock-http/src/problem.rs").read_text()
    # problem.rs declares every code in one table: `Variant = ("code", STATUS, "Title"),`.
    table_src = src[src.index("problem_codes! {"):]
    rows = re.findall(r'^\s*(\w+) = \("([a-z_]+)", (\w+), "([^"]+)"\),$', table_src, re.M)
    if not rows:
        fail("no problem_codes! table found in problem.rs")
    code = {name: (STATUS[status], title) for _, name, status, title in rows}
    enum = spec.doc["components"]["schemas"]["ProblemCode"]["enum"]
    if sorted(enum) != sorted(code):
        fail(f"ProblemCode enum differs from problem.rs: {sorted(set(enum) ^ set(code))}")
    table = spec.doc["components"]["schemas"]["ProblemCode"]["description"]
    for name, (status, title) in code.items():
        if f"| `{name}` | {status} | {title} |" not in table:
            fail(f"ProblemCode table: `{name}` should be {status} {title!r}")
        example = {"type": f"https://stock.example/problems/{name}", "title": title,
                   "status": status, "detail": "", "code": name}
        for e in spec.errors("/components/schemas/Problem", example):
            if "required" not in e:
                fail(f"Problem schema and problem.rs disagree on {name}: {e}")
    print(f"code: {len(routes)} routes, {len(code)} problem codes checked")


def check_examples(spec):
    count = 0

    def one(where, schema_pointer, value):
        nonlocal count
        count += 1
        for e in spec.errors(schema_pointer, value):
            fail(f"example {where}: {e}")

    def media(pointer):
        for media_type, m in spec.at(pointer).get("content", {}).items():
            mp = f"{pointer}/content/{esc(media_type)}"
            if "example" in m:
                one(mp, mp + "/schema", m["example"])
            for name, ex in m.get("examples", {}).items():
                one(f"{mp} ({name})", mp + "/schema", ex["value"])
        for name in spec.at(pointer).get("headers", {}):
            hp, h = spec.deref(f"{pointer}/headers/{esc(name)}")
            if "example" in h:
                one(hp, hp + "/schema", h["example"])

    def parameter(pointer):
        pp, p = spec.deref(pointer)
        if "example" in p:
            one(pp, pp + "/schema", p["example"])

    for path, item in spec.doc["paths"].items():
        base = f"/paths/{esc(path)}"
        for i, _ in enumerate(item.get("parameters", [])):
            parameter(f"{base}/parameters/{i}")
        for method in METHODS:
            if method not in item:
                continue
            op = f"{base}/{method}"
            for i, _ in enumerate(item[method].get("parameters", [])):
                parameter(f"{op}/parameters/{i}")
            if "requestBody" in item[method]:
                media(op + "/requestBody")
            for status in item[method]["responses"]:
                media(spec.deref(f"{op}/responses/{status}")[0])
    for name, item in spec.doc.get("webhooks", {}).items():
        for method in METHODS:
            if method in item and "requestBody" in item[method]:
                media(f"/webhooks/{esc(name)}/{method}/requestBody")
    for name in spec.doc["components"]["responses"]:
        media(f"/components/responses/{name}")
    for name, schema in spec.doc["components"]["schemas"].items():
        for ex in schema.get("examples", []):
            one(f"/components/schemas/{name}", f"/components/schemas/{name}", ex)
    print(f"examples: {count} checked")


class Live:
    def __init__(self, spec, base_url, admin, service):
        self.spec = spec
        url = urlsplit(base_url)
        self.host, self.port = url.hostname, url.port or 80
        self.tokens = {"admin": admin, "service": service}
        self.seen = set()
        self.calls = 0

    def call(self, method, target, expect, code=None, body=None, auth=None,
             headers=(), raw=None):
        """One request; checks the answer against the document and the expectation.
        `auth` is "admin", "service", a literal header value, or None."""
        self.calls += 1
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        connection.putrequest(method, target, skip_accept_encoding=True)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = dict(headers)
        if auth is not None:
            value = f"Bearer {self.tokens[auth]}" if auth in self.tokens else auth
            connection.putheader("Authorization", value)
        if data is not None and "Content-Type" not in sent:
            connection.putheader("Content-Type", "application/json")
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(data or b"")))
        connection.endheaders(data)
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        status = response.status
        head = {k.lower(): v for k, v in response.getheaders()}
        where = f"{method} {target[:80]} -> {status}"
        try:
            payload = json.loads(text, object_pairs_hook=_unique_members(where)) if text else None
        except ValueError:
            fail(f"{where}: not JSON: {text[:200]}")
            return status, head, None
        if status != expect or (code and (payload or {}).get("code") != code):
            fail(f"{where}: expected {expect} {code or ''}: {text[:300]}")
        self.check(method, target.split("?")[0], status, head, payload, where)
        return status, head, payload

    def check(self, method, path, status, head, payload, where):
        spec = self.spec
        template = spec.route(path)
        if template is None:
            pointer, operation = "/components/responses/RouteNotFound", "catch-all"
        elif method.lower() not in spec.doc["paths"][template]:
            pointer, operation = "/components/responses/MethodNotAllowed", f"{template} 405"
            allow = spec.doc["paths"][template]["x-allow"]
            if head.get("allow") != allow:
                fail(f"{where}: Allow {head.get('allow')!r}, documented {allow!r}")
        else:
            op = f"/paths/{esc(template)}/{method.lower()}"
            operation = spec.at(op)["operationId"]
            if str(status) not in spec.at(op)["responses"]:
                fail(f"{where}: status {status} not documented for {operation}")
                return
            pointer, _ = spec.deref(f"{op}/responses/{status}")
        response = spec.at(pointer)
        self.seen.add((operation, status, (payload or {}).get("code", "")))
        media = head.get("content-type", "")
        documented = list(response.get("content", {}))
        if media not in documented:
            fail(f"{where}: content-type {media!r}, documented {documented}")
            return
        for e in spec.errors(f"{pointer}/content/{esc(media)}/schema", payload, "strict"):
            fail(f"{where}: body {e}")
        for name in response.get("headers", {}):
            hp, h = spec.deref(f"{pointer}/headers/{esc(name)}")
            value = head.get(name.lower())
            if value is None:
                fail(f"{where}: header {name} missing")
                continue
            instance = int(value) if h["schema"].get("type") == "integer" else value
            for e in spec.errors(hp + "/schema", instance):
                fail(f"{where}: header {name}: {e}")


class WebhookReceiver:
    """Collects the admin webhook's POSTs (run the app with `alert_webhook_url` pointing here)."""

    def __init__(self, port):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.command, self.headers.get("Content-Type"), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, spec):
        self.server.shutdown()
        pointer = "/webhooks/stockAlert/post/requestBody"
        documented = spec.at(pointer)["content"]
        kinds = set()
        for method, media, body in self.received:
            where = f"webhook {method} {media}"
            essence = (media or "").split(";")[0].strip()
            if essence not in documented:
                fail(f"{where}: media type not documented ({list(documented)})")
                continue
            payload = json.loads(body, object_pairs_hook=_unique_members(where))
            kinds.add(payload.get("type"))
            for e in spec.errors(f"{pointer}/content/{esc(essence)}/schema", payload, "strict"):
                fail(f"{where}: body {e}")
        print(f"webhook: {len(self.received)} alert(s) received, types {sorted(map(str, kinds))}")
        if not {"LowStockAlert", "OutOfStock"} <= kinds:
            fail("webhook: expected both a LowStockAlert and an OutOfStock")


def scenario(c):
    """Every operation: happy paths and the errors a client can provoke."""
    run = uuid.uuid4().hex[:8]
    p, q, low = f"sku-{run}", f"sku2-{run}", f"low-{run}"
    ghost = f"ghost-{run}"
    json_type = [("Content-Type", "application/json")]

    # Stock: create, read, batch read.
    c.call("PUT", f"/v1/stock/{p}", 200, body={"quantity": 10, "low_stock_threshold": 2}, auth="admin")
    c.call("PUT", f"/v1/stock/{p}", 200, body={"quantity": 3, "warehouse_id": "paris-1", "low_stock_threshold": None}, auth="admin")
    c.call("PUT", f"/v1/stock/{q}", 200, body={"quantity": 1}, auth="admin")
    c.call("PUT", f"/v1/stock/{low}", 200, body={"quantity": 2, "low_stock_threshold": 5}, auth="admin")
    c.call("GET", f"/v1/stock/{p}", 200)
    c.call("GET", f"/v1/stock/{ghost}", 404, "product_not_found")
    c.call("GET", "/v1/stock/bad!id", 400, "invalid_product_id")
    c.call("GET", f"/v1/stock/{'x' * 129}", 400, "invalid_product_id")
    c.call("GET", f"/v1/stock/{p}?verbose=1", 400, "invalid_query")
    c.call("GET", f"/v1/stock?ids={p},{q},{p},{ghost}", 200)
    c.call("GET", "/v1/stock", 400, "invalid_query")
    c.call("GET", f"/v1/stock?ids={p}&ids={q}", 400, "invalid_query")
    c.call("GET", f"/v1/stock?ids={p},,{q}", 400, "invalid_product_id")
    c.call("GET", "/v1/stock?ids=" + ",".join(f"i{n}" for n in range(101)), 400, "invalid_query")
    c.call("POST", "/v1/stock", 405, "method_not_allowed")
    c.call("DELETE", f"/v1/stock/{p}", 405, "method_not_allowed")

    # UpdateStock errors.
    put = f"/v1/stock/{q}"
    c.call("PUT", put, 401, "unauthorized", body={"quantity": 1})
    c.call("PUT", put, 401, "unauthorized", body={"quantity": 1}, auth="Basic YTph")
    c.call("PUT", put, 403, "forbidden", body={"quantity": 1}, auth="Bearer wrong")
    c.call("PUT", put, 403, "forbidden", body={"quantity": 1}, auth="service")
    c.call("PUT", "/v1/stock/a%2Fb", 400, "invalid_product_id", body={"quantity": 1}, auth="admin")
    c.call("PUT", put + "?x=1", 400, "invalid_query", body={"quantity": 1}, auth="admin")
    c.call("PUT", put, 400, "invalid_idempotency_key", body={"quantity": 1}, auth="admin", headers=[("Idempotency-Key", "has space")])
    for bad, code in [({"quantity": -1}, "invalid_quantity"), ({"quantity": 1000000001}, "invalid_quantity"),
                      ({"quantity": 1.5}, "invalid_quantity"), ({"quantity": 1, "low_stock_threshold": -1}, "invalid_threshold"),
                      ({"quantity": 1, "warehouse_id": "a b"}, "invalid_warehouse_id"), ({"qty": 1}, "invalid_body"),
                      ({"quantity": "1"}, "invalid_body"), ({}, "invalid_body"), ([], "invalid_body")]:
        c.call("PUT", put, 400, code, body=bad, auth="admin")
    c.call("PUT", put, 400, "malformed_json", raw=b"{", auth="admin")
    c.call("PUT", put, 400, "malformed_json", raw=b"", auth="admin")
    c.call("PUT", put, 415, "unsupported_media_type", raw=b"quantity=1", auth="admin", headers=[("Content-Type", "text/plain")])
    c.call("PUT", put, 413, "payload_too_large", raw=b'{"quantity": 1, "pad": "' + b"x" * 70000 + b'"}', auth="admin")
    key = [("Idempotency-Key", f"put-{run}")]
    _, _, first = c.call("PUT", put, 200, body={"quantity": 6}, auth="admin", headers=key)
    _, _, again = c.call("PUT", put, 200, body={"quantity": 6}, auth="admin", headers=key)
    if first != again:
        fail("PUT replay under the same Idempotency-Key differs from the first answer")
    c.call("PUT", put, 422, "idempotency_key_reused", body={"quantity": 7}, auth="admin", headers=key)

    # CheckAvailability.
    avail = f"/v1/stock/{p}/availability"
    c.call("GET", avail + "?quantity=3", 200)
    c.call("GET", avail + "?quantity=300", 200)
    c.call("GET", avail + "?quantity=1&warehouse_id=nowhere", 200)
    c.call("GET", avail + "?quantity=1&warehouse_id=paris-1", 200)
    for query, code in [("", "invalid_quantity"), ("?quantity=0", "invalid_quantity"), ("?quantity=1.5", "invalid_quantity"),
                        ("?quantity=99999999999999999999", "invalid_quantity"), ("?quantity=1&warehouse_id=a%20b", "invalid_warehouse_id"),
                        ("?quantity=1&extra=1", "invalid_query"), ("?quantity=1&quantity=2", "invalid_query")]:
        c.call("GET", avail + query, 400, code)
    c.call("GET", f"/v1/stock/{ghost}/availability?quantity=1", 404, "product_not_found")
    c.call("POST", avail, 405, "method_not_allowed")

    # AdjustStock.
    adj = f"/v1/stock/{p}/adjustments"
    c.call("POST", adj, 200, body={"adjustment": 5, "reason": "RESTOCK"}, auth="admin")
    c.call("POST", adj, 200, body={"adjustment": -2, "reason": "DAMAGE", "warehouse_id": "default"}, auth="admin")
    c.call("POST", adj, 200, body={"adjustment": 1, "reason": "CORRECTION", "warehouse_id": "lyon"}, auth="admin")
    for bad, status, code in [({"adjustment": 3, "reason": "DAMAGE"}, 400, "reason_mismatch"),
                              ({"adjustment": 0, "reason": "CORRECTION"}, 400, "invalid_adjustment"),
                              ({"adjustment": 1, "reason": "GIFT"}, 400, "invalid_reason"),
                              ({"adjustment": 1}, 400, "invalid_body"),
                              ({"adjustment": 1, "reason": "RESTOCK", "warehouse_id": ""}, 400, "invalid_warehouse_id"),
                              ({"adjustment": -1000, "reason": "LOSS"}, 409, "insufficient_stock"),
                              ({"adjustment": 1000000000, "reason": "RESTOCK"}, 409, "on_hand_limit")]:
        c.call("POST", adj, status, code, body=bad, auth="admin")
    c.call("POST", f"/v1/stock/{ghost}/adjustments", 404, "product_not_found", body={"adjustment": 1, "reason": "RESTOCK"}, auth="admin")
    c.call("POST", adj, 401, "unauthorized", body={"adjustment": 1, "reason": "RESTOCK"})
    c.call("POST", adj, 403, "forbidden", body={"adjustment": 1, "reason": "RESTOCK"}, auth="service")
    key = [("Idempotency-Key", f"adj-{run}")]
    c.call("POST", adj, 200, body={"adjustment": 1, "reason": "RETURN"}, auth="admin", headers=key)
    c.call("POST", adj, 200, body={"adjustment": 1, "reason": "RETURN"}, auth="admin", headers=key)
    c.call("POST", adj, 422, "idempotency_key_reused", body={"adjustment": 2, "reason": "RETURN"}, auth="admin", headers=key)
    c.call("GET", adj, 405, "method_not_allowed")

    # ReserveStock.
    res = "/v1/reservations"
    _, head, r1 = c.call("POST", res, 201, body={"product_id": p, "quantity": 4, "ttl_seconds": 600}, auth="service")
    if head.get("location") != f"/v1/reservations/{(r1 or {}).get('reservation_id')}":
        fail(f"Location {head.get('location')!r} does not name the reservation")
    _, _, r2 = c.call("POST", res, 201, body={"lines": [{"product_id": p, "quantity": 1}, {"product_id": q, "quantity": 1, "warehouse_id": "default"}]}, auth="service")
    c.call("POST", res, 201, body={"product_id": p, "quantity": 2, "warehouse_id": None, "lines": None}, auth="service")
    for bad, code in [({"product_id": p, "quantity": 0}, "invalid_quantity"), ({"product_id": "a b", "quantity": 1}, "invalid_product_id"),
                      ({"product_id": p, "quantity": 1, "warehouse_id": "a/b"}, "invalid_warehouse_id"),
                      ({"product_id": p, "quantity": 1, "ttl_seconds": 0}, "invalid_ttl"),
                      ({"product_id": p, "quantity": 1, "ttl_seconds": 7201}, "invalid_ttl"),
                      ({"lines": []}, "no_lines"), ({"lines": [{"product_id": f"l{n}", "quantity": 1} for n in range(101)]}, "too_many_lines"),
                      ({"lines": [{"product_id": p, "quantity": 1}, {"product_id": p, "quantity": 1}]}, "duplicate_line"),
                      ({"lines": [{"product_id": p, "quantity": 1}, {"product_id": q, "quantity": -1}]}, "invalid_quantity"),
                      ({"product_id": p, "quantity": 1, "lines": [{"product_id": p, "quantity": 1}]}, "invalid_body"),
                      ({"quantity": 1}, "invalid_body"), ({"product_id": p}, "invalid_body"),
                      ({"product_id": p, "quantity": 1, "note": "x"}, "invalid_body")]:
        c.call("POST", res, 400, code, body=bad, auth="service")
    c.call("POST", res, 400, "malformed_json", raw=b"nope", auth="service")
    c.call("POST", res, 409, "insufficient_stock", body={"product_id": p, "quantity": 500}, auth="service")
    c.call("POST", res, 409, "insufficient_stock", body={"lines": [{"product_id": p, "quantity": 1}, {"product_id": q, "quantity": 50}]}, auth="service")
    c.call("POST", res, 404, "product_not_found", body={"product_id": ghost, "quantity": 1}, auth="service")
    c.call("POST", res, 401, "unauthorized", body={"product_id": p, "quantity": 1})
    c.call("POST", res, 403, "forbidden", body={"product_id": p, "quantity": 1}, auth="admin")
    key = [("Idempotency-Key", f"res-{run}")]
    _, _, a = c.call("POST", res, 201, body={"product_id": q, "quantity": 1}, auth="service", headers=key)
    _, _, b = c.call("POST", res, 201, body={"product_id": q, "quantity": 1}, auth="service", headers=key)
    if (a or {}).get("reservation_id") != (b or {}).get("reservation_id"):
        fail("reservation replay under the same Idempotency-Key is another reservation")
    c.call("POST", res, 422, "idempotency_key_reused", body={"product_id": q, "quantity": 2}, auth="service", headers=key)
    c.call("GET", res, 405, "method_not_allowed")
    c.call("PUT", f"/v1/stock/{p}", 409, "below_reserved", body={"quantity": 1}, auth="admin")

    # Lookup, commit, release.
    id1, id2 = (r1 or {}).get("reservation_id", "x"), (r2 or {}).get("reservation_id", "y")
    c.call("GET", f"/v1/reservations/{id1}", 200)
    c.call("GET", f"/v1/reservations/{'r' * 65}", 400, "invalid_reservation_id")
    c.call("GET", f"/v1/reservations/{id1}?x=1", 400, "invalid_query")
    c.call("GET", "/v1/reservations/00000000-0000-4000-8000-000000000000", 404, "reservation_not_found")
    c.call("DELETE", f"/v1/reservations/{id1}", 405, "method_not_allowed")
    commit = f"/v1/reservations/{id1}/commit"
    c.call("POST", commit, 400, "invalid_order_id", body={"order_id": "bad order"}, auth="service")
    c.call("POST", commit, 400, "malformed_json", raw=b"", auth="service")
    c.call("POST", commit, 400, "invalid_body", body={"order_id": "o", "extra": 1}, auth="service")
    c.call("POST", commit, 401, "unauthorized", body={"order_id": f"order-{run}"})
    c.call("POST", commit, 200, body={"order_id": f"order-{run}"}, auth="service", headers=[("Idempotency-Key", "c1")])
    c.call("POST", commit, 200, body={"order_id": f"order-{run}"}, auth="service")
    c.call("POST", commit, 409, "order_mismatch", body={"order_id": "another-order"}, auth="service")
    c.call("POST", f"/v1/reservations/{id1}/release", 409, "reservation_committed", auth="service")
    c.call("GET", f"/v1/reservations/{id1}", 200)
    c.call("POST", "/v1/reservations/00000000-0000-4000-8000-000000000000/commit", 404, "reservation_not_found", body={"order_id": "o"}, auth="service")
    c.call("GET", commit, 405, "method_not_allowed")
    release = f"/v1/reservations/{id2}/release"
    c.call("POST", release, 400, "invalid_body", body={"order_id": "o"}, auth="service")
    c.call("POST", release, 400, "malformed_json", raw=b"{", auth="service")
    c.call("POST", release, 403, "forbidden", auth="admin")
    c.call("POST", release, 200, auth="service")
    c.call("POST", release, 200, body={}, auth="service")
    c.call("POST", f"/v1/reservations/{id2}/commit", 409, "reservation_released", body={"order_id": "o"}, auth="service")
    c.call("POST", "/v1/reservations/00000000-0000-4000-8000-000000000000/release", 404, "reservation_not_found", auth="service")
    c.call("GET", release, 405, "method_not_allowed")

    # Expiry: commit is gone, release reports EXPIRED, the sweep records it.
    _, _, short = c.call("POST", res, 201, body={"product_id": p, "quantity": 1, "ttl_seconds": 1}, auth="service")
    time.sleep(2.2)
    sid = (short or {}).get("reservation_id", "z")
    c.call("POST", f"/v1/reservations/{sid}/commit", 410, "reservation_expired", body={"order_id": "late"}, auth="service")
    c.call("GET", f"/v1/reservations/{sid}", 200)
    c.call("POST", "/v1/admin/expire", 200, auth="admin")
    c.call("POST", f"/v1/reservations/{sid}/release", 200, auth="service")

    # History.
    hist = f"/v1/stock/{p}/history"
    c.call("GET", hist, 200)
    c.call("GET", hist + "?limit=2", 200)
    c.call("GET", hist + "?after=2&limit=500", 200)
    for query in ["?limit=0", "?limit=501", "?after=-1", "?after=x", "?page=1"]:
        c.call("GET", hist + query, 400, "invalid_query")
    c.call("GET", f"/v1/stock/{ghost}/history", 404, "product_not_found")
    c.call("POST", hist, 405, "method_not_allowed")

    # Admin.
    c.call("GET", "/v1/admin/alerts", 200, auth="admin")
    c.call("GET", "/v1/admin/alerts", 401, "unauthorized")
    c.call("GET", "/v1/admin/alerts", 401, "unauthorized", auth="Bearer a b")
    c.call("GET", "/v1/admin/alerts", 403, "forbidden", auth="service")
    c.call("GET", "/v1/admin/alerts?x=1", 400, "invalid_query", auth="admin")
    c.call("POST", "/v1/admin/alerts", 405, "method_not_allowed", auth="admin")
    c.call("POST", "/v1/admin/expire", 200, body={}, auth="admin")
    c.call("POST", "/v1/admin/expire", 400, "invalid_body", body={"now": 1}, auth="admin")
    c.call("POST", "/v1/admin/expire", 400, "malformed_json", raw=b"{", auth="admin")
    c.call("POST", "/v1/admin/expire", 415, "unsupported_media_type", raw=b"x", auth="admin", headers=[("Content-Type", "text/plain")])
    c.call("POST", "/v1/admin/expire", 401, "unauthorized")
    c.call("GET", "/v1/admin/expire", 405, "method_not_allowed", auth="admin")

    # Consumed events (POST /v1/events) and the global feed (GET /v1/events).
    ev, ce_type = f"ev-{run}", [("Content-Type", "application/cloudevents+json")]
    cart, cart2 = f"cart-{run}", f"cart2-{run}"
    c.call("PUT", f"/v1/stock/{ev}", 200, body={"quantity": 5, "low_stock_threshold": 1}, auth="admin")

    def event(kind, data, eid=None, **attributes):
        return {"specversion": "1.0", "id": eid or uuid.uuid4().hex, "source": "/cart-service",
                "type": kind, "data": data, **attributes}

    def post(status, code=None, body=None, **kw):
        kw.setdefault("headers", ce_type)
        return c.call("POST", "/v1/events", status, code, body=body, auth=kw.pop("auth", "service"), **kw)

    added = event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 2}, eid=f"add-{run}",
                  time="2026-01-01T00:00:00Z", datacontenttype="application/json", traceparent="00-abc")
    post(200, body=added)
    _, _, again = post(200, body=added)
    if (again or {}).get("duplicate") is not True:
        fail("a redelivered event is not reported as a duplicate")
    refused = event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 100}, eid=f"big-{run}")
    post(409, "insufficient_stock", body=refused)
    post(409, "event_id_reused", body={**refused, "data": {**refused["data"], "quantity": 1}})
    post(200, body=event("com.acme.cart.CartItemUpdated", {"cart_id": cart, "product_id": ev, "quantity": 3}),
         headers=json_type)
    post(409, "insufficient_stock", body=event("CartItemUpdated", {"cart_id": cart, "product_id": ev, "quantity": 100}))
    post(404, "product_not_found", body=event("CartItemAdded", {"cart_id": cart, "product_id": ghost, "quantity": 1}))
    post(404, "cart_not_found", body=event("OrderConfirmed", {"cart_id": f"none-{run}", "order_id": "o-1"}))
    binary = [("Content-Type", "application/json"), ("ce-specversion", "1.0"), ("ce-id", f"rm-{run}"),
              ("ce-source", "/cart%20service"), ("ce-type", "CartItemRemoved")]
    post(200, body={"cart_id": cart, "product_id": ev}, headers=binary)
    post(200, body=event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 1, "warehouse_id": None}))
    post(200, body=event("OrderConfirmed", {"cart_id": cart, "order_id": f"order-{run}", "total": 12}))
    post(409, "cart_closed", body=event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 1}))
    post(200, body=event("CartItemAdded", {"cart_id": cart2, "product_id": ev, "quantity": 1}))
    post(200, body=event("CartAbandoned", {"cart_id": cart2}))
    post(401, "unauthorized", body=added, auth=None)
    post(403, "forbidden", body=added, auth="admin")
    c.call("POST", "/v1/events?x=1", 400, "invalid_query", body=added, auth="service")
    post(400, "malformed_json", raw=b"{")
    post(400, "malformed_json", raw=b"")
    for bad, code in [({**added, "specversion": "0.3"}, "invalid_event"), ({**added, "id": ""}, "invalid_event"),
                      ({**added, "data": None}, "invalid_event"), ({**added, "data_base64": "eyJ9"}, "invalid_event"), ({**added, "data_base64": None}, "invalid_event"),
                      ({**added, "Bad-Name": 1}, "invalid_event"), ([added], "invalid_event"),
                      (event("CartItemAdded", {"cart_id": cart, "quantity": 1}), "invalid_event"),
                      (event("CartItemAdded", {"cart_id": "", "product_id": ev, "quantity": 1}), "invalid_cart_id"),
                      (event("CartItemAdded", {"cart_id": cart, "product_id": "a b", "quantity": 1}), "invalid_product_id"),
                      (event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 0}), "invalid_quantity"),
                      (event("CartItemAdded", {"cart_id": cart, "product_id": ev, "quantity": 1, "warehouse_id": ""}), "invalid_warehouse_id"),
                      (event("OrderConfirmed", {"cart_id": cart, "order_id": "o/1"}), "invalid_order_id"),
                      (event("CartCheckedOut", {"cart_id": cart}), "unknown_event_type")]:
        post(400, code, body=bad)
    post(415, "unsupported_media_type", body=[added], headers=[("Content-Type", "application/cloudevents-batch+json")])
    post(415, "unsupported_media_type", raw=b"x", headers=[("Content-Type", "text/plain")])
    post(413, "payload_too_large", raw=b'{"pad": "' + b"x" * 70000 + b'"}')
    time.sleep(2.2)  # entries are served once older than the feed's settling horizon
    _, _, page = c.call("GET", "/v1/events?limit=3", 200)
    cursor = (page or {}).get("next_after") or ""
    c.call("GET", f"/v1/events?after={cursor}&limit=500", 200)
    c.call("GET", "/v1/events", 200)
    for query, code in [("?after=nope", "invalid_cursor"), ("?after=1.2.a%20b", "invalid_cursor"),
                        ("?limit=0", "invalid_query"), ("?limit=501", "invalid_query"), ("?from=1", "invalid_query")]:
        c.call("GET", "/v1/events" + query, 400, code)
    c.call("PUT", "/v1/events", 405, "method_not_allowed", body={}, auth="service")

    # Alerts for the admin webhook: IN_STOCK -> LOW_STOCK -> OUT_OF_STOCK.
    w = f"alert-{run}"
    c.call("PUT", f"/v1/stock/{w}", 200, body={"quantity": 3, "low_stock_threshold": 1}, auth="admin")
    c.call("POST", f"/v1/stock/{w}/adjustments", 200, body={"adjustment": -2, "reason": "LOSS"}, auth="admin")
    c.call("POST", f"/v1/stock/{w}/adjustments", 200, body={"adjustment": -1, "reason": "THEFT"}, auth="admin")

    # Every guarded operation: no token, the wrong token, an oversized or non-JSON body.
    big, text = b'{"pad": "' + b"x" * 70000 + b'"}', [("Content-Type", "text/plain")]
    for method, target, role, other in [
            ("PUT", f"/v1/stock/{q}", "admin", "service"), ("POST", f"/v1/stock/{p}/adjustments", "admin", "service"),
            ("POST", "/v1/reservations", "service", "admin"), ("POST", f"/v1/reservations/{id2}/release", "service", "admin"),
            ("POST", f"/v1/reservations/{id1}/commit", "service", "admin"), ("POST", "/v1/admin/expire", "admin", "service"),
            ("POST", "/v1/events", "service", "admin")]:
        c.call(method, target, 401, "unauthorized", raw=b"{}")
        c.call(method, target, 403, "forbidden", raw=b"{}", auth=other)
        c.call(method, target, 413, "payload_too_large", raw=big, auth=role)
        c.call(method, target, 415, "unsupported_media_type", raw=b"x", auth=role, headers=text)

    # Unknown routes.
    c.call("GET", "/v1/nothing-here", 404, "not_found")
    c.call("GET", "/", 404, "not_found")
    c.call("DELETE", f"/v1/stock/{p}/history/extra", 404, "not_found")
    c.call("GET", f"/v1/reservations/{id1}/commit/x", 404, "not_found")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="a running instance, e.g. http://127.0.0.1:9003")
    parser.add_argument("--admin-token", default="a")
    parser.add_argument("--service-token", default="s")
    parser.add_argument("--webhook-port", type=int,
                        help="receive the admin webhook on 127.0.0.1:PORT (the app's "
                             "alert_webhook_url must point there) and check its payloads")
    args = parser.parse_args()

    spec = Spec(SPEC_PATH)
    validate_spec(spec.doc)
    print(f"{SPEC_PATH.name}: valid OpenAPI {spec.doc['openapi']}")
    check_against_code(spec)
    check_examples(spec)
    if args.base_url:
        live = Live(spec, args.base_url, args.admin_token, args.service_token)
        receiver = WebhookReceiver(args.webhook_port) if args.webhook_port else None
        scenario(live)
        if receiver:
            time.sleep(1)
            receiver.check(spec)
        print(f"live: {live.calls} requests")
        documented = set()
        for path, item in spec.doc["paths"].items():
            for method in METHODS:
                if method in item:
                    for status in item[method]["responses"]:
                        documented.add((item[method]["operationId"], int(status)))
        exercised = {(op, status) for op, status, _ in live.seen}
        missing = sorted(documented - exercised)
        print(f"documented responses not exercised ({len(missing)}): "
              + ", ".join(f"{op} {status}" for op, status in missing))
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
