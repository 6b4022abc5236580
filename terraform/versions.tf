terraform {
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      # 5.8 retries Firestore field and index creation on 409 contention; 6.x is tested against.
      source  = "hashicorp/google"
      version = ">= 5.8.0, < 8.0.0"
    }
  }
}

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = var.labels
}
