(SELECT CASE
          -- Nothing committed lies at or above the oldest running transaction: no lookup.
          -- On a hot standby, the snapshot lists no transaction in `xip` (they are in its
          -- subtransaction array) and its `xmin` is the oldest transaction of the primary
          -- still running as far as the replayed WAL tells: the bound is `xmin`.
          WHEN snap.xmin = pg_snapshot_xmax(snap.s)::text::bigint
            OR pg_is_in_recovery()
            OR coalesce((SELECT max(position) FROM __SCHEMA__.events), 0) < snap.xmin * 65536
            THEN snap.xmin
          -- The oldest running transaction that may write here: every one in progress but
          -- those positively known to belong to another database (a session's database is
          -- fixed for its life; a prepared transaction names its database). Transaction ids
          -- are compared by their low 32 bits, which identify live ones.
          ELSE coalesce(
                 (SELECT min(x::text::bigint)
                  FROM pg_snapshot_xip(snap.s) AS x
                  WHERE x::text::bigint % 4294967296 <> ALL (ARRAY(
                          SELECT a.backend_xid::text::bigint
                          FROM pg_stat_activity AS a
                          WHERE a.backend_xid IS NOT NULL
                            AND a.datid <> (SELECT oid FROM pg_database
                                            WHERE datname = current_database())
                          UNION ALL
                          SELECT p.transaction::text::bigint
                          FROM pg_prepared_xacts AS p
                          WHERE p.database <> current_database()))),
                 pg_snapshot_xmax(snap.s)::text::bigint)
        END * 65536
 FROM (SELECT s, pg_snapshot_xmin(s)::text::bigint AS xmin
       FROM pg_current_snapshot() AS s) AS snap)
