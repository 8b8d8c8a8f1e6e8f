"""A tiny replica for runtime tests (``python -m tests.runtimes.echo``): answers
``/health``, an OpenAI-shaped ``/v1/chat/completions`` that names the replica, and
``POST /crash`` (the process exits at once, as a crashing engine would)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--tag", default="")
    ap.add_argument("--fail", action="store_true")
    ap.add_argument("--parent-pid", type=int)
    args = ap.parse_args()
    if args.fail:
        print("echo: asked to fail at start (options.fail)", file=sys.stderr, flush=True)
        sys.exit(3)
    if args.parent_pid is not None:
        parent = args.parent_pid

        def die_with_parent() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(0)

        threading.Thread(target=die_with_parent, daemon=True).start()

    me = f"{args.tag}@{args.port}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:
            pass

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok", "pid": os.getpid()})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/crash":
                os._exit(1)
            if self.path == "/v1/chat/completions":
                self._json(
                    200,
                    {
                        "id": "chatcmpl-echo",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "echo"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"echo {me}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                    },
                )
                return
            self._json(404, {"error": {"message": "not found"}})

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
