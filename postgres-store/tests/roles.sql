-- Two roles for one Factum schema. Run once, as a superuser (or a role with CREATEROLE that
-- may act as both roles), in the application's database; give each role a password or
-- another authentication of your own.

-- The owner: runs the migrations, with `PgConfig::application_role("factum_app")`, and owns
-- the schema and everything in it.
CREATE ROLE factum_owner LOGIN;

-- The application: appends and reads events and keeps the runtime's tables; it cannot
-- change or remove events, nor disable or drop the append-only triggers.
CREATE ROLE factum_app LOGIN;

-- The schema, owned by the owner, which then needs no privilege on the database itself.
CREATE SCHEMA factum AUTHORIZATION factum_owner;
