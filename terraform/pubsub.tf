# Events: ingest publishes one message per request to the events topic; a push subscription
# delivers each message to `process`, which acknowledges by answering 2xx and asks for a retry
# by failing. After `delivery.max_delivery_attempts` failed attempts Pub/Sub moves the message
# to the dead-letter topic, where `meterline dead-letters` lists and replays it.
#
# Why a subscription of our own rather than the function's event trigger: Eventarc creates and
# owns the trigger's subscription, and Terraform cannot give it a dead-letter policy nor a
# retry policy. Pushing to the function's URL with an OIDC token is what that trigger does too.
#
# The retry and dead-letter choice (docs/deploy.md, "Riding out an outage"): exponential
# backoff from 10 s to 600 s, then every 600 s; 100 attempts take about 15.7 hours, so a
# BigQuery or Firestore outage of hours dead-letters nothing; a longer one dead-letters, and
# a replay after it loses nothing (messages are kept 7 days on either topic's subscription).

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key (CMEK) is the customer's choice and not required here
  name       = var.events_topic
  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key (CMEK) is the customer's choice and not required here
  name       = var.dead_letter_topic
  depends_on = [google_project_service.this]
}

# The dead letters, pulled by `meterline dead-letters` with the operator's own credentials.
# It must exist before anything is dead-lettered: a topic without subscriptions drops messages.
resource "google_pubsub_subscription" "dead_letter" {
  name                       = var.dead_letter_subscription
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s" # 7 days, Pub/Sub's longest
  expiration_policy {
    ttl = "" # never expires, however long nothing is dead-lettered
  }
}

resource "google_pubsub_subscription" "process" {
  name  = "${var.name_prefix}-process"
  topic = google_pubsub_topic.events.id
  # How long Pub/Sub waits for process's answer: its whole timeout.
  ack_deadline_seconds       = local.sizes["process"].timeout_seconds
  message_retention_duration = var.delivery.message_retention

  push_config {
    # To /projects/P/topics/T, so that the CloudEvent functions-framework builds from the push
    # carries its source (the function serves any path).
    push_endpoint = "${google_cloudfunctions2_function.this["process"].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.events.name}"
    oidc_token {
      service_account_email = google_service_account.system["pubsub-push"].email
      audience              = google_cloudfunctions2_function.this["process"].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = var.delivery.minimum_backoff
    maximum_backoff = var.delivery.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.delivery.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_cloud_run_v2_service_iam_member.invoker,
  ]
}

# Pub/Sub's service agent moves dead letters: it publishes to the dead-letter topic and
# acknowledges on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.process.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
