-- usage: one row per (day, customer, subscription, metric code, filter values) of the month's
-- deduplicated events. `events` counts them; `units` sums their `value` property (numbers or
-- numeric text; other events add 0), the field of Lago's examples and of the demo's metrics.
-- `filters` is the event's properties JSON with every numeric, true/false and null value taken
-- out (top level), so what is left is the string values a charge filters on (model, token_type).
-- The customer is the one the subscription's invoices name: the events carry only the
-- subscription, and the warehouse holds no subscriptions; a subscription never invoiced has none.
-- The month filter is on `events.timestamp`, the partitioning column, below the ranking that
-- removes copies: every copy of an event has the same timestamp, so the ranking stays exact.
WITH month_events AS (
  SELECT * EXCEPT (row_rank)
  FROM (
    SELECT
      external_subscription_id, code, timestamp, properties,
      ROW_NUMBER() OVER (
        PARTITION BY external_subscription_id, transaction_id
        ORDER BY processed_at, received_at
      ) AS row_rank
    FROM {events}
    WHERE timestamp >= @month_start AND timestamp < @month_end
  )
  WHERE row_rank = 1
),
customers AS (
  -- Two short columns of every partition: subscriptions are few, and invoices are small.
  SELECT subscription_external_id, MAX(customer_external_id) AS customer_external_id
  FROM {invoices}
  GROUP BY subscription_external_id
)
SELECT
  DATE(e.timestamp) AS day,
  c.customer_external_id AS external_customer_id,
  e.external_subscription_id,
  e.code,
  REGEXP_REPLACE(
    REGEXP_REPLACE(
      e.properties,
      r',"(?:[^"\\]|\\.)*":(?:-?[0-9][0-9.eE+-]*|"-?[0-9][0-9.eE+-]*"|true|false|null)', ''),
    r'^(.)"(?:[^"\\]|\\.)*":(?:-?[0-9][0-9.eE+-]*|"-?[0-9][0-9.eE+-]*"|true|false|null),?', r'\1') AS filters,
  COUNT(*) AS events,
  COALESCE(SUM(SAFE_CAST(JSON_VALUE(e.properties, '$.value') AS NUMERIC(38, 9))), 0) AS units
FROM month_events AS e
LEFT JOIN customers AS c ON c.subscription_external_id = e.external_subscription_id
GROUP BY day, external_customer_id, external_subscription_id, code, filters
ORDER BY day, external_customer_id, external_subscription_id, code, filters
