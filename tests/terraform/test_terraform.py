"""terraform/ checked offline (no provider can be downloaded here): `terraform fmt`, checkov, and
what python-hcl2 reads of it held against the code it deploys: the function folders and their
entry points, config.py's settings, the BigQuery schemas and partitioning, the roles each
function's code needs, the scheduler's OIDC call, the dead-letter policy and the Firestore TTLs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra import package, servers
from meterline.adapters import sql
from meterline.config import Settings
from tests.harness.terraform import TF_DIR, local, one, optional_defaults, resource, resources, tf_text, variable
from tests.support import REPO_ROOT

TF_ENV = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}


# -- formatting and static analysis ---------------------------------------------------------


def test_terraform_is_formatted():
    terraform = shutil.which("terraform")
    assert terraform, "terraform is not on PATH (every machine of this project has terraform 1.11)"
    proc = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(TF_DIR)],
                          capture_output=True, text=True, env=TF_ENV, timeout=60)
    assert proc.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{proc.stdout}{proc.stderr}"


def test_checkov_finds_nothing_unexplained():
    venv = servers.ensure_checkov_venv()
    proc = subprocess.run(
        [str(venv / "bin" / "checkov"), "-d", str(TF_DIR), "--framework", "terraform", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, env=TF_ENV, timeout=300, stdin=subprocess.DEVNULL,
    )
    report = json.loads(proc.stdout)
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks (fix them, or skip with `#checkov:skip=ID:why`):\n" + "\n".join(map(str, failed))
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0
    # Every skip says why, in a sentence.
    skips = re.findall(r"#checkov:skip=(\w+):?(.*)", tf_text())
    assert skips, "expected the deliberate skips (CMEK, access logs) to be written down"
    for check_id, reason in skips:
        assert len(reason.split()) >= 5, f"checkov skip {check_id} needs a reason: {reason!r}"


# -- the functions ----------------------------------------------------------------------------


def test_every_function_folder_is_deployed_with_its_entry_point_and_trigger():
    folders = package.function_names()
    functions = local("functions")
    assert sorted(functions) == folders, "terraform/functions.tf local.functions must list exactly the folders of functions/"
    assert sorted(local("function_sizes")) == folders
    for name in folders:
        entry, signature = package.entry_point(name)
        spec = functions[name]
        assert spec["entry_point"] == entry, name
        # A CloudEvent function is reached by the events subscription's push; an HTTP one directly.
        assert (spec["trigger"] == "pubsub") == (signature == "cloudevent"), name
        assert spec["trigger"] in local("invoker_members")

    fn = resource("google_cloudfunctions2_function", "this")
    assert fn["for_each"] == "${local.functions}"
    build = one(fn, "build_config")
    assert build["entry_point"] == "${each.value.entry_point}"
    storage = one(one(build, "source"), "storage_source")
    assert storage["object"] == "${google_storage_bucket_object.source[each.key].name}"
    assert "event_trigger" not in fn, "the events subscription (pubsub.tf) triggers process, with its dead-letter policy"
    service = one(fn, "service_config")
    assert "ALLOW_INTERNAL_ONLY" in service["ingress_settings"] and 'trigger == "http"' in service["ingress_settings"]
    assert "THREADS = tostring(local.sizes[each.key].concurrency)" in service["environment_variables"]
    assert service["min_instance_count"] == "${local.sizes[each.key].min_instances}"
    assert all(size["min_instances"] == 0 for size in local("function_sizes").values()), "idle must cost nothing but storage"

    # The zip deployed is the one `make package` built, by its content-addressed name.
    source = resource("google_storage_bucket_object", "source")
    assert source["for_each"] == "${local.functions}"
    assert "local.packages[each.key].zip" in source["name"] and "local.packages[each.key].zip" in source["source"]
    assert local("packages") == '${jsondecode(file("${local.build_dir}/packages.json"))}'
    assert package.MANIFEST == "packages.json"

    # process: the events subscription pushes to its URL (the path gives the CloudEvent its source).
    assert [n for n, s in functions.items() if s["trigger"] == "pubsub"] == ["process"]
    sub = resource("google_pubsub_subscription", "process")
    assert sub["topic"] == "${google_pubsub_topic.events.id}"
    push = one(sub, "push_config")
    assert push["push_endpoint"].startswith('${google_cloudfunctions2_function.this["process"].service_config[0].uri}/projects/')
    assert one(push, "oidc_token")["service_account_email"] == '${google_service_account.system["pubsub-push"].email}'


def test_every_setting_a_function_reads_is_set():
    # Settings that no deployed function reads, with why.
    local_only = {
        "data_dir": "the embedded backend's files",
        "pubsub_emulator_host": "local emulator",
        "firestore_emulator_host": "local emulator",
        "bigquery_emulator_host": "local emulator",
        "stripe_api_base": "localstripe in the tests; unset is api.stripe.com",
        "http_read_timeout_seconds": "meterline serve's own HTTP server; Cloud Run bounds a request on GCP",
        "portal_allowed_hosts": "read only when the portal's base URL is unset; functions.tf always sets it",
    }
    env = local("settings_env")
    secrets = local("secrets")
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        name = alias if isinstance(alias, str) else f"METERLINE_{field.upper()}"
        names[name] = field
        if field in local_only:
            assert name not in env, f"{name} is for local servers only"
        elif info.annotation in (SecretStr, SecretStr | None):
            assert field in secrets, f"{field} is a secret: terraform/secrets.tf must create it"
        else:
            assert name in env, f"terraform/functions.tf settings_env does not set {name} ({field} in config.py)"
    unknown = {k for k in env if k.startswith("METERLINE_") or k == "GOOGLE_CLOUD_PROJECT"} - set(names)
    assert not unknown, f"settings_env sets variables config.py does not read: {unknown}"
    assert env["METERLINE_BACKEND"] == "gcp"

    # Each secret goes to the functions that read it, and to no other.
    # portal reads the Stripe key for checkout_url (a Checkout session); admin, ingest and process none.
    readers = {"bill": {"stripe_api_key"}, "stripe_webhook": {"stripe_webhook_secret"},
               "portal": {"portal_signing_key", "stripe_api_key"}}
    assert {n: set(s["secrets"]) for n, s in local("functions").items() if s["secrets"]} == readers
    assert set(secrets) == {f for f, i in Settings.model_fields.items() if i.annotation in (SecretStr, SecretStr | None)}
    dynamic = one(resource("google_cloudfunctions2_function", "this"), "service_config")["dynamic"][0]
    content = one(dynamic["secret_environment_variables"], "content")
    assert content["key"] == "METERLINE_${upper(secret_environment_variables.value)}"
    assert content["version"] == "latest"


def test_variable_defaults_are_config_py_defaults():
    fields = Settings.model_fields
    for var, field in (("events_topic", "events_topic"), ("dead_letter_topic", "dead_letter_topic"),
                       ("dead_letter_subscription", "dead_letter_subscription"), ("bigquery_dataset", "bigquery_dataset"),
                       ("bigquery_location", "bigquery_location"), ("firestore_database", "firestore_database")):
        assert variable(var)["default"] == fields[field].default, var
    defaults = optional_defaults(variable("settings")["type"])
    for name, written in defaults.items():
        default = fields[name].default
        if default is None:
            assert written == '""', f"{name}: config.py's None is written as \"\" (the code treats both as unset)"
        else:
            assert float(written) == float(default), f"var.settings.{name} defaults to {written}, config.py to {default}"
    for name in defaults:
        assert f"var.settings.{name}" in json.dumps(local("settings_env")), name


# -- BigQuery ------------------------------------------------------------------------------------


def test_bigquery_tables_partitioning_and_clustering_are_the_adapters():
    tables = local("tables")
    assert {name: (t["partition_field"], tuple(t["clustering"])) for name, t in tables.items()} == {
        t.name: (t.partition_field, t.clustering) for t in sql.TABLES
    }
    assert local("views") == list(sql.VIEWS)

    sql_dir = local("sql_dir")
    assert sql_dir == "${path.module}/../shared/meterline/adapters/sql"
    assert (TF_DIR / "../shared/meterline/adapters/sql").resolve() == Path(sql.__file__).parent.resolve()
    table = resource("google_bigquery_table", "tables")
    assert table["for_each"] == "${local.tables}"
    assert table["schema"] == '${file("${local.sql_dir}/${each.key}.json")}', "the schema must be read from the adapters' file"
    for t in sql.TABLES:
        schema = sql.schema(t.name)  # what the adapters write; Terraform reads the same file
        assert t.partition_field in {f["name"] for f in schema}
    partitioning = one(table, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert partitioning["field"] == "${each.value.partition_field}"
    assert table["clustering"] == "${each.value.clustering}"


def test_every_view_placeholder_becomes_a_table_name():
    replaced = set(re.findall(r'"\{(\w+)\}"', (TF_DIR / "bigquery.tf").read_text()))
    assert replaced == {t.name for t in sql.TABLES}
    for view in sql.VIEWS:
        placeholders = set(re.findall(r"\{(\w+)\}", sql.text(f"{view}.sql")))
        assert placeholders and placeholders <= replaced, view
    views = resource("google_bigquery_table", "views")
    assert one(views, "view")["query"] == "${local.view_queries[each.key]}"
    assert one(views, "view")["use_legacy_sql"] is False


def test_the_report_views_are_the_registry_s_reports():
    from meterline.core.reports import REPORTS

    assert local("reports") == list(REPORTS)
    views = resource("google_bigquery_table", "reports")
    assert views["for_each"] == "${local.report_queries}"
    assert one(views, "view")["query"] == "${each.value}"
    assert one(views, "view")["use_legacy_sql"] is False


def _locals_block(text: str) -> str:
    start = text.index("locals {")
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0 and text[i] == "}":
            return text[start:i + 1]
    raise AssertionError("unbalanced locals block")


def test_terraform_renders_the_views_as_the_adapters_do(tmp_path):
    # Evaluated by terraform itself (`terraform console` needs no provider): bigquery.tf's locals,
    # with the dataset resource replaced by its variable.
    module = tmp_path / "terraform"
    module.mkdir()
    (module / "variables.tf").write_text((TF_DIR / "variables.tf").read_text())
    block = _locals_block((TF_DIR / "bigquery.tf").read_text())
    (module / "main.tf").write_text(block.replace("google_bigquery_dataset.this.dataset_id", "var.bigquery_dataset")
                                    .replace("${path.module}/../shared", f"{REPO_ROOT}/shared"))

    def console(expression: str):
        proc = subprocess.run([shutil.which("terraform") or "terraform", "console", "-var", "project_id=acme-prod",
                               "-var", "domain=billing.acme.example"],
                              input=f"jsonencode({expression})\n", capture_output=True, text=True, cwd=module,
                              env=TF_ENV, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(json.loads(proc.stdout.strip()))

    assert console("local.view_queries") == {
        view: sql.view_query(view, lambda table: f"`acme-prod.meterline.{table}`") for view in sql.VIEWS}
    from meterline.core.reports import REPORTS

    assert console("local.report_queries") == {
        f"{sql.REPORT_VIEW_PREFIX}{name}": sql.report_view_query(name, lambda table: f"`acme-prod.meterline.{table}`")
        for name in REPORTS}


# -- IAM -------------------------------------------------------------------------------------


# What each function's code touches (shared/meterline/runtime.py, the adapters), written
# independently of iam.tf: (where, role).
ACCESSOR = "roles/secretmanager.secretAccessor"
EXPECTED_ROLES = {
    "ingest": {("project", "roles/datastore.viewer"), ("project", "roles/bigquery.jobUser"),
               ("topic:events", "roles/pubsub.publisher"),
               ("table:events", "roles/bigquery.dataViewer"), ("table:events_deduped", "roles/bigquery.dataViewer")},
    # Streaming inserts (process, bill, stripe_webhook) need bigquery.datasets.get on the dataset.
    "process": {("project", "roles/datastore.user"), ("project", "roles/bigquery.jobUser"),
                ("topic:dead_letter", "roles/pubsub.publisher"), ("dataset", "roles/bigquery.metadataViewer"),
                ("table:events", "roles/bigquery.dataEditor"), ("table:rejected_events", "roles/bigquery.dataEditor"),
                ("table:events_deduped", "roles/bigquery.dataViewer")},
    "admin": {("project", "roles/datastore.user")},
    "bill": {("project", "roles/datastore.user"), ("project", "roles/bigquery.jobUser"),
             ("dataset", "roles/bigquery.metadataViewer"),
             ("table:events", "roles/bigquery.dataViewer"), ("table:invoices", "roles/bigquery.dataEditor"),
             ("table:invoice_lines", "roles/bigquery.dataEditor"), ("secret:stripe_api_key", ACCESSOR)},
    "stripe_webhook": {("project", "roles/datastore.user"), ("dataset", "roles/bigquery.metadataViewer"),
                       ("table:invoices", "roles/bigquery.dataEditor"),
                       ("table:invoice_lines", "roles/bigquery.dataEditor"), ("table:payments", "roles/bigquery.dataEditor"),
                       ("table:provider_invoices", "roles/bigquery.dataEditor"),
                       ("secret:stripe_webhook_secret", ACCESSOR)},
    "portal": {("project", "roles/datastore.viewer"), ("project", "roles/bigquery.jobUser"),
               ("table:events", "roles/bigquery.dataViewer"), ("secret:portal_signing_key", ACCESSOR),
               ("secret:stripe_api_key", ACCESSOR)},  # checkout_url
}


def test_each_function_has_exactly_the_roles_its_code_needs():
    roles = local("function_roles")
    functions = local("functions")
    assert sorted(roles) == package.function_names()
    actual = {}
    for fn, r in roles.items():
        actual[fn] = ({("project", role) for role in r["project"]}
                      | {(f"topic:{t}", role) for t, role in r["topics"].items()}
                      | {("dataset", role) for role in r["dataset"]}
                      | {(f"table:{t}", role) for t, role in r["tables"].items()}
                      | {(f"secret:{s}", ACCESSOR) for s in functions[fn]["secrets"]})
    assert actual == EXPECTED_ROLES
    assert set(local("topic_ids")) >= {t for r in roles.values() for t in r["topics"]}
    assert {t for r in roles.values() for t in r["tables"]} <= set(local("tables")) | set(local("views"))
    # One service account per function, and the grants go to that account.
    sa = resource("google_service_account", "function")
    assert sa["for_each"] == "${local.functions}"
    assert one(resource("google_cloudfunctions2_function", "this"), "service_config")["service_account_email"] == \
        "${google_service_account.function[each.key].email}"
    for rtype in ("google_project_iam_member", "google_pubsub_topic_iam_member", "google_bigquery_table_iam_member",
                  "google_bigquery_dataset_iam_member", "google_secret_manager_secret_iam_member"):
        assert resource(rtype, "function")["member"] == "${google_service_account.function[each.value.function].member}"


def test_no_service_account_has_a_primitive_role():
    assert not re.search(r"roles/(owner|editor|viewer)\b", tf_text())
    granted = set()
    for body in resources().values():
        if "role" in body:
            granted.add(body["role"])
    literal = {r for r in granted if not r.startswith("${")}
    assert literal <= {"roles/pubsub.publisher", "roles/pubsub.subscriber", "roles/run.invoker",
                       "roles/secretmanager.secretAccessor", "roles/iam.serviceAccountTokenCreator",
                       "roles/storage.objectAdmin", "roles/storage.objectViewer"}, literal
    builder = resource("google_project_iam_member", "builder")["for_each"]
    assert not re.search(r"owner|editor|cloudbuild\.builds\.builder|serviceAccountUser|storage", builder)
    # The builder's storage roles: object admin on Cloud Functions' own build buckets only
    # (an IAM condition), read-only on our source bucket; no other account holds a storage role.
    storage = [(key, body) for key, body in resources().items() if str(body.get("role", "")).startswith("roles/storage.")]
    assert sorted(key for key, _ in storage) == [("google_project_iam_member", "builder_storage"),
                                                  ("google_storage_bucket_iam_member", "builder_sources")]
    admin = resource("google_project_iam_member", "builder_storage")
    assert admin["role"] == "roles/storage.objectAdmin"
    assert one(admin, "condition")["expression"] == 'resource.name.startsWith("projects/_/buckets/gcf-v2-")'
    viewer = resource("google_storage_bucket_iam_member", "builder_sources")
    assert viewer["role"] == "roles/storage.objectViewer" and viewer["bucket"] == "${google_storage_bucket.sources.name}"
    for _, body in storage:
        assert body["member"] == '${google_service_account.system["builder"].member}'
    depends = resource("google_cloudfunctions2_function", "this")["depends_on"]
    assert {"${google_project_iam_member.builder_storage}", "${google_storage_bucket_iam_member.builder_sources}"} <= set(depends)


def test_only_the_schedulers_account_invokes_bill_with_an_oidc_token_for_its_url():
    functions = local("functions")
    members = local("invoker_members")
    assert functions["bill"]["trigger"] == "scheduler"
    assert [n for n, s in functions.items() if s["trigger"] == "scheduler"] == ["bill"]
    assert members["scheduler"] == 'serviceAccount:${google_service_account.system["scheduler"].email}'
    assert members["http"] == "allUsers"
    assert members["pubsub"] == 'serviceAccount:${google_service_account.system["pubsub-push"].email}'
    # One resource grants run.invoker, driven by that table; nothing else grants an invoker role.
    invokers = [(key, body) for key, body in resources().items() if "invoker" in str(body.get("role", ""))]
    assert [key for key, _ in invokers] == [("google_cloud_run_v2_service_iam_member", "invoker")]
    invoker = invokers[0][1]
    assert invoker["role"] == "roles/run.invoker" and invoker["for_each"] == "${local.functions}"
    assert invoker["name"] == "${google_cloudfunctions2_function.this[each.key].name}"
    assert invoker["member"] == "${local.invoker_members[each.value.trigger]}"

    job = resource("google_cloud_scheduler_job", "bill")
    target = one(job, "http_target")
    bill_url = '${google_cloudfunctions2_function.this["bill"].service_config[0].uri}'
    assert target["uri"] == bill_url and target["http_method"] == "POST"
    token = one(target, "oidc_token")
    assert token["service_account_email"] == '${google_service_account.system["scheduler"].email}'
    assert token["audience"] == bill_url


# -- Pub/Sub, Firestore --------------------------------------------------------------------------


def outage_ridden_out(attempts: int, minimum_s: float, maximum_s: float) -> float:
    """Seconds between the first and the last delivery attempt, with Pub/Sub's exponential
    backoff doubling from the minimum up to the maximum (docs/deploy.md)."""
    return sum(min(minimum_s * 2 ** i, maximum_s) for i in range(attempts - 1))


def test_dead_letter_and_retry_policy_ride_out_an_outage_of_hours():
    sub = resource("google_pubsub_subscription", "process")
    policy = one(sub, "dead_letter_policy")
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert policy["max_delivery_attempts"] == "${var.delivery.max_delivery_attempts}"
    retry = one(sub, "retry_policy")
    assert retry == {"minimum_backoff": "${var.delivery.minimum_backoff}",
                     "maximum_backoff": "${var.delivery.maximum_backoff}", "__is_block__": True}
    assert sub["message_retention_duration"] == "${var.delivery.message_retention}"
    defaults = {k: v.strip('"') for k, v in optional_defaults(variable("delivery")["type"]).items()}
    attempts, low, high = int(defaults["max_delivery_attempts"]), defaults["minimum_backoff"], defaults["maximum_backoff"]
    ridden = outage_ridden_out(attempts, float(low.rstrip("s")), float(high.rstrip("s")))
    assert ridden >= 4 * 3600, f"{attempts} attempts ride out only {ridden / 3600:.1f} h"
    assert f"{ridden / 3600:.1f} hours" in (REPO_ROOT / "docs" / "deploy.md").read_text(), "docs/deploy.md states the arithmetic"
    assert defaults["message_retention"] == "604800s"
    from infra import gcp_setup
    assert gcp_setup.MAX_DELIVERY_ATTEMPTS == attempts, "the emulator setup dead-letters after as many attempts"

    dead = resource("google_pubsub_subscription", "dead_letter")
    assert dead["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert one(dead, "expiration_policy")["ttl"] == ""
    agent = "${local.pubsub_service_agent}"
    assert resource("google_pubsub_topic_iam_member", "dead_letter_publisher")["member"] == agent
    assert resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")["member"] == agent


def test_firestore_ttl_policies_are_on_the_fields_the_adapters_write():
    from meterline.adapters.gcp import firestore_dedup, firestore_invoices

    ttl = local("ttl_fields")
    assert ttl == {firestore_dedup.COLLECTION: "expire_at", firestore_invoices.PROCESSED_EVENTS: "expire_at"}
    for module in (firestore_dedup, firestore_invoices):
        assert '"expire_at": now +' in Path(module.__file__).read_text()
    field = resource("google_firestore_field", "ttl")
    assert field["for_each"] == "${local.ttl_fields}" and "ttl_config" in field
    # Index exemptions name fields the adapters really write (a rename must show up here).
    sources = {p.name: p.read_text() for p in Path(firestore_dedup.__file__).parent.glob("firestore_*.py")}
    for collection, fields in local("unindexed_fields").items():
        owner = [n for n, text in sources.items() if f'"{collection}"' in text]
        assert owner, f"no adapter names the collection {collection}"
        for name in fields:
            assert any(f'"{name}"' in sources[n] for n in owner), f"{collection}.{name} is not written by {owner}"
    database = resource("google_firestore_database", "this")
    assert database["type"] == "FIRESTORE_NATIVE"


def test_invoice_indexes_cover_every_listing_filter():
    # FirestoreInvoiceStore.list: equality filters on any of these, then issuing_date DESC, id ASC.
    fields = ("customer_external_id", "subscription_external_id", "status")
    wanted = {frozenset(c) for n in (1, 2, 3) for c in combinations(fields, n)}
    assert {frozenset(f) for f in local("invoice_filters")} == wanted
    indexes = local("invoice_indexes")
    assert indexes.count('"DESCENDING"') == 2 and '["id", "ASCENDING"]' in indexes
    source = Path(sql.__file__).parent.parent / "gcp" / "firestore_invoices.py"
    text = source.read_text()
    assert 'order_by("issuing_date", direction=firestore.Query.DESCENDING).order_by("id")' in text
    assert all(f'("{f}",' in text for f in fields)


@pytest.mark.parametrize("name", ["events_topic", "dead_letter_topic", "dead_letter_subscription"])
def test_pubsub_names_come_from_variables(name):
    text = (TF_DIR / "pubsub.tf").read_text()
    assert f"var.{name}" in text
