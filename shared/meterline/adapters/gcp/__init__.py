"""Google Cloud adapters: Pub/Sub, Firestore, BigQuery. Emulator hosts are honoured."""
