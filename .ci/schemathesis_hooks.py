"""Checks schemathesis runs on every response of carbon-ledger (see
.ci/schemathesis.sh): every 4xx/5xx is RFC 9457 problem JSON, and no error
echoes a value the request carried."""

import json

import schemathesis


def _strings(value):
    """Every string value (not key) in a request part."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _keys(value):
    """Every object key in a request part: problems may name a key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _keys(v)


def _distinctive(s):
    # Short or plain-word values could appear in any message by chance.
    return len(s) >= 12 or (len(s) >= 6 and any(not (c.isascii() and (c.isalpha() or c == " ")) for c in s))


@schemathesis.check
def problem_json(ctx, response, case):
    """4xx/5xx answers are problem JSON that echo no request value."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(f"{response.status_code} answered with content-type {content_type!r}, not problem JSON")
    try:
        problem = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{response.status_code} problem body is not JSON: {e}")
    for field in ("type", "title", "status", "detail"):
        if field not in problem:
            raise AssertionError(f"problem document lacks {field!r}: {problem}")
    if problem["status"] != response.status_code:
        raise AssertionError(f"problem status {problem['status']} differs from HTTP {response.status_code}")
    text = problem["detail"] + " " + problem["title"]
    parts = (case.body, case.query, case.path_parameters, case.headers)
    # A problem may name a field or key the request sent (docs/problems.md),
    # so a value that is also a key, or the named field, is not an echo.
    keys = {k for part in parts for k in _keys(part)}
    if problem.get("field"):
        text = text.replace(problem["field"], "")
    for part in parts:
        for s in _strings(part):
            if s.lower().startswith("bearer ") or s in keys:
                continue
            if _distinctive(s) and s in text:
                raise AssertionError(f"the problem echoes a request value: {problem}")
    return None
