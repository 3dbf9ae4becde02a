"""A run's per-frame results, published as they come: JSON lines to stdout or a file, and MQTT messages.

``Publisher(targets)`` takes ``-`` (stdout), a file path (lines appended, each written whole and
flushed, so a reader tailing it never sees half a record), or ``mqtt://HOST[:PORT]/TOPIC``. MQTT is
paho-mqtt's client on its own network thread (``loop_start``): QoS 1, so every message is resent
until the broker acknowledges it; while the broker is away (refused at the start, or gone mid-run)
messages wait in paho's queue (``QUEUE`` at most) and the client reconnects with paho's backoff, one
warning line per outage. ``close()`` waits a while for the queue to drain and says what was lost.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from segtool.runtime.errors import OutputError, UsageError

log = logging.getLogger(__name__)

#: messages kept for the broker while it is away (about 7 minutes of 25 FPS); later ones are dropped
QUEUE = 10_000
#: seconds ``close()`` waits for the broker to acknowledge what is still queued
DRAIN_SECONDS = 10.0
MQTT_EXTRA = "pip install 'segtool[mqtt]' (or: pip install paho-mqtt)"


class JsonLines:
    """One JSON record a line, to stdout (``-``) or appended to a file opened at the first record
    (a run that publishes nothing leaves no file)."""

    def __init__(self, target: str):
        self.name = "stdout" if target == "-" else target
        self.path = None if target == "-" else Path(target)
        self.file: IO[str] | None = None

    def send(self, line: str) -> None:
        try:
            if self.file is None:
                self.file = sys.stdout if self.path is None else open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self.file.write(line + "\n")  # one write per record: whole lines only
            self.file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def close(self) -> str:
        if self.file is not None and self.file is not sys.stdout:
            self.file.close()
        return ""


def parse_mqtt(url: str) -> tuple[str, int, str]:
    """mqtt://HOST[:PORT]/TOPIC -> (host, port, topic); ``UsageError`` for anything else, or without paho-mqtt."""
    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    try:
        port = parts.port or 1883
    except ValueError:
        port = 0
    if parts.scheme != "mqtt" or not parts.hostname or not topic or not port or "+" in topic or "#" in url:
        raise UsageError(f"--publish {url}: give mqtt://HOST[:PORT]/TOPIC (a topic without + or #)")
    if importlib.util.find_spec("paho") is None:
        raise UsageError(f"--publish {url} needs paho-mqtt: {MQTT_EXTRA}")
    return parts.hostname, port, topic


def check_targets(targets: list[str]) -> None:
    """``UsageError`` for a ``--publish`` target that cannot work, before anything starts."""
    for target in targets:
        if "://" in target:
            parse_mqtt(target)
        elif target != "-" and (Path(target).is_dir() or not Path(target).parent.is_dir()):
            problem = "is a folder" if Path(target).is_dir() else "its folder does not exist"
            raise UsageError(f"--publish {target}: {problem} (give -, a file, or mqtt://HOST[:PORT]/TOPIC)")


class Mqtt:
    """One topic on one broker, through paho-mqtt's client and its network thread."""

    def __init__(self, url: str):
        host, port, topic = parse_mqtt(url)
        import paho.mqtt.client as paho

        self.name, self.topic = f"mqtt://{host}:{port}/{topic}", topic
        self.sent = self.dropped = 0
        self.acknowledged = 0  # messages the broker acknowledged (counted on paho's thread)
        self.away = False  # the broker is (or was, at the start) unreachable: the outage is said once
        self.closing = False
        self.full = paho.MQTT_ERR_QUEUE_SIZE
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"segtool-{secrets.token_hex(4)}")
        self.client.max_queued_messages_set(QUEUE)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._failed
        self.client.on_publish = self._acknowledged
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()  # connects, reconnects and resends on its own thread

    def _outage(self, why: str) -> None:
        if not self.away and not self.closing:
            self.away = True
            log.warning("%s: %s; messages are queued (up to %d) until it is back", self.name, why, QUEUE)

    def _connected(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._outage(f"the broker refused the connection ({reason})")
        elif self.away:
            self.away = False
            log.info("%s: connected again; publishing", self.name)

    def _disconnected(self, client, userdata, flags, reason, properties) -> None:
        self._outage(f"the broker went away ({reason})")

    def _failed(self, client, userdata) -> None:
        self._outage("cannot connect to the broker")

    def _acknowledged(self, client, userdata, mid, reason, properties) -> None:
        self.acknowledged += 1

    def send(self, line: str) -> None:
        """Hand the message to paho: sent now, or queued while the broker is away (or dropped, queue full)."""
        if self.client.publish(self.topic, line.encode(), qos=1).rc == self.full:
            if not self.dropped:
                log.warning("%s: the queue is full (%d messages); dropping messages until it drains", self.name, QUEUE)
            self.dropped += 1
        else:
            self.sent += 1

    def close(self) -> str:
        """Wait up to ``DRAIN_SECONDS`` for the queue to drain, then disconnect; what was lost, if anything."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.acknowledged < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()
        lost = self.sent - self.acknowledged + self.dropped
        if not lost:
            return ""
        return f"{self.name}: {lost} of {self.sent + self.dropped} messages were not delivered (the broker was away)"


class Publisher:
    """Every target of ``--publish``; ``publish`` sends one record to each."""

    def __init__(self, targets: list[str]):
        check_targets(targets)
        self.sinks: list[JsonLines | Mqtt] = [Mqtt(t) if "://" in t else JsonLines(t) for t in targets]
        self.lock = threading.Lock()  # records come from the painting thread (video) and the caller's (images)

    def publish(self, record: dict) -> None:
        line = json.dumps(record)
        with self.lock:
            for sink in self.sinks:
                sink.send(line)

    def close(self) -> list[str]:
        """Close every target; one line per target that lost messages."""
        return [problem for sink in self.sinks if (problem := sink.close())]
