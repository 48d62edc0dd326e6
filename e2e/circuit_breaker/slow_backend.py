# A backend that takes 300 ms per request (HTTP/1.1 keep-alive), so that
# concurrent clients pile up behind a connection pool's limits.
import http.server
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(0.3)
        body = b"productpage v1\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


host, port = sys.argv[1], int(sys.argv[2])
http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()
