-- Named queries of the PostgreSQL store. Every time comes from clock_timestamp().

-- name: schema_migrations_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;

-- name: schema_record
INSERT INTO schema_migrations (version, name) VALUES (%s, %s);

-- name: recipient_upsert
INSERT INTO recipients (name, kind, role, host, reports_to, info, active)
VALUES (%s, %s, %s, %s, %s, %s, true)
ON CONFLICT (name) DO UPDATE SET
    kind = excluded.kind, role = excluded.role, host = excluded.host,
    reports_to = excluded.reports_to, info = excluded.info, active = true;

-- name: recipients_deactivate_all
UPDATE recipients SET active = false;

-- name: subscriptions_clear
DELETE FROM subscriptions;

-- name: subscription_insert
INSERT INTO subscriptions (topic, subscriber) VALUES (%s, %s);

-- name: agents_list
SELECT name, role, host, reports_to, info, last_seen_at
FROM recipients WHERE kind = 'agent' AND active ORDER BY name;

-- name: agents_named
SELECT name, role, host, reports_to, info, last_seen_at
FROM recipients WHERE kind = 'agent' AND active AND name = ANY(%s) ORDER BY name;

-- name: recipient_kind
SELECT kind FROM recipients WHERE name = %s AND active;

-- name: subscriptions_of
SELECT topic FROM subscriptions WHERE subscriber = %s ORDER BY topic;

-- name: agent_touch
UPDATE recipients SET last_seen_at = clock_timestamp() WHERE name = %s;

-- name: message_by_idempotency
SELECT * FROM messages WHERE sender = %s AND idempotency_key = %s;

-- name: message_by_id
SELECT * FROM messages WHERE id = %s;

-- name: message_thread_of
SELECT thread_id FROM messages WHERE id = %s;

-- name: message_send
-- The whole common-case send in one statement: recipient lookup, thread, message, deliveries
-- (one per topic subscriber). No row back means "explain it in a transaction": an unknown
-- recipient, a missing reply_to parent, an idempotency key already used, or a fenced-out sender.
-- It returns only what the caller does not know already (the message as sent is its own), and
-- `item`, given back as it came: several sends in one pipelined transaction tell their rows apart.
-- Given a NOTIFY prefix (`ORIGIN:`), it also carries this process's pending wake-ups and this
-- message's inboxes in one NOTIFY, sent at its commit (`PostgresStore._carry`), unless the
-- payload would pass PostgreSQL's 8000-byte limit: `notified` says which.
WITH target AS (
    SELECT kind FROM recipients WHERE name = %(recipient)s AND active
), parent AS (
    SELECT thread_id FROM messages WHERE id = %(reply_to)s
), new_id AS (
    SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id
), inserted AS (
    INSERT INTO messages (id, sender, recipient, recipient_kind, kind, priority, subject, body,
                          thread_id, reply_to, idempotency_key, content_hash, meta)
    OVERRIDING SYSTEM VALUE
    SELECT new_id.id, %(sender)s, %(recipient)s, target.kind, %(kind)s, %(priority)s,
           %(subject)s, %(body)s, coalesce((SELECT thread_id FROM parent), new_id.id),
           %(reply_to)s, %(idempotency_key)s, %(content_hash)s, %(meta)s
    FROM new_id, target
    WHERE (%(reply_to)s::bigint IS NULL OR EXISTS (SELECT 1 FROM parent))
      AND NOT EXISTS (  -- the sending instance's fence (mcos.domain.leases.FenceGuard)
          SELECT 1 FROM leases
          WHERE agent = %(fence_agent)s::text AND fence > %(fence_floor)s::bigint)
    ON CONFLICT (sender, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, recipient_kind, thread_id, nullif(meta, '{}') AS meta, created_at  -- no decoding '{}'
), inboxes AS (
    SELECT s.subscriber AS inbox FROM inserted i
    JOIN subscriptions s ON s.topic = %(recipient)s
    JOIN recipients r ON r.name = s.subscriber AND r.active
    WHERE i.recipient_kind = 'topic'
    UNION ALL
    SELECT %(recipient)s FROM inserted i WHERE i.recipient_kind <> 'topic'
), delivered AS (
    INSERT INTO deliveries (message_id, inbox, priority, state, attempts, visible_at,
                            created_at, updated_at, expires_at)
    SELECT i.id, x.inbox, %(priority)s, 'queued', 0, t.now, t.now, t.now,
           coalesce(%(expires_at)s::timestamptz, t.now + %(ttl)s::interval)
    FROM inserted i, (SELECT inbox FROM inboxes ORDER BY inbox) x,
         (SELECT clock_timestamp() AS now) t
    RETURNING inbox
), woken AS (
    SELECT coalesce(array_agg(inbox ORDER BY inbox), '{}') AS inboxes FROM delivered
), payload AS (
    SELECT %(note_prefix)s::text || concat_ws(',', nullif(%(note_pending)s::text, ''),
                                              nullif(array_to_string(woken.inboxes, ','), ''))
           AS text
    FROM woken
    WHERE %(note_prefix)s::text IS NOT NULL AND EXISTS (SELECT 1 FROM inserted)
), note AS (
    SELECT pg_notify(%(channel)s, payload.text) FROM payload
    WHERE octet_length(payload.text) <= 7900
)
SELECT inserted.*, woken.inboxes, (SELECT count(*) FROM note) > 0 AS notified,
       %(item)s::int AS item
FROM inserted, woken;

-- name: notify_soft
-- A NOTIFY of its own (what no send carried): its commit does not wait for the disk, as a
-- claim's does not: a database that crashes cuts the LISTEN connections too, and each server
-- wakes every long-poll when its own is back.
SELECT set_config('synchronous_commit', 'off', true), pg_notify(%(channel)s, %(payload)s);

-- name: message_insert
WITH new_id AS (SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id)
INSERT INTO messages (id, sender, recipient, recipient_kind, kind, priority, subject, body,
                      thread_id, reply_to, idempotency_key, content_hash, meta)
OVERRIDING SYSTEM VALUE
SELECT new_id.id, %(sender)s, %(recipient)s, %(recipient_kind)s, %(kind)s, %(priority)s,
       %(subject)s, %(body)s, coalesce(%(thread_id)s, new_id.id), %(reply_to)s,
       %(idempotency_key)s, %(content_hash)s, %(meta)s
FROM new_id
ON CONFLICT (sender, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: deliveries_insert
INSERT INTO deliveries (message_id, inbox, priority, state, attempts, visible_at,
                        created_at, updated_at, expires_at)
SELECT %(message_id)s, inbox, %(priority)s, 'queued', 0, now, now, now,
       coalesce(%(expires_at)s::timestamptz, now + %(ttl)s::interval)
FROM unnest(%(inboxes)s::text[]) AS inbox, (SELECT clock_timestamp() AS now) AS t;

-- name: topic_subscribers
SELECT s.subscriber FROM subscriptions s
JOIN recipients r ON r.name = s.subscriber AND r.active
WHERE s.topic = %s ORDER BY s.subscriber;

-- name: message_delivery_count
SELECT (SELECT count(*) FROM deliveries WHERE message_id = %(id)s)
     + (SELECT count(*) FROM delivery_history WHERE message_id = %(id)s) AS n;

-- name: thread_messages
SELECT * FROM messages WHERE thread_id = %s ORDER BY id;

-- name: claim
-- One statement: claim what is due (never a lapsed claim out of attempts), and say whether such
-- an exhausted claim exists so the caller dead-letters it. At least one row comes back.
-- Its commit does not wait for the WAL to reach the disk (`soft`): that wait is a long-poll's
-- wake-up latency (its 99th percentile was the disk's fsync tail), and a claim is soft state —
-- should the database server crash within that fraction of a second, the claim is forgotten and
-- the delivery offered again, as at least once allows. Any later synchronous commit (a send, an
-- ack) flushes it anyway.
WITH soft AS (
    SELECT set_config('synchronous_commit', 'off', true) AS commit_mode
), picked AS (
    SELECT id FROM deliveries
    WHERE inbox = %(inbox)s AND state IN ('queued', 'claimed')
      AND visible_at <= clock_timestamp()
      AND (state = 'queued' OR attempts < %(max_attempts)s)
      AND (expires_at IS NULL OR expires_at > clock_timestamp())
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d
    SET state = 'claimed', attempts = d.attempts + 1,
        visible_at = clock_timestamp() + %(hold)s,
        receipt = md5(random()::text || d.id::text || clock_timestamp()::text),
        updated_at = clock_timestamp()
    FROM picked WHERE d.id = picked.id
    RETURNING d.id AS delivery_id, d.message_id, d.inbox, d.state, d.attempts,
              d.visible_at AS d_visible_at, d.receipt, d.last_error, d.priority AS d_priority,
              d.deferrals, d.expires_at AS d_expires_at
), lapsed AS (  -- two probes, one per partial index, the time an index bound (an OR of the
                -- two, or a volatile clock_timestamp() per row, scanned the whole inbox)
    SELECT EXISTS (
        SELECT 1 FROM deliveries
        WHERE inbox = %(inbox)s AND state = 'claimed' AND visible_at <= (SELECT clock_timestamp())
          AND attempts >= %(max_attempts)s
    ) OR EXISTS (
        SELECT 1 FROM deliveries
        WHERE expires_at <= (SELECT clock_timestamp()) AND expires_at IS NOT NULL
          AND state IN ('queued', 'claimed') AND inbox = %(inbox)s
          AND visible_at <= clock_timestamp()
    ) AS exhausted
)
SELECT lapsed.exhausted, c.*, m.*
FROM soft, lapsed LEFT JOIN (claimed c JOIN messages m ON m.id = c.message_id) ON true
ORDER BY c.d_priority DESC, c.delivery_id;

-- name: delivery_for_update
SELECT id, message_id, inbox, state, attempts, receipt, created_at, expires_at,
       coalesce(expires_at <= clock_timestamp(), false) AS expired
FROM deliveries
WHERE id = %s AND inbox = %s FOR UPDATE;

-- name: delivery_history_receipt
SELECT receipt FROM delivery_history WHERE id = %s AND inbox = %s;

-- name: delivery_dead_letter
UPDATE deliveries SET state = 'dead', receipt = NULL, last_error = %s,
    updated_at = clock_timestamp(), notified_at = NULL
WHERE id = %s;

-- name: delivery_release
UPDATE deliveries
SET state = 'queued', visible_at = clock_timestamp() + %s, receipt = NULL, last_error = %s,
    updated_at = clock_timestamp()
WHERE id = %s;

-- name: delivery_requeue
-- The operator's decision outlives the sender's expiry; a later dead-lettering notifies again.
UPDATE deliveries
SET state = 'queued', attempts = 0, visible_at = clock_timestamp(), receipt = NULL,
    updated_at = clock_timestamp(), expires_at = NULL, notified_at = NULL
WHERE id = %s AND state = 'dead';

-- name: delivery_defer
-- The recipient could not act: the claim's attempt is given back, the delivery waits.
UPDATE deliveries
SET state = 'queued', attempts = greatest(attempts - 1, 0), deferrals = deferrals + 1,
    visible_at = greatest(%(not_before)s::timestamptz, clock_timestamp()), receipt = NULL,
    last_error = %(reason)s, updated_at = clock_timestamp()
WHERE id = %(id)s;

-- name: sweep_dead
-- Lapsed claims out of attempts, and queued or lapsed deliveries past their expiry, go dead.
UPDATE deliveries d
SET state = 'dead', receipt = NULL, updated_at = clock_timestamp(), notified_at = NULL,
    last_error = CASE WHEN d.expires_at IS NOT NULL AND d.expires_at <= clock_timestamp()
                      THEN 'expired'
                      ELSE 'not acknowledged after ' || d.attempts || ' attempts' END
WHERE d.id IN (
    SELECT id FROM deliveries
    WHERE (state = 'claimed' AND visible_at <= clock_timestamp()
           AND attempts >= %(max_attempts)s)
       OR (expires_at IS NOT NULL AND expires_at <= clock_timestamp()
           AND (state = 'queued' OR (state = 'claimed' AND visible_at <= clock_timestamp())))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.inbox, d.attempts, d.last_error;

-- name: dead_unnotified
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.state = 'dead' AND d.notified_at IS NULL
ORDER BY d.id
LIMIT %s;

-- name: dead_mark_notified
UPDATE deliveries SET notified_at = clock_timestamp()
WHERE id = %s AND state = 'dead' AND notified_at IS NULL;

-- name: delivery_with_message
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.id = %s;

-- name: dead_letters
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.state = 'dead' AND (%(inbox)s::text IS NULL OR d.inbox = %(inbox)s)
ORDER BY d.id
LIMIT %(limit)s;

-- name: inbox_depths
SELECT inbox,
       count(*) FILTER (WHERE state = 'queued') AS queued,
       count(*) FILTER (WHERE state = 'claimed') AS claimed,
       count(*) FILTER (WHERE state = 'dead') AS dead
FROM deliveries GROUP BY inbox ORDER BY inbox;

-- name: token_insert
INSERT INTO tokens (prefix, digest, kind, name, label, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s)
RETURNING *;

-- name: token_by_prefix
SELECT * FROM tokens WHERE prefix = %s;

-- name: token_by_id
SELECT * FROM tokens WHERE id = %s;

-- name: tokens_all
SELECT * FROM tokens ORDER BY id;

-- name: tokens_of
SELECT * FROM tokens WHERE name = %s ORDER BY id;

-- name: token_revoke
UPDATE tokens SET revoked_at = coalesce(revoked_at, clock_timestamp()) WHERE id = %s RETURNING *;

-- name: audit_head
SELECT seq, hash, date_trunc('microseconds', clock_timestamp()) AS now
FROM audit_head WHERE id = 1 FOR UPDATE;

-- name: audit_insert
INSERT INTO audit (seq, at, actor, action, targets, detail, outcome, prev_hash, hash)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING *;

-- name: audit_head_update
UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1;

-- name: audit_query
SELECT * FROM audit
WHERE seq > %(after)s
  AND (%(actor)s::text IS NULL OR actor = %(actor)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
ORDER BY seq
LIMIT %(limit)s;

-- name: audit_all
SELECT * FROM audit ORDER BY seq;

-- name: audit_head_read
SELECT seq, hash FROM audit_head WHERE id = 1;

-- name: audit_chain_head
SELECT seq, hash, keyed_from FROM audit_head WHERE id = 1;

-- name: audit_tip
-- The newest record and where keyed hashing began: what a checkpoint records.
SELECT a.seq, a.hash, h.keyed_from
FROM audit_head h LEFT JOIN (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) a ON true
WHERE h.id = 1;

-- name: audit_triggers
-- Enabled user triggers of the audit table ('D': disabled by ALTER TABLE ... DISABLE TRIGGER).
SELECT tgname AS name FROM pg_trigger
WHERE tgrelid = 'audit'::regclass AND NOT tgisinternal AND tgenabled <> 'D';

-- name: deliveries_ack_all
-- All or nothing in one statement: the batch is acked only if every item is held with its
-- receipt; otherwise nothing changes and the caller sorts the items out in a transaction.
WITH items AS (
    SELECT DISTINCT * FROM unnest(%(ids)s::bigint[], %(receipts)s::text[]) AS i(id, receipt)
), held AS (
    SELECT d.id, items.receipt FROM deliveries d JOIN items ON d.id = items.id
    WHERE d.inbox = %(inbox)s AND d.state = 'claimed' AND d.receipt = items.receipt
      AND NOT EXISTS (  -- the acking instance's fence (mcos.domain.leases.FenceGuard)
          SELECT 1 FROM leases
          WHERE agent = %(fence_agent)s::text AND fence > %(fence_floor)s::bigint)
    FOR UPDATE OF d
), gone AS (
    DELETE FROM deliveries d USING held
    WHERE d.id = held.id AND (SELECT count(*) FROM held) = (SELECT count(*) FROM items)
    RETURNING d.id, d.message_id, d.inbox, d.attempts, held.receipt, d.created_at
)
INSERT INTO delivery_history (id, message_id, inbox, attempts, receipt, created_at, acked_at)
SELECT id, message_id, inbox, attempts, receipt, created_at, clock_timestamp() FROM gone
RETURNING id;

-- name: deliveries_ack_batch
WITH items AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(receipts)s::text[]) AS i(id, receipt)
), gone AS (
    DELETE FROM deliveries d USING items
    WHERE d.id = items.id AND d.inbox = %(inbox)s AND d.state = 'claimed'
      AND d.receipt = items.receipt
    RETURNING d.id, d.message_id, d.inbox, d.attempts, items.receipt, d.created_at
)
INSERT INTO delivery_history (id, message_id, inbox, attempts, receipt, created_at, acked_at)
SELECT id, message_id, inbox, attempts, receipt, created_at, clock_timestamp() FROM gone
RETURNING id;

-- name: budget_lock
SELECT pg_advisory_xact_lock(7262002), clock_timestamp() AS now;

-- name: committed_agent
SELECT
  (SELECT coalesce(sum(cost_micros), 0) FROM model_calls
   WHERE day = %(day)s AND agent = %(agent)s)
  + (SELECT coalesce(sum(usd_micros), 0) FROM budget_reservations
     WHERE day = %(day)s AND agent = %(agent)s AND state = 'held') AS usd,
  (SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)
   FROM model_calls WHERE day = %(day)s AND agent = %(agent)s)
  + (SELECT coalesce(sum(tokens), 0) FROM budget_reservations
     WHERE day = %(day)s AND agent = %(agent)s AND state = 'held') AS tokens;

-- name: committed_fleet
SELECT
  (SELECT coalesce(sum(cost_micros), 0) FROM model_calls WHERE day = %(day)s)
  + (SELECT coalesce(sum(usd_micros), 0) FROM budget_reservations
     WHERE day = %(day)s AND state = 'held') AS usd,
  (SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)
   FROM model_calls WHERE day = %(day)s)
  + (SELECT coalesce(sum(tokens), 0) FROM budget_reservations
     WHERE day = %(day)s AND state = 'held') AS tokens;

-- name: reservation_insert
INSERT INTO budget_reservations (agent, day, usd_micros, tokens, purpose, state, created_at,
                                 model, prompt_tokens, max_output)
VALUES (%s, %s, %s, %s, %s, 'held', clock_timestamp(), %s, %s, %s)
RETURNING id;

-- name: reservation_settle
UPDATE budget_reservations SET state = 'settled', settled_at = clock_timestamp()
WHERE id = %s AND agent = %s AND state = 'held'
RETURNING id, model, prompt_tokens, max_output, usd_micros;

-- name: model_call_insert
INSERT INTO model_calls (agent, at, day, provider, model, purpose, input_tokens, output_tokens,
                         cache_read_tokens, cache_write_tokens, cost_micros, reservation_id)
SELECT %s, now, (now AT TIME ZONE 'UTC')::date, %s, %s, %s, %s, %s, %s, %s, %s, %s
FROM (SELECT clock_timestamp() AS now) t;

-- name: usage_since
SELECT day::text AS day, agent, sum(calls) AS calls, sum(input) AS input, sum(output) AS output,
       sum(cache_read) AS cache_read, sum(cache_write) AS cache_write,
       sum(cost) AS cost, sum(held) AS held
FROM (
  SELECT day, agent, count(*) AS calls, sum(input_tokens) AS input,
         sum(output_tokens) AS output, sum(cache_read_tokens) AS cache_read,
         sum(cache_write_tokens) AS cache_write, sum(cost_micros) AS cost, 0 AS held
  FROM model_calls WHERE day >= %(since)s::date AND (%(agent)s::text IS NULL OR agent = %(agent)s)
  GROUP BY day, agent
  UNION ALL
  SELECT day, agent, 0, 0, 0, 0, 0, 0, sum(usd_micros)
  FROM budget_reservations
  WHERE state = 'held' AND day >= %(since)s::date
    AND (%(agent)s::text IS NULL OR agent = %(agent)s)
  GROUP BY day, agent
) u
GROUP BY day, agent ORDER BY day, agent;

-- name: agent_state_upsert
INSERT INTO agent_states (name, state, detail, until, info, updated_at)
VALUES (%s, %s, %s, %s, %s, clock_timestamp())
ON CONFLICT (name) DO UPDATE SET
  state = excluded.state, detail = excluded.detail, until = excluded.until,
  info = excluded.info, updated_at = excluded.updated_at
RETURNING *;

-- name: agent_states_all
SELECT * FROM agent_states ORDER BY name;

-- name: agent_states_named
SELECT * FROM agent_states WHERE name = ANY(%s) ORDER BY name;

-- name: lease_seed
INSERT INTO leases (agent, holder, host, fence, expires_at, acquired_at, renewed_at)
VALUES (%s, '', '', 0, 'epoch', clock_timestamp(), clock_timestamp())
ON CONFLICT (agent) DO NOTHING;

-- name: lease_lock
SELECT *, clock_timestamp() AS now FROM leases WHERE agent = %s FOR UPDATE;

-- name: lease_write
UPDATE leases SET holder = %s, host = %s, fence = %s,
  expires_at = clock_timestamp() + make_interval(secs => %s),
  acquired_at = CASE WHEN %s THEN clock_timestamp() ELSE acquired_at END,
  renewed_at = clock_timestamp()
WHERE agent = %s
RETURNING *;

-- name: lease_release
UPDATE leases SET expires_at = clock_timestamp()
WHERE agent = %s AND holder = %s AND fence = %s AND expires_at > clock_timestamp()
RETURNING *;

-- name: lease_get
SELECT * FROM leases WHERE agent = %s AND fence > 0;

-- name: lease_guard
-- The lease a guarded write is checked against, held until the write commits: a takeover
-- waits for it rather than slipping between the check and the write.
SELECT * FROM leases WHERE agent = %s AND fence > 0 FOR SHARE;

-- name: leases_all
SELECT * FROM leases WHERE fence > 0 ORDER BY agent;

-- name: incident_insert
INSERT INTO incidents (severity, reported_as, state, summary, evidence, reporter, fingerprint,
                       reports, created_at, updated_at)
VALUES (%(severity)s, %(severity)s, %(state)s, %(summary)s, %(evidence)s, %(reporter)s, %(fingerprint)s, 1, clock_timestamp(), clock_timestamp())
RETURNING *;

-- name: incident_event_insert
INSERT INTO incident_events (incident_id, at, actor, action, severity, reason)
VALUES (%(incident_id)s, clock_timestamp(), %(actor)s, %(action)s, %(severity)s, %(reason)s);

-- name: incident_get
SELECT * FROM incidents WHERE id = %s;

-- name: incident_open_by_fingerprint
SELECT * FROM incidents
WHERE fingerprint = %s AND state IN ('reported', 'confirmed', 'escalated')
ORDER BY id LIMIT 1;

-- name: incidents_list
SELECT * FROM incidents
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
ORDER BY id DESC LIMIT %(limit)s;

-- name: incident_events_of
SELECT * FROM incident_events WHERE incident_id = %s ORDER BY id;

-- name: incident_vote_exists
SELECT 1 FROM incident_events
WHERE incident_id = %s AND actor = %s AND action = 'confirm' AND severity = %s;

-- name: incident_transition
UPDATE incidents SET state = %(state)s, severity = %(severity)s, reports = reports + %(more)s,
  updated_at = clock_timestamp()
WHERE id = %(id)s AND state = %(expected)s
RETURNING *;

-- name: reports_since
SELECT count(*) AS n FROM incident_events
WHERE actor = %s AND action IN ('reported', 'grouped') AND at >= clock_timestamp() - make_interval(secs => %s);

-- name: approval_insert
INSERT INTO approvals (action, payload, payload_hash, requester, rationale, quorum, state,
                       executor, constraints, report_every, created_at, expires_at)
VALUES (%(action)s, %(payload)s, %(payload_hash)s, %(requester)s, %(rationale)s, %(quorum)s, 'pending',
        %(executor)s, %(constraints)s, %(report_every)s, clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(expires_in)s))
RETURNING *;

-- name: approval_get
SELECT * FROM approvals WHERE id = %s;

-- name: approval_pending_for
SELECT * FROM approvals WHERE action = %s AND payload_hash = %s AND state = 'pending';

-- name: approvals_list
SELECT * FROM approvals WHERE (%(state)s::text IS NULL OR state = %(state)s::text) ORDER BY id DESC LIMIT %(limit)s;

-- name: approval_vote_insert
INSERT INTO approval_votes (approval_id, voter, vote, rationale, at)
VALUES (%s, %s, %s, %s, clock_timestamp())
ON CONFLICT (approval_id, voter) DO NOTHING
RETURNING *;

-- name: approval_votes_of
SELECT * FROM approval_votes WHERE approval_id = %s ORDER BY at;

-- name: approval_decide
UPDATE approvals SET state = %(state)s, decided_at = clock_timestamp(), decided_by = %(by)s, reason = %(reason)s
WHERE id = %(id)s AND state = 'pending'
RETURNING *;

-- name: approval_directive
UPDATE approvals SET directive_id = %(directive_id)s WHERE id = %(id)s RETURNING *;

-- name: approval_acknowledge
UPDATE approvals SET acknowledged_at = clock_timestamp()
WHERE id = %(id)s AND state = 'approved' AND acknowledged_at IS NULL
RETURNING *;

-- name: approval_withdraw
UPDATE approvals SET state = 'vetoed', decided_at = clock_timestamp(), decided_by = %(by)s,
  reason = %(reason)s
WHERE id = %(id)s AND state = 'approved' AND acknowledged_at IS NULL
RETURNING *;

-- name: approvals_due
SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= clock_timestamp()
ORDER BY expires_at, id LIMIT %(limit)s;

-- name: incidents_unconfirmed
SELECT * FROM incidents
WHERE state = 'reported' AND created_at <= clock_timestamp() - make_interval(secs => %(secs)s)
ORDER BY created_at, id LIMIT %(limit)s;

-- name: approval_remind
UPDATE approvals SET reminded_at = clock_timestamp()
WHERE id = %(id)s AND state = 'pending' AND reminded_at IS NULL
RETURNING *;

-- name: page_open
INSERT INTO pages (human, key, kind, subject, body, created_at)
VALUES (%(human)s, %(key)s, %(kind)s, %(subject)s, %(body)s, clock_timestamp())
ON CONFLICT (human, key) DO NOTHING
RETURNING *;

-- name: page_sent
UPDATE pages SET state = CASE WHEN state = 'acked' THEN state ELSE %(state)s END,
    channel = %(channel)s, ref = %(ref)s, error = %(error)s, attempts = attempts + 1,
    sent_at = CASE WHEN %(state)s = 'sent' THEN clock_timestamp() ELSE sent_at END
WHERE id = %(id)s
RETURNING *;

-- name: page_ack
UPDATE pages SET state = 'acked', acked_at = clock_timestamp(), acked_by = %(by)s
WHERE id = %(id)s AND state <> 'acked'
RETURNING *;

-- name: page_get
SELECT * FROM pages WHERE id = %s;

-- name: pages_list
SELECT * FROM pages
WHERE (%(human)s::text IS NULL OR human = %(human)s) AND (%(state)s::text IS NULL OR state = %(state)s)
ORDER BY id DESC LIMIT %(limit)s;

-- name: dashboard_session_insert
INSERT INTO dashboard_sessions (id_hash, token_id, operator, created_at, expires_at)
VALUES (%s, %s, %s, clock_timestamp(), clock_timestamp() + %s)
RETURNING *;

-- name: dashboard_session_by_hash
SELECT * FROM dashboard_sessions WHERE id_hash = %s;

-- name: dashboard_session_end
UPDATE dashboard_sessions SET ended_at = coalesce(ended_at, clock_timestamp())
WHERE id_hash = %s RETURNING *;

-- name: operator_tokens_active
SELECT id FROM tokens
WHERE kind = 'operator' AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > clock_timestamp())
ORDER BY id
FOR UPDATE;


-- --- trace ---

-- name: trace_insert
INSERT INTO turn_traces (id, agent, kind, outcome, started_at, received_at, cost_micros,
                         cost_source, body)
VALUES (%(id)s, %(agent)s, %(kind)s, %(outcome)s, %(started_at)s, clock_timestamp(),
        %(cost_micros)s, %(cost_source)s, %(body)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: trace_link
INSERT INTO turn_trace_messages (trace_id, message_id, role) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING;

-- name: trace_by_id
SELECT * FROM turn_traces WHERE id = %s;

-- name: traces_find
SELECT t.* FROM turn_traces t
WHERE (%(agent)s::text IS NULL OR t.agent = %(agent)s)
  AND (%(since)s::timestamptz IS NULL OR t.started_at >= %(since)s)
  AND (%(message)s::bigint IS NULL OR t.id IN (
        SELECT trace_id FROM turn_trace_messages WHERE message_id = %(message)s))
  AND (%(thread)s::bigint IS NULL OR t.id IN (
        SELECT l.trace_id FROM turn_trace_messages l JOIN messages m ON m.id = l.message_id
        WHERE m.thread_id = %(thread)s))
ORDER BY t.started_at DESC, t.id
LIMIT %(limit)s;

-- name: traces_delete_before
DELETE FROM turn_traces WHERE started_at < %s;

-- name: trace_metered_calls
SELECT reservation_id, sum(cost_micros) AS cost FROM model_calls
WHERE agent = %s AND reservation_id = ANY(%s)
GROUP BY reservation_id;
-- --- dash: message search ---
-- name: message_search
-- Newest first; the state of a message is that of its worst copy (dead, claimed, queued), else
-- acked when a copy was handled, else unrouted. Text: ILIKE on subject and body, with
-- backslash as the escape character.
SELECT * FROM (
    SELECT m.*,
           CASE
             WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.state = 'dead')
               THEN 'dead'
             WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.state = 'claimed')
               THEN 'claimed'
             WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.state = 'queued')
               THEN 'queued'
             WHEN EXISTS (SELECT 1 FROM delivery_history h WHERE h.message_id = m.id) THEN 'acked'
             ELSE 'unrouted'
           END AS delivery_state
    FROM messages m
    WHERE (%(sender)s::text IS NULL OR m.sender = %(sender)s)
      AND (%(recipient)s::text IS NULL OR m.recipient = %(recipient)s)
      AND (%(kind)s::text IS NULL OR m.kind = %(kind)s)
      AND (%(priority)s::smallint IS NULL OR m.priority = %(priority)s)
      AND (%(thread)s::bigint IS NULL OR m.thread_id = %(thread)s)
      AND (%(since)s::timestamptz IS NULL OR m.created_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR m.created_at <= %(until)s)
      AND (%(before)s::bigint IS NULL OR m.id < %(before)s)
      AND (%(pattern)s::text IS NULL OR m.subject ILIKE %(pattern)s ESCAPE '\'
           OR m.body ILIKE %(pattern)s ESCAPE '\')
) AS found
WHERE (%(state)s::text IS NULL OR delivery_state = %(state)s)
ORDER BY id DESC
LIMIT %(limit)s;
