# One Secret Manager secret per secret setting of shared/meterline/config.py (its SecretStr
# fields), mounted into the functions that read it as METERLINE_<NAME> (functions.tf).
# Terraform creates the secrets, never their values: a value given to Terraform would be kept
# in its state. docs/deploy.md adds each value with `gcloud secrets versions add`.
# There is no API-key pepper: keys are 32 random bytes stored as SHA-256 hashes (services/auth.py).

locals {
  secrets = {
    stripe_api_key        = "Stripe secret key (sk_live_... or sk_test_...), read by bill and portal (checkout_url)"
    stripe_webhook_secret = "Signing secret of the Stripe webhook endpoint (whsec_...), read by stripe_webhook"
    portal_signing_key    = "HMAC-SHA256 key (at least 32 characters) that signs portal links, read by portal"
  }
}

resource "google_secret_manager_secret" "this" {
  for_each  = local.secrets
  secret_id = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  annotations = {
    description = each.value
  }
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}
