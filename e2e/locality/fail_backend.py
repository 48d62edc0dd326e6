# A backend that answers every request 503 (x-backend: NAME), HTTP/1.1 keep-alive.
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"unavailable\n"
        self.send_response(503)
        self.send_header("x-backend", sys.argv[3])
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
