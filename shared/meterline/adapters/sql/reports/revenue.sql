-- revenue: the invoices issued in the month (by `issuing_date`, the finance tables' partitioning
-- column), drafts and voided invoices left out, by customer, plan and currency; amounts in cents.
-- base_fee: the plan's subscription fee; recurring_charges: the charges of recurring metrics
-- (seats, storage: the line's `recurring` flag); usage: every other charge; minimum_commitment:
-- the true-up to the plan's minimum; late_usage: usage that arrived after its period was
-- invoiced. A line written before the flag existed (NULL) counts as usage.
-- Credits and credit notes are 0 until wallets and credit notes exist.
-- Every version of an invoice lands in its issuing date's partition, so ranking the versions
-- after the month filter is exact (the rule of invoices_latest and invoice_lines_latest).
WITH month_invoices AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      invoice_id, version, status,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE(@month_start) AND issuing_date < DATE(@month_end)
  )
  WHERE row_rank = 1 AND status NOT IN ('draft', 'voided')
),
month_lines AS (
  SELECT lines.* EXCEPT (row_rank)
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY invoice_id, version, line_ref ORDER BY recorded_at) AS row_rank
    FROM {invoice_lines}
    WHERE issuing_date >= DATE(@month_start) AND issuing_date < DATE(@month_end)
  ) AS lines
  JOIN month_invoices AS inv ON lines.invoice_id = inv.invoice_id AND lines.version = inv.version
  WHERE lines.row_rank = 1
)
SELECT
  FORMAT_DATE('%Y-%m', issuing_date) AS month,
  customer_external_id AS external_customer_id,
  plan_code,
  currency,
  COUNT(DISTINCT invoice_id) AS invoices,
  SUM(IF(kind = 'subscription', amount_cents, 0)) AS base_fee_cents,
  SUM(IF(kind = 'charge' AND COALESCE(recurring, FALSE), amount_cents, 0)) AS recurring_charges_cents,
  SUM(IF(kind = 'charge' AND NOT COALESCE(recurring, FALSE), amount_cents, 0)) AS usage_cents,
  SUM(IF(kind = 'true_up', amount_cents, 0)) AS minimum_commitment_cents,
  SUM(IF(kind = 'late_usage', amount_cents, 0)) AS late_usage_cents,
  0 AS credits_applied_cents,
  0 AS credit_notes_cents,
  SUM(amount_cents) AS total_amount_cents
FROM month_lines
GROUP BY month, external_customer_id, plan_code, currency
ORDER BY month, external_customer_id, plan_code, currency
