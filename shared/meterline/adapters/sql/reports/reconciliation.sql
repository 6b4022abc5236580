-- reconciliation: one row per invoice issued in the month (drafts left out), our side against
-- Stripe's. Our total and the units the usage (charge) lines billed; Stripe's total and the
-- amount it collected, as its webhooks and the last pull (`meterline report reconciliation
-- --refresh-provider`) recorded them in `provider_invoices`; whether a payment failed and
-- whether the invoice is unpaid past its due date (Stripe's due date; an invoice charged
-- automatically is due when finalized); and the later invoices that billed late usage of this
-- one's lines. The units `events_deduped` holds now for each line (`warehouse_units`), and the
-- `late_usage` flag, need the catalog (the line's metric, aggregation and filters): this query
-- leaves them out (NULL, and no such flag), and `services/reconcile.py` adds them for the CLI.
-- Partitions: the month's invoices and their provider rows (by issuing date); later invoices
-- (late usage) and payments from the day before the month on (a payment follows its invoice).
WITH month_invoices AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE(@month_start) AND issuing_date < DATE(@month_end)
  )
  WHERE row_rank = 1 AND status != 'draft'
),
-- Every line of the month's invoices' current versions, once (a version recorded twice has
-- the same lines).
month_lines AS (
  SELECT DISTINCT l.invoice_id, l.line_ref, l.kind, l.units
  FROM {invoice_lines} AS l
  JOIN month_invoices AS inv ON l.invoice_id = inv.invoice_id AND l.version = inv.version
  WHERE l.issuing_date >= DATE(@month_start) AND l.issuing_date < DATE(@month_end)
),
billed AS (
  SELECT invoice_id, SUM(units) AS billed_units
  FROM month_lines
  WHERE kind = 'charge'
  GROUP BY invoice_id
),
later_invoices AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      invoice_id, version, number, status,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE(@month_start)
  )
  WHERE row_rank = 1 AND status != 'draft'
),
-- Late usage: a later invoice's late_usage line adds to one of this invoice's lines (late_for).
billed_late AS (
  SELECT ours.invoice_id, ARRAY_AGG(DISTINCT later.number) AS late_usage_invoices
  FROM month_lines AS ours
  JOIN {invoice_lines} AS l ON l.late_for = ours.line_ref
  JOIN later_invoices AS later ON l.invoice_id = later.invoice_id AND l.version = later.version
  WHERE l.issuing_date >= DATE(@month_start) AND l.kind = 'late_usage'
  GROUP BY ours.invoice_id
),
provider AS (
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
    WHERE issuing_date >= DATE(@month_start) AND issuing_date < DATE(@month_end)
  )
  WHERE row_rank = 1
),
-- The webhooks' payment events, once each: a succeeded payment (Stripe sends two events for
-- one payment, paid and payment_succeeded, with the same amount: the largest is taken, not
-- the sum) and whether any charge failed.
payment_events AS (
  SELECT
    invoice_id,
    MAX(IF(status = 'succeeded', amount_cents, NULL)) AS paid_cents,
    LOGICAL_OR(status = 'failed') AS any_failed
  FROM (
    SELECT
      invoice_id, status, amount_cents,
      ROW_NUMBER() OVER (PARTITION BY provider_event_id ORDER BY recorded_at) AS row_rank
    FROM {payments}
    WHERE recorded_at >= TIMESTAMP_SUB(@month_start, INTERVAL 1 DAY)
  )
  WHERE row_rank = 1
  GROUP BY invoice_id
),
figures AS (
  SELECT
    inv.*,
    b.billed_units,
    p.provider_invoice_id AS observed_provider_invoice_id,
    p.status AS provider_status,
    p.total_cents AS provider_total_cents,
    p.due_at AS provider_due_at,
    -- Stripe's amount paid as last observed; without an observation, the webhooks' payments.
    COALESCE(p.amount_paid_cents, pe.paid_cents, 0) AS collected_cents,
    COALESCE(pe.any_failed, FALSE) AS any_failed,
    bl.late_usage_invoices
  FROM month_invoices AS inv
  LEFT JOIN billed AS b ON b.invoice_id = inv.invoice_id
  LEFT JOIN provider AS p ON p.invoice_id = inv.invoice_id
  LEFT JOIN payment_events AS pe ON pe.invoice_id = inv.invoice_id
  LEFT JOIN billed_late AS bl ON bl.invoice_id = inv.invoice_id
)
SELECT
  number AS invoice_number,
  invoice_id,
  customer_external_id AS external_customer_id,
  subscription_external_id AS external_subscription_id,
  currency,
  status,
  COALESCE(provider_invoice_id, observed_provider_invoice_id) AS provider_invoice_id,
  provider_status,
  COALESCE(billed_units, 0) AS billed_units,
  -- Needs the catalog: NULL here, filled in by `meterline report reconciliation`.
  CAST(NULL AS NUMERIC) AS warehouse_units,
  amount_cents AS our_total_cents,
  provider_total_cents,
  collected_cents,
  -- A voided invoice is owed nothing, and a zero total is settled at once: neither is checked
  -- against Stripe. (late_usage is added by `meterline report reconciliation`.)
  ARRAY_CONCAT(
    IF(status != 'voided' AND amount_cents > 0 AND provider_total_cents IS NULL, ['provider_missing'], []),
    IF(status != 'voided' AND provider_total_cents != amount_cents, ['provider_total_differs'], []),
    IF(status != 'voided' AND any_failed AND collected_cents < amount_cents, ['payment_failed'], []),
    IF(status NOT IN ('voided', 'paid') AND collected_cents < amount_cents
       AND COALESCE(provider_due_at, finalized_at) < CURRENT_TIMESTAMP(), ['unpaid_overdue'], [])
  ) AS flags,
  late_usage_invoices
FROM figures
ORDER BY issuing_date, invoice_number, invoice_id
