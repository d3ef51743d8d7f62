"""Notifiers against loopback fakes: python-telegram-bot's real Bot posting to a fake Bot API, and
aiosmtplib sending to an aiosmtpd server; rate limits; a failing notifier never stops anything."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from factorgym.agents.live.notify import EmailNotifier, LoopNotifier, TelegramNotifier, notifiers_from_env
from factorgym.errors import ConfigError

TOKEN = "123456:PLANTED-telegram-token-xyz"


@pytest.fixture
def fake_telegram():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append((self.path, body))
            result = {"message_id": len(seen), "date": 0, "chat": {"id": 42, "type": "private"}, "text": "x"}
            data = json.dumps({"ok": True, "result": result}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            got.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    port = _free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    yield port, got
    ctl.stop()


def test_telegram_through_the_real_bot_class(fake_telegram):
    url, seen = fake_telegram
    n = TelegramNotifier(TOKEN, 42, base_url=url)
    n.send("fill: buy 1 BTC/USDT")
    assert len(seen) == 1
    path, body = seen[0]
    from urllib.parse import parse_qs

    form = {k: v[0] for k, v in parse_qs(body).items()}
    assert path == f"/bot{TOKEN}/sendMessage" and form == {"chat_id": "42", "text": "fill: buy 1 BTC/USDT"}
    assert TOKEN not in repr(n)


def test_email_through_aiosmtplib(smtp_server):
    port, got = smtp_server
    n = EmailNotifier("127.0.0.1", "me@example.org", port=port, sender="bot@example.org")
    n.send("daily summary: equity 10,000.00\nmore")
    assert len(got) == 1
    frm, to, content = got[0]
    assert frm == "bot@example.org" and to == ["me@example.org"] and "Subject: factorgym: daily summary" in content


def test_from_env_and_clear_errors(fake_telegram, smtp_server):
    url, seen = fake_telegram
    port, got = smtp_server
    env = {"FACTORGYM_TELEGRAM_TOKEN": TOKEN, "FACTORGYM_TELEGRAM_CHAT_ID": "42", "FACTORGYM_TELEGRAM_BASE_URL": url,
           "FACTORGYM_SMTP_HOST": "127.0.0.1", "FACTORGYM_SMTP_PORT": str(port), "FACTORGYM_SMTP_TO": "me@example.org"}
    loop = LoopNotifier(notifiers_from_env(env))
    loop.error("order fg123 rejected: InsufficientFunds")
    assert len(seen) == 1 and len(got) == 1
    with pytest.raises(ConfigError, match="FACTORGYM_TELEGRAM_CHAT_ID"):
        notifiers_from_env({"FACTORGYM_TELEGRAM_TOKEN": TOKEN})
    assert notifiers_from_env({}) == []


class _Boom:
    def send(self, text):
        raise ConnectionError(f"https://api.example/bot{TOKEN}/send failed")


class _Box:
    def __init__(self):
        self.texts = []

    def send(self, text):
        self.texts.append(text)


def test_rate_limit_failures_and_alerts(caplog):
    now = [0.0]
    box = _Box()
    loop = LoopNotifier([_Boom(), box], max_per_minute=3, clock=lambda: now[0])
    for k in range(5):
        loop.error(f"e{k}")
    assert [t for t in box.texts] == ["error: e0", "error: e1", "error: e2"] and loop.failures == 3
    assert TOKEN not in caplog.text  # the failing notifier's message (with its URL) is not logged
    now[0] = 61.0
    loop.drawdown(0.12, 8800.0)
    assert "drawdown alert: 12.0%" in box.texts[-1] and "2 earlier message(s) skipped" in box.texts[-1]
    loop.drawdown(0.11, 8900.0)  # not a new low: no second alert
    assert len(box.texts) == 4
    loop.bar({"timestamp": 0, "equity": 100.0, "cash": 1.0})
    loop.bar({"timestamp": 86_400_000, "equity": 110.0, "cash": 1.0})
    assert box.texts[-1].startswith("daily summary 1970-01-01: equity 110.00 (+10.00% on the day)")
