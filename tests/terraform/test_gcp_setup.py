"""`make gcp-setup` (infra/gcp_setup.py) creates on the emulators what terraform/ creates in
production, with the functions' names, and running it twice changes nothing."""

from __future__ import annotations

import pytest

from infra import gcp_setup
from meterline.adapters import sql


def test_it_refuses_without_the_emulators(monkeypatch, capsys):
    for name in gcp_setup.REQUIRED_ENV:
        monkeypatch.delenv(name, raising=False)
    assert gcp_setup.main([]) == 2
    assert "terraform/" in capsys.readouterr().err


def test_it_creates_topics_subscriptions_dataset_tables_and_views(pubsub_emulator, bigquery_emulator, unique_project,
                                                                  monkeypatch, capsys):
    from google.cloud import bigquery, pubsub_v1

    from meterline.adapters.gcp.clients import bigquery_client
    from meterline.config import Settings

    for key, value in {**pubsub_emulator.env, **bigquery_emulator.env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", unique_project)
    monkeypatch.setenv("METERLINE_BIGQUERY_DATASET", f"setup_{unique_project.replace('-', '_')}")
    endpoint = "http://127.0.0.1:9"  # nothing listens: the subscription is only created

    assert gcp_setup.main(["--push-endpoint", endpoint]) == 0
    assert gcp_setup.main(["--push-endpoint", endpoint]) == 0  # idempotent
    out = capsys.readouterr().out
    settings = Settings(backend="gcp")

    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    topics = {t.name for t in publisher.list_topics(request={"project": f"projects/{unique_project}"})}
    assert topics == {publisher.topic_path(unique_project, settings.events_topic),
                      publisher.topic_path(unique_project, settings.dead_letter_topic)}
    dead = subscriber.get_subscription(subscription=subscriber.subscription_path(unique_project, settings.dead_letter_subscription))
    assert dead.topic == publisher.topic_path(unique_project, settings.dead_letter_topic)
    process = subscriber.get_subscription(subscription=subscriber.subscription_path(unique_project, gcp_setup.PROCESS_SUBSCRIPTION))
    assert process.push_config.push_endpoint == f"{endpoint}/projects/{unique_project}/topics/{settings.events_topic}"
    assert process.dead_letter_policy.max_delivery_attempts == gcp_setup.MAX_DELIVERY_ATTEMPTS
    assert process.dead_letter_policy.dead_letter_topic == dead.topic
    # The one deliberate difference from production: no retry policy (the emulator loses
    # push retries when one is set).
    assert not process._pb.HasField("retry_policy")

    client = bigquery_client(settings)
    names = {t.table_id for t in client.list_tables(f"{unique_project}.{settings.bigquery_dataset}")}
    # The report views are Terraform's only (see BigQueryWarehouse.ensure_schema).
    assert names == {t.name for t in sql.TABLES} | set(sql.VIEWS)
    for spec in sql.TABLES:
        table = client.get_table(f"{unique_project}.{settings.bigquery_dataset}.{spec.name}")
        assert table.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
        assert table.time_partitioning.field == spec.partition_field
    assert "nothing to create on the emulator" in out


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9/", "http://127.0.0.1:9"])
def test_the_push_url_carries_the_topic_path(endpoint):
    assert gcp_setup.push_url(endpoint, "p", "t") == "http://127.0.0.1:9/projects/p/topics/t"
