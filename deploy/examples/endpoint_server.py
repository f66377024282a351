#!/usr/bin/env python3
"""An example webhookd endpoint server (Python 3 standard library only).

It serves every account whose endpoint points at it, one account per path: the first path
segment names the account, so give each account its own endpoint, e.g.
http://127.0.0.1:9090/janedoe. For each account it:

* answers the echo challenge (account creation, PATCH /v1/account);
* learns the account's secret key when webhookd sends a new one (POST
  /v1/account/reset/secretkey), and its API key (POST /v1/account/reset/apikey);
* verifies both signatures of every delivery (the legacy pywebhooks-signature and the
  Standard Webhooks webhook-signature) with that account's secret key, and prints which
  account the delivery was for.

webhookd never sends an account's secret key at creation, so a delivery that arrives before
the first secret-key reset cannot be verified: the server says so and still accepts it.

A delivery to a path whose last segment is "broken" (e.g. /flaky/broken) is answered with
500, to watch retries and redelivery (see docs/deliveries.md).

    python3 deploy/examples/endpoint_server.py [--host 127.0.0.1] [--port 9090]
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# A Standard Webhooks signature older or newer than this is refused (replay protection).
TOLERANCE_SECS = 300

# account name -> the secret key webhookd last sent to its endpoint
SECRETS = {}
LOCK = threading.Lock()


def say(line):
    print(line, flush=True)


def account_of(path):
    segments = [s for s in urlsplit(path).path.split('/') if s]
    return (segments[0] if segments else '(root)'), (segments[-1:] == ['broken'])


def legacy_valid(secret, headers, body):
    """pywebhooks-signature: hex HMAC-SHA1 of the raw body, keyed with the secret key."""
    expected = hmac.new(secret.encode('utf-8'), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(expected, headers.get('pywebhooks-signature', ''))


def standard_valid(secret, headers, body):
    """webhook-signature: "v1," + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"."""
    msg_id = headers.get('webhook-id', '')
    timestamp = headers.get('webhook-timestamp', '')
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECS:
        return False
    signed = '{0}.{1}.'.format(msg_id, timestamp).encode('utf-8') + body
    digest = hmac.new(secret.encode('utf-8'), signed, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode('ascii')
    # Several signatures may be sent, space-separated (secret rotation).
    return any(
        hmac.compare_digest(expected, candidate[3:])
        for candidate in headers.get('webhook-signature', '').split(' ')
        if candidate.startswith('v1,')
    )


class Endpoint(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, as webhookd's delivery client prefers

    def reply(self, status, body):
        data = json.dumps(body).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        account, _ = account_of(self.path)
        query = parse_qs(urlsplit(self.path).query)
        if 'echo' in query:
            say('echo challenge for {0}: answered'.format(account))
            return self.reply(200, {'echo': query['echo'][0]})
        if 'secret_key' in query:
            with LOCK:
                SECRETS[account] = query['secret_key'][0]
            say('new secret key for {0}: stored, deliveries will be verified'.format(account))
            return self.reply(200, {})
        if 'api_key' in query:
            say('new API key for {0}: {1}'.format(account, query['api_key'][0]))
            return self.reply(200, {})
        self.reply(400, {'error': 'expected ?echo=, ?secret_key= or ?api_key='})

    def do_POST(self):
        account, broken = account_of(self.path)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            secret = SECRETS.get(account)
        if secret is None:
            verdict = 'signatures not checked: secret key unknown (reset it with ' \
                      'POST /v1/account/reset/secretkey so this server learns it)'
        else:
            verdict = 'pywebhooks-signature {0}, webhook-signature {1}'.format(
                'valid' if legacy_valid(secret, headers, body) else 'INVALID',
                'valid' if standard_valid(secret, headers, body) else 'INVALID')
        say('delivery {0} for {1}: event {2!r}, {3}{4}'.format(
            headers.get('webhook-id', '?'), account, headers.get('event', ''), verdict,
            ', answering 500 (broken endpoint)' if broken else ''))
        say('  body: {0}'.format(body.decode('utf-8', 'replace')))
        self.reply(500 if broken else 200, {})

    def log_message(self, *args):
        pass  # one line per call is printed above instead


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=9090, help='0 picks a free port')
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Endpoint)
    server.daemon_threads = True
    say('listening on http://{0}:{1}'.format(*server.server_address[:2]))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
