"""A fake OpenAI-compatible completions server for the served-teacher tests (127.0.0.1, a free port)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """An OpenAI-compatible /v1/completions that answers prompt_logprobs = -(position / 10); ``plan`` is a
    list of behaviours per call: "ok", "500", "slow" (answers after ``slow_s``), "nan" (the first
    prompt's log-probs are NaN)."""

    def __init__(self, plan, slow_s: float = 1.5):
        self.plan, self.calls = list(plan), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append(body)
                mode = outer.plan.pop(0) if outer.plan else "ok"
                if mode == "slow":
                    time.sleep(slow_s)
                if mode.isdigit():  # an HTTP error status, e.g. "500", "400", "429"
                    self.send_response(int(mode))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                choices = [{"index": k, "text": "", "prompt_logprobs": [None] + [
                    {str(t): {"logprob": -pos / 10, "rank": 1}} for pos, t in enumerate(p) if pos > 0]}
                    for k, p in enumerate(body["prompt"])]
                if mode == "nan":
                    for entry in choices[0]["prompt_logprobs"][1:]:
                        for v in entry.values():
                            v["logprob"] = float("nan")
                data = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out hung up: expected
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
