"""A tiny RefCampaign stand-in for the README's walkthrough: prints each postback and refund.

Run it from the checkout with the project's virtualenv, and leave it running:

    .venv/bin/python examples/refcampaign_standin.py

It listens on 127.0.0.1:8001 (``--port`` to change), checks the Bearer key against the
``REFCAMPAIGN_API_KEY`` of ``examples/walkthrough.env`` (``--api-key`` to change) and answers the
way RefCampaign does. The test suite uses a stricter one, ``tests/standins/refcampaign.py``.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

WALKTHROUGH_API_KEY = "rc_test_walkthrough"
ACCEPTED = b'{"success": true, "conversionId": "conv_1"}'
REFUNDED = json.dumps(
    {"success": True, "data": {"success": True, "conversionId": "conv_1", "alreadyRefunded": False}}
).encode()
REFUSED = b'{"error": "invalid API key"}'


class RefCampaign(BaseHTTPRequestHandler):
    """Answers every POST like RefCampaign's postback (and refund) API, printing what arrived."""

    api_key = WALKTHROUGH_API_KEY

    def do_POST(self) -> None:
        """Print the postback and answer 200, or 401 for a wrong key."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = self.headers.get("Authorization") == f"Bearer {self.api_key}"
        status = 200 if ok else 401
        print(self.command, self.path, "->", status, flush=True)
        print(json.dumps(json.loads(body), indent=2), flush=True)
        answer = (REFUNDED if self.path.endswith("/refund") else ACCEPTED) if ok else REFUSED
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: do_POST prints what matters."""


def main() -> None:
    """Serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--api-key", default=WALKTHROUGH_API_KEY)
    args = parser.parse_args()
    RefCampaign.api_key = args.api_key
    server = HTTPServer(("127.0.0.1", args.port), RefCampaign)
    print(f"RefCampaign stand-in on http://127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
