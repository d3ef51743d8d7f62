"""Notifications from the trading loop: the ``Notifier`` port, Telegram and e-mail adapters, and
``LoopNotifier`` (what to say, how often, and never let a notifier stop trading).

Secrets come from the environment only (:func:`notifiers_from_env`):

=============================  =========================================================
``FACTORGYM_TELEGRAM_TOKEN``   bot token; with ``FACTORGYM_TELEGRAM_CHAT_ID`` enables Telegram
``FACTORGYM_TELEGRAM_BASE_URL`` optional API URL (a proxy; tests: a loopback fake)
``FACTORGYM_SMTP_HOST``        SMTP server; with ``FACTORGYM_SMTP_TO`` enables e-mail
``FACTORGYM_SMTP_PORT``        default 587 (465 with ``FACTORGYM_SMTP_TLS=1``)
``FACTORGYM_SMTP_USER`` / ``FACTORGYM_SMTP_PASSWORD``  login, if the server wants one
``FACTORGYM_SMTP_FROM``        sender (default: the user, else factorgym@localhost)
``FACTORGYM_SMTP_TLS``         1 = implicit TLS; STARTTLS is used when the server offers it
=============================  =========================================================

Both adapters need the ``[live]`` extra (``pip install 'factorgym[live]'``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from email.message import EmailMessage
from typing import Any, Mapping, Protocol, runtime_checkable

from factorgym.errors import ConfigError

log = logging.getLogger(__name__)
EXTRA = "pip install 'factorgym[live]'"


@runtime_checkable
class Notifier(Protocol):
    """Where messages go: ``send(text)`` delivers one message or raises."""

    def send(self, text: str) -> None: ...


def _need(module: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"{what} needs the [live] extra: {EXTRA}") from None


class TelegramNotifier:
    """Messages to one Telegram chat through python-telegram-bot's ``Bot`` (``base_url`` for a proxy)."""

    def __init__(self, token: str, chat_id: str | int, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        telegram = _need("telegram", "Telegram notifications")
        kw = {"base_url": base_url.rstrip("/") + "/bot"} if base_url else {}
        self._bot = telegram.Bot(token, **kw)
        self.chat_id, self.timeout = chat_id, float(timeout)

    def send(self, text: str) -> None:
        async def _send():
            await self._bot.send_message(chat_id=self.chat_id, text=text[:4000], read_timeout=self.timeout,
                                         write_timeout=self.timeout, connect_timeout=self.timeout)
            await self._bot.shutdown()

        asyncio.run(_send())

    def __repr__(self) -> str:  # (never the token)
        return f"TelegramNotifier(chat_id={self.chat_id!r})"


class EmailNotifier:
    """Messages as e-mails through aiosmtplib (STARTTLS when offered, or implicit TLS)."""

    def __init__(self, host: str, to: str, *, port: int | None = None, username: str | None = None,
                 password: str | None = None, sender: str | None = None, tls: bool = False, timeout: float = 10.0) -> None:
        self._smtp = _need("aiosmtplib", "E-mail notifications")
        self.host, self.to, self.tls = host, to, bool(tls)
        self.port = int(port) if port else (465 if tls else 587)
        self._user, self._password = username, password
        self.sender = sender or username or "factorgym@localhost"
        self.timeout = float(timeout)

    def send(self, text: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"] = self.sender, self.to
        msg["Subject"] = "factorgym: " + text.splitlines()[0][:120]
        msg.set_content(text)
        asyncio.run(self._smtp.send(msg, hostname=self.host, port=self.port, username=self._user, password=self._password,
                                    use_tls=self.tls, start_tls=None if not self.tls else False, timeout=self.timeout))

    def __repr__(self) -> str:  # (never the password)
        return f"EmailNotifier(host={self.host!r}, port={self.port}, to={self.to!r})"


def notifiers_from_env(environ: Mapping[str, str] | None = None) -> list[Notifier]:
    """The notifiers the environment configures (none when it configures none)."""
    env = os.environ if environ is None else environ
    out: list[Notifier] = []
    if env.get("FACTORGYM_TELEGRAM_TOKEN"):
        if not env.get("FACTORGYM_TELEGRAM_CHAT_ID"):
            raise ConfigError("FACTORGYM_TELEGRAM_TOKEN is set but FACTORGYM_TELEGRAM_CHAT_ID is not")
        out.append(TelegramNotifier(env["FACTORGYM_TELEGRAM_TOKEN"], env["FACTORGYM_TELEGRAM_CHAT_ID"],
                                    base_url=env.get("FACTORGYM_TELEGRAM_BASE_URL")))
    if env.get("FACTORGYM_SMTP_HOST"):
        if not env.get("FACTORGYM_SMTP_TO"):
            raise ConfigError("FACTORGYM_SMTP_HOST is set but FACTORGYM_SMTP_TO (the recipient) is not")
        out.append(EmailNotifier(env["FACTORGYM_SMTP_HOST"], env["FACTORGYM_SMTP_TO"], port=env.get("FACTORGYM_SMTP_PORT"),
                                 username=env.get("FACTORGYM_SMTP_USER"), password=env.get("FACTORGYM_SMTP_PASSWORD"),
                                 sender=env.get("FACTORGYM_SMTP_FROM"), tls=env.get("FACTORGYM_SMTP_TLS") == "1"))
    return out


class LoopNotifier:
    """What the loop reports: fills, errors, a drawdown alert (once per new low past the threshold),
    and a daily summary (the first bar of each UTC day). At most ``max_per_minute`` messages a
    minute; the rest are counted and said in the next message that goes out. A notifier that raises
    is logged (its error class only: messages can carry URLs) and trading goes on."""

    def __init__(self, notifiers: list[Notifier], *, max_per_minute: int = 6, clock=time.monotonic) -> None:
        self.notifiers, self.max_per_minute, self.clock = list(notifiers), int(max_per_minute), clock
        self._sent: deque[float] = deque()
        self.dropped = 0
        self.failures = 0
        self._day: int | None = None
        self._alerted_low: float | None = None
        self._day_start: float | None = None

    def _say(self, text: str) -> bool:
        now = self.clock()
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()
        if len(self._sent) >= self.max_per_minute:
            self.dropped += 1
            return False
        if self.dropped:
            text += f"\n({self.dropped} earlier message(s) skipped by the rate limit)"
            self.dropped = 0
        self._sent.append(now)
        for n in self.notifiers:
            try:
                n.send(text)
            except Exception as exc:  # noqa: BLE001 - a failing notifier never stops trading
                self.failures += 1
                log.warning("notifier %s failed: %s", type(n).__name__, type(exc).__name__)
        return True

    def fill(self, order: dict) -> None:
        self._say(f"fill: {order.get('side')} {order.get('filled'):g} {order.get('symbol')} at "
                  f"{order.get('average') or order.get('price')} (order {order.get('clientOrderId')})")

    def error(self, text: str) -> None:
        self._say(f"error: {text}")

    def drawdown(self, dd: float, equity: float) -> None:
        if self._alerted_low is not None and dd <= self._alerted_low:
            return
        self._alerted_low = dd
        self._say(f"drawdown alert: {dd:.1%} below the peak, equity {equity:,.2f}")

    def bar(self, info: dict) -> None:
        day = int(info["timestamp"]) // 86_400_000
        if self._day is None:
            self._day, self._day_start = day, info["equity"]
            return
        if day != self._day:
            start = self._day_start or info["equity"]
            self._say(f"daily summary {time.strftime('%Y-%m-%d', time.gmtime(self._day * 86400))}: equity "
                      f"{info['equity']:,.2f} ({info['equity'] / start - 1:+.2%} on the day), cash {info['cash']:,.2f}")
            self._day, self._day_start = day, info["equity"]
