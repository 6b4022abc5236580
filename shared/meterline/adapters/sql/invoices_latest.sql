-- The current state of each invoice: its row of the highest version. `invoices` is append-only
-- (one row per stored version), and a version may be streamed twice (insertId dedup is best
-- effort; a crash may record it again), with the same content, so any copy of it is exact.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
  FROM {invoices}
)
WHERE row_rank = 1
