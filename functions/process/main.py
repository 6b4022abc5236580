"""Cloud Function `process` (Pub/Sub CloudEvent): dedup, then stream into BigQuery. Logic: meterline.services.process."""

import functions_framework

from meterline.entrypoints.http import error_response
from meterline.entrypoints.pubsub import handle_cloud_event
from meterline.runtime import process_runtime

# Raising gets the message delivered again. `handle_cloud_event` logs the failure as one JSON
# line first; this handler then answers 500 without a second one (Flask's own would print a
# plain-text traceback), and answers the framework's errors (not a CloudEvent: 400; a GET:
# 405) as JSON.
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.cloud_event
def process(cloud_event):
    handle_cloud_event(cloud_event, process_runtime())
