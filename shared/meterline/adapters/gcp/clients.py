"""Google Cloud clients, built lazily from settings. Emulator hosts are honoured.

The Pub/Sub and Firestore clients read PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST
themselves; BigQuery has no such variable, so BIGQUERY_EMULATOR_HOST becomes the client's
`api_endpoint` with anonymous credentials.

HTTP connection pools are as large as the requests a process serves at once (`http_threads`):
BigQuery's client speaks HTTP through one requests session whose pool keeps 10 connections
by default, so a function serving more requests than that opened and dropped a connection per
extra request, each with urllib3's "Connection pool is full" warning. Firestore and Pub/Sub
speak gRPC (one channel, many streams); the Stripe client keeps a session per thread.
"""

from __future__ import annotations

import os

from meterline.config import Settings


def http_threads() -> int:
    """How many requests this process serves at once: functions-framework's gunicorn runs
    THREADS threads (terraform/functions.tf sets it per function; its default is 4 per CPU)."""
    try:
        threads = int(os.environ.get("THREADS", ""))
    except ValueError:
        threads = 0
    return max(threads, 4 * (os.cpu_count() or 1), 10)  # never below requests' own default


def _size_pools(session, size: int) -> None:
    """Give a requests session (google-auth's AuthorizedSession) pools of `size` connections."""
    from requests.adapters import HTTPAdapter

    for prefix in ("https://", "http://"):  # http: the emulator
        session.mount(prefix, HTTPAdapter(pool_connections=4, pool_maxsize=size))


def bigquery_client(settings: Settings):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    if settings.bigquery_emulator_host:
        client = bigquery.Client(
            project=settings.google_cloud_project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=settings.bigquery_emulator_host),
        )
    else:
        client = bigquery.Client(project=settings.google_cloud_project, location=settings.bigquery_location)
    # NOTE: `_http` is the session the client builds for its credentials (google-cloud-core's
    # documented constructor argument); it has no public setting for its pool.
    _size_pools(client._http, http_threads())
    return client


def firestore_client(settings: Settings):
    from google.cloud import firestore

    return firestore.Client(project=settings.google_cloud_project, database=settings.firestore_database)


def publisher_client():
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # the package declares no such attribute

    # NOTE: PubSubEventBus does not use these batch settings: it calls the Publish RPC itself
    # and batches concurrent requests without a timer (see pubsub_bus.py). They apply to
    # direct `publisher.publish()` calls (tools, tests), where a short window keeps latency low.
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=9_000_000, max_latency=0.002)
    )
