# BigQuery: the events, the rejected events and the finance history, and the views every read
# goes through. One source of truth: the schemas are the JSON files the adapters read
# (shared/meterline/adapters/sql/<table>.json), the views are their .sql files, and the list of
# tables with their partitioning and clustering mirrors `TABLES` in adapters/sql/__init__.py
# (tests/terraform holds the two equal). BigQueryWarehouse.ensure_schema creates the same on
# the emulator (infra/gcp_setup.py).

locals {
  sql_dir = "${path.module}/../shared/meterline/adapters/sql"

  # Partitioned by day on the event (or issuing, or payment) time and clustered by
  # subscription or customer: a billing run scans one period's partitions and the billed
  # subscriptions' blocks ($6.25 per TiB scanned).
  tables = {
    events          = { partition_field = "timestamp", clustering = ["external_subscription_id", "code"] }
    rejected_events = { partition_field = "rejected_at", clustering = ["external_subscription_id"] }
    invoices        = { partition_field = "issuing_date", clustering = ["customer_external_id", "invoice_id"] }
    invoice_lines   = { partition_field = "issuing_date", clustering = ["customer_external_id", "invoice_id"] }
    payments        = { partition_field = "recorded_at", clustering = ["customer_external_id", "invoice_id"] }
    # What Stripe said of each invoice (reconciliation), partitioned by our invoice's date.
    provider_invoices = { partition_field = "issuing_date", clustering = ["customer_external_id", "invoice_id"] }
  }
  views = ["events_deduped", "rejected_events_deduped", "invoices_latest", "invoice_lines_latest", "payments_deduped",
  "provider_invoices_latest"]

  # The views' SQL names each table `{table}` (Python's str.format in adapters/sql/view_query):
  # here each placeholder becomes the table's full name.
  table_refs = { for name in keys(local.tables) : name => "`${var.project_id}.${google_bigquery_dataset.this.dataset_id}.${name}`" }
  view_queries = {
    for view in local.views : view => replace(replace(replace(replace(replace(replace(
      file("${local.sql_dir}/${view}.sql"),
      "{events}", local.table_refs["events"]),
      "{rejected_events}", local.table_refs["rejected_events"]),
      "{invoices}", local.table_refs["invoices"]),
      "{invoice_lines}", local.table_refs["invoice_lines"]),
      "{payments}", local.table_refs["payments"]),
    "{provider_invoices}", local.table_refs["provider_invoices"])
  }

  # The finance reports (core/reports.py): each reports/<name>.sql as the view report_<name>
  # over every month. A view takes no parameters, so the month bounds become the widest
  # timestamps (adapters/sql/report_view_query): finance filters the view in the console, and
  # `meterline report` runs the query with one month's bounds, which prunes partitions.
  reports = ["usage", "revenue", "mrr", "receivables", "reconciliation", "credits", "rejected", "unbilled"]
  report_queries = {
    for report in local.reports : "report_${report}" => replace(replace(replace(replace(replace(replace(replace(replace(
      file("${local.sql_dir}/reports/${report}.sql"),
      "{events}", local.table_refs["events"]),
      "{rejected_events}", local.table_refs["rejected_events"]),
      "{invoices}", local.table_refs["invoices"]),
      "{invoice_lines}", local.table_refs["invoice_lines"]),
      "{payments}", local.table_refs["payments"]),
      "{provider_invoices}", local.table_refs["provider_invoices"]),
      "@month_start", "TIMESTAMP '0001-01-01 00:00:00+00'"),
    "@month_end", "TIMESTAMP '9999-12-31 23:59:59.999999+00'")
  }
}

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; a customer key (CMEK) is the customer's choice and not required here
  dataset_id    = var.bigquery_dataset
  location      = var.bigquery_location
  description   = "Meterline: usage events, rejected events, invoices and payments"
  friendly_name = "Meterline"
  depends_on    = [google_project_service.this]
}

resource "google_bigquery_table" "tables" {
  #checkov:skip=CKV_GCP_80:Google-managed encryption; a customer key (CMEK) is the customer's choice and not required here
  for_each            = local.tables
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  schema              = file("${local.sql_dir}/${each.key}.json")
  deletion_protection = var.deletion_protection
  clustering          = each.value.clustering

  time_partitioning {
    type  = "DAY"
    field = each.value.partition_field
    # No partition filter is required: the views read every partition (get one event, list
    # events), and the usage query filters its period itself.
    require_partition_filter = false
  }
}

resource "google_bigquery_table" "views" {
  #checkov:skip=CKV_GCP_80:a view stores no data to encrypt
  for_each            = toset(local.views)
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  deletion_protection = var.deletion_protection # a changed query is updated in place, never replaced

  view {
    query          = local.view_queries[each.key]
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}

resource "google_bigquery_table" "reports" {
  #checkov:skip=CKV_GCP_80:a view stores no data to encrypt
  for_each            = local.report_queries
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  deletion_protection = var.deletion_protection

  view {
    query          = each.value
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}
