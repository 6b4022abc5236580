# Inputs. Names of Google resources default to the names shared/meterline/config.py defaults to,
# so a function and the resource it talks to always agree (tests/terraform holds them equal).

variable "project_id" {
  description = "The Google Cloud project that holds everything (the customer's own: no usage event leaves it)."
  type        = string
}

variable "region" {
  description = "Region of the functions, the scheduler, the source bucket and (unless firestore_location says otherwise) Firestore."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of the functions', service accounts', secrets' and bucket's names."
  type        = string
  default     = "meterline"
  validation {
    # Service account ids are 6-30 characters: the prefix, a dash and "stripe-webhook" must fit.
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}$", var.name_prefix))
    error_message = "name_prefix: lowercase letters, digits and dashes, starting with a letter, at most 15 characters."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default     = { app = "meterline" }
}

variable "python_runtime" {
  description = "Cloud Functions runtime; the one the packages are tested with (tests/terraform/test_package.py runs the zips on this machine's Python)."
  type        = string
  default     = "python311"
}

variable "build_dir" {
  description = "Folder holding the zips and packages.json written by `make package`; null: ../build."
  type        = string
  default     = null
}

variable "functions" {
  description = "Per-function sizing overrides (ingest, process, admin, bill, stripe_webhook, portal); unset fields keep the defaults in functions.tf."
  type = map(object({
    memory          = optional(string)
    cpu             = optional(string)
    concurrency     = optional(number)
    min_instances   = optional(number)
    max_instances   = optional(number)
    timeout_seconds = optional(number)
  }))
  default  = {}
  nullable = false
}

variable "settings" {
  description = "Meterline's tunables (shared/meterline/config.py, same names and defaults); each becomes METERLINE_<NAME> on every function."
  type = object({
    max_body_bytes                   = optional(number, 1048576)
    publish_timeout_seconds          = optional(number, 30)
    publish_linger_seconds           = optional(number, 0.01)
    api_key_cache_seconds            = optional(number, 60)
    max_message_age_seconds          = optional(number, 172800)
    claim_takeover_seconds           = optional(number, 900)
    dedup_retention_days             = optional(number, 35)
    invoice_grace_seconds            = optional(number, 3600)
    billing_time_budget_seconds      = optional(number, 480)
    stripe_webhook_tolerance_seconds = optional(number, 300)
    portal_link_seconds              = optional(number, 3600)
    portal_base_url                  = optional(string, "")
    stripe_checkout_success_url      = optional(string, "")
  })
  default  = {}
  nullable = false
}

variable "events_topic" {
  description = "Pub/Sub topic that ingest publishes to (METERLINE_EVENTS_TOPIC)."
  type        = string
  default     = "meterline-events"
}

variable "dead_letter_topic" {
  description = "Pub/Sub topic for messages process cannot handle (METERLINE_DEAD_LETTER_TOPIC)."
  type        = string
  default     = "meterline-events-dead-letter"
}

variable "dead_letter_subscription" {
  description = "Pull subscription on the dead-letter topic that `meterline dead-letters` lists and replays (METERLINE_DEAD_LETTER_SUBSCRIPTION)."
  type        = string
  default     = "meterline-events-dead-letter"
}

variable "delivery" {
  description = "How the events subscription retries process before dead-lettering (docs/deploy.md has the arithmetic: 100 attempts ride out about 15.7 hours of outage)."
  type = object({
    max_delivery_attempts = optional(number, 100)
    minimum_backoff       = optional(string, "10s")
    maximum_backoff       = optional(string, "600s")
    message_retention     = optional(string, "604800s")
  })
  default  = {}
  nullable = false
  validation {
    condition     = var.delivery.max_delivery_attempts >= 5 && var.delivery.max_delivery_attempts <= 100
    error_message = "Pub/Sub dead-letters after 5 to 100 attempts."
  }
}

variable "bigquery_dataset" {
  description = "BigQuery dataset of the events, rejected events and finance tables (METERLINE_BIGQUERY_DATASET)."
  type        = string
  default     = "meterline"
}

variable "bigquery_location" {
  description = "BigQuery dataset location (METERLINE_BIGQUERY_LOCATION)."
  type        = string
  default     = "US"
}

variable "firestore_database" {
  description = "Firestore database id (METERLINE_FIRESTORE_DATABASE); \"(default)\" keeps the free tier."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location; null: the region. A regional location costs half of a multi-region one (nam5, eur3) per operation (docs/cost.md)."
  type        = string
  default     = null
}

variable "firestore_point_in_time_recovery" {
  description = "Keep 7 days of Firestore versions (invoices and the catalog can be read as of any minute); billed as storage."
  type        = bool
  default     = true
}

variable "billing_schedule" {
  description = "Cron (UTC) of the billing run. Every 6 hours: invoices are finalized within 6 h of their grace period; each run scans the last 3 periods' events, so hourly costs 6x the BigQuery queries (docs/cost.md)."
  type        = string
  default     = "5 */6 * * *"
}

variable "deletion_protection" {
  description = "Refuse to destroy the BigQuery tables and the Firestore database (their data is the billing record)."
  type        = bool
  default     = true
}

variable "domain" {
  description = "The domain of the front door (api.example.com): the load balancer's managed certificate is issued for it, once its DNS A record points at `terraform output ip_address`."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "domain: a fully qualified lowercase domain name, without scheme or path (api.example.com)."
  }
}

variable "front_door" {
  description = "The load balancer and its Cloud Armor policy (lb.tf)."
  type = object({
    # Per client IP: at most rate_limit_count requests in rate_limit_interval_sec, then 429.
    rate_limit_count        = optional(number, 6000)
    rate_limit_interval_sec = optional(number, 60)
    # Declared request bodies above this are refused at the edge (ingest's own limit by default).
    max_body_bytes  = optional(number, 1048576)
    http_redirect   = optional(bool, true) # port 80 answers a redirect to HTTPS
    log_sample_rate = optional(number, 1)  # share of requests in the load balancer's request log
  })
  default  = {}
  nullable = false
  validation {
    # The intervals Cloud Armor's rate limiting accepts.
    condition     = contains([10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600], var.front_door.rate_limit_interval_sec)
    error_message = "front_door.rate_limit_interval_sec: one of 10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600."
  }
  validation {
    condition     = var.front_door.rate_limit_count >= 1 && var.front_door.max_body_bytes >= 1
    error_message = "front_door.rate_limit_count and max_body_bytes must be positive."
  }
}
