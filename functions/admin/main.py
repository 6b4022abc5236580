"""Cloud Function `admin` (HTTP): Lago's catalog API (metrics, plans, customers, subscriptions). Logic: meterline.admin."""

import functions_framework

from meterline.admin_http import admin_handler
from meterline.http import guarded


@functions_framework.http
def admin(request):
    return guarded(admin_handler, request)
