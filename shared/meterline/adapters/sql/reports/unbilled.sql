-- unbilled: the month's deduplicated events that no invoice will carry, by subscription and
-- code. `no_subscription`: no invoice names the subscription (it does not exist, or was never
-- billed); `outside_periods`: the subscription is invoiced, but no invoice's period
-- [from_utc, to_utc) holds the event's time. The warehouse holds invoices, not subscriptions,
-- so this is judged from the invoices: run it for a month whose periods are billed (the
-- current period is not invoiced yet, and its events show as outside_periods). Voided
-- invoices do not count; drafts do (they will be finalized).
-- An invoice holding a month's event is issued after its period starts: only the partitions
-- from the day before the month on are read (the day covers the customer's time zone).
WITH month_events AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      external_subscription_id, transaction_id, code, timestamp, properties,
      ROW_NUMBER() OVER (
        PARTITION BY external_subscription_id, transaction_id
        ORDER BY processed_at, received_at
      ) AS row_rank
    FROM {events}
    WHERE timestamp >= @month_start AND timestamp < @month_end
  )
  WHERE row_rank = 1
),
periods AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      invoice_id, subscription_external_id, status, from_utc, to_utc,
      ROW_NUMBER() OVER (PARTITION BY invoice_id ORDER BY version DESC, recorded_at) AS row_rank
    FROM {invoices}
    WHERE issuing_date >= DATE_SUB(DATE(@month_start), INTERVAL 1 DAY)
  )
  WHERE row_rank = 1 AND status != 'voided'
),
known AS (
  SELECT DISTINCT subscription_external_id FROM periods
),
covered AS (
  SELECT DISTINCT e.external_subscription_id, e.transaction_id
  FROM month_events AS e
  JOIN periods AS p
    ON p.subscription_external_id = e.external_subscription_id
    AND p.from_utc <= e.timestamp AND e.timestamp < p.to_utc
),
judged AS (
  SELECT
    e.external_subscription_id,
    e.code,
    e.timestamp,
    e.properties,
    CASE
      WHEN k.subscription_external_id IS NULL THEN 'no_subscription'
      WHEN c.transaction_id IS NULL THEN 'outside_periods'
    END AS reason
  FROM month_events AS e
  LEFT JOIN known AS k ON k.subscription_external_id = e.external_subscription_id
  LEFT JOIN covered AS c
    ON c.external_subscription_id = e.external_subscription_id AND c.transaction_id = e.transaction_id
)
SELECT
  external_subscription_id,
  code,
  reason,
  COUNT(*) AS events,
  COALESCE(SUM(SAFE_CAST(JSON_VALUE(properties, '$.value') AS NUMERIC(38, 9))), 0) AS units,
  MIN(timestamp) AS first_event_at,
  MAX(timestamp) AS last_event_at
FROM judged
WHERE reason IS NOT NULL
GROUP BY external_subscription_id, code, reason
ORDER BY external_subscription_id, code, reason
