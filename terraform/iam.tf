# Service accounts: one per function, with only the roles its code uses, granted on the
# narrowest resource that IAM allows (a topic, a table, the dataset, a secret; Firestore and
# BigQuery jobs only have project-level roles). No primitive roles anywhere. What each function touches is
# composed per function in shared/meterline/runtime.py; tests/terraform/test_terraform.py holds
# this table equal to an independent one.

locals {
  # `dataset`: roles on the BigQuery dataset itself. A streaming insert (tabledata.insertAll,
  # what process, bill and stripe_webhook write with) checks bigquery.datasets.get on the
  # dataset besides bigquery.tables.updateData on the table, and table-level roles cannot
  # grant a dataset permission. roles/bigquery.metadataViewer on this one dataset is the
  # narrowest predefined role with it: metadata (the dataset, table schemas), no row of data.
  # A custom role holding only bigquery.datasets.get would be narrower still, but needs the
  # deployer to administer the project's roles and, once destroyed, blocks its id for weeks.
  function_roles = {
    # Publishes events; reads API keys and the catalog's numeric fields; GET /events reads the
    # events through their view (a query job).
    ingest = {
      project = ["roles/datastore.viewer", "roles/bigquery.jobUser"]
      topics  = { events = "roles/pubsub.publisher" }
      dataset = []
      tables  = { events = "roles/bigquery.dataViewer", events_deduped = "roles/bigquery.dataViewer" }
    }
    # Claims dedup keys (Firestore transactions); streams events and rejections; looks up a
    # stale claim's event (a query); dead-letters a message past the maximum age.
    process = {
      project = ["roles/datastore.user", "roles/bigquery.jobUser"]
      topics  = { dead_letter = "roles/pubsub.publisher" }
      dataset = ["roles/bigquery.metadataViewer"]
      tables  = { events = "roles/bigquery.dataEditor", events_deduped = "roles/bigquery.dataViewer", rejected_events = "roles/bigquery.dataEditor" }
    }
    # The catalog API (read/write), the invoices API (read), API keys (read).
    admin = {
      project = ["roles/datastore.user"]
      topics  = {}
      dataset = []
      tables  = {}
    }
    # Catalog (downgrades switched), invoices and counters (Firestore); one usage query over the
    # events; the finance history (invoices, invoice_lines). The Stripe key is its secret.
    bill = {
      project = ["roles/datastore.user", "roles/bigquery.jobUser"]
      topics  = {}
      dataset = ["roles/bigquery.metadataViewer"]
      tables  = { events = "roles/bigquery.dataViewer", invoices = "roles/bigquery.dataEditor", invoice_lines = "roles/bigquery.dataEditor" }
    }
    # Invoices and processed event ids (Firestore); the payment, and the invoice's new state,
    # in the finance history (streaming inserts, no query).
    stripe_webhook = {
      project = ["roles/datastore.user"]
      topics  = {}
      dataset = ["roles/bigquery.metadataViewer"]
      tables = { invoices = "roles/bigquery.dataEditor", invoice_lines = "roles/bigquery.dataEditor", payments = "roles/bigquery.dataEditor",
      provider_invoices = "roles/bigquery.dataEditor" }
    }
    # Catalog, invoices and API keys (read); current usage is a usage query over the events.
    portal = {
      project = ["roles/datastore.viewer", "roles/bigquery.jobUser"]
      topics  = {}
      dataset = []
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
    # Public: the load balancer forwards a client's request as it came (it holds no identity
    # to call with), so Cloud Run must let anyone invoke; ingress (ALLOW_INTERNAL_AND_GCLB)
    # keeps the internet to the load balancer, and the code authenticates every request.
    http      = "allUsers"
    scheduler = "serviceAccount:${google_service_account.system["scheduler"].email}"
    pubsub    = "serviceAccount:${google_service_account.system["pubsub-push"].email}"
  }

  project_grants = merge([
    for fn, roles in local.function_roles : { for role in roles.project : "${fn}/${role}" => { function = fn, role = role } }
  ]...)
  topic_grants = merge([
    for fn, roles in local.function_roles : { for topic, role in roles.topics : "${fn}/${topic}" => { function = fn, topic = topic, role = role } }
  ]...)
  dataset_grants = merge([
    for fn, roles in local.function_roles : { for role in roles.dataset : "${fn}/${role}" => { function = fn, role = role } }
  ]...)
  table_grants = merge([
    for fn, roles in local.function_roles : { for table, role in roles.tables : "${fn}/${table}" => { function = fn, table = table, role = role } }
  ]...)
  secret_grants = merge([
    for fn, spec in local.functions : { for secret in spec.secrets : "${fn}/${secret}" => { function = fn, secret = secret } }
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

resource "google_bigquery_dataset_iam_member" "function" {
  for_each   = local.dataset_grants
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  role       = each.value.role
  member     = google_service_account.function[each.value.function].member
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

# run.invoker on each function's Cloud Run service: allUsers on the public ones (behind the
# load balancer), the scheduler's account alone on bill, the push account alone on process.
# NOTE: checkov's public-access check (CKV_GCP_102) covers the v1 Cloud Run IAM resources, not
# this v2 one, so no scanner looks at the allUsers grants: tests/terraform/test_front_door.py
# does (allUsers only on functions whose ingress is the load balancer, and nothing else public).
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = local.functions
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = local.invoker_members[each.value.trigger]

  lifecycle {
    # A function re-created (a new name, a region, a forced replacement) is a new Cloud Run
    # service with an empty IAM policy: grant it again in the same apply, not the next one.
    # The id is unknown only when the function is replaced, so an in-place update (new code)
    # leaves the grant alone.
    replace_triggered_by = [google_cloudfunctions2_function.this[each.key].id]
  }
}

# The grants were keyed "<function>/<index>" before each function had exactly one invoker.
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["ingest/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["ingest"]
}
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["process/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["process"]
}
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["admin/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["admin"]
}
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["bill/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["bill"]
}
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["stripe_webhook/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["stripe_webhook"]
}
moved {
  from = google_cloud_run_v2_service_iam_member.invoker["portal/0"]
  to   = google_cloud_run_v2_service_iam_member.invoker["portal"]
}

# Cloud Build builds each function's image from its zip, as this account: it pushes the image
# to Artifact Registry and writes the build log. Narrower than roles/cloudbuild.builds.builder,
# which may act as other service accounts.
resource "google_project_iam_member" "builder" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.system["builder"].member
}

# ...and it reads the source from, and writes its build cache to, the buckets Cloud Functions
# creates for itself (gcf-v2-sources-*, gcf-v2-uploads-*): Google documents Storage Object
# Admin for a build account, where objectViewer fails the build. Those buckets appear with the
# first deploy, so the role cannot be granted on them; the condition keeps it off every other
# bucket of the project (the functions' own source bucket included).
resource "google_project_iam_member" "builder_storage" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = google_service_account.system["builder"].member
  condition {
    title       = "gcf-buckets-only"
    description = "Only the buckets Cloud Functions manages for its builds"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")"
  }
}

# Our own source bucket, read-only, in case a build reads the zip where Terraform put it.
resource "google_storage_bucket_iam_member" "builder_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.system["builder"].member
}

# Pub/Sub mints the push's OIDC token as the push account. (Needed for projects created before
# April 2021; harmless after.)
resource "google_service_account_iam_member" "pubsub_push_token" {
  service_account_id = google_service_account.system["pubsub-push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
