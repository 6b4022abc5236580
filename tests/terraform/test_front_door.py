"""The front door (terraform/lb.tf) held to the route table it is made from
(shared/meterline/routes.py), and the load balancer, Cloud Armor, ingress and invoker grants
checked offline with python-hcl2. What only a real project shows (the certificate issued, the
URL map accepted, Cloud Armor's expressions parsed) is listed in docs/deploy.md."""

from __future__ import annotations

import re

import pytest

from infra import package
from meterline import routes
from meterline.config import Settings
from tests.harness.terraform import TF_DIR, local, one, optional_defaults, resource, resources, variable

LB = "${google_compute_backend_service.function[route_rules.value.function].id}"


def public_functions() -> set[str]:
    return {name for name, spec in local("functions").items() if spec["trigger"] == "http"}


# -- the URL map is the route table ----------------------------------------------------------


def test_url_map_routes_are_the_route_tables_public_routes_in_order():
    table = [{"template": r.pattern, "function": r.function} for r in routes.ROUTES if r.public]
    assert local("routes") == table, "terraform/lb.tf local.routes must be meterline.routes.ROUTES' public routes, in order"
    assert local("default_function") == routes.DEFAULT_FUNCTION
    # Public in the table = reached over HTTP in Terraform; a private route's function is not public.
    assert {r.function for r in routes.ROUTES if r.public} == public_functions()
    assert not {r.function for r in routes.ROUTES if not r.public} & public_functions()
    assert set(routes.functions()) <= set(package.function_names())
    assert local("public_functions") == '${{for name, spec in local.functions : name => spec if spec.trigger == "http"}}'


def test_url_map_has_one_route_rule_per_route_with_the_tables_priority():
    url_map = resource("google_compute_url_map", "front_door")
    assert url_map["default_service"] == '${google_compute_backend_service.function[local.default_function].id}'
    assert one(url_map, "host_rule") == {"hosts": ["${var.domain}"], "path_matcher": "lago", "__is_block__": True}
    matcher = one(url_map, "path_matcher")
    assert matcher["name"] == "lago" and matcher["default_service"] == url_map["default_service"]
    assert "path_rule" not in matcher, "a path rule's '*' may only end a path: the templates need route_rules"
    dynamic = one(matcher, "dynamic")["route_rules"]
    assert dynamic["for_each"] == "${local.routes}"
    content = one(dynamic, "content")
    assert content["priority"] == "${route_rules.key + 1}", "the first route of the table must win"
    assert content["service"] == LB
    assert one(content, "match_rules") == {"path_template_match": "${route_rules.value.template}", "__is_block__": True}


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.pattern)
def test_every_pattern_is_a_valid_url_map_path_template(route):
    # The URL map's rules for path_template_match: starts with '/', 1 to 255 characters, at
    # most 5 operators; `*` is a whole segment, `**` only last.
    pattern = route.pattern
    assert pattern.startswith("/") and 1 <= len(pattern) <= 255
    segments = pattern[1:].split("/")
    assert sum(s in ("*", "**") for s in segments) <= 5
    assert "**" not in segments[:-1]
    assert all(s in ("*", "**") or ("*" not in s and s and "{" not in s) for s in segments)


# What a Lago client sends (and Stripe, and a browser on the portal), and which function must
# answer it behind the load balancer.
LAGO_PATHS = [
    ("/api/v1/events", "ingest"),
    ("/api/v1/events/batch", "ingest"),
    ("/api/v1/events/tx_1", "ingest"),
    ("/api/v1/events/estimate_fees", "ingest"),
    ("/api/v1/customers/acme/current_usage", "portal"),
    ("/api/v1/customers/acme/portal_url", "portal"),
    ("/portal/customers/acme", "portal"),
    ("/portal/usage/acme", "portal"),
    ("/portal/static/portal.js", "portal"),
    ("/api/v1/stripe_webhook", "stripe_webhook"),
    ("/api/v1/billable_metrics", "admin"),
    ("/api/v1/billable_metrics/llm_tokens", "admin"),
    ("/api/v1/plans/pro", "admin"),
    ("/api/v1/customers", "admin"),
    ("/api/v1/customers/acme", "admin"),
    ("/api/v1/customers/current_usage", "admin"),  # a customer named current_usage
    ("/api/v1/subscriptions/sub_1", "admin"),
    ("/api/v1/invoices", "admin"),
    ("/api/v1/invoices/inv_1", "admin"),
    ("/api/v1/customers/acme/current_usage/extra", "admin"),  # not the portal's: admin's 404
    ("/api/v1/billing_runs", "admin"),  # bill is private: admin's 404, never bill
    ("/api/v1/reports/revenue", "admin"),  # so are the reports (BigQuery's views on Google Cloud)
    ("/api/v1/nothing", "admin"),
]


@pytest.mark.parametrize(("path", "function"), LAGO_PATHS)
def test_the_load_balancer_sends_each_lago_path_to_the_function_that_serves_it(path, function):
    found = routes.function_for(path, public_only=True) or local("default_function")
    assert found == function


def test_locally_bill_is_routed_too():
    assert routes.function_for("/api/v1/billing_runs") == "bill"
    assert routes.function_for("/api/v1/billing_runs", public_only=True) == "admin"
    assert routes.function_for("/api/v1/reports/revenue") == "bill"
    assert routes.function_for("/healthz") is None


def test_template_regex_refuses_what_a_url_map_refuses():
    for bad in ("api/v1", "/api/**/x", "/api/v*", "/api//x"):
        with pytest.raises(ValueError):
            routes.template_regex(bad)
    assert routes.template_regex("/a/*/b").fullmatch("/a/x/b")
    assert not routes.template_regex("/a/*/b").fullmatch("/a/x/y/b")
    assert not routes.template_regex("/a/*/b").fullmatch("/a//b")
    assert routes.template_regex("/a/**").fullmatch("/a/")
    assert routes.template_regex("/a/**").fullmatch("/a/x/y")
    assert not routes.template_regex("/a/**").fullmatch("/a")


# -- the load balancer ---------------------------------------------------------------------------


def test_one_https_front_door_with_a_managed_certificate_for_the_domain():
    assert "default" not in variable("domain"), "the domain has no default: the certificate is issued for it"
    cert = resource("google_compute_managed_ssl_certificate", "front_door")
    assert one(cert, "managed")["domains"] == ["${var.domain}"]
    assert "var.domain" in cert["name"], "a new domain is a new certificate (create_before_destroy needs a new name)"
    assert one(cert, "lifecycle")["create_before_destroy"] is True

    proxy = resource("google_compute_target_https_proxy", "front_door")
    assert proxy["url_map"] == "${google_compute_url_map.front_door.id}"
    assert proxy["ssl_certificates"] == ["${google_compute_managed_ssl_certificate.front_door.id}"]
    policy = resource("google_compute_ssl_policy", "front_door")
    assert policy["min_tls_version"] == "TLS_1_2" and policy["profile"] in ("MODERN", "RESTRICTED")

    https = resource("google_compute_global_forwarding_rule", "https")
    assert https["target"] == "${google_compute_target_https_proxy.front_door.id}"
    assert https["port_range"] == "443" and https["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    assert https["ip_address"] == "${google_compute_global_address.front_door.id}"
    # Port 80 only redirects: its URL map has a redirect and no service.
    redirect = resource("google_compute_url_map", "http_redirect")
    assert one(redirect, "default_url_redirect")["https_redirect"] is True
    assert "default_service" not in redirect and "path_matcher" not in redirect
    http = resource("google_compute_global_forwarding_rule", "http_redirect")
    assert http["port_range"] == "80" and http["ip_address"] == https["ip_address"]


def test_each_public_function_is_a_serverless_backend_with_the_cloud_armor_policy():
    neg = resource("google_compute_region_network_endpoint_group", "function")
    assert neg["for_each"] == "${local.public_functions}" and neg["network_endpoint_type"] == "SERVERLESS"
    assert one(neg, "cloud_run")["service"] == "${google_cloudfunctions2_function.this[each.key].name}"
    backend = resource("google_compute_backend_service", "function")
    assert backend["for_each"] == "${local.public_functions}"
    assert backend["load_balancing_scheme"] == "EXTERNAL_MANAGED", "route rules with path templates need the global external ALB"
    assert backend["security_policy"] == "${google_compute_security_policy.front_door.id}"
    assert one(backend, "backend")["group"] == "${google_compute_region_network_endpoint_group.function[each.key].id}"
    assert "health_checks" not in backend, "a serverless NEG takes no health check"
    # Nothing else is a backend: no route can reach bill or process.
    assert [key for key in resources() if key[0] == "google_compute_backend_service"] == [("google_compute_backend_service", "function")]


def _rules() -> dict[int, dict]:
    return {int(rule["priority"]): rule for rule in resource("google_compute_security_policy", "front_door")["rule"]}


def test_cloud_armor_limits_each_ip_and_refuses_oversized_bodies():
    rules = _rules()
    throttles = [r for r in rules.values() if "rate_limit_options" in r]
    assert len(throttles) == 1
    limit = throttles[0]
    assert limit["action"] in ("throttle", "rate_based_ban")
    options = one(limit, "rate_limit_options")
    assert options["enforce_on_key"] == "IP" and options["exceed_action"] == "deny(429)"
    assert one(options, "rate_limit_threshold") == {
        "count": "${var.front_door.rate_limit_count}",
        "interval_sec": "${var.front_door.rate_limit_interval_sec}", "__is_block__": True,
    }
    assert one(one(limit, "match"), "config")["src_ip_ranges"] == ["*"], "every client IP is limited"

    size = [r for r in rules.values() if "content-length" in str(r)]
    assert len(size) == 1 and size[0]["action"].startswith("deny(")
    expression = one(one(size[0], "match"), "expr")["expression"]
    assert "int(request.headers['content-length']) > ${var.front_door.max_body_bytes}" in expression
    assert "has(request.headers['content-length'])" in expression, "a request without the header must not fail the rule"
    # The size rule is evaluated before the rate limit; the last rule allows the rest.
    assert min(rules) == int(size[0]["priority"]) < int(limit["priority"])
    assert rules[2147483647]["action"] == "allow"

    defaults = optional_defaults(variable("front_door")["type"])
    assert int(defaults["max_body_bytes"]) == Settings.model_fields["max_body_bytes"].default, "ingest's own limit"
    assert int(defaults["rate_limit_interval_sec"]) in (10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600)
    assert int(defaults["rate_limit_count"]) >= 600, "a gateway's batches must not be throttled"


# -- ingress and who may invoke --------------------------------------------------------------------


def test_public_functions_take_traffic_only_through_the_load_balancer():
    service = one(resource("google_cloudfunctions2_function", "this"), "service_config")
    assert service["ingress_settings"] == '${each.value.trigger == "http" ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_INTERNAL_ONLY"}'
    assert "ALLOW_ALL" not in (TF_DIR / "functions.tf").read_text()


def test_all_users_may_invoke_only_the_functions_behind_the_load_balancer():
    # checkov's public-access check does not cover google_cloud_run_v2_service_iam_member:
    # this is the check of the allUsers grants.
    members = local("invoker_members")
    public = {trigger for trigger, member in members.items() if member in ("allUsers", "allAuthenticatedUsers")}
    assert public == {"http"}
    assert "allUsers" not in re.sub(r"#.*", "", (TF_DIR / "iam.tf").read_text()).replace('http      = "allUsers"', "")
    invoker = resource("google_cloud_run_v2_service_iam_member", "invoker")
    assert invoker["for_each"] == "${local.functions}"
    # Every function reached by allUsers has a backend behind Cloud Armor, and nothing else does.
    assert resource("google_compute_backend_service", "function")["for_each"] == "${local.public_functions}"


def test_a_re_created_function_gets_its_invoker_back_in_the_same_apply():
    invoker = resource("google_cloud_run_v2_service_iam_member", "invoker")
    lifecycle = one(invoker, "lifecycle")
    assert lifecycle["replace_triggered_by"] == ["${google_cloudfunctions2_function.this[each.key].id}"]
    # The old per-index addresses move to the per-function ones (no grant is destroyed on upgrade).
    text = (TF_DIR / "iam.tf").read_text()
    for name in package.function_names():
        assert f'invoker["{name}/0"]' in text and f'invoker["{name}"]' in text


def test_streaming_writers_can_read_the_dataset_and_the_provider_has_the_build_account():
    grants = resource("google_bigquery_dataset_iam_member", "function")
    assert grants["for_each"] == "${local.dataset_grants}"
    assert grants["dataset_id"] == "${google_bigquery_dataset.this.dataset_id}"
    writers = {fn for fn, r in local("function_roles").items() if r["dataset"]}
    # Whoever streams rows (a dataEditor table grant) needs bigquery.datasets.get on the dataset.
    streaming = {fn for fn, r in local("function_roles").items() if "roles/bigquery.dataEditor" in r["tables"].values()}
    assert writers == streaming == {"process", "bill", "stripe_webhook"}
    assert {role for r in local("function_roles").values() for role in r["dataset"]} == {"roles/bigquery.metadataViewer"}

    versions = (TF_DIR / "versions.tf").read_text()
    low = re.search(r'(?<!_)version\s*=\s*">=\s*(\d+)\.(\d+)\.(\d+)', versions)
    assert low and tuple(map(int, low.groups())) >= (5, 27, 0), "build_config.service_account needs google >= 5.27.0"
    assert one(resource("google_cloudfunctions2_function", "this"), "build_config")["service_account"] == \
        '${google_service_account.system["builder"].id}'


def test_outputs_give_the_one_base_url():
    text = (TF_DIR / "outputs.tf").read_text()
    assert 'value       = "https://${var.domain}"' in text
    assert "ingest_url" not in text and "admin_url" not in text, "the functions' own URLs refuse the internet"
    assert "compute.googleapis.com" in local("services")
