# Service accounts: one per function, with only the roles its code uses, granted on the
# narrowest resource that IAM allows (a topic, a table, a secret; Firestore and BigQuery jobs
# only have project-level roles). No primitive roles anywhere. What each function touches is
# composed per function in shared/meterline/runtime.py; tests/terraform/test_terraform.py holds
# this table equal to an independent one.

locals {
  function_roles = {
    # Publishes events; reads API keys and the catalog's numeric fields; GET /events reads the
    # events through their view (a query job).
    ingest = {
      project = ["roles/datastore.viewer", "roles/bigquery.jobUser"]
      topics  = { events = "roles/pubsub.publisher" }
      tables  = { events = "roles/bigquery.dataViewer", events_deduped = "roles/bigquery.dataViewer" }
    }
    # Claims dedup keys (Firestore transactions); streams events and rejections; looks up a
    # stale claim's event (a query); dead-letters a message past the maximum age.
    process = {
      project = ["roles/datastore.user", "roles/bigquery.jobUser"]
      topics  = { dead_letter = "roles/pubsub.publisher" }
      tables  = { events = "roles/bigquery.dataEditor", events_deduped = "roles/bigquery.dataViewer", rejected_events = "roles/bigquery.dataEditor" }
    }
    # The catalog API (read/write), the invoices API (read), API keys (read).
    admin = {
      project = ["roles/datastore.user"]
      topics  = {}
      tables  = {}
    }
    # Catalog (downgrades switched), invoices and counters (Firestore); one usage query over the
    # events; the finance history (invoices, invoice_lines). The Stripe key is its secret.
    bill = {
      project = ["roles/datastore.user", "roles/bigquery.jobUser"]
      topics  = {}
      tables  = { events = "roles/bigquery.dataViewer", invoices = "roles/bigquery.dataEditor", invoice_lines = "roles/bigquery.dataEditor" }
    }
    # Invoices and processed event ids (Firestore); the payment, and the invoice's new state,
    # in the finance history (streaming inserts, no query).
    stripe_webhook = {
      project = ["roles/datastore.user"]
      topics  = {}
      tables  = { invoices = "roles/bigquery.dataEditor", invoice_lines = "roles/bigquery.dataEditor", payments = "roles/bigquery.dataEditor" }
    }
    # Catalog, invoices and API keys (read); current usage is a usage query over the events.
    portal = {
      project = ["roles/datastore.viewer", "roles/bigquery.jobUser"]
      topics  = {}
      tables  = { events = "roles/bigquery.dataViewer" }
    }
  }

  topic_ids = {
    events      = google_pubsub_topic.events.id
    dead_letter = google_pubsub_topic.dead_letter.id
  }
  # Tables and views alike: a view is read with its tables' permissions plus its own.
  bigquery_ids = merge(
    { for name, table in google_bigquery_table.tables : name => table.table_id },
    { for name, view in google_bigquery_table.views : name => view.table_id },
  )

  # Who may invoke a function, by how it is reached (functions.tf).
  invoker_members = {
    http      = ["allUsers"] # public: the code authenticates every request
    scheduler = ["serviceAccount:${google_service_account.system["scheduler"].email}"]
    pubsub    = ["serviceAccount:${google_service_account.system["pubsub-push"].email}"]
  }

  project_grants = merge([
    for fn, roles in local.function_roles : { for role in roles.project : "${fn}/${role}" => { function = fn, role = role } }
  ]...)
  topic_grants = merge([
    for fn, roles in local.function_roles : { for topic, role in roles.topics : "${fn}/${topic}" => { function = fn, topic = topic, role = role } }
  ]...)
  table_grants = merge([
    for fn, roles in local.function_roles : { for table, role in roles.tables : "${fn}/${table}" => { function = fn, table = table, role = role } }
  ]...)
  secret_grants = merge([
    for fn, spec in local.functions : { for secret in spec.secrets : "${fn}/${secret}" => { function = fn, secret = secret } }
  ]...)
  invoker_grants = merge([
    for fn, spec in local.functions : { for i, member in local.invoker_members[spec.trigger] : "${fn}/${i}" => { function = fn, member = member } }
  ]...)
}

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = "Meterline ${each.key} function"
  depends_on   = [google_project_service.this]
}

# The accounts that are not a function's: each invokes, or builds, on the functions' behalf.
resource "google_service_account" "system" {
  for_each = {
    scheduler   = "Meterline: Cloud Scheduler calling bill"
    pubsub-push = "Meterline: Pub/Sub pushing events to process"
    builder     = "Meterline: Cloud Build building the functions"
  }
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = each.value
  depends_on   = [google_project_service.this]
}

resource "google_project_iam_member" "function" {
  for_each = local.project_grants
  project  = var.project_id
  role     = each.value.role
  member   = google_service_account.function[each.value.function].member
}

resource "google_pubsub_topic_iam_member" "function" {
  for_each = local.topic_grants
  topic    = local.topic_ids[each.value.topic]
  role     = each.value.role
  member   = google_service_account.function[each.value.function].member
}

resource "google_bigquery_table_iam_member" "function" {
  for_each   = local.table_grants
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  table_id   = local.bigquery_ids[each.value.table]
  role       = each.value.role
  member     = google_service_account.function[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "function" {
  for_each  = local.secret_grants
  secret_id = google_secret_manager_secret.this[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value.function].member
}

# run.invoker on each function's Cloud Run service: allUsers on the public ones, the
# scheduler's account alone on bill, the push account alone on process.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  #checkov:skip=CKV_GCP_102:ingest, admin, stripe_webhook and portal are public APIs; each request is authenticated by the code (API key, Stripe signature, signed link)
  for_each = local.invoker_grants
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.value.function].name
  role     = "roles/run.invoker"
  member   = each.value.member
}

# Cloud Build builds each function's image from its zip, as this account: it reads the source
# (copied by Cloud Functions into its own staging bucket, hence project-level), pushes the image
# to Artifact Registry and writes the build log. Narrower than roles/cloudbuild.builds.builder,
# which may act as other service accounts.
resource "google_project_iam_member" "builder" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer"])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.system["builder"].member
}

# Pub/Sub mints the push's OIDC token as the push account. (Needed for projects created before
# April 2021; harmless after.)
resource "google_service_account_iam_member" "pubsub_push_token" {
  service_account_id = google_service_account.system["pubsub-push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
