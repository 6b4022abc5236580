"""The `meterline` command line (also `python -m meterline`)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import orjson

from meterline.local import output


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument answered in one line (and exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _ranged_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}" if high is not None
                                             else f"{value} is less than {low}")
        return value

    return parse


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise argparse.ArgumentTypeError("a name is 1 to 100 printable characters")
    return name


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: no such readable file")
    return path


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 instant (e.g. 2026-12-01T02:00:00Z)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a timezone (e.g. 2026-12-01T02:00:00Z)")
    from meterline.entrypoints.bill import AS_OF_RANGE

    if not AS_OF_RANGE[0] <= value < AS_OF_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be from {AS_OF_RANGE[0]:%Y} to before {AS_OF_RANGE[1]:%Y}")
    return value


class _Refused(Exception):
    """A command that cannot go on; its message is the one line the user sees (exit 2)."""


def _existing_data_dir(args: argparse.Namespace) -> None:
    """Commands that only read or change what is there never create a data dir."""
    settings = _settings(args)
    if settings.backend == "embedded" and not settings.data_dir.is_dir():
        raise _Refused(f"no data dir at {settings.data_dir} (--data-dir or METERLINE_DATA_DIR; "
                       "`meterline serve` or `meterline api-keys create` makes one)")


def _ask_server(server: Any, request: urllib.request.Request, timeout: float) -> dict[str, Any]:
    """A call to the `meterline serve` that holds the data dir; its failures become one line."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = orjson.loads(exc.read())
            detail = body.get("error_details") or body.get("code") or body.get("error")
        except (orjson.JSONDecodeError, AttributeError):
            detail = exc.reason
        raise _Refused(f"the server at {server.url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Refused(f"the server at {server.url} did not answer ({type(exc).__name__}); "
                       "is `meterline serve` still running? Run the command again once it is, or stop it") from None


def _settings(args: argparse.Namespace):
    from meterline.config import Settings, get_settings

    if getattr(args, "data_dir", None) is not None:
        return Settings(data_dir=args.data_dir)
    return get_settings()


def _adapters(args: argparse.Namespace):
    """The embedded or GCP adapters, built lazily: a command opens only what it touches."""
    from meterline.runtime import adapters_for

    return adapters_for(_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from meterline.core.clock import now_us
    from meterline.local.datadir import DataDirBusy, ServerInfo, hold_warehouse, new_local_token
    from meterline.local.server import MeterlineServer
    from meterline.runtime import build_runtime

    settings = _settings(args)
    if settings.backend != "embedded":
        print("meterline serve runs the embedded backend; unset METERLINE_BACKEND", file=sys.stderr)
        return 2
    try:
        with hold_warehouse(settings.data_dir, "meterline serve") as announce:
            runtime = build_runtime(settings)
            # We hold the data dir, so no other worker can hold a lease: any lease left is a dead
            # worker's (a kill -9), and its messages go again now instead of after their lease.
            released, dead = runtime.queue.release_leases()
            if released or dead:
                print(f"meterline serve: took back {released} message(s) a previous run had leased"
                      + (f"; {dead} dead-lettered after {settings.max_delivery_attempts} such stops" if dead else ""),
                      file=sys.stderr)
            server = MeterlineServer(runtime, args.host, args.port)
            token = new_local_token()
            runtime.ingest.auth.trust(token, "meterline serve local token", now_us())
            announce(ServerInfo(os.getpid(), server.url, token))
            print(f"meterline serving on {server.url} (data in {settings.data_dir}); Ctrl-C stops", file=sys.stderr)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    except DataDirBusy as exc:
        print(f"meterline serve: {exc}; one server per data dir (use --data-dir for another)", file=sys.stderr)
        return 2
    return 0


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    key = create_api_key(_adapters(args).api_keys, args.name, now_us())
    print(key)
    print(f"API key '{args.name}' created. It is shown once; only its hash is stored.", file=sys.stderr)
    return 0


def cmd_api_keys_list(args: argparse.Namespace) -> int:
    from meterline.core.clock import iso_ms

    _existing_data_dir(args)
    keys = _adapters(args).api_keys.all()
    rows = [
        {"name": r.name, "prefix": r.prefix + "…", "created_at": iso_ms(r.created_at_us),
         "revoked_at": iso_ms(r.revoked_at_us) if r.revoked_at_us is not None else None}
        for r in keys
    ]
    print(output.render(rows, ["name", "prefix", "created_at", "revoked_at"], args.format))
    return 0


def cmd_api_keys_revoke(args: argparse.Namespace) -> int:
    from meterline.core.clock import now_us
    from meterline.services.auth import revoke_api_keys

    _existing_data_dir(args)
    settings = _settings(args)
    what = f"prefix {args.prefix}" if args.prefix is not None else f"name '{args.name}'"
    revoked, already = revoke_api_keys(_adapters(args).api_keys, now_us(), prefix=args.prefix, name=args.name)
    for r in revoked:
        print(f"revoked '{r.name}' ({r.prefix}…)")
    for r in already:
        print(f"'{r.name}' ({r.prefix}…) was already revoked")
    if not revoked and not already:
        print(f"meterline api-keys revoke: no API key with {what}; see `meterline api-keys list`", file=sys.stderr)
        return 1
    if revoked:
        print(f"Keys cached by running functions stop working within {settings.api_key_cache_seconds:g} s "
              "(METERLINE_API_KEY_CACHE_SECONDS); a function that has not checked them lately refuses them now.",
              file=sys.stderr)
    return 0


def _age(us: int) -> str:
    seconds = max(0, us // 1_000_000)
    for unit, size, smaller, small_size in (("d", 86_400, "h", 3_600), ("h", 3_600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // small_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    """The dead letters, without their payloads: id, reason, attempts, age, event count."""
    from meterline.core.clock import now_us

    _existing_data_dir(args)
    now = now_us()
    letters = _adapters(args).dead_letter_queue.all(args.limit)
    rows = [
        {"id": d.id, "reason": d.reason, "attempts": d.attempts, "age": _age(now - d.dead_at_us),
         "events": d.events if d.events is not None else "undecodable"}
        for d in letters
    ]
    print(output.render(rows, ["id", "reason", "attempts", "age", "events"], args.format))
    print(f"{len(rows)} dead letter(s)" + (" (the oldest shown; raise --limit)" if len(rows) == args.limit else ""),
          file=sys.stderr)
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    """Put dead letters back on the events bus, once their cause is fixed."""
    _existing_data_dir(args)
    replayed = _adapters(args).dead_letter_queue.replay(None if args.all else args.ids)
    print(f"replayed {len(replayed)} dead letter(s)" + (f": {', '.join(replayed)}" if replayed else ""))
    missing = [] if args.all else sorted(set(args.ids) - set(replayed))
    if missing:
        print(f"meterline dead-letters replay: no dead letter {', '.join(missing)} (already replayed?)", file=sys.stderr)
        return 1
    return 0


def cmd_events_list(args: argparse.Namespace) -> int:
    """A page of one subscription's counted events (events_deduped), newest first."""
    from meterline.local.datadir import DataDirBusy, hold_warehouse, running_server

    _existing_data_dir(args)
    settings = _settings(args)
    server = running_server(settings.data_dir) if settings.backend == "embedded" else None
    if server is not None:
        # The server holds the warehouse: ask it, as any Lago client would.
        events, total = _events_from_server(server, args.subscription, args.page, args.per_page)
    else:
        try:
            with hold_warehouse(settings.data_dir, "meterline events list") if settings.backend == "embedded" else _nothing():
                page, total = _adapters(args).warehouse.list_events(args.subscription, args.per_page, (args.page - 1) * args.per_page)
        except DataDirBusy as exc:
            print(f"meterline events list: {exc}; try again when it ends", file=sys.stderr)
            return 2
        events = [e.to_lago() for e in page]
    rows = [
        {"transaction_id": e["transaction_id"], "code": e["code"], "timestamp": e["timestamp"],
         "properties": orjson.dumps(e["properties"]).decode()}
        for e in events
    ]
    print(output.render(rows, ["transaction_id", "code", "timestamp", "properties"], args.format))
    print(f"{total} events counted for {args.subscription}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _nothing():
    yield


def _events_from_server(server, subscription: str, page: int, per_page: int) -> tuple[list[dict], int]:
    query = urllib.parse.urlencode({"external_subscription_id": subscription, "page": page, "per_page": per_page})
    request = urllib.request.Request(f"{server.url}/api/v1/events?{query}", headers={"Authorization": f"Bearer {server.token}"})
    body = _ask_server(server, request, timeout=30)
    return body["events"], int(body["meta"]["total_count"])


def cmd_bill(args: argparse.Namespace) -> int:
    """A billing run as of --as-of (default now): through the running server if one holds the
    data dir, else here, holding the warehouse for the run."""
    from meterline.local.datadir import DataDirBusy, hold_warehouse, running_server
    from meterline.runtime import BillRuntime

    settings = _settings(args)
    as_of = args.as_of or datetime.now(UTC)
    server = running_server(settings.data_dir) if settings.backend == "embedded" else None
    if server is not None:
        before = _invoice_versions(args) if args.output is not None else {}
        request = urllib.request.Request(
            f"{server.url}/api/v1/billing_runs", data=orjson.dumps({"as_of": as_of.isoformat()}), method="POST",
            headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
        summary = _ask_server(server, request, timeout=600)["billing_run"]
        invoices = None
    else:
        try:
            with hold_warehouse(settings.data_dir, "meterline bill") if settings.backend == "embedded" else _nothing():
                runtime = BillRuntime(_adapters(args))
                progress = output.Progress("billing", 1)

                def advance(done: int, total: int) -> None:
                    progress.total, progress.done = max(total, 1), done - 1
                    progress.advance()

                result = runtime.billing.run(as_of, progress=advance)
                progress.finish()
        except DataDirBusy as exc:
            print(f"meterline bill: {exc}; try again when it ends", file=sys.stderr)
            return 2
        summary, invoices = result.summary(), result.invoices
    print(output.render([{k: v if not isinstance(v, (list, dict)) else len(v) for k, v in summary.items()}],
                        ["as_of", "drafted", "refreshed", "finalized", "collected", "flagged", "failed", "complete"], args.format))
    if invoices:
        from meterline.core.money import from_minor_units

        rows = [{"number": i.number or "(draft)", "subscription": i.subscription_external_id,
                 "period": f"{i.period_start}..{i.period_end}", "status": i.status,
                 "total": from_minor_units(i.amount_cents, i.currency), "currency": i.currency} for i in invoices]
        print(output.render(rows, ["number", "subscription", "period", "status", "total", "currency"], args.format))
    if args.output is not None:
        _export_invoices(args, invoices if invoices is not None else _written_since(args, before))
    for subscription, error in summary["failed"].items():
        print(f"failed: {subscription}: {error} (retried by the next run)", file=sys.stderr)
    for held, reason in summary.get("flag_reasons", {}).items():
        print(f"flagged: {held}: {reason} (not billed until fixed; the others are)", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _invoice_versions(args: argparse.Namespace) -> dict[str, int]:
    """Every stored invoice's version: the invoice store is SQLite, which another process may
    read while `meterline serve` runs (its warehouse it may not)."""
    return {i.id: i.version for i in _adapters(args).invoices.list()[0]}


def _written_since(args: argparse.Namespace, before: dict[str, int]) -> list:
    """The invoices written since `before` was read: what a run through the server wrote."""
    return [i for i in _adapters(args).invoices.list()[0] if before.get(i.id, -1) != i.version]


def _export_invoices(args: argparse.Namespace, invoices: list) -> None:
    """The run's invoices as finance's export (`local/exports.py`) at --output, lines beside it."""
    from meterline.local import exports
    from meterline.services.invoices import InvoicesService

    adapters = _adapters(args)
    invoices = sorted(invoices, key=lambda i: (i.period_start, i.subscription_external_id, i.kind))
    written = exports.write(InvoicesService(adapters.invoices, adapters.catalog).details(invoices), args.output)
    print(f"{len(invoices)} invoice(s) written to " + " and ".join(str(p) for p in written), file=sys.stderr)


def _export_file(text: str) -> Path:
    from meterline.local.exports import export_format

    path = Path(text)
    try:
        export_format(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory {path.parent}")
    return path


def cmd_report(args: argparse.Namespace) -> int:
    """A finance report (core/reports.py) for one month (default: the current one, UTC)."""
    from meterline.core import reports
    from meterline.core.errors import ValidationFailed
    from meterline.local import reporting
    from meterline.local.datadir import DataDirBusy, hold_warehouse, running_server

    if args.list:
        rows = [{"report": r.name, "monthly": "yes" if r.monthly else "no", "description": r.description}
                for r in reports.REPORTS.values()]
        print(output.render(rows, ["report", "monthly", "description"], args.format))
        return 0
    if not args.name:
        raise _Refused("name a report, or --list to see them")
    if args.refresh_provider and args.name != "reconciliation":
        raise _Refused("--refresh-provider is for the reconciliation report")
    try:
        spec = reports.get(args.name)
        month = reports.parse_month(args.month) if args.month else reports.month_of(datetime.now(UTC).date())
    except (reports.UnknownReport, ValidationFailed) as exc:
        raise _Refused(str(exc)) from None
    _existing_data_dir(args)
    settings = _settings(args)
    server = running_server(settings.data_dir) if settings.backend == "embedded" else None
    if server is not None:
        if args.refresh_provider:
            raise _Refused("--refresh-provider writes to the warehouse `meterline serve` holds: stop it first")
        # The server holds the warehouse: ask it (GET /api/v1/reports/{name}, entrypoints/reports.py).
        query = f"?{urllib.parse.urlencode({'month': month.label})}" if spec.monthly else ""
        request = urllib.request.Request(f"{server.url}/api/v1/reports/{spec.name}{query}",
                                         headers={"Authorization": f"Bearer {server.token}"})
        rows = reports.typed_rows(spec, _ask_server(server, request, timeout=600)["rows"])
    else:
        try:
            with hold_warehouse(settings.data_dir, "meterline report") if settings.backend == "embedded" else _nothing():
                adapters = _adapters(args)
                if args.refresh_provider:
                    _refresh_provider(adapters, month)
                rows = reporting.report_rows(adapters, spec.name, month)
        except DataDirBusy as exc:
            print(f"meterline report: {exc}; try again when it ends", file=sys.stderr)
            return 2
    text = reporting.report_text(spec.name, rows, args.format)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


def _refresh_provider(adapters, month) -> None:
    """Stripe's invoices of the month pulled and recorded (`provider_invoices`), so that the
    reconciliation report that follows sees what a lost webhook would have said."""
    from meterline.services.reconcile import Reconciliation

    provider = adapters.payment_provider
    if provider is None:
        raise _Refused("--refresh-provider needs METERLINE_STRIPE_API_KEY")
    service = Reconciliation(adapters.invoices, adapters.catalog, adapters.warehouse, adapters.warehouse,
                             adapters.warehouse, provider)
    pulled = service.refresh_provider(month)
    print(f"pulled {pulled.listed} Stripe invoices; recorded {pulled.recorded} of {month.label}"
          + (f"; {pulled.unknown} name an invoice this store does not hold" if pulled.unknown else ""),
          file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from meterline.local import demo
    from meterline.local.datadir import DataDirBusy

    try:
        return demo.run(args.events, args.data_dir or Path(".meterline/demo"), args.seed, args.format)
    except DataDirBusy as exc:
        print(f"meterline demo: {exc}; stop it or pass another --data-dir", file=sys.stderr)
        return 2


_CHANGE_COLUMNS = ["kind", "code", "action", "changes"]


def apply_catalog_file(path: Path, store, dry_run: bool, fmt: str, out: TextIO, err: TextIO) -> int:
    """`meterline catalog apply`: the changes as a table (CSV, JSON) on `out`, what was done
    (or every problem, and that nothing was written) on `err`."""
    from meterline.services import catalog_apply

    try:
        catalog = catalog_apply.load(path)
        changes = catalog_apply.plan_changes(store, catalog)
    except catalog_apply.CatalogFileError as exc:
        print(f"meterline: {path} cannot be applied; nothing was written:", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return 1
    rows = [{"kind": c.kind, "code": c.code, "action": c.action, "changes": ", ".join(c.fields)} for c in changes]
    print(output.render(rows, _CHANGE_COLUMNS, fmt), file=out)
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "unchanged")}
    summary = f"{counts['create']} to create, {counts['update']} to update, {counts['unchanged']} unchanged"
    if dry_run:
        print(f"dry run: {summary}; nothing was written", file=err)
    elif counts["create"] == counts["update"] == 0:
        print(f"nothing to change: the catalog already matches {path}", file=err)
    else:
        catalog_apply.apply(store, catalog, changes)
        print(f"applied: {counts['create']} created, {counts['update']} updated, {counts['unchanged']} unchanged", file=err)
    return 0


def cmd_catalog_apply(args: argparse.Namespace) -> int:
    return apply_catalog_file(args.file, _adapters(args).catalog, args.dry_run, args.format, sys.stdout, sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meterline", description="Exact metering and usage-based billing.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run every function in one local HTTP server (embedded backend)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_ranged_int(0, 65535), default=8080, help="0 picks a free port")
    serve.add_argument("--data-dir", type=Path)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("api-keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; it is printed once and stored hashed")
    create.add_argument("--name", type=_name, required=True, help="what the key is for (e.g. gateway)")
    create.add_argument("--data-dir", type=Path)
    create.set_defaults(func=cmd_api_keys_create)
    lst = keys.add_parser("list", help="list keys (names and prefixes only)")
    lst.add_argument("--data-dir", type=Path)
    lst.add_argument("--format", choices=output.FORMATS, default="table")
    lst.set_defaults(func=cmd_api_keys_list)
    revoke = keys.add_parser("revoke", help="revoke keys by prefix or name; revoked keys stay listed as revoked")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--prefix", help="the key's prefix as `api-keys list` shows it")
    which.add_argument("--name", type=_name, help="every key with this name")
    revoke.add_argument("--data-dir", type=Path)
    revoke.set_defaults(func=cmd_api_keys_revoke)

    dead = sub.add_parser("dead-letters", help="messages that failed every attempt: list and replay them")
    dead_sub = dead.add_subparsers(dest="dead_letters_command", required=True)
    dead_list = dead_sub.add_parser("list", help="id, reason, attempts, age and event count (never payloads)")
    dead_list.add_argument("--limit", type=_ranged_int(1), default=1000, help="show at most this many")
    dead_list.add_argument("--data-dir", type=Path)
    dead_list.add_argument("--format", choices=output.FORMATS, default="table")
    dead_list.set_defaults(func=cmd_dead_letters_list)
    replay = dead_sub.add_parser("replay", help="put dead letters back on the events bus (after fixing their cause)")
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", dest="ids", action="append", metavar="ID", help="a dead letter's id (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    replay.add_argument("--data-dir", type=Path)
    replay.set_defaults(func=cmd_dead_letters_replay)

    events = sub.add_parser("events", help="read counted events").add_subparsers(dest="events_command", required=True)
    events_list = events.add_parser("list", help="one subscription's counted events, newest first")
    events_list.add_argument("--subscription", required=True, help="external_subscription_id")
    events_list.add_argument("--page", type=_ranged_int(1, 1_000_000), default=1)
    events_list.add_argument("--per-page", type=_ranged_int(1, 100), default=20)
    events_list.add_argument("--data-dir", type=Path)
    events_list.add_argument("--format", choices=output.FORMATS, default="table")
    events_list.set_defaults(func=cmd_events_list)

    catalog = sub.add_parser("catalog", help="manage the catalog").add_subparsers(dest="catalog_command", required=True)
    apply = catalog.add_parser("apply", help="create or update billable metrics and plans from a YAML file (idempotent)")
    apply.add_argument("file", type=_readable_file, help="YAML with billable_metrics: and plans: in Lago's shapes")
    apply.add_argument("--dry-run", action="store_true", help="show the changes without writing them")
    apply.add_argument("--data-dir", type=Path)
    apply.add_argument("--format", choices=output.FORMATS, default="table")
    apply.set_defaults(func=cmd_catalog_apply)

    bill = sub.add_parser("bill", help="run billing: invoice every period that has ended (idempotent)")
    bill.add_argument("--as-of", type=_instant, help="bill up to this instant (ISO-8601 with a timezone); default now")
    bill.add_argument("--data-dir", type=Path)
    bill.add_argument("--format", choices=output.FORMATS, default="table")
    bill.add_argument("--output", type=_export_file, metavar="FILE",
                      help="also write the run's invoices for finance: FILE (.csv or .json) and FILE_lines beside it")
    bill.set_defaults(func=cmd_bill)

    report = sub.add_parser("report", help="run a finance report (--list shows them) for a month")
    report.add_argument("name", nargs="?", help="the report (meterline report --list)")
    report.add_argument("--list", action="store_true", help="list the reports, one line each")
    report.add_argument("--month", help="YYYY-MM (UTC); default the current month")
    report.add_argument("--format", choices=output.FORMATS, default="table")
    report.add_argument("--output", type=Path, help="write to this file instead of standard output")
    report.add_argument("--refresh-provider", action="store_true",
                        help="reconciliation: first pull the month's invoices from Stripe and record their totals")
    report.add_argument("--data-dir", type=Path)
    report.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="post a realistic LLM-gateway stream and show what was counted")
    demo.add_argument("--events", type=_ranged_int(1, 10_000_000), default=3000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--data-dir", type=Path)
    demo.add_argument("--format", choices=output.FORMATS, default="table")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from meterline.config import ConfigError

    args = build_parser().parse_args(argv)
    command = " ".join(["meterline", *(v for k, v in vars(args).items() if k.endswith("command") and isinstance(v, str))])
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"meterline: {exc}", file=sys.stderr)
        return 2
    except _Refused as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Never a traceback for the user: one line, and the whole story on request.
        if os.environ.get("METERLINE_DEBUG"):
            raise
        print(f"{command}: failed: {type(exc).__name__}: {str(exc)[:300]} (METERLINE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
