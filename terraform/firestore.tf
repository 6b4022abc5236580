# Firestore (native mode): dedup claims, API keys, the catalog, invoices and their counters,
# processed webhook events. Collection and field names are the adapters'
# (shared/meterline/adapters/gcp/firestore_*.py).

locals {
  firestore_location = coalesce(var.firestore_location, var.region)

  # TTL policies: Firestore deletes a document once its `expire_at` has passed (within about a
  # day; TTL deletes are billed as deletes). Retention is set by the adapters:
  #   dedup claims var.settings.dedup_retention_days (35: beyond Pub/Sub's 31 days at most of
  #   redelivery plus the dead letters' 7; firestore_dedup.RETENTION says what a later resend does)
  #   processed webhook events 30 days (firestore_invoices.PROCESSED_RETENTION: Stripe retries 3 days)
  ttl_fields = {
    meterline_dedup            = "expire_at"
    meterline_processed_events = "expire_at"
  }

  # Fields no query filters or sorts on: exempt from Firestore's automatic single-field indexes.
  # A dedup claim is written once per event and read only by its id; indexing its 4 fields
  # would store 8 index entries (~1.1 kB) beside a ~0.2 kB document, and an indexed timestamp
  # that grows with time (claimed_at, expire_at) caps a collection at about 500 writes/s. The
  # JSON blobs (`doc`, `records`) are never queried either.
  unindexed_fields = {
    meterline_dedup            = ["payload_hash", "claimed_at", "touched_at"]
    meterline_processed_events = ["event_id", "seen_at"]
    meterline_invoices         = ["doc"]
    meterline_billable_metrics = ["doc"]
    meterline_plans            = ["doc"]
    meterline_customers        = ["doc"]
    meterline_subscriptions    = ["records"]
  }

  # Composite indexes that FirestoreInvoiceStore.list needs (firestore_invoices.py's docstring):
  # any non-empty combination of these equality filters (status is an `in` when several are
  # asked), then issuing_date DESC, id ASC; and that order alone. The same filters with an
  # issuing_date range are counted (`count()`), which orders by issuing_date ASC: their ASC twins.
  invoice_filters = [
    ["customer_external_id"],
    ["subscription_external_id"],
    ["status"],
    ["customer_external_id", "status"],
    ["subscription_external_id", "status"],
    ["customer_external_id", "subscription_external_id"],
    ["customer_external_id", "subscription_external_id", "status"],
  ]
  invoice_indexes = merge(
    { for f in local.invoice_filters : "list/${join(",", f)}" => { equality = f, tail = [["issuing_date", "DESCENDING"], ["id", "ASCENDING"]] } },
    { "list/" = { equality = [], tail = [["issuing_date", "DESCENDING"], ["id", "ASCENDING"]] } },
    { for f in local.invoice_filters : "count/${join(",", f)}" => { equality = f, tail = [["issuing_date", "ASCENDING"]] } },
  )
}

resource "google_firestore_database" "this" {
  name                              = var.firestore_database
  location_id                       = local.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = var.firestore_point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "ABANDON" # `terraform destroy` never deletes the billing record
  depends_on                        = [google_project_service.this]
}

resource "google_firestore_field" "ttl" {
  for_each   = local.ttl_fields
  database   = google_firestore_database.this.name
  collection = each.key
  field      = each.value
  ttl_config {}
  index_config {} # empty: no index on the TTL timestamp either
}

resource "google_firestore_field" "unindexed" {
  for_each = merge([
    for collection, fields in local.unindexed_fields : { for field in fields : "${collection}.${field}" => { collection = collection, field = field } }
  ]...)
  database   = google_firestore_database.this.name
  collection = each.value.collection
  field      = each.value.field
  index_config {}
}

resource "google_firestore_index" "invoices" {
  for_each    = local.invoice_indexes
  database    = google_firestore_database.this.name
  collection  = "meterline_invoices"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.equality
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  dynamic "fields" {
    for_each = each.value.tail
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}
