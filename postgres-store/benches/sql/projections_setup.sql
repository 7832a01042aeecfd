-- The read models of the projection benchmark (one per side) and the raw side's checkpoint.
CREATE TABLE __SCHEMA__.counts_factum (stream text PRIMARY KEY, events bigint NOT NULL);
CREATE TABLE __SCHEMA__.counts_raw (stream text PRIMARY KEY, events bigint NOT NULL);
CREATE TABLE __SCHEMA__.raw_checkpoint (name text PRIMARY KEY, position bigint NOT NULL);
