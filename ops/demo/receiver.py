"""A tiny webhook receiver for ops/up and docker-compose.yml: answers 200 and writes each
request as a JSON line, to a file (--out) or to stdout."""

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--out", help="append requests to this file (default: stdout)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="listen address (0.0.0.0 in a container)"
    )
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": body,
            }
            line = json.dumps(entry) + "\n"
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(line)
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _record

        def log_message(self, *_args) -> None:  # keep the log quiet
            pass

    # As a container's first process, SIGTERM would otherwise be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
