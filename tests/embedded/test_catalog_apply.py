"""`meterline catalog apply`: idempotent, a dry run writes nothing, a bad file writes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore
from meterline.local import cli
from meterline.services.catalog_apply import diff
from tests.support import REPO_ROOT

EXAMPLE = REPO_ROOT / "shared/meterline/local/example_catalog.yaml"


@pytest.fixture
def store(tmp_path):
    return SqliteCatalogStore(SqliteDatabase(tmp_path / "catalog.sqlite"))


def apply_file(store, path: Path, dry_run=False, fmt="json"):
    out, err = io.StringIO(), io.StringIO()
    code = cli.apply_catalog_file(path, store, dry_run, fmt, out, err)
    rows = json.loads(out.getvalue()) if fmt == "json" and code == 0 else out.getvalue()
    return code, rows, err.getvalue()


def contents(store):
    return ([m.to_lago() for m in store.list_billable_metrics()[0]], [p.to_lago() for p in store.list_plans()[0]])


def actions(rows):
    return [(r["kind"], r["code"], r["action"], r["changes"]) for r in rows]


def test_the_example_applies_and_a_second_apply_changes_nothing(store):
    code, rows, err = apply_file(store, EXAMPLE)
    assert code == 0
    assert actions(rows) == [("billable_metric", "seats", "create", ""), ("billable_metric", "tokens_consumed", "create", ""),
                             ("plan", "team_monthly", "create", "")]
    assert "applied: 3 created, 0 updated, 0 unchanged" in err
    after_first = contents(store)

    code, rows, err = apply_file(store, EXAMPLE)
    assert code == 0
    assert [r["action"] for r in rows] == ["unchanged"] * 3
    assert f"nothing to change: the catalog already matches {EXAMPLE}" in err
    assert contents(store) == after_first


def test_the_example_is_the_first_customers_catalog(store):
    apply_file(store, EXAMPLE)
    seats, tokens = store.get_billable_metric("seats"), store.get_billable_metric("tokens_consumed")
    assert (seats.aggregation_type, seats.field_name, seats.recurring) == ("unique_count", "user_id", True)
    assert (tokens.aggregation_type, tokens.field_name) == ("sum", "value")
    assert {f.key: f.values for f in tokens.filters}["token_type"] == ("input", "output")
    assert "model" in {f.key for f in tokens.filters}
    plan = store.get_plan("team_monthly")
    assert (plan.interval, plan.amount_cents, plan.pay_in_advance) == ("monthly", 4900, False)
    per_seat, per_token = plan.charges
    assert (per_seat.charge_model, per_seat.prorated) == ("standard", True)
    assert per_token.charge_model == "graduated"
    assert [f.key for f in per_token.filters] == ["token_type=input", "token_type=output"]
    assert str(per_token.filters[1].properties.graduated_ranges[0].per_unit_amount) == "0.000015"


def test_dry_run_writes_nothing_and_shows_the_diff(store, tmp_path):
    code, rows, err = apply_file(store, EXAMPLE, dry_run=True)
    assert code == 0 and [r["action"] for r in rows] == ["create"] * 3
    assert "dry run: 3 to create, 0 to update, 0 unchanged; nothing was written" in err
    assert contents(store) == ([], [])

    apply_file(store, EXAMPLE)
    before = contents(store)
    changed = tmp_path / "changed.yaml"
    changed.write_text(EXAMPLE.read_text().replace('amount: "20"', 'amount: "25"').replace("amount_cents: 4900", "amount_cents: 5900"))
    code, rows, err = apply_file(store, changed, dry_run=True)
    assert code == 0
    assert actions(rows) == [("billable_metric", "seats", "unchanged", ""), ("billable_metric", "tokens_consumed", "unchanged", ""),
                             ("plan", "team_monthly", "update", "amount_cents, charges.0.properties.amount")]
    assert contents(store) == before

    code, rows, err = apply_file(store, changed)
    assert "applied: 0 created, 1 updated, 2 unchanged" in err
    assert store.get_plan("team_monthly").amount_cents == 5900


def test_table_output_is_readable(store):
    code, text, _ = apply_file(store, EXAMPLE, dry_run=True, fmt="table")
    lines = text.splitlines()
    assert lines[0].split() == ["kind", "code", "action", "changes"]
    assert lines[2].split() == ["billable_metric", "seats", "create"]


def test_a_bad_file_writes_nothing_and_names_every_problem(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "billable_metrics:\n"
        "  - {code: ok, name: OK, aggregation_type: count_agg}\n"
        "  - {code: broken, name: Broken, aggregation_type: sum_agg}\n"
        "plans:\n"
        "  - {code: p, name: P, interval: daily, amount_cents: 100, amount_currency: USD}\n"
        "coupons: []\n"
    )
    code, _, err = apply_file(store, bad)
    assert code == 1
    assert "nothing was written" in err
    assert "billable_metrics[1] (broken): field_name: value_is_mandatory" in err
    assert "plans[0] (p): interval: invalid_value" in err
    assert "coupons: unknown section" in err
    assert contents(store) == ([], [])


@pytest.mark.parametrize("text,problem", [
    ("plans:\n  - {code: p, name: P, interval: monthly, amount_cents: 0, amount_currency: USD, charges: "
     "[{billable_metric_code: gpu_hours, charge_model: standard, properties: {amount: '1'}}]}\n",
     "plans[0] (p): billable_metric_not_found: gpu_hours"),
    ("billable_metrics:\n  - {code: calls, name: Calls, aggregation_type: count_agg}\n"
     "plans:\n  - {code: p, name: P, interval: monthly, amount_cents: 0, amount_currency: USD, charges: "
     "[{billable_metric_code: calls, charge_model: standard, properties: {amount: '1'}, "
     "filters: [{values: {region: [eu]}, properties: {amount: '2'}}]}]}\n",
     "plans[0] (p): charges.0.filters.0.values: invalid_value"),
    ("billable_metrics:\n  - {code: a, name: A, aggregation_type: count_agg}\n  - {code: a, name: B, aggregation_type: count_agg}\n",
     "billable_metrics: code 'a' appears more than once"),
    ("billable_metrics: {code: a}\n", "billable_metrics: expected a list"),
    ("- just\n- a list\n", "expected a mapping with billable_metrics: and plans:"),
    ("billable_metrics: [\n", "not valid YAML"),
])
def test_file_problems(store, tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, _, err = apply_file(store, path)
    assert code == 1 and problem in err
    assert contents(store) == ([], [])


def test_a_missing_file_is_reported(store, tmp_path):
    code, _, err = apply_file(store, tmp_path / "nope.yaml")
    assert code == 1 and "nope.yaml" in err


def test_plans_may_use_metrics_already_stored(store, tmp_path):
    apply_file(store, EXAMPLE)
    only_plan = tmp_path / "plan.yaml"
    only_plan.write_text(
        "plans:\n  - {code: seats_only, name: Seats only, interval: yearly, amount_cents: 0, amount_currency: USD,"
        " charges: [{billable_metric_code: seats, charge_model: standard, properties: {amount: '200'}}]}\n"
    )
    code, rows, _ = apply_file(store, only_plan)
    assert code == 0 and actions(rows) == [("plan", "seats_only", "create", "")]


def test_unquoted_yaml_decimals_are_exact(store, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "billable_metrics:\n  - {code: calls, name: Calls, aggregation_type: count_agg}\n"
        "plans:\n  - {code: p, name: P, interval: monthly, amount_cents: 0, amount_currency: USD, charges: "
        "[{billable_metric_code: calls, charge_model: standard, properties: {amount: 0.1}}]}\n"
    )
    assert apply_file(store, path)[0] == 0
    assert store.get_plan("p").to_lago()["charges"][0]["properties"] == {"amount": "0.1"}


def test_diff_names_nested_paths():
    old = {"a": 1, "charges": [{"properties": {"amount": "1"}}], "tags": [1]}
    new = {"a": 1, "charges": [{"properties": {"amount": "2"}}], "tags": [1, 2], "b": None}
    assert diff(old, new) == ["charges.0.properties.amount", "tags"]
    assert diff(old, old) == []


def test_the_cli_command(tmp_path, capsys):
    args = ["catalog", "apply", str(EXAMPLE), "--data-dir", str(tmp_path), "--format", "csv"]
    assert cli.main([*args, "--dry-run"]) == 0
    assert "billable_metric,seats,create," in capsys.readouterr().out
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "plan,team_monthly,unchanged," in captured.out
    assert "nothing to change" in captured.err
