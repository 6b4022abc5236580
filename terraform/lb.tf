# The front door: one HTTPS address for every Lago path. A global external Application Load
# Balancer (EXTERNAL_MANAGED) with a Google-managed certificate for var.domain, a serverless
# network endpoint group and a backend service per public function, a URL map that sends each
# path to the function that serves it, and a Cloud Armor policy on every backend service.
# The public functions accept internal and load-balancer traffic only (functions.tf), so this
# is the only way in from the internet; bill and process stay private (no route here).

locals {
  # The functions the internet reaches, through this load balancer.
  public_functions = { for name, spec in local.functions : name => spec if spec.trigger == "http" }

  # The route table of shared/meterline/routes.py (its public routes, in its order; the first
  # match wins). tests/terraform/test_front_door.py holds the two equal: a route added there
  # and not here fails the tests. `*` is one path segment, a final `**` the rest of the path.
  routes = [
    { template = "/api/v1/events", function = "ingest" },
    { template = "/api/v1/events/**", function = "ingest" },
    { template = "/api/v1/customers/*/current_usage", function = "portal" },
    { template = "/api/v1/customers/*/portal_url", function = "portal" },
    { template = "/api/v1/customers/*/checkout_url", function = "portal" },
    { template = "/portal/**", function = "portal" },
    { template = "/api/v1/stripe_webhook", function = "stripe_webhook" },
    { template = "/api/v1/stripe_webhook/**", function = "stripe_webhook" },
    { template = "/api/v1/**", function = "admin" },
  ]
  # A path no route matches (`/`, `/favicon.ico`) gets admin's JSON 404 (routes.DEFAULT_FUNCTION).
  default_function = "admin"
}

resource "google_compute_global_address" "front_door" {
  name       = "${var.name_prefix}-front-door"
  depends_on = [google_project_service.this]
}

resource "google_compute_managed_ssl_certificate" "front_door" {
  # The domain in the name: a new domain is a new certificate, provisioned before the old one
  # is detached (create_before_destroy), so HTTPS never goes without one.
  name = "${var.name_prefix}-${substr(sha256(var.domain), 0, 8)}"
  managed {
    domains = [var.domain]
  }
  lifecycle {
    create_before_destroy = true
  }
  depends_on = [google_project_service.this]
}

# One serverless NEG per public function: a 2nd gen function is the Cloud Run service of the same name.
resource "google_compute_region_network_endpoint_group" "function" {
  for_each              = local.public_functions
  name                  = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloudfunctions2_function.this[each.key].name
  }
}

resource "google_compute_backend_service" "function" {
  for_each              = local.public_functions
  name                  = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = google_compute_security_policy.front_door.id
  # No health check, port or timeout: a serverless NEG takes none (the function's own timeout
  # bounds a request).
  backend {
    group = google_compute_region_network_endpoint_group.function[each.key].id
  }
  log_config {
    enable      = true
    sample_rate = var.front_door.log_sample_rate
  }
}

resource "google_compute_url_map" "front_door" {
  name            = "${var.name_prefix}-front-door"
  default_service = google_compute_backend_service.function[local.default_function].id

  host_rule {
    hosts        = [var.domain]
    path_matcher = "lago"
  }

  path_matcher {
    name            = "lago"
    default_service = google_compute_backend_service.function[local.default_function].id
    # route_rules, not path_rules: a path rule's `*` may only end a path, and
    # /api/v1/customers/{id}/current_usage has its wildcard in the middle. Priorities follow
    # the table's order (first match wins).
    dynamic "route_rules" {
      for_each = local.routes
      content {
        priority = route_rules.key + 1
        service  = google_compute_backend_service.function[route_rules.value.function].id
        match_rules {
          path_template_match = route_rules.value.template
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = alltrue([for route in local.routes : contains(keys(local.public_functions), route.function)])
      error_message = "Every route of local.routes must lead to a public (trigger = \"http\") function."
    }
  }
}

# TLS 1.2 and up, modern ciphers only: every Lago client and Stripe speak it.
resource "google_compute_ssl_policy" "front_door" {
  name            = "${var.name_prefix}-front-door"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
  depends_on      = [google_project_service.this]
}

resource "google_compute_target_https_proxy" "front_door" {
  name             = "${var.name_prefix}-front-door"
  url_map          = google_compute_url_map.front_door.id
  ssl_certificates = [google_compute_managed_ssl_certificate.front_door.id]
  ssl_policy       = google_compute_ssl_policy.front_door.id
}

resource "google_compute_global_forwarding_rule" "https" {
  name                  = "${var.name_prefix}-https"
  target                = google_compute_target_https_proxy.front_door.id
  ip_address            = google_compute_global_address.front_door.id
  port_range            = "443"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# Port 80 answers a redirect to HTTPS and nothing else (no request reaches a function over HTTP).
resource "google_compute_url_map" "http_redirect" {
  count = var.front_door.http_redirect ? 1 : 0
  name  = "${var.name_prefix}-http-redirect"
  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "http_redirect" {
  count   = var.front_door.http_redirect ? 1 : 0
  name    = "${var.name_prefix}-http-redirect"
  url_map = google_compute_url_map.http_redirect[0].id
}

resource "google_compute_global_forwarding_rule" "http_redirect" {
  count                 = var.front_door.http_redirect ? 1 : 0
  name                  = "${var.name_prefix}-http"
  target                = google_compute_target_http_proxy.http_redirect[0].id
  ip_address            = google_compute_global_address.front_door.id
  port_range            = "80"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# Cloud Armor, evaluated at Google's edge before a function is invoked (or billed). Lowest
# priority number first; the first rule that matches decides.
resource "google_compute_security_policy" "front_door" {
  name        = "${var.name_prefix}-front-door"
  description = "Meterline: per-IP rate limit and request size in front of the public functions"
  type        = "CLOUD_ARMOR"

  # A declared body above the limit is refused at the edge. Cloud Armor's deny takes 403, 404,
  # 429 or 502 only (no 413); a chunked body, which declares no length, is still held to the
  # same limit by the function itself (413 in Lago's shape, entrypoints/http.py read_body).
  rule {
    action      = "deny(403)"
    priority    = 100
    description = "request body larger than max_body_bytes"
    match {
      expr {
        expression = "has(request.headers['content-length']) && int(request.headers['content-length']) > ${var.front_door.max_body_bytes}"
      }
    }
  }

  # Log4j's lookup strings (CVE-2021-44228) have no business in a JSON API.
  rule {
    action      = "deny(403)"
    priority    = 200
    description = "Log4j JNDI lookups (CVE-2021-44228)"
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('cve-canary')"
      }
    }
  }

  # Per client IP: past rate_limit_count requests in rate_limit_interval_sec, 429 until the
  # rate falls back under the threshold. A gateway sending batches of 100 events at 100
  # requests a second stays far below the default.
  rule {
    action      = "throttle"
    priority    = 1000
    description = "per-IP rate limit"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.front_door.rate_limit_count
        interval_sec = var.front_door.rate_limit_interval_sec
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "default: allow (each function authenticates every request)"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }

  depends_on = [google_project_service.this]
}
