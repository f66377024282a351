"""Schemathesis hooks for tests/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

The node under test contacts the `endpoint` of every account it creates or updates (the echo
challenge). A fuzzer draws arbitrary URLs there, and the node would resolve and call them. This
hook keeps every such call on loopback: any `endpoint` string that the node could take for an
http(s) URL is replaced by the test's own echo server, given in WEBHOOKD_TEST_ECHO_ENDPOINT.
Strings that cannot be http(s) URLs are left alone (the node rejects them without any network
call). Schemathesis revalidates a case after `before_call`, so a negative case that this turns
into a valid one is judged as valid. The node's `security.endpoint_allow_cidrs` (loopback only)
backs this up.
"""

import os

import schemathesis

ECHO_ENDPOINT = os.environ["WEBHOOKD_TEST_ECHO_ENDPOINT"]

# What the WHATWG URL parser (the `url` crate) strips before reading the scheme: leading and
# trailing C0 controls and spaces, and tabs and newlines anywhere.
_TRIMMED = "".join(chr(c) for c in range(0x21))


def _may_be_http_url(value: str) -> bool:
    cleaned = value.strip(_TRIMMED)
    for c in "\t\n\r":
        cleaned = cleaned.replace(c, "")
    cleaned = cleaned.lower()
    return cleaned.startswith("http:") or cleaned.startswith("https:")


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    endpoint = body.get("endpoint")
    if isinstance(endpoint, str) and _may_be_http_url(endpoint):
        body["endpoint"] = ECHO_ENDPOINT
