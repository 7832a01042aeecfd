-- The baseline's position counter: the plain `bigserial` way.
CREATE SEQUENCE __SCHEMA__.baseline_positions;
