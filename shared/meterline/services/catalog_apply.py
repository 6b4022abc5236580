"""`meterline catalog apply FILE.yaml`: make the stored catalog match a YAML file.

The file holds `billable_metrics:` and `plans:` lists in Lago's shapes (what POST
/api/v1/billable_metrics and /api/v1/plans take). Every object is validated, and every change
checked against the catalog's rules (`meterline.core.catalog.rules`, the admin API's too: a
plan's references, a metric or plan in use), before anything is written: a file with any
problem changes nothing, and every problem is listed. Each object is then created, updated or
left alone, so applying the same file twice changes nothing the second time, and `--dry-run`
shows the same changes without writing. This module returns the changes; the CLI
(`meterline.local.cli`) prints them.

Writes are per object (metrics first, so plans never point at a missing metric), not one
transaction: an apply cut short leaves some objects updated, and running it again finishes
the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from meterline.core.catalog import BillableMetric, Plan, lago_error_details
from meterline.core.catalog.rules import check_metric_update, check_plan_references, check_plan_update
from meterline.core.errors import NotFound, ValidationFailed
from meterline.ports import CatalogStore

__all__ = ["CatalogFile", "CatalogFileError", "Change", "apply", "diff", "load", "plan_changes"]


class CatalogFileError(Exception):
    """The file cannot be applied; `problems` says where and why, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as exact Decimals: `amount: 0.00002` in a catalog
    means the decimal 0.00002, and the catalog models refuse binary floats for money."""


def _decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal | float:
    text = loader.construct_scalar(node)
    try:
        return Decimal(str(text).replace("_", ""))
    except InvalidOperation:
        return yaml.SafeLoader.construct_yaml_float(loader, node)  # .inf, .nan: refused later


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)


@dataclass(frozen=True)
class CatalogFile:
    billable_metrics: tuple[BillableMetric, ...]
    plans: tuple[Plan, ...]


@dataclass(frozen=True)
class Change:
    kind: str  # billable_metric | plan
    code: str
    action: str  # create | update | unchanged
    fields: tuple[str, ...] = ()  # dotted paths of what changes, for an update


def load(path: Path) -> CatalogFile:
    """Parse and validate the file; raises CatalogFileError naming every problem."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise CatalogFileError([f"{path}: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise CatalogFileError([f"{path}: not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogFileError([f"{path}: expected a mapping with billable_metrics: and plans:"])
    problems = [f"{key}: unknown section (expected billable_metrics or plans)" for key in data if key not in ("billable_metrics", "plans")]
    metrics = list(_validated(data, "billable_metrics", BillableMetric, problems))
    plans = list(_validated(data, "plans", Plan, problems))
    for section, codes in (("billable_metrics", [m.code for m in metrics]), ("plans", [p.code for p in plans])):
        for code in sorted({c for c in codes if codes.count(c) > 1}):
            problems.append(f"{section}: code {code!r} appears more than once")
    if problems:
        raise CatalogFileError(problems)
    return CatalogFile(tuple(metrics), tuple(plans))


def _validated(data: dict[str, Any], section: str, model: Any, problems: list[str]) -> Iterator[Any]:
    items = data.get(section) or []
    if not isinstance(items, list):
        problems.append(f"{section}: expected a list")
        return
    for index, item in enumerate(items):
        label = f"{section}[{index}]"
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            label += f" ({item['code']})"
        try:
            yield model.model_validate(item)
        except ValidationError as exc:
            for field, codes in lago_error_details(exc).items():
                problems.append(f"{label}: {field}: {', '.join(codes)}")


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two Lago-shaped JSON values differ ('charges.1.properties.amount')."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += diff(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):  # lengths checked equal above
            out += diff(a, b, f"{path}.{index}" if path else str(index))
        return out
    return [] if old == new else [path or "(all)"]


def plan_changes(store: CatalogStore, catalog: CatalogFile) -> list[Change]:
    """What applying `catalog` would do, object by object. Raises CatalogFileError naming every
    change the catalog's rules refuse: plan references (checked against the file's metrics,
    which win, and the stored ones), and metrics and plans in use (judged against the catalog
    as it will be: the stored plans with the file's over them)."""
    in_file = {m.code: m for m in catalog.billable_metrics}
    stored_metrics = {m.code: store.get_billable_metric(m.code) for m in catalog.billable_metrics}
    stored_plans = {p.code: store.get_plan(p.code) for p in catalog.plans}

    def get_metric(code: str) -> BillableMetric | None:
        return in_file.get(code) or store.get_billable_metric(code)

    problems: list[str] = []

    def refused(label: str, err: ValidationFailed) -> None:
        problems.extend(f"{label}: {field}: {', '.join(codes)}" for field, codes in (err.details or {}).items())

    plans_after = {p.code: p for p in store.list_plans()[0]} | {p.code: p for p in catalog.plans}
    for index, metric in enumerate(catalog.billable_metrics):
        stored_metric = stored_metrics[metric.code]
        if stored_metric is not None:
            try:
                check_metric_update(stored_metric, metric, plans_after.values(), get_metric)
            except ValidationFailed as err:
                refused(f"billable_metrics[{index}] ({metric.code})", err)

    records = cache(store.list_subscriptions)  # read once, and only if a plan's schedule changes
    for index, plan in enumerate(catalog.plans):
        label = f"plans[{index}] ({plan.code})"
        missing = sorted({c.billable_metric_code or c.billable_metric_id or "" for c in plan.charges} - set(in_file))
        missing = [code for code in missing if store.get_billable_metric(code) is None]
        if missing:
            problems.append(f"{label}: billable_metric_not_found: {', '.join(missing)}")
            continue
        try:
            check_plan_references(plan, get_metric)
            stored_plan = stored_plans[plan.code]
            if stored_plan is not None:
                check_plan_update(stored_plan, plan, records)
        except NotFound:
            problems.append(f"{label}: billable_metric_not_found")
        except ValidationFailed as err:
            refused(label, err)
    if problems:
        raise CatalogFileError(problems)

    changes = [_change("billable_metric", m.code, stored_metrics[m.code], m) for m in catalog.billable_metrics]
    changes += [_change("plan", p.code, stored_plans[p.code], p) for p in catalog.plans]
    return changes


def _change(kind: str, code: str, stored: Any, wanted: Any) -> Change:
    if stored is None:
        return Change(kind, code, "create")
    fields = diff(stored.to_lago(), wanted.to_lago())
    return Change(kind, code, "update", tuple(fields)) if fields else Change(kind, code, "unchanged")


def apply(store: CatalogStore, catalog: CatalogFile, changes: list[Change]) -> None:
    """Write what `changes` says must change (metrics before plans)."""
    todo = {(c.kind, c.code) for c in changes if c.action != "unchanged"}
    for metric in catalog.billable_metrics:
        if ("billable_metric", metric.code) in todo:
            store.put_billable_metric(metric)
    for plan in catalog.plans:
        if ("plan", plan.code) in todo:
            store.put_plan(plan)
