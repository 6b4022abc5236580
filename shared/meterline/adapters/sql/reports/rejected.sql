-- rejected: the events rejected in the month (by `rejected_at`, the partitioning column),
-- each (key, payload) once: a conflicting payload for a key already counted, or an event that
-- could not be counted; `reason` says which.
SELECT * EXCEPT (row_rank)
FROM (
  SELECT
    rejected_at, external_subscription_id, transaction_id, code, timestamp, reason, properties,
    ROW_NUMBER() OVER (
      PARTITION BY external_subscription_id, transaction_id, payload_hash
      ORDER BY rejected_at
    ) AS row_rank
  FROM {rejected_events}
  WHERE rejected_at >= @month_start AND rejected_at < @month_end
)
WHERE row_rank = 1
ORDER BY rejected_at, external_subscription_id, transaction_id
