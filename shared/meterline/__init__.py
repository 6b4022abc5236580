"""Meterline: exact metering and usage-based billing that runs inside your own cloud."""
