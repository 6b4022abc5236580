output "function_urls" {
  description = "Each function's URL (Cloud Run)."
  value       = { for name, fn in google_cloudfunctions2_function.this : name => fn.service_config[0].uri }
}

output "ingest_url" {
  description = "Point the LLM gateway's Lago client here: POST <url>/api/v1/events and /api/v1/events/batch."
  value       = google_cloudfunctions2_function.this["ingest"].service_config[0].uri
}

output "admin_url" {
  description = "Lago's admin API (billable metrics, plans, customers, subscriptions, invoices)."
  value       = google_cloudfunctions2_function.this["admin"].service_config[0].uri
}

output "stripe_webhook_url" {
  description = "Register this as the Stripe webhook endpoint (docs/deploy.md)."
  value       = google_cloudfunctions2_function.this["stripe_webhook"].service_config[0].uri
}

output "portal_url" {
  description = "The customer portal (signed links)."
  value       = google_cloudfunctions2_function.this["portal"].service_config[0].uri
}

output "secrets" {
  description = "Secret Manager secrets whose values docs/deploy.md adds with `gcloud secrets versions add`."
  value       = { for name, secret in google_secret_manager_secret.this : name => secret.secret_id }
}

output "dead_letter_subscription" {
  description = "Where `meterline dead-letters` lists and replays dead letters."
  value       = google_pubsub_subscription.dead_letter.name
}

output "bigquery_dataset" {
  description = "The dataset of the events and finance tables."
  value       = google_bigquery_dataset.this.dataset_id
}

output "service_accounts" {
  description = "Each function's service account."
  value       = { for name, sa in google_service_account.function : name => sa.email }
}
