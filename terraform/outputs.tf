output "base_url" {
  description = "The one base URL of Lago's API (a Lago client's api_url): every path goes to the function that serves it (lb.tf)."
  value       = "https://${var.domain}"
}

output "ip_address" {
  description = "The front door's address: point the domain's DNS A record here (the certificate is issued once it resolves)."
  value       = google_compute_global_address.front_door.address
}

output "stripe_webhook_url" {
  description = "Register this as the Stripe webhook endpoint (docs/deploy.md)."
  value       = "https://${var.domain}/api/v1/stripe_webhook"
}

output "function_urls" {
  description = "Each function's own URL (Cloud Run). The public ones refuse the internet (ingress: internal and load balancer); bill's is what Cloud Scheduler calls."
  value       = { for name, fn in google_cloudfunctions2_function.this : name => fn.service_config[0].uri }
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
