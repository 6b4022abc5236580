"""Local parity for `terraform apply`: the same topics, subscriptions, dataset, tables and views,
created on the Pub/Sub emulator and bqemulator, so the GCP backend runs locally.

    make gcp-setup [PUSH_ENDPOINT=http://127.0.0.1:8081]
    python infra/gcp_setup.py [--push-endpoint URL] [--project P]

It reads the settings the functions read (GOOGLE_CLOUD_PROJECT, METERLINE_EVENTS_TOPIC,
METERLINE_BIGQUERY_DATASET, ...; shared/meterline/config.py), so the names are the functions'.
It refuses to run unless PUBSUB_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST are set: in a real
project, terraform/ owns these resources. Running it again changes nothing (a new push
endpoint replaces the old one). Start the servers with `python infra/servers.py start NAME`.

What it creates, and how it differs from production (terraform/pubsub.tf, bigquery.tf):

  * the events topic; the dead-letter topic and its pull subscription (`meterline dead-letters`);
  * with --push-endpoint (a `process` function under functions-framework), the subscription
    pushing to `<endpoint>/projects/P/topics/T` that dead-letters after 100 attempts, like
    production, but WITHOUT production's retry policy (10 s to 600 s backoff): the emulator
    mishandles push retries when a retry policy is set (../shared/REFERENCE.md section 1: after
    a few seconds of failing answers it delivered none of the messages again), while with no
    retry policy it redelivers at once and reliably. Locally, 100 immediate attempts are the
    same guarantee as production's for a failing process; they only ride out a shorter outage;
  * the BigQuery dataset, tables (day partitions, clustering) and views, by
    `BigQueryWarehouse.ensure_schema` from the same schema and SQL files Terraform reads;
  * nothing in Firestore: the emulator needs no database, index or TTL policy (it neither
    expires documents nor requires composite indexes).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT / "shared") not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT / "shared"))

from meterline.config import Settings  # noqa: E402

PROCESS_SUBSCRIPTION = "meterline-process"  # terraform: "${var.name_prefix}-process"
MAX_DELIVERY_ATTEMPTS = 100  # terraform: var.delivery.max_delivery_attempts (Pub/Sub's maximum)
ACK_DEADLINE_SECONDS = 120  # terraform: process's timeout
RETENTION_SECONDS = 7 * 86_400  # Pub/Sub's longest, on both subscriptions
REQUIRED_ENV = ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")


@dataclass(frozen=True)
class PubSubNames:
    """Full resource names of what `setup_pubsub` created or found."""

    events_topic: str
    dead_letter_topic: str
    dead_letter_subscription: str
    process_subscription: str | None  # None without a push endpoint


def push_url(endpoint: str, project: str, topic: str) -> str:
    """Where Pub/Sub pushes: /projects/P/topics/T on the function, so that the CloudEvent
    functions-framework builds from the push carries its source."""
    return f"{endpoint.rstrip('/')}/projects/{project}/topics/{topic}"


def setup_pubsub(settings: Settings, push_endpoint: str | None = None, publisher=None, subscriber=None) -> PubSubNames:
    """The events and dead-letter topics, the dead letters' pull subscription and, given an
    endpoint, process's push subscription (see the module doc for the one difference)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    project = settings.google_cloud_project
    assert project, "Settings needs GOOGLE_CLOUD_PROJECT"
    publisher = publisher or pubsub_v1.PublisherClient()
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    events = publisher.topic_path(project, settings.events_topic)
    dead_letter = publisher.topic_path(project, settings.dead_letter_topic)
    dead_letter_sub = subscriber.subscription_path(project, settings.dead_letter_subscription)
    retention = duration_pb2.Duration(seconds=RETENTION_SECONDS)

    for topic in (events, dead_letter):
        try:
            publisher.create_topic(name=topic)
        except exceptions.AlreadyExists:
            pass
    try:
        # Before anything is dead-lettered: a topic without a subscription drops its messages.
        subscriber.create_subscription(request={
            "name": dead_letter_sub, "topic": dead_letter, "ack_deadline_seconds": 600,
            "message_retention_duration": retention,
        })
    except exceptions.AlreadyExists:
        pass

    process_sub = None
    if push_endpoint:
        process_sub = subscriber.subscription_path(project, PROCESS_SUBSCRIPTION)
        push_config = {"push_endpoint": push_url(push_endpoint, project, settings.events_topic)}
        try:
            subscriber.create_subscription(request={
                "name": process_sub,
                "topic": events,
                "push_config": push_config,
                "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                "message_retention_duration": retention,
                "dead_letter_policy": {"dead_letter_topic": dead_letter, "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS},
                # NOTE: no retry_policy here, unlike production: see the module doc.
            })
        except exceptions.AlreadyExists:
            subscriber.modify_push_config(request={"subscription": process_sub, "push_config": push_config})
    return PubSubNames(events, dead_letter, dead_letter_sub, process_sub)


def setup_bigquery(settings: Settings) -> list[str]:
    """The dataset, tables and views (BigQueryWarehouse.ensure_schema); the tables' names."""
    from meterline.adapters import sql
    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client

    project = settings.google_cloud_project
    assert project, "Settings needs GOOGLE_CLOUD_PROJECT"
    BigQueryWarehouse(bigquery_client(settings), project, settings.bigquery_dataset).ensure_schema(settings.bigquery_location)
    return [t.name for t in sql.TABLES] + list(sql.VIEWS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create Meterline's topics, subscriptions, dataset, tables and views on the emulators.")
    parser.add_argument("--push-endpoint", help="base URL of a local `process` function (functions-framework) to push events to")
    parser.add_argument("--project", help="project id (default: GOOGLE_CLOUD_PROJECT)")
    args = parser.parse_args(argv)

    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(f"error: {', '.join(missing)} not set: this sets up the local emulators only "
              "(`python infra/servers.py start pubsub|bigquery` prints them); terraform/ sets up a real project",
              file=sys.stderr)
        return 2
    overrides = {"backend": "gcp"}
    if args.project:
        overrides["google_cloud_project"] = args.project
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    names = setup_pubsub(settings, args.push_endpoint)
    print(f"topic        {names.events_topic}")
    print(f"topic        {names.dead_letter_topic}")
    print(f"subscription {names.dead_letter_subscription} (pull: meterline dead-letters)")
    if names.process_subscription:
        print(f"subscription {names.process_subscription} -> "
              f"{push_url(args.push_endpoint, settings.google_cloud_project, settings.events_topic)}")
    else:
        print("subscription (none for process: pass --push-endpoint to push events to a local process function)")
    for name in setup_bigquery(settings):
        print(f"bigquery     {settings.google_cloud_project}.{settings.bigquery_dataset}.{name}")
    print("firestore    nothing to create on the emulator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
