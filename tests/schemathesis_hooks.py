"""Schemathesis hooks for tests/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

1. Loopback only. The node contacts the `endpoint` of every account that is created or
   updated (the echo challenge), and a fuzzer draws arbitrary URLs there. `before_call` replaces
   any `endpoint` string that the node could take for an http(s) URL by the test's echo server
   (WEBHOOKD_TEST_ECHO_ENDPOINT). Strings that cannot be http(s) URLs are left alone: the node
   rejects them without any network call. Schemathesis revalidates a case after `before_call`,
   so a negative case that this turns into a valid one is judged as valid. The node's
   `security.endpoint_allow_cidrs` (loopback only) backs this up.

2. The test's records survive. A `DELETE /v1/account/{id}` of the test account, or a
   `DELETE /v1/webhook/registration/{id}` of the registration the test made (schemathesis
   learns ids from responses), is redirected to an id that does not exist, so the rest of the
   run stays authenticated and the operations pinned to that registration keep reaching it.
   Those deletions are covered by the other suites.

3. Current credentials. `POST /v1/account/reset/apikey` really replaces the test account's
   API key (the echo server accepts the new key and records it). The auth provider reads the
   current key from the echo server (WEBHOOKD_TEST_KEY_URL) before every request, so the run
   stays authenticated after a reset.
"""

import os
import urllib.request

import schemathesis

ECHO_ENDPOINT = os.environ["WEBHOOKD_TEST_ECHO_ENDPOINT"]
KEY_URL = os.environ["WEBHOOKD_TEST_KEY_URL"]
USERNAME = os.environ["WEBHOOKD_TEST_USERNAME"]
# Operation path -> the id that must not be deleted there.
PROTECTED = {
    "/v1/account/{id}": os.environ["WEBHOOKD_TEST_ACCOUNT_ID"],
    "/v1/webhook/registration/{id}": os.environ["WEBHOOKD_TEST_REGISTRATION_ID"],
}
# A well-formed UUIDv4 that no record has.
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

# Loopback only: never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

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
    protected = PROTECTED.get(case.operation.path)
    if (
        protected is not None
        and case.method.upper() == "DELETE"
        and isinstance(case.path_parameters, dict)
        and str(case.path_parameters.get("id", "")).lower() == protected
    ):
        case.path_parameters["id"] = UNKNOWN_ID
    body = case.body
    if not isinstance(body, dict):
        return
    endpoint = body.get("endpoint")
    if isinstance(endpoint, str) and _may_be_http_url(endpoint):
        body["endpoint"] = ECHO_ENDPOINT


@schemathesis.auth(refresh_interval=None, retry_on=[])
class CurrentApiKey:
    """The `username` / `api-key` headers of the test account, with its current key."""

    def get(self, case, context):
        with _OPENER.open(KEY_URL, timeout=10) as response:
            return response.read().decode("ascii")

    def set(self, case, data, context):
        # Public operations (and the API-key reset, whose `username` is a plain parameter).
        if not case.operation.definition.raw.get("security"):
            return
        case.headers = case.headers or {}
        case.headers["username"] = USERNAME
        case.headers["api-key"] = data
