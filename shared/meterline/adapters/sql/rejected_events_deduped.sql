-- One row per rejected (key, payload): a redelivered message may reject the same event twice.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY external_subscription_id, transaction_id, payload_hash
      ORDER BY rejected_at
    ) AS row_rank
  FROM {rejected_events}
)
WHERE row_rank = 1
