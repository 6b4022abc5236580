"""Google Cloud clients, built lazily from settings. Emulator hosts are honoured.

The Pub/Sub and Firestore clients read PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST
themselves; BigQuery has no such variable, so BIGQUERY_EMULATOR_HOST becomes the client's
`api_endpoint` with anonymous credentials.
"""

from __future__ import annotations

from meterline.config import Settings


def bigquery_client(settings: Settings):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    if settings.bigquery_emulator_host:
        return bigquery.Client(
            project=settings.google_cloud_project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=settings.bigquery_emulator_host),
        )
    return bigquery.Client(project=settings.google_cloud_project, location=settings.bigquery_location)


def firestore_client(settings: Settings):
    from google.cloud import firestore

    return firestore.Client(project=settings.google_cloud_project, database=settings.firestore_database)


def publisher_client():
    from google.cloud import pubsub_v1

    # NOTE: PubSubEventBus does not use these batch settings: it calls the Publish RPC itself
    # and batches concurrent requests without a timer (see pubsub_bus.py). They apply to
    # direct `publisher.publish()` calls (tools, tests), where a short window keeps latency low.
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=9_000_000, max_latency=0.002)
    )
