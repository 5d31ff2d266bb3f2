"""A local web page over a directory of runs: their status, each run's report, two runs compared.

Standard library only (`http.server.ThreadingHTTPServer`), bound to 127.0.0.1 by default: runs stay on the machine.
Reports are made on request and cached until one of the run's files changes (by name, size and mtime), so a run
still training gets a fresh report as its shards land; its page polls for that and reloads itself.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

import pandas as pd
import plotly.offline

from ..analysis.compare import compare_runs
from ..exceptions import OntogenyError, StoreError
from ..store import COMMITS, REPORT, Layout, Run
from . import data
from .figures import compare_figure
from .page import STYLE, render_report
from .sections import PLOT_CONFIG, table_html

STALE_SECONDS = 600  # an unfinished run with no new file for this long is shown as stopped, not running
REFRESH_SECONDS = 5


class RunsDirectory:
    """The runs under one directory (each subdirectory marked as a run) and a cache of their reports."""

    def __init__(self, runs_dir: str | Path):
        self.path = Path(runs_dir)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such directory")
        self._reports: dict[str, tuple[str, bytes]] = {}  # run name -> (signature, page)
        self._statuses: dict[str, tuple[str, dict]] = {}  # run name -> (signature, status as read then)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The run names (subdirectories that ontogeny marked as runs), sorted."""
        return sorted(p.name for p in self.path.iterdir() if Layout(p).is_run())

    def run_dir(self, name: str) -> Path | None:
        """The directory of run `name`, or None if it is not one of `names()` (so no path ever escapes)."""
        return self.path / name if name in self.names() else None

    def signature(self, name: str) -> tuple[str, float]:
        """A hash of the run's files (name, size, mtime) and the newest mtime, both changing as training writes."""
        layout = Layout(self.path / name)
        files = [p for p in layout.root.iterdir() if p.is_file() and p.name != REPORT]
        files += [layout.writer(w) / COMMITS for w in layout.writer_names()]  # a commit changes its log
        stats = []
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:  # replaced while we looked
                continue
            stats.append((str(path.relative_to(layout.root)), stat.st_size, stat.st_mtime_ns))
        stats.sort()
        newest = max((s[2] for s in stats), default=0) / 1e9
        return hashlib.sha1(repr(stats).encode()).hexdigest(), newest

    def status(self, name: str) -> dict:
        """One run's status: finished / running / stopped, member status counts, steps done and total.
        A run that cannot be read (a broken spec.toml, say) is listed as 'unreadable: <why>'."""
        try:
            return self._status(name)
        except Exception as err:  # noqa: BLE001 (one broken run must never take the index down with it)
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return {"name": name, "state": f"unreadable: {reason}", "members": 0, "ok": 0,
                    "running": 0, "diverged": 0, "steps_done": None, "steps": None, "started": None,
                    "finished": None}

    def _status(self, name: str) -> dict:
        """The run's status, read from its tables only when one of its files changed since the last read (an index
        of a thousand runs then costs a stat of each run's files, not a query of each run's shards)."""
        signature, newest = self.signature(name)
        cached = self._statuses.get(name)
        if cached is None or cached[0] != signature:
            with Run(self.path / name) as run:
                meta = run.meta
                statuses = run.members().status.tolist()
                done = run.sql("SELECT max(step) AS step FROM scalars").step.iloc[0] \
                    if data.has_rows(run, "scalars") else None
                total = run.steps
            cached = signature, {"name": name, "members": len(statuses), "ok": statuses.count("ok"),
                                 "running": statuses.count("running"), "diverged": statuses.count("diverged"),
                                 "steps_done": None if done is None else int(done), "steps": total,
                                 "started": meta.get("started"), "finished": meta.get("finished")}
            self._statuses[name] = cached
        status = dict(cached[1])
        # ontogeny run marks the run finished; every other producer (recorder, callbacks, ingest, SAE) its members
        settled = status["members"] > 0 and status["ok"] + status["diverged"] == status["members"]
        status["state"] = "finished" if status["finished"] or settled else \
            "running" if time.time() - newest < STALE_SECONDS else "stopped"
        return status

    def report(self, name: str) -> bytes:
        """The report page of run `name`, made now or taken from the cache if no file changed since."""
        signature, _ = self.signature(name)
        with self._lock:
            cached = self._reports.get(name)
            if cached is not None and cached[0] == signature:
                return cached[1]
            with Run(self.path / name) as run:
                finished = bool(run.meta.get("finished"))
                page = render_report(run, head_extra="" if finished else _reload_script(name, signature))
            body = page.replace("<body>", f"<body>{_back_link()}", 1).encode()
            self._reports[name] = (signature, body)
            return body


def index_page(runs: RunsDirectory) -> str:
    """The list of runs with their status, and the compare form."""
    statuses = [runs.status(name) for name in runs.names()]
    def cell(value) -> str:  # every text a page prints is escaped: run names and errors may hold HTML
        return f"<td>{html.escape('-' if value is None else str(value))}</td>"

    rows = "".join(
        f"<tr><td style='text-align:left'><a href='/run/{quote(s['name'])}/'>{html.escape(s['name'])}</a></td>"
        + "".join(cell(s[key]) for key in ("state", "members", "ok", "running", "diverged"))
        + cell(f"{'-' if s['steps_done'] is None else s['steps_done']} / {s['steps'] or '-'}")
        + cell(s["started"]) + cell(s["finished"]) + "</tr>"
        for s in statuses)
    head = "".join(f"<th>{h}</th>" for h in ("run", "state", "members", "ok", "running", "diverged",
                                             "steps done", "started", "finished"))
    refresh = any(s["state"] == "running" for s in statuses)
    table = f"<table id='runs'><tr>{head}</tr>{rows}</table>" if statuses else \
        "<p>No runs yet: a run is a subdirectory made by ontogeny (ontogeny run ... --out DIR).</p>"
    return _page("ontogeny runs", f"<h1>Runs in {html.escape(str(runs.path))}</h1>{table}"
                 f"<h2>Compare two runs</h2>{_compare_form(runs, None, None, 'test/acc')}", refresh=refresh)


def compare_page(runs: RunsDirectory, first: str, second: str, name: str) -> str:
    """One scalar of two runs on one plot (members, median, min-max band per run)."""
    frames, running = [], False
    for run_name in dict.fromkeys((first, second)):
        with Run(runs.path / run_name) as run:
            frame, _ = data.curves(run, [name])
            running |= not run.meta.get("finished")
        frames.append((run_name, frame))
    fig = compare_figure(frames, name)
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id="fig-compare", config=PLOT_CONFIG)
    missing = [label for label, frame in frames if frame.empty]
    note = f"<p>No scalar {html.escape(name)!s} in: {html.escape(', '.join(missing))}</p>" if missing else ""
    return _page(f"compare {first} and {second}", f"{_back_link()}<h1>Compare</h1>"
                 f"{_compare_form(runs, first, second, name)}{note}"
                 f"{_verdicts(runs, first, second, name) if not missing and first != second else ''}"
                 f"<div class='figure'>{body}</div>", refresh=running, plotly=True)


def _verdicts(runs: RunsDirectory, first: str, second: str, name: str) -> str:
    """The final values compared as `ontogeny compare` does: B - A per subset, 95% t interval, exact p, verdict."""
    try:
        with Run(runs.path / first) as run_a, Run(runs.path / second) as run_b:
            rows = compare_runs(run_a, run_b, metric=name)
    except (OntogenyError, ValueError) as err:
        return f"<p class='note'>No comparison of final values: {html.escape(str(err))}</p>"
    table = pd.DataFrame({
        "where": rows["where"].replace("", "-"), "metric": rows.metric, "A": rows.a.map("{:.4g}".format),
        "B": rows.b.map("{:.4g}".format), "B - A": rows.difference.map("{:+.4g}".format),
        "95% interval": [f"[{low:+.4g}, {high:+.4g}]" for low, high in zip(rows.low, rows.high)],
        "p": rows.p_value.map("{:.3g}".format), "verdict": rows.verdict})
    return (f"<h2>Final values, B = {html.escape(second)} minus A = {html.escape(first)}</h2>"
            f"<div id='verdicts'>{table_html(table)}</div>")


def make_server(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server (not yet serving) for the runs in `runs_dir`; port 0 picks a free port (see server_address)."""
    runs = RunsDirectory(runs_dir)
    allowed = allowed_hosts(host)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            if not host_allowed(self.headers.get("Host", ""), allowed):  # DNS rebinding: a page elsewhere, our port
                self.send_error(HTTPStatus.FORBIDDEN, "this server answers only to its own address and localhost")
                return
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [unquote(p) for p in url.path.split("/") if p]
            try:
                if not parts:
                    self._send(index_page(runs).encode(), "text/html")
                elif parts == ["favicon.ico"]:
                    self.send_response(HTTPStatus.NO_CONTENT)
                    self.end_headers()
                elif parts == ["plotly.min.js"]:
                    self._send(plotly.offline.get_plotlyjs().encode(), "text/javascript", cache=True)
                elif parts == ["api", "runs"]:
                    self._send(json.dumps([runs.status(n) for n in runs.names()]).encode(), "application/json")
                elif len(parts) == 3 and parts[:2] == ["api", "signature"] and runs.run_dir(parts[2]):
                    self._send(json.dumps({"signature": runs.signature(parts[2])[0]}).encode(), "application/json")
                elif len(parts) == 2 and parts[0] == "run" and runs.run_dir(parts[1]):
                    self._send(runs.report(parts[1]), "text/html")
                elif parts == ["compare"] and all(runs.run_dir(query.get(k, "")) for k in ("a", "b")):
                    page = compare_page(runs, query["a"], query["b"], query.get("name") or "test/acc")
                    self._send(page.encode(), "text/html")
                else:
                    self.send_error(HTTPStatus.NOT_FOUND, "no such page or run")
            except Exception as err:  # noqa: BLE001 (a broken run, or one deleted while we read it: one page fails)
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                reason = reason.encode("ascii", "replace").decode()  # a status line is latin-1
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, reason)

        def _send(self, body: bytes, content_type: str, *, cache: bool = False) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the http.server signature)
            pass  # quiet: the command prints its address once

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def allowed_hosts(bound: str) -> tuple[set[str], bool]:
    """The Host names a request may carry: the bound address, localhost and the loopback addresses; bound to every
    interface (0.0.0.0, ::), also this machine's names and any IP address (True second)."""
    names = {bound.lower(), "localhost", "127.0.0.1", "::1"}
    if bound in ("", "0.0.0.0", "::"):
        return names | {socket.gethostname().lower(), socket.getfqdn().lower()}, True
    return names, False


def host_allowed(header: str, allowed: tuple[set[str], bool]) -> bool:
    """Whether a request's Host header (a name or address, with or without a port) names this server."""
    names, any_address = allowed
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8765
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in names:
        return True
    try:
        return any_address and bool(ipaddress.ip_address(name))
    except ValueError:
        return False


def _page(title: str, body: str, *, refresh: bool = False, plotly: bool = False) -> str:
    meta = f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>" if refresh else ""
    script = "<script src='/plotly.min.js'></script>" if plotly else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{meta}<style>{STYLE}</style>{script}</head><body>{body}</body></html>")


def _compare_form(runs: RunsDirectory, first: str | None, second: str | None, name: str) -> str:
    names = runs.names()
    if not names:
        return ""

    def select(field: str, chosen: str | None) -> str:
        options = "".join(f"<option{' selected' if n == chosen else ''}>{html.escape(n)}</option>" for n in names)
        return f"<select name='{field}'>{options}</select>"

    second = second or names[min(1, len(names) - 1)]
    return (f"<form action='/compare' method='get' id='compare'>{select('a', first)} vs {select('b', second)} "
            f"scalar <input name='name' value='{html.escape(name)}' size='18'> "
            "<button type='submit'>compare</button></form>")


def _back_link() -> str:
    return "<p><a href='/'>&larr; all runs</a></p>"


def _reload_script(name: str, signature: str) -> str:
    """Poll the run's signature every few seconds and reload the page when new data has landed."""
    url = json.dumps(f"/api/signature/{quote(name)}")
    return (f"<script>setInterval(() => fetch({url}).then(r => r.json()).then(s => {{ if (s.signature !== "
            f"{json.dumps(signature)}) location.reload(); }}).catch(() => {{}}), {REFRESH_SECONDS * 1000});"
            "</script>")
