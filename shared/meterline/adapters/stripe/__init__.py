"""Stripe: the payment provider (`payments.StripePayments`) and its webhook events (`webhooks`).

Only these modules import the `stripe` package, and only when a Stripe key is configured
(runtime), so a function without Stripe never loads it.
"""
