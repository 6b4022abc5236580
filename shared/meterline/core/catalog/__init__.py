"""The product catalog: billable metrics, plans, charges, customers and subscriptions.

Field names and values follow Lago's public API, so `Plan.model_validate(body["plan"])` accepts
what a Lago client sends and `plan.to_lago()` returns a Lago-shaped dict. Every model is a
`meterline.core.lago_model.LagoModel` (frozen, strict about unknown fields, Lago's nulls and
neutral values accepted) built from the field types of `meterline.core.fields`. Validation
errors map to Lago's 422 `error_details` with `lago_error_details`.

One module per concept:
- `base`: the lago_id of every object and the store's timestamps (`Stamped`);
- `metrics`: billable metrics;
- `plans`: plans and charges (each charge model's properties live beside its pricing, in
  `meterline.core.pricing.charge_models`);
- `customers`, `subscriptions`: customers and subscription records (the rules that change
  records are `meterline.core.subscriptions`);
- `rules`: what a change to the stored catalog must respect (a metric or plan in use, a
  plan's references), for the admin API and `catalog apply` alike;
- `errors`: pydantic's errors as Lago's error codes.

This module only re-exports their public names.
"""

from meterline.core.catalog.base import UNKNOWN_TIME, Stamped, lago_id
from meterline.core.catalog.customers import Customer, CustomerMetadata
from meterline.core.catalog.errors import lago_error_details
from meterline.core.catalog.metrics import NUMERIC_AGGREGATIONS, AggregationType, BillableMetric, MetricFilter
from meterline.core.catalog.plans import (
    MONTHS_PER_INTERVAL,
    Charge,
    ChargeFilter,
    ChargeModelName,
    Interval,
    Plan,
    filter_key,
)
from meterline.core.catalog.subscriptions import Subscription, SubscriptionStatus

__all__ = [
    "MONTHS_PER_INTERVAL",
    "NUMERIC_AGGREGATIONS",
    "UNKNOWN_TIME",
    "AggregationType",
    "BillableMetric",
    "Charge",
    "ChargeFilter",
    "ChargeModelName",
    "Customer",
    "CustomerMetadata",
    "Interval",
    "MetricFilter",
    "Plan",
    "Stamped",
    "Subscription",
    "SubscriptionStatus",
    "filter_key",
    "lago_error_details",
    "lago_id",
]
