INSERT INTO __SCHEMA__.members (name, member, expires_at)
VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')
ON CONFLICT (name, member) DO UPDATE SET expires_at = EXCLUDED.expires_at
