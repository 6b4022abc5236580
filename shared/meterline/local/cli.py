"""The `meterline` command line (also `python -m meterline`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meterline.local import output


def _settings(args: argparse.Namespace):
    from meterline.config import Settings, get_settings

    if getattr(args, "data_dir", None) is not None:
        return Settings(data_dir=args.data_dir)
    return get_settings()


def cmd_serve(args: argparse.Namespace) -> int:
    from meterline.local.server import LocalServer
    from meterline.runtime import build_runtime

    settings = _settings(args)
    if settings.backend != "embedded":
        print("meterline serve runs the embedded backend; unset METERLINE_BACKEND", file=sys.stderr)
        return 2
    server = LocalServer(build_runtime(settings), args.host, args.port)
    print(f"meterline serving on {server.url} (data in {settings.data_dir}); Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    from meterline.services.auth import create_api_key
    from meterline.services.ingest import now_us
    from meterline.runtime import build_runtime

    runtime = build_runtime(_settings(args))
    key = create_api_key(runtime.api_keys, args.name, now_us())
    print(key)
    print(f"API key '{args.name}' created. It is shown once; only its hash is stored.", file=sys.stderr)
    return 0


def cmd_api_keys_list(args: argparse.Namespace) -> int:
    from meterline.core.events import iso_ms
    from meterline.runtime import build_runtime

    runtime = build_runtime(_settings(args))
    rows = [{"name": r.name, "prefix": r.prefix + "…", "created_at": iso_ms(r.created_at_us)} for r in runtime.api_keys.all()]
    print(output.render(rows, ["name", "prefix", "created_at"], args.format))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from meterline.local import demo

    return demo.run(args.events, args.data_dir or Path(".meterline/demo"), args.seed, args.format)


def cmd_catalog_apply(args: argparse.Namespace) -> int:
    from meterline.services import catalog_apply
    from meterline.runtime import build_runtime

    return catalog_apply.run_cli(args, lambda: build_runtime(_settings(args)).catalog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterline", description="Exact metering and usage-based billing.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run every function in one local HTTP server (embedded backend)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data-dir", type=Path)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("api-keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; it is printed once and stored hashed")
    create.add_argument("--name", required=True)
    create.add_argument("--data-dir", type=Path)
    create.set_defaults(func=cmd_api_keys_create)
    lst = keys.add_parser("list", help="list keys (names and prefixes only)")
    lst.add_argument("--data-dir", type=Path)
    lst.add_argument("--format", choices=output.FORMATS, default="table")
    lst.set_defaults(func=cmd_api_keys_list)

    catalog = sub.add_parser("catalog", help="manage the catalog").add_subparsers(dest="catalog_command", required=True)
    apply = catalog.add_parser("apply", help="create or update billable metrics and plans from a YAML file (idempotent)")
    apply.add_argument("file", type=Path, help="YAML with billable_metrics: and plans: in Lago's shapes")
    apply.add_argument("--dry-run", action="store_true", help="show the changes without writing them")
    apply.add_argument("--data-dir", type=Path)
    apply.add_argument("--format", choices=output.FORMATS, default="table")
    apply.set_defaults(func=cmd_catalog_apply)

    demo = sub.add_parser("demo", help="post a realistic LLM-gateway stream and show what was counted")
    demo.add_argument("--events", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--data-dir", type=Path)
    demo.add_argument("--format", choices=output.FORMATS, default="table")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from meterline.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"meterline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
