CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_instruments_symbol ON instruments (symbol);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_taxonomy_parent ON taxonomy (parent_id);
