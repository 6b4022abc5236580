-- The lines of each invoice's current version (the highest version in `invoices`), one row per
-- line. Lines are joined to `invoices`, not ranked on their own, so that a version with fewer
-- lines (a draft refreshed) hides the lines of the one before, and the lines of a version whose
-- `invoices` row was never written (a crash between the two inserts) stay hidden.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    lines.*,
    ROW_NUMBER() OVER (
      PARTITION BY lines.invoice_id, lines.version, lines.line_ref
      ORDER BY lines.recorded_at
    ) AS row_rank
  FROM {invoice_lines} AS lines
  JOIN (SELECT invoice_id, MAX(version) AS version FROM {invoices} GROUP BY invoice_id) AS latest
    ON lines.invoice_id = latest.invoice_id AND lines.version = latest.version
)
WHERE row_rank = 1
