-- Roll-up reads for an entity and a period: `gran = $ AND bucket >= $ AND bucket < $` over
-- the entity's device range. An entity with many machines (a park: every device) is read
-- through these indexes (one range scan per table), a single machine through the primary key;
-- the planner chooses by the device range's selectivity (issue 9: the park-year query).
CREATE INDEX rollup_states_gran_bucket_device ON rollup_states (gran, bucket, device);
CREATE INDEX rollup_counters_gran_bucket_device ON rollup_counters (gran, bucket, device);
CREATE INDEX rollup_activity_gran_bucket_device ON rollup_activity (gran, bucket, device);
