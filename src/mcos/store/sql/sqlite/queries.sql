-- Named queries of the SQLite store. Times are integer microseconds since the epoch (UTC).

-- name: schema_migrations_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  INTEGER NOT NULL
);

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;

-- name: schema_record
INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?);

-- name: recipient_upsert
INSERT INTO recipients (name, kind, role, host, reports_to, info, active, created_at)
VALUES (?, ?, ?, ?, ?, ?, 1, ?)
ON CONFLICT (name) DO UPDATE SET
    kind = excluded.kind, role = excluded.role, host = excluded.host,
    reports_to = excluded.reports_to, info = excluded.info, active = 1;

-- name: recipients_deactivate_all
UPDATE recipients SET active = 0;

-- name: subscriptions_clear
DELETE FROM subscriptions;

-- name: subscription_insert
INSERT INTO subscriptions (topic, subscriber) VALUES (?, ?);

-- name: agents_list
SELECT name, role, host, reports_to, info, last_seen_at
FROM recipients WHERE kind = 'agent' AND active = 1 ORDER BY name;

-- name: agents_named
SELECT name, role, host, reports_to, info, last_seen_at
FROM recipients
WHERE kind = 'agent' AND active = 1 AND name IN (SELECT value FROM json_each(?))
ORDER BY name;

-- name: recipient_kind
SELECT kind FROM recipients WHERE name = ? AND active = 1;

-- name: subscriptions_of
SELECT topic FROM subscriptions WHERE subscriber = ? ORDER BY topic;

-- name: topic_subscribers
SELECT s.subscriber FROM subscriptions s
JOIN recipients r ON r.name = s.subscriber AND r.active = 1
WHERE s.topic = ? ORDER BY s.subscriber;

-- name: agent_touch
UPDATE recipients SET last_seen_at = ? WHERE name = ?;

-- name: message_by_idempotency
SELECT * FROM messages WHERE sender = ? AND idempotency_key = ?;

-- name: message_by_id
SELECT * FROM messages WHERE id = ?;

-- name: message_thread_of
SELECT thread_id FROM messages WHERE id = ?;

-- name: message_insert
INSERT INTO messages (sender, recipient, recipient_kind, kind, priority, subject, body,
                      thread_id, reply_to, idempotency_key, content_hash, meta, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, coalesce(?, 0), ?, ?, ?, ?, ?)
RETURNING *;

-- name: message_set_own_thread
UPDATE messages SET thread_id = id WHERE id = ? RETURNING *;

-- name: message_delivery_count
SELECT (SELECT count(*) FROM deliveries WHERE message_id = ?)
     + (SELECT count(*) FROM delivery_history WHERE message_id = ?) AS n;

-- name: thread_messages
SELECT * FROM messages WHERE thread_id = ? ORDER BY id;

-- name: delivery_insert
INSERT INTO deliveries (message_id, inbox, priority, state, attempts, visible_at,
                        created_at, updated_at, expires_at)
VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?);

-- name: claim_candidates
SELECT id, state, attempts, expires_at FROM deliveries
WHERE inbox = ? AND state IN ('queued', 'claimed') AND visible_at <= ?
ORDER BY priority DESC, id
LIMIT ?;

-- name: delivery_claim
UPDATE deliveries
SET state = 'claimed', attempts = attempts + 1, visible_at = ?, receipt = ?, updated_at = ?
WHERE id = ?;

-- name: delivery_dead_letter
UPDATE deliveries
SET state = 'dead', receipt = NULL, last_error = ?, updated_at = ?, notified_at = NULL
WHERE id = ?;

-- name: delivery_for_update
SELECT id, message_id, inbox, state, attempts, receipt, created_at, expires_at FROM deliveries
WHERE id = ? AND inbox = ?;

-- name: delivery_history_receipt
SELECT receipt FROM delivery_history WHERE id = ? AND inbox = ?;

-- name: delivery_delete
DELETE FROM deliveries WHERE id = ?;

-- name: delivery_history_insert
INSERT INTO delivery_history (id, message_id, inbox, attempts, receipt, created_at, acked_at)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: delivery_release
UPDATE deliveries
SET state = 'queued', visible_at = ?, receipt = NULL, last_error = ?, updated_at = ?
WHERE id = ?;

-- name: delivery_requeue
-- The operator's decision outlives the sender's expiry; a later dead-lettering notifies again.
UPDATE deliveries
SET state = 'queued', attempts = 0, visible_at = ?, receipt = NULL, updated_at = ?,
    expires_at = NULL, notified_at = NULL
WHERE id = ? AND state = 'dead';

-- name: delivery_defer
-- The recipient could not act: the claim's attempt is given back, the delivery waits.
UPDATE deliveries
SET state = 'queued', attempts = max(attempts - 1, 0), deferrals = deferrals + 1,
    visible_at = ?, receipt = NULL, last_error = ?, updated_at = ?
WHERE id = ?;

-- name: sweep_candidates
-- Lapsed claims out of attempts, and queued or lapsed deliveries past their expiry.
SELECT id, inbox, attempts, expires_at FROM deliveries
WHERE (state = 'claimed' AND visible_at <= :now AND attempts >= :max_attempts)
   OR (expires_at IS NOT NULL AND expires_at <= :now
       AND (state = 'queued' OR (state = 'claimed' AND visible_at <= :now)))
ORDER BY id
LIMIT :limit;

-- name: dead_unnotified
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.state = 'dead' AND d.notified_at IS NULL
ORDER BY d.id
LIMIT ?;

-- name: dead_mark_notified
UPDATE deliveries SET notified_at = ? WHERE id = ? AND state = 'dead' AND notified_at IS NULL;

-- name: delivery_with_message
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.id = ?;

-- name: dead_letters
SELECT d.id AS delivery_id, d.inbox, d.state, d.attempts, d.visible_at AS d_visible_at,
       d.receipt, d.last_error, d.deferrals, d.expires_at AS d_expires_at, m.*
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.state = 'dead' AND (? IS NULL OR d.inbox = ?)
ORDER BY d.id
LIMIT ?;

-- name: inbox_depths
SELECT inbox,
       sum(state = 'queued') AS queued,
       sum(state = 'claimed') AS claimed,
       sum(state = 'dead') AS dead
FROM deliveries GROUP BY inbox ORDER BY inbox;

-- name: token_insert
INSERT INTO tokens (prefix, digest, kind, name, label, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
RETURNING *;

-- name: token_by_prefix
SELECT * FROM tokens WHERE prefix = ?;

-- name: token_by_id
SELECT * FROM tokens WHERE id = ?;

-- name: tokens_all
SELECT * FROM tokens ORDER BY id;

-- name: tokens_of
SELECT * FROM tokens WHERE name = ? ORDER BY id;

-- name: token_revoke
UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING *;

-- name: audit_head
SELECT seq, hash FROM audit_head WHERE id = 1;

-- name: audit_insert
INSERT INTO audit (seq, at, actor, action, targets, detail, outcome, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING *;

-- name: audit_head_update
UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1;

-- name: audit_query
SELECT * FROM audit
WHERE seq > ?
  AND (? IS NULL OR actor = ?)
  AND (? IS NULL OR action = ?)
  AND (? IS NULL OR at >= ?)
  AND (? IS NULL OR at < ?)
ORDER BY seq
LIMIT ?;

-- name: audit_all
SELECT * FROM audit ORDER BY seq;

-- name: audit_chain_head
SELECT seq, hash, keyed_from FROM audit_head WHERE id = 1;

-- name: audit_tip
-- The newest record and where keyed hashing began: what a checkpoint records.
SELECT a.seq, a.hash, h.keyed_from
FROM audit_head h LEFT JOIN (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) a ON 1 = 1
WHERE h.id = 1;

-- name: audit_triggers
SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit';

-- name: committed_agent
SELECT
  (SELECT coalesce(sum(cost_micros), 0) FROM model_calls WHERE day = :day AND agent = :agent)
  + (SELECT coalesce(sum(usd_micros), 0) FROM budget_reservations
     WHERE day = :day AND agent = :agent AND state = 'held') AS usd,
  (SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)
   FROM model_calls WHERE day = :day AND agent = :agent)
  + (SELECT coalesce(sum(tokens), 0) FROM budget_reservations
     WHERE day = :day AND agent = :agent AND state = 'held') AS tokens;

-- name: committed_fleet
SELECT
  (SELECT coalesce(sum(cost_micros), 0) FROM model_calls WHERE day = :day)
  + (SELECT coalesce(sum(usd_micros), 0) FROM budget_reservations
     WHERE day = :day AND state = 'held') AS usd,
  (SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)
   FROM model_calls WHERE day = :day)
  + (SELECT coalesce(sum(tokens), 0) FROM budget_reservations
     WHERE day = :day AND state = 'held') AS tokens;

-- name: reservation_insert
INSERT INTO budget_reservations (agent, day, usd_micros, tokens, purpose, state, created_at,
                                 model, prompt_tokens, max_output)
VALUES (?, ?, ?, ?, ?, 'held', ?, ?, ?, ?)
RETURNING id;

-- name: reservation_settle
UPDATE budget_reservations SET state = 'settled', settled_at = ?
WHERE id = ? AND agent = ? AND state = 'held'
RETURNING id, model, prompt_tokens, max_output, usd_micros;

-- name: model_call_insert
INSERT INTO model_calls (agent, at, day, provider, model, purpose, input_tokens, output_tokens,
                         cache_read_tokens, cache_write_tokens, cost_micros, reservation_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: usage_since
SELECT day, agent, sum(calls) AS calls, sum(input) AS input, sum(output) AS output,
       sum(cache_read) AS cache_read, sum(cache_write) AS cache_write,
       sum(cost) AS cost, sum(held) AS held
FROM (
  SELECT day, agent, count(*) AS calls, sum(input_tokens) AS input,
         sum(output_tokens) AS output, sum(cache_read_tokens) AS cache_read,
         sum(cache_write_tokens) AS cache_write, sum(cost_micros) AS cost, 0 AS held
  FROM model_calls WHERE day >= :since AND (:agent IS NULL OR agent = :agent)
  GROUP BY day, agent
  UNION ALL
  SELECT day, agent, 0, 0, 0, 0, 0, 0, sum(usd_micros)
  FROM budget_reservations
  WHERE state = 'held' AND day >= :since AND (:agent IS NULL OR agent = :agent)
  GROUP BY day, agent
)
GROUP BY day, agent ORDER BY day, agent;

-- name: agent_state_upsert
INSERT INTO agent_states (name, state, detail, until, info, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
  state = excluded.state, detail = excluded.detail, until = excluded.until,
  info = excluded.info, updated_at = excluded.updated_at
RETURNING *;

-- name: agent_states_all
SELECT * FROM agent_states ORDER BY name;

-- name: agent_states_named
SELECT * FROM agent_states WHERE name IN (SELECT value FROM json_each(?)) ORDER BY name;

-- name: lease_seed
INSERT INTO leases (agent, holder, host, fence, expires_at, acquired_at, renewed_at)
VALUES (?, '', '', 0, 0, ?, ?)
ON CONFLICT (agent) DO NOTHING;

-- name: lease_lock
SELECT * FROM leases WHERE agent = ?;

-- name: lease_write
UPDATE leases SET holder = :holder, host = :host, fence = :fence, expires_at = :expires_at,
  acquired_at = CASE WHEN :new THEN :now ELSE acquired_at END, renewed_at = :now
WHERE agent = :agent
RETURNING *;

-- name: lease_release
UPDATE leases SET expires_at = :now
WHERE agent = :agent AND holder = :holder AND fence = :fence AND expires_at > :now
RETURNING *;

-- name: lease_get
SELECT * FROM leases WHERE agent = ? AND fence > 0;

-- name: leases_all
SELECT * FROM leases WHERE fence > 0 ORDER BY agent;

-- name: incident_insert
INSERT INTO incidents (severity, reported_as, state, summary, evidence, reporter, fingerprint,
                       reports, created_at, updated_at)
VALUES (:severity, :severity, :state, :summary, :evidence, :reporter, :fingerprint, 1, :now, :now)
RETURNING *;

-- name: incident_event_insert
INSERT INTO incident_events (incident_id, at, actor, action, severity, reason)
VALUES (:incident_id, :now, :actor, :action, :severity, :reason);

-- name: incident_get
SELECT * FROM incidents WHERE id = ?;

-- name: incident_open_by_fingerprint
SELECT * FROM incidents
WHERE fingerprint = ? AND state IN ('reported', 'confirmed', 'escalated')
ORDER BY id LIMIT 1;

-- name: incidents_list
SELECT * FROM incidents
WHERE (:state IS NULL OR state = :state)
ORDER BY id DESC LIMIT :limit;

-- name: incident_events_of
SELECT * FROM incident_events WHERE incident_id = ? ORDER BY id;

-- name: incident_vote_exists
SELECT 1 FROM incident_events
WHERE incident_id = ? AND actor = ? AND action = 'confirm' AND severity = ?;

-- name: incident_transition
UPDATE incidents SET state = :state, severity = :severity, reports = reports + :more,
  updated_at = :now
WHERE id = :id AND state = :expected
RETURNING *;

-- name: reports_since
SELECT count(*) AS n FROM incident_events
WHERE actor = ? AND action IN ('reported', 'grouped') AND at >= ?;

-- name: approval_insert
INSERT INTO approvals (action, payload, payload_hash, requester, rationale, quorum, state,
                       executor, constraints, report_every, created_at, expires_at)
VALUES (:action, :payload, :payload_hash, :requester, :rationale, :quorum, 'pending',
        :executor, :constraints, :report_every, :now, :expires_at)
RETURNING *;

-- name: approval_get
SELECT * FROM approvals WHERE id = ?;

-- name: approval_pending_for
SELECT * FROM approvals WHERE action = ? AND payload_hash = ? AND state = 'pending';

-- name: approvals_list
SELECT * FROM approvals WHERE (:state IS NULL OR state = :state) ORDER BY id DESC LIMIT :limit;

-- name: approval_vote_insert
INSERT INTO approval_votes (approval_id, voter, vote, rationale, at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (approval_id, voter) DO NOTHING
RETURNING *;

-- name: approval_votes_of
SELECT * FROM approval_votes WHERE approval_id = ? ORDER BY at;

-- name: approval_decide
UPDATE approvals SET state = :state, decided_at = :now, decided_by = :by, reason = :reason
WHERE id = :id AND state = 'pending'
RETURNING *;

-- name: approval_directive
UPDATE approvals SET directive_id = :directive_id WHERE id = :id RETURNING *;

-- name: approval_acknowledge
UPDATE approvals SET acknowledged_at = :now
WHERE id = :id AND state = 'approved' AND acknowledged_at IS NULL
RETURNING *;

-- name: approval_withdraw
UPDATE approvals SET state = 'vetoed', decided_at = :now, decided_by = :by, reason = :reason
WHERE id = :id AND state = 'approved' AND acknowledged_at IS NULL
RETURNING *;

-- name: approvals_due
SELECT * FROM approvals WHERE state = 'pending' AND expires_at <= :now
ORDER BY expires_at, id LIMIT :limit;

-- name: incidents_unconfirmed
SELECT * FROM incidents WHERE state = 'reported' AND created_at <= :before
ORDER BY created_at, id LIMIT :limit;

-- name: approval_remind
UPDATE approvals SET reminded_at = :now
WHERE id = :id AND state = 'pending' AND reminded_at IS NULL
RETURNING *;

-- name: page_open
INSERT INTO pages (human, key, kind, subject, body, created_at)
VALUES (:human, :key, :kind, :subject, :body, :now)
ON CONFLICT (human, key) DO NOTHING
RETURNING *;

-- name: page_sent
UPDATE pages SET state = CASE WHEN state = 'acked' THEN state ELSE :state END,
    channel = :channel, ref = :ref, error = :error, attempts = attempts + 1,
    sent_at = CASE WHEN :state = 'sent' THEN :now ELSE sent_at END
WHERE id = :id
RETURNING *;

-- name: page_ack
UPDATE pages SET state = 'acked', acked_at = :now, acked_by = :by
WHERE id = :id AND state <> 'acked'
RETURNING *;

-- name: page_get
SELECT * FROM pages WHERE id = ?;

-- name: pages_list
SELECT * FROM pages
WHERE (:human IS NULL OR human = :human) AND (:state IS NULL OR state = :state)
ORDER BY id DESC LIMIT :limit;

-- name: dashboard_session_insert
INSERT INTO dashboard_sessions (id_hash, token_id, operator, created_at, expires_at)
VALUES (?, ?, ?, ?, ?)
RETURNING *;

-- name: dashboard_session_by_hash
SELECT * FROM dashboard_sessions WHERE id_hash = ?;

-- name: dashboard_session_end
UPDATE dashboard_sessions SET ended_at = coalesce(ended_at, ?) WHERE id_hash = ? RETURNING *;

-- name: operator_tokens_active
SELECT id FROM tokens
WHERE kind = 'operator' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)
ORDER BY id;

-- --- trace ---

-- name: trace_insert
INSERT INTO turn_traces (id, agent, kind, outcome, started_at, received_at, cost_micros,
                         cost_source, body)
VALUES (:id, :agent, :kind, :outcome, :started_at, :received_at, :cost_micros, :cost_source, :body)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: trace_link
INSERT OR IGNORE INTO turn_trace_messages (trace_id, message_id, role) VALUES (?, ?, ?);

-- name: trace_by_id
SELECT * FROM turn_traces WHERE id = ?;

-- name: traces_find
SELECT t.* FROM turn_traces t
WHERE (:agent IS NULL OR t.agent = :agent)
  AND (:since IS NULL OR t.started_at >= :since)
  AND (:message IS NULL OR t.id IN (
        SELECT trace_id FROM turn_trace_messages WHERE message_id = :message))
  AND (:thread IS NULL OR t.id IN (
        SELECT l.trace_id FROM turn_trace_messages l JOIN messages m ON m.id = l.message_id
        WHERE m.thread_id = :thread))
ORDER BY t.started_at DESC, t.id
LIMIT :limit;

-- name: traces_delete_before
DELETE FROM turn_traces WHERE started_at < ?;

-- name: trace_metered_calls
SELECT reservation_id, sum(cost_micros) AS cost FROM model_calls
WHERE agent = ? AND reservation_id IN (SELECT value FROM json_each(?))
GROUP BY reservation_id;
-- --- dash: message search ---
-- name: message_search
-- Newest first; the state of a message is that of its worst copy (dead, claimed, queued), else
-- acked when a copy was handled, else unrouted. Text: LIKE (ASCII case-insensitive) on subject
-- and body, with backslash as the escape character.
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
    WHERE (:sender IS NULL OR m.sender = :sender)
      AND (:recipient IS NULL OR m.recipient = :recipient)
      AND (:kind IS NULL OR m.kind = :kind)
      AND (:priority IS NULL OR m.priority = :priority)
      AND (:thread IS NULL OR m.thread_id = :thread)
      AND (:since IS NULL OR m.created_at >= :since)
      AND (:until IS NULL OR m.created_at <= :until)
      AND (:before IS NULL OR m.id < :before)
      AND (:pattern IS NULL OR m.subject LIKE :pattern ESCAPE '\' OR m.body LIKE :pattern ESCAPE '\')
) AS found
WHERE (:state IS NULL OR delivery_state = :state)
ORDER BY id DESC
LIMIT :limit;
