"""SBW clickstream platform: the event contract, the ingest and ETL Lambda functions."""
