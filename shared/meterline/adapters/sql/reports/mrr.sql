-- mrr: monthly recurring revenue per customer and currency: the plan fees (`subscription`
-- lines) and the charges of recurring metrics (seats, storage: `charge` lines flagged
-- `recurring`) of the invoices issued in a month, drafts and voided invoices left out, against
-- the month before. A monthly plan's fee is invoiced once a month (in advance: the starting invoice,
-- then each period's invoice carries the next fee; in arrears: after its period), so the
-- invoices issued in a month carry one month of fees. A yearly plan's fee counts in full in the
-- month it is invoiced. Recurring charges are billed after their period, so the invoices issued
-- in a month carry the month before's seats. Usage, true-ups and late usage are not in it.
-- movement: new (nothing the month before), churn (nothing this month), expansion,
-- contraction, or unchanged. The month before is read too (its partitions only).
WITH month_invoices AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      invoice_id, version, status,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE_SUB(DATE(@month_start), INTERVAL 1 MONTH) AND issuing_date < DATE(@month_end)
  )
  WHERE row_rank = 1 AND status NOT IN ('draft', 'voided')
),
monthly AS (
  SELECT
    lines.customer_external_id,
    lines.currency,
    DATE_TRUNC(lines.issuing_date, MONTH) AS month,
    DATE_ADD(DATE_TRUNC(lines.issuing_date, MONTH), INTERVAL 1 MONTH) AS next_month,
    SUM(lines.amount_cents) AS mrr_cents
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY invoice_id, version, line_ref ORDER BY recorded_at) AS row_rank
    FROM {invoice_lines}
    WHERE issuing_date >= DATE_SUB(DATE(@month_start), INTERVAL 1 MONTH) AND issuing_date < DATE(@month_end)
      AND (kind = 'subscription' OR (kind = 'charge' AND COALESCE(recurring, FALSE)))
  ) AS lines
  JOIN month_invoices AS inv ON lines.invoice_id = inv.invoice_id AND lines.version = inv.version
  WHERE lines.row_rank = 1
  GROUP BY lines.customer_external_id, lines.currency, month, next_month
),
moves AS (
  SELECT
    COALESCE(cur.month, prev.next_month) AS month,
    COALESCE(cur.customer_external_id, prev.customer_external_id) AS external_customer_id,
    COALESCE(cur.currency, prev.currency) AS currency,
    COALESCE(cur.mrr_cents, 0) AS mrr_cents,
    COALESCE(prev.mrr_cents, 0) AS previous_mrr_cents
  FROM monthly AS cur
  FULL OUTER JOIN monthly AS prev
    ON prev.next_month = cur.month
    AND prev.customer_external_id = cur.customer_external_id
    AND prev.currency = cur.currency
)
SELECT
  FORMAT_DATE('%Y-%m', month) AS month,
  external_customer_id,
  currency,
  mrr_cents,
  previous_mrr_cents,
  CASE
    WHEN previous_mrr_cents = 0 AND mrr_cents > 0 THEN 'new'
    WHEN mrr_cents = 0 AND previous_mrr_cents > 0 THEN 'churn'
    WHEN mrr_cents > previous_mrr_cents THEN 'expansion'
    WHEN mrr_cents < previous_mrr_cents THEN 'contraction'
    ELSE 'unchanged'
  END AS movement,
  mrr_cents - previous_mrr_cents AS change_cents
FROM moves
WHERE moves.month >= DATE(@month_start) AND moves.month < DATE(@month_end)
ORDER BY month, external_customer_id, currency
