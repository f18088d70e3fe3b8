"""A webhook receiver for the tests: Python's own HTTP server on a loopback port. Each POST it
accepts is saved as NNNN.json (path, headers, body) in the inbox; while the inbox holds a file
`answer`, it answers that status instead (and saves nothing), as a receiver that is down would;
a body containing the text of the file `refuse-containing` is answered 400, as a receiver
answers a payload it can never take.
Prints "ready" once listening. Usage: webhook_receiver.py INBOX PORT"""

import http.server
import json
import os
import sys

inbox, port = sys.argv[1], int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = 200
        flag = os.path.join(inbox, "answer")
        if os.path.exists(flag):
            with open(flag) as f:
                status = int(f.read())
        refuse = os.path.join(inbox, "refuse-containing")
        if os.path.exists(refuse):
            with open(refuse) as f:
                if f.read().encode() in body:
                    status = 400
        if status < 300:
            n = len([f for f in os.listdir(inbox) if f.endswith(".json")])
            with open(os.path.join(inbox, f"{n:04}.json"), "w") as f:
                json.dump({"path": self.path, "headers": dict(self.headers), "body": body.decode()}, f)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
