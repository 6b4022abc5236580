-- One row per payment event: a webhook delivered twice, or recorded again after a crash, is kept once.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY provider_event_id ORDER BY recorded_at) AS row_rank
  FROM {payments}
)
WHERE row_rank = 1
