"""Configuration: read once, lazily, into one pydantic settings object that fails fast.

No module reads the environment at import time, so tests and cold starts stay cheap.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """The configuration is incomplete or wrong; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERLINE_", extra="ignore", frozen=True, populate_by_name=True)

    backend: Literal["embedded", "gcp"] = Field("embedded", description="embedded (SQLite + DuckDB) or gcp")
    data_dir: Path = Field(Path(".meterline"), description="where the embedded adapters keep their files")

    # Google Cloud (backend=gcp). The emulator hosts are the standard, unprefixed variables.
    google_cloud_project: str | None = Field(None, validation_alias="GOOGLE_CLOUD_PROJECT")
    events_topic: str = "meterline-events"
    dead_letter_topic: str = "meterline-events-dead-letter"
    dead_letter_subscription: str = Field(
        "meterline-events-dead-letter",
        description="pull subscription on the dead-letter topic that `meterline dead-letters` lists and replays",
    )
    bigquery_dataset: str = "meterline"
    bigquery_location: str = "US"
    firestore_database: str = "(default)"
    pubsub_emulator_host: str | None = Field(None, validation_alias="PUBSUB_EMULATOR_HOST")
    firestore_emulator_host: str | None = Field(None, validation_alias="FIRESTORE_EMULATOR_HOST")
    bigquery_emulator_host: str | None = Field(None, validation_alias="BIGQUERY_EMULATOR_HOST")

    # Ingest
    max_body_bytes: int = Field(1_048_576, gt=0, description="larger request bodies get 413")
    http_read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="meterline serve: a client that sends no byte of its request line, headers or body for "
        "this long is answered 408 (where it can still be) and its connection closed, so slow clients cannot "
        "hold the server's threads",
    )
    publish_timeout_seconds: float = Field(30.0, gt=0)
    publish_linger_seconds: float = Field(
        0.010,
        ge=0,
        le=0.1,
        description="under traffic, how long a Publish waits for others to share it (the client library's default)",
    )
    api_key_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="how long a verified key is trusted without asking the store again: "
        "a revoked key keeps working in running functions for at most this long",
    )

    # Process
    max_delivery_attempts: int = Field(5, ge=1, description="embedded queue: attempts before dead-lettering")
    max_message_age_seconds: float = Field(
        2 * 86_400,
        gt=0,
        description="a message older than this is moved to the dead letters instead of being tried again",
    )
    claim_takeover_seconds: float = Field(
        900.0,
        gt=0,
        description="past this long, a dedup claim is settled by the warehouse: a redelivery of its payload is "
        "dropped if stored (inserted again before, a copy the view removes), and a resend with another payload "
        "takes the key over if the first was never stored; must exceed the longest a process attempt runs",
    )
    dedup_retention_days: float = Field(
        35,
        gt=0,
        description="GCP: how long a dedup claim is kept (Firestore TTL); a resend of an event later than this "
        "is stored again. Each extra 30 days costs about $0.05 per million events a month (docs/cost.md)",
    )

    # Billing
    invoice_grace_seconds: float = Field(
        3600, ge=0, description="default grace period after a period ends, while its invoice stays a draft"
    )
    billing_time_budget_seconds: float = Field(
        480, gt=0, description="a billing run stops taking new invoices after this long; the next run continues"
    )

    # Stripe (the payment provider). No key: invoices are finalized locally and nothing is sent.
    # On GCP the two secrets come from Secret Manager, mounted as these environment variables.
    stripe_api_key: SecretStr | None = Field(None, description="Stripe secret key (sk_...); unset: no payment provider")
    stripe_webhook_secret: SecretStr | None = Field(
        None, description="signing secret of the Stripe webhook endpoint (whsec_...); the stripe_webhook function needs it"
    )
    stripe_api_base: str | None = Field(
        None,
        validation_alias=AliasChoices("STRIPE_API_BASE", "METERLINE_STRIPE_API_BASE"),
        description="point the Stripe client at a Stripe-compatible server (localstripe in the tests); unset: api.stripe.com",
    )
    stripe_webhook_tolerance_seconds: int = Field(
        300, gt=0, description="a webhook whose signed timestamp is older than this is refused (Stripe's default, 5 min)"
    )

    # Customer portal (functions/portal): signed links to a customer's live usage page.
    portal_signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that signs portal links (at least 32 characters); on GCP from Secret Manager, "
        "mounted as this variable. Unset when embedded: one is generated into <data dir>/portal_signing_key (0600) "
        "and kept, so links survive restarts; unset on GCP: the portal function refuses to start",
    )
    portal_link_seconds: float = Field(
        3600, gt=0, le=30 * 86_400, description="how long a portal link is valid after POST .../portal_url"
    )
    portal_base_url: str | None = Field(
        None,
        description="the portal's public base URL (links are <base>/portal/customers/<id>?token=...); "
        "unset: the URL the portal_url request came to, if its host is in portal_allowed_hosts",
    )
    stripe_checkout_success_url: str | None = Field(
        None,
        description="where Stripe's Checkout page sends a customer who saved a payment method (POST "
        ".../checkout_url); unset: checkout_url answers 503 checkout_success_url_not_configured",
    )
    portal_allowed_hosts: list[str] = Field(
        ["127.0.0.1", "localhost", "::1"],
        description="with portal_base_url unset, the hosts (no port) whose requests may name the portal link's "
        "base URL; a request to any other Host gets 503 portal_base_url_not_configured, so a forged Host header "
        "never yields a signed link to someone else's site. JSON list, e.g. '[\"billing.example.com\"]'",
    )

    @model_validator(mode="after")
    def _gcp_needs_a_project(self) -> Settings:
        if self.backend == "gcp" and not self.google_cloud_project:
            raise ValueError("METERLINE_BACKEND=gcp needs GOOGLE_CLOUD_PROJECT")
        return self

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "meterline.sqlite"

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read on first use. Raises `ConfigError` with a clear message."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid Meterline configuration: {problems}") from None
