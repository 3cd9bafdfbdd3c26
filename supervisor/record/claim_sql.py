"""The claim of a slot, as a function inside PostgreSQL: one round trip instead of seven.

A claim reads our lease, our peers' acknowledgements, the worker's pause, its last slot and what is in flight,
then inserts the tick, all under the worker's advisory lock (record/cluster.py says why each check is there). Run
from the coordinator, statement by statement through a proxy on a loaded machine, that was seven round trips, and
a node with ten workers due at once waited for seventy. In the database it is one statement, in its own
transaction, holding the worker's lock for well under a millisecond.

The function's name carries its version: a release that changes it adds a new one, so that nodes of two
releases (a rolling deploy) each call their own. It is created with the schema, only if missing, so that a reader
without the right to create functions (`status` as a read-only role) never tries.
"""
from __future__ import annotations

from typing import Any

CLAIM_FUNCTION = "worker_supervisor_claim_v2"
"""v2: a won claim also returns the slot claimed before it (`o_last_at`), so a cron worker's skipped slots are
counted by its schedule (the ledger numbers cron slots by their second, so it cannot count them itself)."""

CLAIM_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {CLAIM_FUNCTION}(
    p_me text, p_worker text, p_slot_at timestamp, p_period double precision, p_overlap text, p_run text,
    p_margin double precision, p_scheduled boolean, p_command bigint)
RETURNS TABLE (o_result text, o_tick bigint, o_skipped integer, o_taken_at timestamp, o_last_at timestamp)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamp;
    v_valid boolean;
    v_paused boolean;
    v_last_no bigint;
    v_last_at timestamp;
    v_slot_no bigint;
    v_skipped integer := 0;
    v_busy boolean := false;
    v_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('worker-supervisor:claim:' || p_worker, 0));
    v_now := clock_timestamp() AT TIME ZONE 'UTC';
    -- Our lease, valid beyond the margin; and every live peer has seen us (none may believe itself alone).
    SELECT n.lease_until > v_now + p_margin * interval '1 second' INTO v_valid
        FROM node n WHERE n.id = p_me AND n.state = 'alive';
    IF v_valid IS NOT TRUE OR EXISTS (
            SELECT 1 FROM node peer WHERE peer.state = 'alive' AND peer.id <> p_me AND peer.lease_until > v_now
            AND NOT (peer.seen::jsonb ? p_me)) THEN
        RETURN QUERY SELECT 'fenced'::text, NULL::bigint, 0, NULL::timestamp, NULL::timestamp;
        RETURN;
    END IF;
    IF p_command IS NOT NULL AND EXISTS (SELECT 1 FROM tick t WHERE t.command_id = p_command) THEN
        RETURN QUERY SELECT 'taken'::text, NULL::bigint, 0, NULL::timestamp, NULL::timestamp;
        RETURN;
    END IF;
    IF p_scheduled THEN
        SELECT w.paused INTO v_paused FROM worker w WHERE w.name = p_worker;
        IF v_paused THEN
            RETURN QUERY SELECT 'paused'::text, NULL::bigint, 0, NULL::timestamp, NULL::timestamp;
            RETURN;
        END IF;
        SELECT t.slot_no, t.slot_at INTO v_last_no, v_last_at FROM tick t
            WHERE t.worker = p_worker AND t.slot_no IS NOT NULL ORDER BY t.slot_no DESC LIMIT 1;
        -- A cron slot is numbered by its own second; an interval slot counts on from the last claimed, and a
        -- quarter of a period early still names the next one, no earlier.
        IF p_period IS NULL THEN
            v_slot_no := round(extract(epoch FROM p_slot_at));
        ELSIF v_last_no IS NULL THEN
            v_slot_no := round(extract(epoch FROM p_slot_at) / p_period);
        ELSE
            v_slot_no := v_last_no + floor(extract(epoch FROM (p_slot_at - v_last_at)) / p_period + 0.25);
        END IF;
        IF v_last_no IS NOT NULL AND v_slot_no <= v_last_no THEN
            RETURN QUERY SELECT 'taken'::text, NULL::bigint, 0, v_last_at, NULL::timestamp;
            RETURN;
        END IF;
        IF v_last_no IS NOT NULL AND p_period IS NOT NULL THEN
            v_skipped := v_slot_no - v_last_no - 1;
        END IF;
    END IF;
    -- In flight elsewhere: our own runs the supervisor knows of, and it claims nothing while one goes.
    IF p_overlap <> 'allow' THEN
        v_busy := EXISTS (SELECT 1 FROM tick t JOIN node n ON n.id = t.node WHERE t.worker = p_worker
                          AND t.node <> p_me AND t.state = 'running' AND n.state <> 'dead');
    END IF;
    IF v_busy AND NOT p_scheduled THEN
        RETURN QUERY SELECT 'busy'::text, NULL::bigint, 0, NULL::timestamp, NULL::timestamp;
        RETURN;
    END IF;
    -- A busy slot is written too (skipped), so that every slot is accounted for and no backup claims it.
    INSERT INTO tick (worker, slot_no, slot_at, kind, node, claimed_at, state, skipped, run_id, command_id)
        VALUES (p_worker, CASE WHEN p_scheduled THEN v_slot_no END, p_slot_at,
                CASE WHEN p_scheduled THEN 'scheduled' ELSE 'extra' END, p_me, v_now,
                CASE WHEN v_busy THEN 'skipped' ELSE 'running' END, v_skipped,
                CASE WHEN v_busy THEN NULL ELSE p_run END, p_command)
        ON CONFLICT DO NOTHING RETURNING id INTO v_id;
    IF v_id IS NULL THEN  -- the unique index refused what the lock should have kept out: taken all the same
        RETURN QUERY SELECT 'taken'::text, NULL::bigint, 0, p_slot_at, NULL::timestamp;
        RETURN;
    END IF;
    RETURN QUERY SELECT CASE WHEN v_busy THEN 'busy' ELSE 'won' END, v_id, v_skipped, NULL::timestamp, v_last_at;
END
$$
"""


def ensure_claim_function(db: Any) -> None:
    """Create the claim function if this database lacks it (called with the schema, under its lock)."""
    if not db.execute_sql("SELECT 1 FROM pg_proc WHERE proname = %s", (CLAIM_FUNCTION,)).fetchone():
        db.execute_sql(CLAIM_FUNCTION_SQL)
