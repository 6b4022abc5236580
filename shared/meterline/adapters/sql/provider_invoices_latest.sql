-- What the payment provider last said about each of our invoices: its newest observation, from
-- a webhook or from a pull (`meterline report reconciliation --refresh-provider`). The same
-- observation recorded twice (a redelivered event, a pull repeated) carries the same content,
-- so any copy of it is exact; the tie-break only makes the choice deterministic.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY invoice_id
      ORDER BY observed_at DESC, source DESC, provider_invoice_id
    ) AS row_rank
  FROM {provider_invoices}
)
WHERE row_rank = 1
