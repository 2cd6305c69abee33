"""A stand-in for the Hugging Face Hub on 127.0.0.1, enough for ``huggingface_hub.snapshot_download`` of
dataset repositories: the revision info, the recursive tree and the files (HEAD and GET, with the commit
and ETag headers the client checks). Point ``HF_ENDPOINT`` at ``url``; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos, self.requests = repos, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head=False):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "datasets"]:
                    for repo in hub.repos:
                        prefix = ["api", "datasets", *repo.split("/")]
                        if parts[:len(prefix)] == prefix:
                            rest = parts[len(prefix):]
                            files = hub.repos[repo]
                            if rest[:1] == ["revision"]:
                                info = {"id": repo, "sha": SHA, "siblings": [{"rfilename": f} for f in files]}
                                return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                            if rest[:1] == ["tree"]:
                                tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                        for f, b in files.items()]
                                return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
                    return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                if parts[:1] == ["datasets"]:
                    for repo, files in hub.repos.items():
                        prefix = ["datasets", *repo.split("/"), "resolve"]
                        if parts[:len(prefix)] == prefix:
                            name = "/".join(parts[len(prefix) + 1:])
                            if name in files:
                                body = files[name]
                                return self._send(200, body, {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'},
                                                  head)
                    return self._send(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"})
                return self._send(404)

            def do_GET(self):
                self._route()

            def do_HEAD(self):
                self._route(head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
