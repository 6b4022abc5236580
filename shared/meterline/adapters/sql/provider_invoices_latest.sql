-- What the payment provider last said about each of our invoices: its newest observation, from
-- a webhook or from a pull (`meterline report reconciliation --refresh-provider`). Stripe's
-- event times have one-second resolution, and an invoice is often finalized and paid within
-- one second: among observations of the same second the furthest state wins (Stripe's
-- statuses only move forward: draft, open, uncollectible, then paid or void), then the larger
-- amount paid. The same observation recorded twice (a redelivered event, a pull repeated)
-- carries the same content, so any copy of it is exact.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY invoice_id
      ORDER BY observed_at DESC,
        CASE status WHEN 'paid' THEN 3 WHEN 'void' THEN 3 WHEN 'uncollectible' THEN 2 WHEN 'open' THEN 1 ELSE 0 END DESC,
        amount_paid_cents DESC, source DESC, provider_invoice_id
    ) AS row_rank
  FROM {provider_invoices}
)
WHERE row_rank = 1
