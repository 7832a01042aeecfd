SELECT status, version, first_position
FROM __SCHEMA__.append($1, $2, $3, $4, $5, $6, $7)
