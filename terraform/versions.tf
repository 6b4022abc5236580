terraform {
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      # 5.27 added build_config.service_account to google_cloudfunctions2_function (functions.tf
      # builds as our own builder account; an older provider rejects the argument). It also
      # has everything older that is used: Firestore retries on 409 contention (5.8), URL map
      # path_template_match, Cloud Armor rate limits. 6.x is tested against.
      source  = "hashicorp/google"
      version = ">= 5.27.0, < 8.0.0"
    }
  }
}

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = var.labels
}
