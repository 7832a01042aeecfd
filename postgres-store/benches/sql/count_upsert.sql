-- One more event of stream $1 in a per-stream counter read model.
INSERT INTO __SCHEMA__.__COUNTS__ (stream, events) VALUES ($1, 1)
ON CONFLICT (stream) DO UPDATE SET events = __COUNTS__.events + 1
