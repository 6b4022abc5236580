# The APIs every resource here needs. Left enabled on destroy: other things in the project may use them.

locals {
  services = [
    "artifactregistry.googleapis.com",     # the functions' images
    "bigquery.googleapis.com",             # events and finance tables
    "cloudbuild.googleapis.com",           # builds each function from its zip
    "cloudfunctions.googleapis.com",       # the functions (2nd gen)
    "cloudresourcemanager.googleapis.com", # project IAM bindings
    "cloudscheduler.googleapis.com",       # the billing run
    "compute.googleapis.com",              # the load balancer and Cloud Armor (lb.tf)
    "firestore.googleapis.com",            # dedup claims, keys, catalog, invoices
    "iam.googleapis.com",                  # service accounts
    "iamcredentials.googleapis.com",       # OIDC tokens for Pub/Sub push and the scheduler
    "logging.googleapis.com",              # the functions' JSON log lines
    "pubsub.googleapis.com",               # the events topic, its push subscription, dead letters
    "run.googleapis.com",                  # 2nd gen functions are Cloud Run services
    "secretmanager.googleapis.com",        # Stripe's keys, the portal signing key
    "storage.googleapis.com",              # the function bundles
  ]
}

resource "google_project_service" "this" {
  for_each           = toset(local.services)
  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Google's own agent that delivers push messages and moves dead letters.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
