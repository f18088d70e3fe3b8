"""Stand-ins for the chat and paging services probe speaks to, over HTTPS on one loopback port,
each checking the request as the provider documents it and answering as the provider does:

  POST /slack/services/T000/B000/XXXX      Slack incoming webhook: "ok" / 400 invalid_blocks /
                                           404 no_service / 429 + Retry-After
  POST /teams/workflows/flow1              Teams Workflows webhook: 202 / 400
  POST /discord/api/webhooks/1/tok         Discord webhook: 204 / 400 code 50035 / 404 code 10015 /
                                           429 JSON retry_after + Retry-After
  POST /telegram/bot<TOKEN>/sendMessage    Telegram Bot API: ok:true / ok:false with error_code,
                                           description and parameters.retry_after
  POST /                                   ntfy JSON publishing: 200 / 401 / 413 / 429
  POST /pagerduty/v2/enqueue               PagerDuty Events API v2: 202 / 400 invalid event / 429
  POST /opsgenie/v2/alerts[/ALIAS/close]   Opsgenie Alert API: 202 / 401 / 422 / 429

Every accepted request is saved as NNNN.json (provider, path, headers, body) in the inbox. The
paging stand-ins keep their incidents (pagerduty.json: dedup_key -> triggered/resolved and how
many incidents were ever opened; opsgenie.json: alias -> open/closed and a count). While the
inbox holds `throttle` ("N SECONDS"), the next N requests get the provider's 429 with that wait;
while it holds `invalid` naming a provider, that provider's next request gets its validation error.
Usage: chat_providers.py INBOX PORT CERT KEY TELEGRAM_TOKEN ROUTING_KEY OPSGENIE_KEY NTFY_TOKEN
Prints "ready" once listening."""

import html.parser
import http.server
import json
import os
import ssl
import sys
import uuid

inbox, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
telegram_token, routing_key, opsgenie_key, ntfy_token = sys.argv[5:9]

TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "blockquote"}


def state(name, default):
    path = os.path.join(inbox, name)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def save_state(name, value):
    with open(os.path.join(inbox, name), "w") as f:
        json.dump(value, f)


def invalid(provider):
    """Whether the inbox's `invalid` file names this provider: its next request is answered
    with the provider's own validation error, as a request it can never take."""
    path = os.path.join(inbox, "invalid")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        named = f.read().strip()
    if named != provider:
        return False
    os.remove(path)
    return True


def throttled():
    """Whether this request is to be refused for a rate limit, and the wait to ask for."""
    path = os.path.join(inbox, "throttle")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        count, wait = f.read().split()
    count = int(count) - 1
    if count <= 0:
        os.remove(path)
    else:
        with open(path, "w") as f:
            f.write(f"{count} {wait}")
    return int(wait)


class TelegramHtml(html.parser.HTMLParser):
    """Telegram's HTML parse mode: only its own tags, each closed, entities well formed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open = []
        self.bad = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        if tag not in TELEGRAM_TAGS:
            self.bad = f"Unsupported start tag \"{tag}\""
        self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.bad = f"Unmatched end tag \"{tag}\""

    def handle_data(self, data):
        self.text += data


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def save(self, provider, body):
        n = len([f for f in os.listdir(inbox) if f[0].isdigit()])
        with open(os.path.join(inbox, f"{n:04}.json"), "w") as f:
            json.dump({"provider": provider, "path": self.path, "headers": dict(self.headers), "body": body}, f)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self.reply(400, {"error": "Content-Type must be application/json"})
        try:
            body = json.loads(raw)
        except ValueError:
            return self.reply(400, "invalid_payload", "text/html")
        path = self.path
        if path.startswith("/slack/"):
            return self.slack(path, body)
        if path.startswith("/teams/"):
            return self.teams(body)
        if path.startswith("/discord/"):
            return self.discord(path, body)
        if path.startswith("/telegram/"):
            return self.telegram(path, body)
        if path.startswith("/pagerduty/"):
            return self.pagerduty(body)
        if path.startswith("/opsgenie/"):
            if invalid("opsgenie"):
                return self.reply(422, {"message": "Request body is not processable. Please check the errors.", "errors": {"message": "Message can not be empty."}, "took": 0.0, "requestId": str(uuid.uuid4())})
            return self.opsgenie(path, body)
        if path == "/":
            return self.ntfy(body)
        return self.reply(404, {"error": "not found"})

    # https://api.slack.com/messaging/webhooks#handling_errors
    def slack(self, path, body):
        if path != "/slack/services/T000/B000/XXXX":
            return self.reply(404, "no_service", "text/html")
        wait = throttled()
        if wait is not None:
            return self.reply(429, "rate_limited", "text/html", [("Retry-After", str(wait))])
        blocks = body.get("blocks")
        if not isinstance(body.get("text"), str) and not blocks:
            return self.reply(400, "no_text", "text/html")
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > 50:
                return self.reply(400, "invalid_blocks", "text/html")
            for b in blocks:
                kind = b.get("type")
                text = b.get("text") or {}
                if kind == "header" and (text.get("type") != "plain_text" or len(text.get("text", "")) > 150):
                    return self.reply(400, "invalid_blocks", "text/html")
                if kind == "section" and (text.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(text.get("text", "")) <= 3000):
                    return self.reply(400, "invalid_blocks", "text/html")
                if kind not in ("header", "section", "context", "divider", "actions"):
                    return self.reply(400, "invalid_blocks", "text/html")
        self.save("slack", body)
        return self.reply(200, "ok", "text/html")

    # Power Automate "When a Teams webhook request is received": an Adaptive Card attachment.
    def teams(self, body):
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"error": {"code": "TooManyRequests"}}, headers=[("Retry-After", str(wait))])
        try:
            attachment = body["attachments"][0]
            card = attachment["content"]
            assert body["type"] == "message"
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            assert card["type"] == "AdaptiveCard" and card["version"] and isinstance(card["body"], list)
            assert len(json.dumps(body)) <= 28 * 1024
        except (KeyError, IndexError, TypeError, AssertionError):
            return self.reply(400, {"error": {"code": "InvalidRequestContent", "message": "The input body for trigger 'manual' of type 'Request' did not match its schema definition."}})
        self.save("teams", body)
        return self.reply(202, "")

    # https://discord.com/developers/docs/resources/webhook#execute-webhook, embed limits.
    def discord(self, path, body):
        if not path.startswith("/discord/api/webhooks/1/tok"):
            return self.reply(404, {"message": "Unknown Webhook", "code": 10015})
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"message": "You are being rate limited.", "retry_after": wait, "global": False}, headers=[("Retry-After", str(wait))])
        embeds = body.get("embeds") or []
        if not body.get("content") and not embeds:
            return self.reply(400, {"message": "Cannot send an empty message", "code": 50006})
        total = 0
        for e in embeds:
            parts = [e.get("title", ""), e.get("description", ""), (e.get("footer") or {}).get("text", "")]
            fields = e.get("fields", [])
            if len(e.get("title", "")) > 256 or len(e.get("description", "")) > 4096 or len(fields) > 25:
                return self.reply(400, {"message": "Invalid Form Body", "code": 50035})
            for f in fields:
                if not f.get("name") or not f.get("value") or len(f["name"]) > 256 or len(f["value"]) > 1024:
                    return self.reply(400, {"message": "Invalid Form Body", "code": 50035})
                parts += [f["name"], f["value"]]
            total += sum(len(p) for p in parts)
        if len(embeds) > 10 or total > 6000:
            return self.reply(400, {"message": "Invalid Form Body", "code": 50035})
        self.save("discord", body)
        return self.reply(204, "")

    # https://core.telegram.org/bots/api#sendmessage and #making-requests
    def telegram(self, path, body):
        if path != f"/telegram/bot{telegram_token}/sendMessage":
            return self.reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {wait}", "parameters": {"retry_after": wait}})
        if str(body.get("chat_id")) != "12345":
            return self.reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
        text = body.get("text", "")
        if body.get("parse_mode") == "HTML":
            parser = TelegramHtml()
            parser.feed(text)
            parser.close()
            if parser.bad or parser.open:
                return self.reply(400, {"ok": False, "error_code": 400, "description": f"Bad Request: can't parse entities: {parser.bad or 'unclosed tag'}"})
            text = parser.text
        if not text.strip():
            return self.reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
        if len(text) > 4096:
            return self.reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"})
        self.save("telegram", body)
        return self.reply(200, {"ok": True, "result": {"message_id": 1, "chat": {"id": 12345}, "text": text}})

    # https://docs.ntfy.sh/publish/#publish-as-json
    def ntfy(self, body):
        if ntfy_token and self.headers.get("Authorization") != f"Bearer {ntfy_token}":
            return self.reply(401, {"code": 40101, "http": 401, "error": "unauthorized"})
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"code": 42901, "http": 429, "error": "limit reached: too many requests"})
        if not body.get("topic"):
            return self.reply(400, {"code": 40009, "http": 400, "error": "invalid request: topic invalid"})
        if len(body.get("message", "").encode()) > 4096:
            return self.reply(413, {"code": 41301, "http": 413, "error": "message too large"})
        if body.get("priority") not in (None, 1, 2, 3, 4, 5):
            return self.reply(400, {"code": 40007, "http": 400, "error": "invalid request: priority invalid"})
        self.save("ntfy", body)
        return self.reply(200, {"id": uuid.uuid4().hex[:12], "event": "message", "topic": body["topic"], "message": body.get("message", "")})

    # https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
    def pagerduty(self, body):
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."})
        errors = []
        if body.get("routing_key") != routing_key or len(body.get("routing_key", "")) != 32:
            errors.append("'routing_key' is invalid")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        dedup = body.get("dedup_key", "")
        if len(dedup) > 255 or (action in ("acknowledge", "resolve") and not dedup):
            errors.append("'dedup_key' is invalid")
        if action == "trigger":
            p = body.get("payload") or {}
            if not p.get("summary") or len(p["summary"]) > 1024:
                errors.append("'payload.summary' is missing or too long")
            if not p.get("source"):
                errors.append("'payload.source' is missing")
            if p.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
        if errors:
            return self.reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        incidents = state("pagerduty.json", {"open": {}, "opened": 0})
        if action == "trigger" and incidents["open"].get(dedup) != "triggered":
            incidents["opened"] += 1
            incidents["open"][dedup] = "triggered"
        elif action == "resolve" and dedup in incidents["open"]:
            incidents["open"][dedup] = "resolved"
        save_state("pagerduty.json", incidents)
        self.save("pagerduty", body)
        return self.reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

    # https://docs.opsgenie.com/docs/alert-api#create-alert, #close-alert
    def opsgenie(self, path, body):
        if self.headers.get("Authorization") != f"GenieKey {opsgenie_key}":
            return self.reply(401, {"message": "Key format is not valid!", "took": 0.0, "requestId": str(uuid.uuid4())})
        wait = throttled()
        if wait is not None:
            return self.reply(429, {"message": "You are making too many requests! To avoid errors, we recommend you limit requests.", "took": 0.0, "requestId": str(uuid.uuid4())})
        alerts = state("opsgenie.json", {"alerts": {}, "created": 0})
        request_id = str(uuid.uuid4())
        if path == "/opsgenie/v2/alerts":
            message, alias = body.get("message", ""), body.get("alias", "")
            if not message or len(message) > 130 or len(alias) > 512 or len(body.get("description", "")) > 15000:
                return self.reply(422, {"message": "Request body is not processable. Please check the errors.", "errors": {"message": "Message can not be empty or longer than 130 characters."}, "took": 0.0, "requestId": request_id})
            if body.get("priority") not in (None, "P1", "P2", "P3", "P4", "P5"):
                return self.reply(422, {"message": "Request body is not processable. Please check the errors.", "errors": {"priority": "Priority should be one of [P1, P2, P3, P4, P5]"}, "took": 0.0, "requestId": request_id})
            # Deduplication: an open alert of the same alias is not created again.
            if alerts["alerts"].get(alias) != "open":
                alerts["created"] += 1
                alerts["alerts"][alias] = "open"
        elif path.startswith("/opsgenie/v2/alerts/") and "/close" in path:
            from urllib.parse import unquote, urlparse, parse_qs
            parsed = urlparse(path)
            alias = unquote(parsed.path[len("/opsgenie/v2/alerts/"):-len("/close")])
            if parse_qs(parsed.query).get("identifierType") != ["alias"]:
                return self.reply(422, {"message": "identifierType must be alias here", "took": 0.0, "requestId": request_id})
            if alias in alerts["alerts"]:
                alerts["alerts"][alias] = "closed"
        else:
            return self.reply(404, {"message": "Not found", "took": 0.0, "requestId": request_id})
        save_state("opsgenie.json", alerts)
        self.save("opsgenie", body)
        return self.reply(202, {"result": "Request will be processed", "took": 0.01, "requestId": request_id})

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
