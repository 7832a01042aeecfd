-- What the session's role can do to the events table ($1: the table, quoted) beyond
-- appending and reading: be a superuser, act as the table's owner (own it, or be a member of
-- its owner: `ALTER TABLE`, `DROP TRIGGER`), or hold `UPDATE`, `DELETE` or `TRUNCATE`; and
-- whether it bypasses row-level security (what a multi-tenant store relies on).
-- No row when the table does not exist.
SELECT current_user::text AS role,
       r.rolsuper AS superuser,
       r.rolbypassrls AS bypassrls,
       pg_has_role(current_user, c.relowner, 'MEMBER') AS owner,
       has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE') AS modify
FROM pg_class AS c
JOIN pg_roles AS r ON r.rolname = current_user
WHERE c.oid = to_regclass($1)
