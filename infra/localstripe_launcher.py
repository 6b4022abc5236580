"""Run localstripe on loopback only, with its pickle persistence turned off.

Started by ``infra/servers.py`` with the interpreter of ``.venv-localstripe``:

    .venv-localstripe/bin/python infra/localstripe_launcher.py --port P

Stock ``localstripe`` binds to every interface and pickles its whole store to
the fixed file ``/tmp/localstripe.pickle`` on every write (and reloads it at
start), so two instances would share state. Here the store lives in memory
only and the server listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    # The real attribute lives on localstripe.resources.Store (server.py only
    # imports the `store` instance); patching the class covers every call site.
    import localstripe.resources as resources

    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None

    import localstripe.server as server
    from aiohttp import web

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    web.run_app(server.app, host=args.host, port=args.port, print=print)


if __name__ == "__main__":
    main()
