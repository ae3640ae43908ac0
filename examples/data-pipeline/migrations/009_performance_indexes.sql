ALTER TABLE market_ticks ADD INDEX idx_instrument (instrument_id) TYPE bloom_filter GRANULARITY 4;
ALTER TABLE market_ticks ADD INDEX idx_ts (ts) TYPE minmax GRANULARITY 1;
