"""The relay's operator routes: `/healthz`, `/metrics`, `/status` and `/status.json`.

`OperatorPages` answers them from a `RelayMetrics`; the status page is the Jinja2
template `templates/relay/status.html.j2`, self-contained (inline style, no
script, no external asset) so that it works on an air-gapped network. These routes show
aggregate figures only, never an id; reading them needs no signature.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files

import jinja2
from aiohttp import web

from bridge.relay.metrics import CONTENT_TYPE, RelayMetrics, RelayStatus

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(files("sealgate_templates") / "relay")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def format_bytes(count: int) -> str:
    """`count` bytes in binary units, e.g. `1.5 MiB` (what the page and the CLI print)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: int) -> str:
    """`seconds` as `3d 4h 5m 6s`, leading zero units left out."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    shown = [f"{n}{unit}" for n, unit in parts if n] + [f"{secs}s"]
    return " ".join(shown)


def render_status_page(status: RelayStatus) -> str:
    return _templates.get_template("status.html.j2").render(
        status=status,
        stored=format_bytes(status.stored_bytes),
        quota=format_bytes(status.quota_bytes) if status.quota_bytes else None,
        used_percent=(
            min(100.0, 100.0 * status.stored_bytes / status.quota_bytes)
            if status.quota_bytes else None
        ),
        uptime=format_duration(status.uptime_seconds),
        purges_peak=max(status.purges_by_hour) or 1,
    )


class OperatorPages:
    """Handlers of the operator routes over one `RelayMetrics`."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def handle_status(self, request: web.Request) -> web.Response:
        status = await asyncio.to_thread(self.metrics.status)
        return web.Response(text=render_status_page(status), content_type="text/html")

    async def handle_status_json(self, request: web.Request) -> web.Response:
        status = await asyncio.to_thread(self.metrics.status)
        return web.json_response(status.to_json())


def status_table(status: RelayStatus) -> str:
    """The status figures as a plain-text table, for `sealgate relay status`."""
    purged = ", ".join(f"{reason} {count}" for reason, count in status.purged_total.items())
    rows = [
        ("uptime", format_duration(status.uptime_seconds)),
        ("stored", f"{format_bytes(status.stored_bytes)} ({status.stored_bytes} bytes)"),
        ("quota", f"{format_bytes(status.quota_bytes)} ({status.quota_bytes} bytes)"
         if status.quota_bytes else "none"),
        ("envelopes", str(status.envelopes)),
        ("deposits", f"{status.deposits_total} ({status.deposits_per_minute:.2f}/min)"),
        ("fetches", f"{status.fetches_total} ({status.fetches_per_minute:.2f}/min)"),
        ("purged", purged),
        ("purged, last 24 h", str(sum(status.purges_by_hour))),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
