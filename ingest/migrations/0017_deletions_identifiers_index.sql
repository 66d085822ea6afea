-- transactional: false
-- Suppression (workers/pipeline.py) asks, once a batch, which of the batch's identifiers a
-- recent deletion names. Without this index that read unnests every deletion of the
-- project in the suppression window, so its cost grew with the number of deletions (a
-- project answering regulation requests keeps thousands); with it, the `&&` overlap is one
-- GIN lookup per identifier (bench/grown.py shows the plan on a grown store).
-- CONCURRENTLY, so workers keep writing deletions while it builds; the DROP first, as in
-- 0004, because a concurrent build that failed leaves an invalid index behind.
DROP INDEX CONCURRENTLY IF EXISTS deletions_identifiers_idx;
CREATE INDEX CONCURRENTLY deletions_identifiers_idx ON deletions USING gin (identifiers);
