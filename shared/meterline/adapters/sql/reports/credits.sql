-- credits: the credit ledger (one row per grant, use or expiry of a wallet's credits) and each
-- customer's balance after it. No ledger exists yet: the report has its columns and no rows,
-- so a query written against it keeps working once wallets record their entries.
SELECT
  CAST(NULL AS STRING) AS external_customer_id,
  CAST(NULL AS STRING) AS wallet_id,
  CAST(NULL AS TIMESTAMP) AS entry_at,
  CAST(NULL AS STRING) AS kind,
  CAST(NULL AS STRING) AS currency,
  CAST(NULL AS INT64) AS amount_cents,
  CAST(NULL AS INT64) AS balance_cents,
  CAST(NULL AS STRING) AS invoice_id
FROM (SELECT 1 AS one)
WHERE FALSE
