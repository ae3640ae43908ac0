CREATE MATERIALIZED VIEW IF NOT EXISTS daily_bars ENGINE = SummingMergeTree ORDER BY (instrument_id, day)
AS SELECT instrument_id, toDate(ts) AS day, sum(volume) AS volume FROM market_ticks GROUP BY instrument_id, day;
