"""The RefCampaign stand-in of the tests, run as its own process, with a control API for benches.

`python -m bench.standin --delay 0.3` prints its URL on the first line of standard output.
`GET /_bench/count` → {"requests", "accepted"}; `GET /_bench/arrivals` → [[externalId, at], ...]
(`at`: time.time() once the body was read); `POST /_bench/reset` forgets everything.
Running it out of the load generator's process keeps the two from sharing one GIL.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from tests.standins.refcampaign import RefCampaign, RefCampaignHandler, Scripted

CONTROL = "/_bench/"


class BenchHandler(RefCampaignHandler):
    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        server = self.server
        with server.lock:
            if self.path == CONTROL + "count":
                answer: object = {
                    "requests": len(server.requests),
                    "accepted": len(server.accepted),
                }
            elif self.path == CONTROL + "arrivals":
                answer = [[_external_id(r["body"]), r["at"]] for r in server.requests]
            else:
                answer = {"error": "not found"}
        self.reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == CONTROL + "reset":
            self.read_body()
            default = self.server.default
            self.server.reset()
            self.server.default = default
            return self.reply(200, b"{}")
        super().do_POST()


def _external_id(body: bytes) -> str:
    try:
        return str(json.loads(body).get("externalId"))
    except ValueError:
        return ""


class BenchRefCampaign(RefCampaign):
    request_queue_size = 512  # 16+ clients reconnecting at once must not overflow the backlog

    def __init__(self, api_key: str) -> None:
        super(RefCampaign, self).__init__(BenchHandler)
        self.api_key = api_key
        self.requests = []
        self.accepted = []
        self.conversions = {}
        self.scripted = []
        self.dribbles_ended = []
        self.default = None
        self.arrived = threading.Condition(self.lock)
        self.killer = None  # RefCampaign.kill_on: the tests' worker-killing switch, off here
        self.per_conversion = {}
        self.kills = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    server = BenchRefCampaign(args.api_key)
    if args.delay:
        server.default = Scripted(status=None, delay=args.delay)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
