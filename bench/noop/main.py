"""A no-op HTTP function: the ceiling that functions-framework (gunicorn + Flask) sets on this machine.

It answers 200 `{}` without reading the body, so the ratio ingest/no-op in `make bench`
shows how much of the server's capacity ingest's own work (auth, validation, publish) takes.
"""

import functions_framework
from flask import Response


@functions_framework.http
def noop(request):
    return Response(b"{}", status=200, mimetype="application/json")
