-- Exactly one row per dedup key (external_subscription_id, transaction_id).
-- insertId dedup in BigQuery is best effort, and a crash in `process` may stream a row twice;
-- every duplicate carries the same payload (the dedup store lets only one payload hash through),
-- so keeping the earliest row is exact. Every read goes through this view except the usage
-- query, which applies this same rule to its own scan of one period (adapters/sql/usage.py:
-- a filter above ROW_NUMBER cannot prune partitions).
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY external_subscription_id, transaction_id
      ORDER BY processed_at, received_at
    ) AS row_rank
  FROM {events}
)
WHERE row_rank = 1
