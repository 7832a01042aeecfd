-- Whether the index $1 (schema-qualified, quoted) is valid; no row when it does not exist.
SELECT i.indisvalid
FROM pg_index AS i
WHERE i.indexrelid = to_regclass($1)
