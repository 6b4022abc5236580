# One Cloud Function (2nd gen) per folder of functions/, deployed from the zip `make package` built.
#
# Adding a function: a line in `local.functions` (its entry point, how it is reached, the secrets
# it reads), a line in `local.function_sizes`, and its roles in iam.tf. tests/terraform checks
# the list against the folders, the entry points against main.py and the roles against a table.

locals {
  # What the code says about each function. `trigger`:
  #   http      public; the code authenticates (API keys, Stripe's signature, signed links)
  #   scheduler private; only Cloud Scheduler's service account may invoke it (scheduler.tf)
  #   pubsub    private; the events subscription pushes to it (pubsub.tf), and its entry point is
  #             a CloudEvent function: functions-framework turns the push body into a CloudEvent
  # `secrets` are config.py settings mounted from Secret Manager (secrets.tf).
  functions = {
    ingest         = { entry_point = "ingest", trigger = "http", secrets = [] }
    process        = { entry_point = "process", trigger = "pubsub", secrets = [] }
    admin          = { entry_point = "admin", trigger = "http", secrets = [] }
    bill           = { entry_point = "bill", trigger = "scheduler", secrets = ["stripe_api_key"] }
    stripe_webhook = { entry_point = "stripe_webhook", trigger = "http", secrets = ["stripe_webhook_secret"] }
    portal         = { entry_point = "portal", trigger = "http", secrets = ["portal_signing_key", "stripe_api_key"] }
  }

  # Sizing. Python serves `concurrency` requests per instance with as many gunicorn threads
  # (THREADS below); 1 vCPU is the least that allows concurrency above 1. min_instances = 0
  # everywhere: nothing runs, and nothing is billed but storage, while no event arrives.
  function_sizes = {
    # Each request validates and publishes (one Pub/Sub message per request); I/O-bound.
    ingest = { memory = "512Mi", cpu = "1", concurrency = 80, min_instances = 0, max_instances = 100, timeout_seconds = 60 }
    # One message (up to 100 events) per request: a Firestore transaction, a streaming insert.
    # The timeout bounds one attempt; the subscription's ack deadline matches it (pubsub.tf).
    process = { memory = "512Mi", cpu = "1", concurrency = 40, min_instances = 0, max_instances = 100, timeout_seconds = 120 }
    admin   = { memory = "512Mi", cpu = "1", concurrency = 40, min_instances = 0, max_instances = 10, timeout_seconds = 60 }
    # One run at a time; it stops taking invoices after billing_time_budget_seconds (480 s), so
    # it answers within the 540 s here and the next scheduled run continues.
    bill           = { memory = "1Gi", cpu = "1", concurrency = 1, min_instances = 0, max_instances = 1, timeout_seconds = 540 }
    stripe_webhook = { memory = "512Mi", cpu = "1", concurrency = 20, min_instances = 0, max_instances = 10, timeout_seconds = 60 }
    portal         = { memory = "512Mi", cpu = "1", concurrency = 40, min_instances = 0, max_instances = 10, timeout_seconds = 60 }
  }
  sizes = {
    for name, size in local.function_sizes : name => merge(size, {
      for key, value in try(var.functions[name], {}) : key => value if value != null
    })
  }

  # Every setting in shared/meterline/config.py that a deployed function reads, on every
  # function (each reads one Settings object). Secrets are added per function below. Not set
  # here, on purpose: METERLINE_DATA_DIR (embedded only), the *_EMULATOR_HOST variables and
  # STRIPE_API_BASE (local servers only).
  settings_env = {
    METERLINE_BACKEND                          = "gcp"
    GOOGLE_CLOUD_PROJECT                       = var.project_id
    METERLINE_EVENTS_TOPIC                     = google_pubsub_topic.events.name
    METERLINE_DEAD_LETTER_TOPIC                = google_pubsub_topic.dead_letter.name
    METERLINE_DEAD_LETTER_SUBSCRIPTION         = google_pubsub_subscription.dead_letter.name
    METERLINE_BIGQUERY_DATASET                 = google_bigquery_dataset.this.dataset_id
    METERLINE_BIGQUERY_LOCATION                = google_bigquery_dataset.this.location
    METERLINE_FIRESTORE_DATABASE               = google_firestore_database.this.name
    METERLINE_MAX_BODY_BYTES                   = tostring(var.settings.max_body_bytes)
    METERLINE_PUBLISH_TIMEOUT_SECONDS          = tostring(var.settings.publish_timeout_seconds)
    METERLINE_PUBLISH_LINGER_SECONDS           = tostring(var.settings.publish_linger_seconds)
    METERLINE_API_KEY_CACHE_SECONDS            = tostring(var.settings.api_key_cache_seconds)
    METERLINE_MAX_DELIVERY_ATTEMPTS            = tostring(var.delivery.max_delivery_attempts)
    METERLINE_MAX_MESSAGE_AGE_SECONDS          = tostring(var.settings.max_message_age_seconds)
    METERLINE_CLAIM_TAKEOVER_SECONDS           = tostring(var.settings.claim_takeover_seconds)
    METERLINE_DEDUP_RETENTION_DAYS             = tostring(var.settings.dedup_retention_days)
    METERLINE_INVOICE_GRACE_SECONDS            = tostring(var.settings.invoice_grace_seconds)
    METERLINE_BILLING_TIME_BUDGET_SECONDS      = tostring(var.settings.billing_time_budget_seconds)
    METERLINE_STRIPE_WEBHOOK_TOLERANCE_SECONDS = tostring(var.settings.stripe_webhook_tolerance_seconds)
    METERLINE_PORTAL_LINK_SECONDS              = tostring(var.settings.portal_link_seconds)
    # Portal links point at the front door unless another base URL is set.
    METERLINE_PORTAL_BASE_URL = coalesce(var.settings.portal_base_url, "https://${var.domain}")
    # Where Stripe's Checkout page returns a customer who saved a card ("": checkout_url is 503).
    METERLINE_STRIPE_CHECKOUT_SUCCESS_URL = var.settings.stripe_checkout_success_url
    # Set by the platform anyway; set here too so that plans show no drift.
    LOG_EXECUTION_ID = "true"
  }

  build_dir = coalesce(var.build_dir, "${path.module}/../build")
  # Written by `make package`: {function: {zip, sha256, entry_point, signature_type}}.
  packages = jsondecode(file("${local.build_dir}/packages.json"))
}

resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:access logs of a bucket that only Terraform and Cloud Build read would log our own deploys; Cloud Audit Logs record them
  name                        = "${var.project_id}-${var.name_prefix}-functions"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  lifecycle_rule {
    # Objects are named by their content: a noncurrent version is an overwritten identical zip.
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.this]
}

resource "google_storage_bucket_object" "source" {
  for_each = local.functions
  # The zip's name carries its content hash: a code or dependency change is a new object, and
  # the function below redeploys; an unchanged function keeps its object and is left alone.
  name   = "functions/${try(local.packages[each.key].zip, "missing")}"
  bucket = google_storage_bucket.sources.name
  source = "${local.build_dir}/${try(local.packages[each.key].zip, "missing")}"

  lifecycle {
    precondition {
      condition     = can(local.packages[each.key].zip) && try(local.packages[each.key].entry_point, "") == each.value.entry_point
      error_message = "build/packages.json has no package for ${each.key} with entry point ${each.value.entry_point}: run `make package`."
    }
  }
}

resource "google_cloudfunctions2_function" "this" {
  for_each    = local.functions
  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  location    = var.region
  description = "Meterline ${each.key} (functions/${each.key}/main.py)"

  build_config {
    runtime         = var.python_runtime
    entry_point     = each.value.entry_point
    service_account = google_service_account.system["builder"].id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = local.sizes[each.key].memory
    available_cpu                    = local.sizes[each.key].cpu
    max_instance_request_concurrency = local.sizes[each.key].concurrency
    min_instance_count               = local.sizes[each.key].min_instances
    max_instance_count               = local.sizes[each.key].max_instances
    timeout_seconds                  = local.sizes[each.key].timeout_seconds
    service_account_email            = google_service_account.function[each.key].email
    # The public functions take requests only through the load balancer (lb.tf), where Cloud
    # Armor rate-limits them; their run.app URLs refuse the internet. Pub/Sub push and Cloud
    # Scheduler count as internal traffic: the private functions accept nothing else.
    ingress_settings               = each.value.trigger == "http" ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    environment_variables = merge(local.settings_env, {
      THREADS = tostring(local.sizes[each.key].concurrency) # gunicorn threads = requests in flight
    })
    dynamic "secret_environment_variables" {
      for_each = toset(each.value.secrets)
      content {
        key        = "METERLINE_${upper(secret_environment_variables.value)}"
        project_id = var.project_id
        secret     = google_secret_manager_secret.this[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_service.this,
    google_project_iam_member.builder,
    google_project_iam_member.builder_storage,
    google_storage_bucket_iam_member.builder_sources,
    google_secret_manager_secret_iam_member.function,
  ]
}
