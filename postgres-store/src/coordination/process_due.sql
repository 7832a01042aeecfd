-- Due deadlines of active instances, earliest first.
SELECT p.key, d.deadline::text AS deadline
FROM __SCHEMA__.process_instances p
CROSS JOIN LATERAL jsonb_array_elements(p.deadlines) AS d(deadline)
WHERE p.name = $1 AND p.active AND p.next_deadline <= $2
  AND (d.deadline ->> 'due_at')::timestamptz <= $2
ORDER BY (d.deadline ->> 'due_at')::timestamptz, p.key COLLATE "C"
LIMIT $3
