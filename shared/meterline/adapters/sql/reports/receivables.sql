-- receivables: the invoices issued in the month, drafts and voided invoices left out, with the
-- Stripe status the webhooks recorded, the amount collected, and their state as of the month's
-- end (or now, for the current month): paid, overdue (due before that day) or open.
-- days_outstanding: from issue to payment for a paid invoice, else to that day.
-- Payments are read from the day before the month (an invoice is paid after it is issued; the
-- day covers the customer's time zone), so only those partitions are scanned.
WITH month_invoices AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE(@month_start) AND issuing_date < DATE(@month_end)
  )
  WHERE row_rank = 1 AND status NOT IN ('draft', 'voided')
),
-- Stripe announces one payment twice (invoice.paid and invoice.payment_succeeded), each with the
-- invoice's amount paid so far: the largest is what was collected, a sum would count it twice.
collected AS (
  SELECT invoice_id, MAX(IF(status = 'succeeded', amount_cents, 0)) AS collected_cents
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
as_of AS (
  SELECT DATE(LEAST(@month_end, CURRENT_TIMESTAMP())) AS day
)
SELECT
  inv.number AS invoice_number,
  inv.invoice_id,
  inv.customer_external_id AS external_customer_id,
  inv.subscription_external_id AS external_subscription_id,
  inv.issuing_date,
  inv.due_date,
  inv.status,
  inv.payment_status,
  inv.provider_invoice_id,
  inv.currency,
  inv.amount_cents AS total_amount_cents,
  COALESCE(c.collected_cents, 0) AS collected_cents,
  CASE
    WHEN inv.status = 'paid' OR inv.payment_status = 'succeeded' THEN 'paid'
    WHEN COALESCE(inv.due_date, inv.issuing_date) < as_of.day THEN 'overdue'
    ELSE 'open'
  END AS state,
  IF(inv.paid_at IS NOT NULL, DATE_DIFF(DATE(inv.paid_at), inv.issuing_date, DAY),
     DATE_DIFF(as_of.day, inv.issuing_date, DAY)) AS days_outstanding
FROM month_invoices AS inv
CROSS JOIN as_of
LEFT JOIN collected AS c ON c.invoice_id = inv.invoice_id
ORDER BY inv.issuing_date, inv.number, inv.invoice_id
