# The billing run: Cloud Scheduler POSTs to `bill` with an OIDC token of its own service
# account, whose audience is the function's URL. Cloud Run checks the token; only that account
# has run.invoker on bill (iam.tf), and bill accepts internal traffic only (functions.tf).
# Runs are idempotent: a retry, or two overlapping runs, bill nothing twice.

resource "google_cloud_scheduler_job" "bill" {
  name             = "${var.name_prefix}-bill"
  region           = var.region
  description      = "Meterline billing run (functions/bill)"
  schedule         = var.billing_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.sizes["bill"].timeout_seconds + 60}s"

  retry_config {
    # bill answers 200 even when some subscriptions failed (the next run retries them); a
    # 5xx or a timeout is retried once, five minutes later.
    retry_count          = 1
    min_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.this["bill"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.system["scheduler"].email
      audience              = google_cloudfunctions2_function.this["bill"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}
