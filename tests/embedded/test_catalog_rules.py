"""The catalog's rules (core.catalog.rules) hold on both paths that change the stored catalog:
the admin API's service and `meterline catalog apply`. Each change below is tried on each
path from the same stored catalog; both refuse it with the same codes, or both write it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore
from meterline.core.catalog import BillableMetric, Plan, Subscription
from meterline.core.errors import NotFound, ValidationFailed
from meterline.services import catalog_apply
from meterline.services.admin import AdminService

TOKENS = {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value",
          "filters": [{"key": "model", "values": ["gpt-4", "gpt-4o"]}]}
SEATS = {"code": "seats", "name": "Seats", "aggregation_type": "unique_count_agg", "field_name": "user_id", "recurring": True}
UNUSED = {"code": "unused", "name": "Unused", "aggregation_type": "count_agg"}


def plan(code, **changes):
    return {"code": code, "name": code.title(), "interval": "monthly", "amount_cents": 1000, "amount_currency": "USD",
            "charges": [{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"},
                         "filters": [{"values": {"model": ["gpt-4"]}, "properties": {"amount": "2"}}]}],
            **changes}


def charge(**changes):
    return {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"}, **changes}


@pytest.fixture
def store(tmp_path):
    """tokens is charged by `pro` (an active subscription) and `spare` (only a canceled one);
    seats and unused are charged by no plan."""
    store = SqliteCatalogStore(SqliteDatabase(tmp_path / "catalog.sqlite"))
    for body in (TOKENS, SEATS, UNUSED):
        store.put_billable_metric(BillableMetric.model_validate(body))
    for body in (plan("pro"), plan("spare")):
        store.put_plan(Plan.model_validate(body))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for external_id, plan_code, status in (("sub-pro", "pro", "active"), ("sub-spare", "spare", "canceled")):
        record = Subscription(external_id=external_id, external_customer_id="acme", plan_code=plan_code,
                              subscription_at=start, started_at=start if status == "active" else None, status=status)
        store.put_subscription_history(external_id, [record], version=0)
    return store


def contents(store):
    return ([m.to_lago() for m in store.list_billable_metrics()[0]], [p.to_lago() for p in store.list_plans()[0]])


def through_admin(store, kind, body):
    """The admin API's service: PUT the object if it exists, else POST it."""
    service = AdminService(store)
    try:
        if kind == "billable_metric":
            service.update_billable_metric(body["code"], body)
        elif store.get_plan(body["code"]) is not None:
            service.update_plan(body["code"], body)
        else:
            service.create_plan(body)
    except ValidationFailed as err:
        return {f"{field}: {code}" for field, codes in err.details.items() for code in codes}
    except NotFound as err:
        return {f"{err.resource}_not_found"}
    return None


def through_catalog_apply(store, kind, body):
    """`catalog apply` with a file holding the one object: every problem listed, or written."""
    section = "billable_metrics" if kind == "billable_metric" else "plans"
    model = BillableMetric if kind == "billable_metric" else Plan
    catalog = catalog_apply.CatalogFile(**{"billable_metrics": (), "plans": (), section: (model.model_validate(body),)})
    try:
        changes = catalog_apply.plan_changes(store, catalog)
    except catalog_apply.CatalogFileError as err:
        # "plans[0] (pro): interval: plan_in_use" -> "interval: plan_in_use"; a missing metric
        # is listed with its codes ("billable_metric_not_found: gpu_hours").
        found = set()
        for problem in err.problems:
            what = problem.split("): ", 1)[1]
            found |= {"billable_metric_not_found"} if what.startswith("billable_metric_not_found") else {what}
        return found
    catalog_apply.apply(store, catalog, changes)
    return None


CASES = [
    # (what, kind, body, refused with: None when accepted)
    ("a metric in use changes its aggregation", "billable_metric", {**TOKENS, "aggregation_type": "max_agg"},
     {"aggregation_type: billable_metric_in_use"}),
    ("a metric in use changes its rounding", "billable_metric", {**TOKENS, "rounding_function": "ceil"},
     {"rounding_function: billable_metric_in_use"}),
    ("a metric in use drops a filter value a charge uses", "billable_metric",
     {**TOKENS, "filters": [{"key": "model", "values": ["gpt-4o"]}]}, {"filters: billable_metric_in_use"}),
    ("a metric in use adds a filter value", "billable_metric",
     {**TOKENS, "filters": [{"key": "model", "values": ["gpt-4", "gpt-4o", "o3"]}]}, None),
    ("a metric in use is renamed", "billable_metric", {**TOKENS, "name": "LLM tokens"}, None),
    ("a metric no plan charges changes its aggregation", "billable_metric",
     {**UNUSED, "aggregation_type": "sum_agg", "field_name": "value"}, None),
    ("a plan in use changes its interval", "plan", plan("pro", interval="quarterly"), {"interval: plan_in_use"}),
    ("a plan in use changes its interval and currency", "plan", plan("pro", interval="yearly", amount_currency="EUR"),
     {"interval: plan_in_use", "amount_currency: plan_in_use"}),
    ("a plan in use changes its price", "plan", plan("pro", amount_cents=2000), None),
    ("a plan with only a canceled subscription changes its currency", "plan", plan("spare", amount_currency="EUR"), None),
    ("a new plan charges a metric that does not exist", "plan",
     plan("ghost", charges=[charge(billable_metric_code="gpu_hours")]), {"billable_metric_not_found"}),
    ("a plan's charge filter uses a value its metric does not have", "plan",
     plan("pro", charges=[charge(filters=[{"values": {"model": ["claude"]}, "properties": {"amount": "2"}}])]),
     {"charges.0.filters.0.values: invalid_value"}),
    ("a plan prorates a metric that does not recur", "plan", plan("new", charges=[charge(prorated=True)]),
     {"charges.0.prorated: invalid_billable_metric_or_charge_model"}),
    ("a plan prorates a recurring metric", "plan",
     plan("new", charges=[charge(billable_metric_code="seats", prorated=True, filters=[])]), None),
]


@pytest.mark.parametrize("path", [through_admin, through_catalog_apply], ids=["admin", "catalog_apply"])
@pytest.mark.parametrize("what,kind,body,refused", CASES, ids=[c[0] for c in CASES])
def test_both_paths_refuse_and_accept_the_same_changes(store, path, what, kind, body, refused):
    before = contents(store)
    assert path(store, kind, body) == refused
    if refused is not None:
        assert contents(store) == before  # a refused change writes nothing
    else:
        model = BillableMetric if kind == "billable_metric" else Plan
        stored = store.get_billable_metric(body["code"]) if kind == "billable_metric" else store.get_plan(body["code"])
        assert stored.to_lago() == model.model_validate(body).to_lago()


def test_catalog_apply_lists_a_refused_change_with_the_other_problems_and_writes_nothing(store):
    catalog = catalog_apply.CatalogFile(
        (BillableMetric.model_validate({**TOKENS, "field_name": "tokens"}), BillableMetric.model_validate(UNUSED)),
        (Plan.model_validate(plan("pro", interval="weekly")), Plan.model_validate(plan("new", amount_cents=5))),
    )
    before = contents(store)
    with pytest.raises(catalog_apply.CatalogFileError) as info:
        catalog_apply.plan_changes(store, catalog)
    assert info.value.problems == ["billable_metrics[0] (tokens): field_name: billable_metric_in_use",
                                   "plans[0] (pro): interval: plan_in_use"]
    assert contents(store) == before


def test_a_metric_change_is_judged_against_the_plans_as_the_file_leaves_them(store):
    """A file may move a plan off a metric and change the metric in one apply; the plan it
    keeps elsewhere (`spare`, still on tokens) keeps the change refused."""
    off_tokens = plan("pro", charges=[charge(billable_metric_code="seats", filters=[])])
    changed = {**TOKENS, "aggregation_type": "max_agg"}
    both = catalog_apply.CatalogFile((BillableMetric.model_validate(changed),), (Plan.model_validate(off_tokens),))
    with pytest.raises(catalog_apply.CatalogFileError) as info:
        catalog_apply.plan_changes(store, both)
    assert info.value.problems == ["billable_metrics[0] (tokens): aggregation_type: billable_metric_in_use"]

    spare_off = plan("spare", charges=[charge(billable_metric_code="seats", filters=[])])
    everything = catalog_apply.CatalogFile((BillableMetric.model_validate(changed),),
                                           (Plan.model_validate(off_tokens), Plan.model_validate(spare_off)))
    changes = catalog_apply.plan_changes(store, everything)
    assert [(c.kind, c.code, c.action) for c in changes] == [
        ("billable_metric", "tokens", "update"), ("plan", "pro", "update"), ("plan", "spare", "update")]
