"""`make gcp-local`: the GCP backend on this machine, as terraform/ deploys it, on loopback only.

Starts, each bound to 127.0.0.1:

  * the Pub/Sub and Firestore emulators, bqemulator and localstripe (infra/servers.py);
  * the topics, subscriptions, dataset, tables and views (infra/gcp_setup.py), with the events
    subscription pushing to `process`;
  * the six functions, each a `functions-framework` process of its own, with the settings
    Terraform gives every function (terraform/functions.tf: the config.py defaults, so the
    same resource names) and each secret only where Terraform mounts it: the Stripe key on
    bill, the webhook secret on stripe_webhook, the portal signing key on portal;
  * the router (infra/router.py), which routes as the load balancer's URL map does: the one
    base URL of Lago's API. As on Google Cloud it has no route to bill: a billing run is a POST
    to bill's own URL (Cloud Scheduler's call), optionally `{"as_of": "<ISO 8601>"}`.

Then it registers the Stripe webhook (localstripe -> the router's /api/v1/stripe_webhook),
creates an API key, prints every URL, and waits. Ctrl-C stops every process it started, by PID.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "shared"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from infra import gcp_setup, servers  # noqa: E402
from infra.router import start_router  # noqa: E402

# The functions in the order they start; (entry point = folder name, signature type).
FUNCTIONS = {
    "process": "cloudevent",
    "ingest": None,
    "admin": None,
    "bill": None,
    "stripe_webhook": None,
    "portal": None,
}
# The invoice events Meterline's webhook applies (docs/deploy.md registers the same with Stripe).
WEBHOOK_EVENTS = ("invoice.finalized", "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
                  "invoice.voided")
WEBHOOK_ID = "meterline-local"


def function_env(base: dict[str, str], name: str, keys: dict[str, str], router_url: str) -> dict[str, str]:
    """One function's environment: the shared settings, its own thread count (bill runs one run
    at a time, as its concurrency of 1 on Google Cloud), and only the secrets Terraform mounts
    on it (terraform/functions.tf `secrets`)."""
    env = {**base, "THREADS": "1" if name == "bill" else "8"}
    if name == "bill":
        env["METERLINE_STRIPE_API_KEY"] = keys["stripe_api_key"]
    if name == "stripe_webhook":
        env["METERLINE_STRIPE_WEBHOOK_SECRET"] = keys["stripe_webhook_secret"]
    if name == "portal":
        env["METERLINE_PORTAL_SIGNING_KEY"] = keys["portal_signing_key"]
        env["METERLINE_STRIPE_API_KEY"] = keys["stripe_api_key"]  # checkout_url
        env["METERLINE_PORTAL_BASE_URL"] = router_url  # links open through the router
        env["METERLINE_STRIPE_CHECKOUT_SUCCESS_URL"] = router_url + "/"
    return env


def _post_form(url: str, fields: list[tuple[str, str]]) -> None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    with servers._NO_PROXY_OPENER.open(request, timeout=10):
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(port: int = 8080, project: str = "local") -> int:
    # Ctrl-C, and a plain `kill`, end the wait below and stop every server by PID (each runs in
    # a session of its own, so none of them receives the terminal's Ctrl-C itself).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    keys = {
        "stripe_api_key": "sk_test_" + secrets.token_hex(12),  # localstripe takes any key
        "stripe_webhook_secret": "whsec_" + secrets.token_hex(16),
        "portal_signing_key": base64.b64encode(secrets.token_bytes(48)).decode(),
    }
    with contextlib.ExitStack() as stack:
        print("starting the emulators, bqemulator and localstripe ...", flush=True)
        emulators = {}
        for start in (servers.start_pubsub_emulator, servers.start_firestore_emulator,
                      servers.start_bigquery_emulator, servers.start_stripe_server):
            server = stack.enter_context(start())
            emulators[server.name] = server
            print(f"  {server.name:<15} {server.url}  pid {server.pid}", flush=True)
        emulator_env = {k: v for s in emulators.values() for k, v in s.env.items()}
        base = {
            **{k: v for k, v in emulator_env.items() if k != "STRIPE_API_BASE"},
            "METERLINE_BACKEND": "gcp",
            "GOOGLE_CLOUD_PROJECT": project,
            "STRIPE_API_BASE": emulator_env["STRIPE_API_BASE"],  # local only: api.stripe.com when unset
            "NO_PROXY": "127.0.0.1,localhost",
        }
        router_url = f"http://{servers.HOST}:{port}"
        stack.enter_context(servers.environ(base))
        from meterline.config import Settings

        settings = Settings()
        gcp_setup.setup_bigquery(settings)

        print("starting the six functions ...", flush=True)
        running = {}
        for name, signature in FUNCTIONS.items():
            server = stack.enter_context(servers.start_function(
                f"functions/{name}/main.py", name, function_env(base, name, keys, router_url), signature_type=signature))
            running[name] = server
            print(f"  {name:<15} {server.url}  pid {server.pid}", flush=True)
        gcp_setup.setup_pubsub(settings, running["process"].url)

        # As the load balancer: no route to bill (nor to process, which Pub/Sub pushes to).
        router = start_router({n: s.url for n, s in running.items() if n not in ("bill", "process")}, port,
                              public_only=True)
        stack.callback(router.stop)
        _post_form(f"{emulators['stripe'].url}/_config/webhooks/{WEBHOOK_ID}",
                   [("url", f"{router.url}/api/v1/stripe_webhook"), ("secret", keys["stripe_webhook_secret"]),
                    *[("events[]", e) for e in WEBHOOK_EVENTS]])

        from meterline.adapters.gcp.clients import firestore_client
        from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
        from meterline.core.clock import now_us
        from meterline.services.auth import create_api_key

        api_key = create_api_key(FirestoreApiKeyStore(firestore_client(settings)), "gcp-local", now_us())
        print(f"""
base URL (Lago's api_url)  {router.url}
API key                    {api_key}
Stripe webhook             localstripe -> {router.url}/api/v1/stripe_webhook
billing run                curl -X POST {running['bill'].url} [-d '{{"as_of": "2026-12-01T00:00:00Z"}}']
the CLI on these emulators:
""" + "\n".join(f"  export {k}={v}" for k, v in base.items() if k != "NO_PROXY") + "\n\nCtrl-C stops everything.",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(s.running for s in (*emulators.values(), *running.values())):
                time.sleep(0.5)
            stopped = [s.name for s in (*emulators.values(), *running.values()) if not s.running]
            print(f"stopped unexpectedly: {', '.join(stopped)} (logs: "
                  f"{', '.join(str(s.log_path) for s in (*emulators.values(), *running.values()) if not s.running)})",
                  file=sys.stderr)
            return 1
        print("\nstopping ...", flush=True)
    return 0
