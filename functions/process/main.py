"""Cloud Function `process` (Pub/Sub CloudEvent): dedup, then stream into BigQuery. Logic: meterline.services.process."""

import functions_framework

from meterline.entrypoints.pubsub import handle_cloud_event


@functions_framework.cloud_event
def process(cloud_event):
    handle_cloud_event(cloud_event)
