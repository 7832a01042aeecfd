-- factum's side of the per-stream counter: the table named plainly, found through the
-- transaction's `search_path` (the store's schema).
INSERT INTO counts_factum (stream, events) VALUES ($1, 1)
ON CONFLICT (stream) DO UPDATE SET events = counts_factum.events + 1
