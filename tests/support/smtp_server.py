"""A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd) on 127.0.0.1 with
STARTTLS required (certificate made by the test) and AUTH required. Each accepted message is
written to OUT_DIR as its own .eml file (written under a temporary name, then renamed), named
after its one envelope recipient.

usage: smtp_server.py OUT_DIR PORT CERT KEY USER PASSWORD [options]
  --plain              no TLS at all; AUTH is offered and accepted in the clear
  --reject ADDR        answer RCPT TO:<ADDR> with 550 (repeatable)
  --reject-data        answer the end of DATA with 554
  --reject-sender      answer MAIL FROM with 553 (the sender refused: about our settings)
  --tarpit SECONDS     wait this long before every reply
  --host ADDRESS       listen on ADDRESS instead of 127.0.0.1 (a bridge the test made)
  --lock-store PATH S  on DATA, take SQLite's write lock on PATH, answer 250, and hold the lock
                       for S seconds more (a store locked right after the server accepted)
Every AUTH attempt is appended to OUT_DIR/auth.log as "encrypted|plain LOGIN PASSWORD".
Prints "ready" once listening; stops when its standard input closes."""

import asyncio
import os
import sqlite3
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out_dir, port, cert, key, user, password = sys.argv[1:7]
options = sys.argv[7:]
plain = "--plain" in options
reject_data = "--reject-data" in options
reject_sender = "--reject-sender" in options
rejected = {options[i + 1] for i, o in enumerate(options) if o == "--reject"}
tarpit = float(options[options.index("--tarpit") + 1]) if "--tarpit" in options else 0.0
host = options[options.index("--host") + 1] if "--host" in options else "127.0.0.1"
lock_store = None
if "--lock-store" in options:
    at = options.index("--lock-store")
    lock_store = (options[at + 1], float(options[at + 2]))


class SaveToDir:
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if reject_sender:
            return "553 5.7.1 <%s>: Sender address rejected: not owned by user" % address
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in rejected:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if reject_data:
            return "554 5.7.1 Message rejected: content policy"
        if lock_store is not None:
            path, hold = lock_store
            taken = threading.Event()

            def hold_lock():
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.execute("BEGIN IMMEDIATE")
                taken.set()
                time.sleep(hold)
                conn.execute("COMMIT")
                conn.close()

            threading.Thread(target=hold_lock, daemon=True).start()
            taken.wait(30)
        name = os.path.join(out_dir, f"{time.time_ns()}-{envelope.rcpt_tos[0]}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword):
        encrypted = "encrypted" if session.ssl else "plain"
        with open(os.path.join(out_dir, "auth.log"), "a") as f:
            f.write(f"{encrypted} {auth_data.login.decode()} {auth_data.password.decode()}\n")
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    return AuthResult(success=ok)


class SlowSMTP(SMTP):
    """Waits `tarpit` seconds before every reply, as a tarpitting server does."""

    async def push(self, status):
        if tarpit and armed.is_set():
            await asyncio.sleep(tarpit)
        await super().push(status)


class TestController(Controller):
    def factory(self):
        return SlowSMTP(self.handler, **self.SMTP_kwargs)


# Armed once the controller's own start-up connection is done (it reads the greeting within 1 s).
armed = threading.Event()
kwargs = dict(authenticator=authenticator, auth_required=True)
if plain:
    kwargs.update(auth_require_tls=False)
else:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
controller = TestController(SaveToDir(), hostname=host, port=int(port), **kwargs)
controller.start()
armed.set()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    controller.stop()
