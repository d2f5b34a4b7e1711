"""An OTLP/HTTP sink for ops/bench/pipeline --spans: answers every export at once and
keeps its body (protobuf, as sent) in a folder, one file per export, for ops/bench/hops
to split each event's latency by span. Standard library only.

  python3 otlp_sink.py DIR PORT_FILE
"""

import gzip
import http.server
import itertools
import sys
from pathlib import Path


def main() -> int:
    folder, port_file = Path(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count(1)

    class Export(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            (folder / f"{next(numbers):06d}.pb").write_bytes(body)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Export)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
