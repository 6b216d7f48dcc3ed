/// Migration 5: order states. An order (a row of `requests` with an order id) is `held` (a unit kept for the buyer
/// until `pay_by`), `paid` or `released` (by cancel or expiry: its unit went back to a slot). A product's
/// `hold_seconds` (0: orders are paid at once, the behaviour before holds) decides how new orders start. A hold ends
/// exactly once: every change of state runs in a procedure that holds the order row's lock, and only a `held` row
/// changes. The unique (product, user) rule covers live holds and paid orders only, so a buyer whose hold was released
/// may buy again (with a new request id: the old one stays bound to its released order, and replays it).
///
/// Locks, in this order everywhere (so no two of these transactions wait on each other in a cycle): order rows (a
/// plain row lock, which no insert waits for), the product row (as `adjust_stock` takes it), one stock slot (one no
/// other transaction holds if there is one), and only then the order rows are changed. An insert of the same buyer
/// waits for that change, and holds no lock this transaction still needs.
extension Schema {
    static let holds = #"""
ALTER TABLE products ADD COLUMN hold_seconds integer NOT NULL DEFAULT 0 CHECK (hold_seconds BETWEEN 0 AND 86400),
    ADD COLUMN released bigint NOT NULL DEFAULT 0 CHECK (released >= 0);
ALTER TABLE requests ADD COLUMN state text, ADD COLUMN pay_by timestamptz, ADD COLUMN ended_at timestamptz,
    ADD COLUMN release_reason text;
UPDATE requests SET state = 'paid', ended_at = created_at WHERE order_id IS NOT NULL;
-- A closed request id has no state; an order exactly one valid one.
ALTER TABLE requests ADD CONSTRAINT requests_order_state CHECK (
    (order_id IS NULL AND state IS NULL AND pay_by IS NULL AND release_reason IS NULL)
    OR (order_id IS NOT NULL AND (
           (state = 'held' AND pay_by IS NOT NULL AND ended_at IS NULL AND release_reason IS NULL)
        OR (state = 'paid' AND ended_at IS NOT NULL AND release_reason IS NULL)
        OR (state = 'released' AND pay_by IS NOT NULL AND ended_at IS NOT NULL
            AND release_reason IN ('cancelled', 'expired')))));
DROP INDEX requests_product_user;
CREATE UNIQUE INDEX requests_product_user ON requests (product_id, user_id)
    WHERE order_id IS NOT NULL AND state <> 'released';
-- The expiry's queue, and orders named by their order id (ConfirmOrder, CancelOrder, GetOrder).
CREATE INDEX requests_due ON requests (pay_by) WHERE state = 'held';
CREATE INDEX requests_order_id ON requests (order_id) WHERE order_id IS NOT NULL;
CREATE OR REPLACE VIEW orders AS
    SELECT request_id, order_id, product_id, user_id, edge_id, created_at, state, pay_by, ended_at, release_reason
      FROM requests WHERE order_id IS NOT NULL;

CREATE OR REPLACE FUNCTION purchase_batch(p_product integer, p_requests bigint[], p_users bigint[], p_edges integer[],
                                          OUT r_requests bigint[], OUT r_outcomes smallint[], OUT r_orders bigint[],
                                          OUT r_edges integer[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
-- As in migration 4, and: a new order of a product with a hold time is a hold (state 'held', pay_by now + the hold),
-- otherwise paid at once; a buyer's released order does not count as theirs (ALREADY_PURCHASED, the sold-out close).
DECLARE
    n          integer := coalesce(cardinality(p_requests), 0);
    slot_ids   integer[] := '{}';
    slot_takes bigint[]  := '{}';
    avail      bigint := 0;
    s          record;
    lo         integer := 1;
    chunk      integer;
    hi         integer;
    inserted   integer;
    used       bigint := 0;
    take       bigint;
    closed_now bigint[] := '{}';
    hold       integer;
    got_requests bigint[];
    got_outcomes smallint[];
    got_orders   bigint[];
    got_edges    integer[];
BEGIN
    r_requests := '{}';
    r_outcomes := '{}';
    r_orders := '{}';
    r_edges := '{}';
    IF n = 0 THEN RETURN; END IF;
    IF cardinality(p_users) IS DISTINCT FROM n OR cardinality(p_edges) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'purchase_batch: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    SELECT p.hold_seconds INTO hold FROM products p WHERE p.id = p_product;
    hold := coalesce(hold, 0);
    LOOP
        SELECT ss.slot, ss.remaining INTO s FROM stock_slot ss
         WHERE ss.product_id = p_product AND ss.remaining > 0 AND ss.slot <> ALL (slot_ids)
         ORDER BY ss.remaining DESC LIMIT 1 FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        slot_ids := slot_ids || s.slot;
        slot_takes := slot_takes || s.remaining;
        avail := avail + s.remaining;
        EXIT WHEN avail >= n;
    END LOOP;

    WHILE lo <= n AND used < avail LOOP
        chunk := least(avail - used, n - lo + 1)::integer;
        hi := lo + chunk - 1;
        BEGIN
            WITH ins AS (
                INSERT INTO requests (request_id, product_id, user_id, edge_id, state, pay_by, ended_at)
                SELECT t.r, p_product, t.u, t.e, CASE WHEN hold > 0 THEN 'held' ELSE 'paid' END,
                       CASE WHEN hold > 0 THEN now() + make_interval(secs => hold) END,
                       CASE WHEN hold > 0 THEN NULL ELSE now() END FROM unnest(p_requests[lo:hi], p_users[lo:hi], p_edges[lo:hi]) AS t(r, u, e)
                RETURNING requests.request_id, requests.order_id, requests.edge_id)
            SELECT array_agg(ins.request_id), array_agg(ins.order_id), array_agg(ins.edge_id)
              INTO got_requests, got_orders, got_edges FROM ins;
            got_outcomes := array_fill(1::smallint, ARRAY[chunk]);
            inserted := chunk;
        EXCEPTION WHEN unique_violation THEN
            WITH ins AS (
                INSERT INTO requests (request_id, product_id, user_id, edge_id, state, pay_by, ended_at)
                SELECT t.r, p_product, t.u, t.e, CASE WHEN hold > 0 THEN 'held' ELSE 'paid' END,
                       CASE WHEN hold > 0 THEN now() + make_interval(secs => hold) END,
                       CASE WHEN hold > 0 THEN NULL ELSE now() END FROM unnest(p_requests[lo:hi], p_users[lo:hi], p_edges[lo:hi]) AS t(r, u, e)
                ON CONFLICT DO NOTHING
                RETURNING requests.request_id)
            SELECT coalesce(array_agg(ins.request_id), '{}') INTO got_requests FROM ins;
            inserted := cardinality(got_requests);
            SELECT array_agg(q.r), array_agg(q.outcome), array_agg(q.o), array_agg(q.e)
              INTO got_requests, got_outcomes, got_orders, got_edges
            FROM (SELECT DISTINCT ON (t.r) t.r,
                         (CASE WHEN x.request_id = t.r AND (x.product_id <> p_product OR x.user_id <> t.u) THEN 7
                               WHEN x.request_id = t.r AND x.order_id IS NULL THEN 6
                               WHEN x.request_id = t.r AND t.r = ANY(got_requests) THEN 1
                               WHEN x.request_id = t.r THEN 5
                               WHEN x.request_id IS NULL THEN 0
                               ELSE 4 END)::smallint AS outcome,
                         coalesce(x.order_id, 0) AS o, coalesce(x.edge_id, 0) AS e
                  FROM unnest(p_requests[lo:hi], p_users[lo:hi]) AS t(r, u)
                  LEFT JOIN LATERAL (
                      (SELECT o.request_id, o.order_id, o.edge_id, o.product_id, o.user_id FROM requests o WHERE o.request_id = t.r)
                      UNION ALL
                      (SELECT o.request_id, o.order_id, o.edge_id, o.product_id, o.user_id FROM requests o
                        WHERE o.product_id = p_product AND o.user_id = t.u AND o.order_id IS NOT NULL
                          AND o.state <> 'released')
                      LIMIT 1) x ON true) q;
        END;
        r_requests := r_requests || got_requests;
        r_outcomes := r_outcomes || got_outcomes;
        r_orders := r_orders || got_orders;
        r_edges := r_edges || got_edges;
        used := used + inserted;
        lo := hi + 1;
    END LOOP;

    take := used;
    FOR i IN 1 .. coalesce(cardinality(slot_ids), 0) LOOP
        EXIT WHEN take = 0;
        UPDATE stock_slot SET remaining = remaining - least(take, slot_takes[i])
         WHERE product_id = p_product AND slot = slot_ids[i];
        take := take - least(take, slot_takes[i]);
    END LOOP;

    IF lo <= n THEN
        -- Sold out (no slot holds a unit, committed or locked): close the request ids that have no row and whose
        -- buyer holds no order. Under the request id's key, so a purchase of the same id still committing is waited
        -- for (and then replayed).
        IF NOT EXISTS (SELECT 1 FROM stock_slot ss WHERE ss.product_id = p_product AND ss.remaining > 0) THEN
            WITH ins AS (
                INSERT INTO requests (request_id, order_id, product_id, user_id, edge_id)
                SELECT t.r, NULL, p_product, t.u, t.e FROM unnest(p_requests[lo:n], p_users[lo:n], p_edges[lo:n]) AS t(r, u, e)
                 WHERE NOT EXISTS (SELECT 1 FROM requests o
                                    WHERE o.product_id = p_product AND o.user_id = t.u AND o.order_id IS NOT NULL
                          AND o.state <> 'released')
                ON CONFLICT DO NOTHING
                RETURNING requests.request_id)
            SELECT coalesce(array_agg(ins.request_id), '{}') INTO closed_now FROM ins;
        END IF;
        SELECT array_agg(q.r), array_agg(q.outcome), array_agg(q.o), array_agg(q.e)
              INTO got_requests, got_outcomes, got_orders, got_edges
        FROM (SELECT DISTINCT ON (t.r) t.r,
                     (CASE WHEN x.request_id = t.r AND (x.product_id <> p_product OR x.user_id <> t.u) THEN 7
                           WHEN x.request_id = t.r AND x.order_id IS NULL AND t.r = ANY(closed_now) THEN 2
                           WHEN x.request_id = t.r AND x.order_id IS NULL THEN 6
                           WHEN x.request_id = t.r THEN 5
                           WHEN x.request_id IS NOT NULL THEN 4
                           ELSE 0 END)::smallint AS outcome,
                     coalesce(x.order_id, 0) AS o, coalesce(x.edge_id, 0) AS e
              FROM unnest(p_requests[lo:n], p_users[lo:n]) AS t(r, u)
              LEFT JOIN LATERAL (
                  (SELECT o.request_id, o.order_id, o.edge_id, o.product_id, o.user_id FROM requests o WHERE o.request_id = t.r)
                  UNION ALL
                  (SELECT o.request_id, o.order_id, o.edge_id, o.product_id, o.user_id FROM requests o
                    WHERE o.product_id = p_product AND o.user_id = t.u AND o.order_id IS NOT NULL
                          AND o.state <> 'released')
                  LIMIT 1) x ON true) q;
        r_requests := r_requests || got_requests;
        r_outcomes := r_outcomes || got_outcomes;
        r_orders := r_orders || got_orders;
        r_edges := r_edges || got_edges;
    END IF;
END
$fn$;


-- Releases the held orders `p_ids` (their rows locked by the caller) for `p_reason`, each unit back in a slot of its
-- product, in the caller's transaction. Per product, in product order: the product row (as adjust_stock takes it),
-- then one slot, the emptiest no other transaction holds, else (every slot held by batches in flight) the first,
-- waited for; only then the orders change, so an insert of the same buyer that waits for this transaction holds no
-- lock it still needs. Returns the products and their units released.
CREATE FUNCTION release_holds(p_ids bigint[], p_reason text, OUT r_products integer[], OUT r_counts bigint[])
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    g     record;
    s     integer;
    slots integer[] := '{}';
BEGIN
    r_products := '{}';
    r_counts := '{}';
    FOR g IN SELECT x.product_id AS p, count(*) AS n FROM requests x
              WHERE x.request_id = ANY (p_ids) AND x.state = 'held' GROUP BY x.product_id ORDER BY x.product_id LOOP
        UPDATE products SET released = released + g.n WHERE id = g.p;
        SELECT ss.slot INTO s FROM stock_slot ss WHERE ss.product_id = g.p
         ORDER BY ss.remaining, ss.slot LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT ss.slot INTO s FROM stock_slot ss WHERE ss.product_id = g.p ORDER BY ss.slot LIMIT 1 FOR UPDATE;
        END IF;
        slots := slots || s;
        r_products := r_products || g.p;
        r_counts := r_counts || g.n;
    END LOOP;
    UPDATE requests SET state = 'released', release_reason = p_reason, ended_at = now()
     WHERE request_id = ANY (p_ids) AND state = 'held';
    FOR i IN 1 .. cardinality(r_products) LOOP
        UPDATE stock_slot SET remaining = remaining + r_counts[i] WHERE product_id = r_products[i] AND slot = slots[i];
    END LOOP;
END
$fn$;

-- One order of a product, by request id (p_request) or order id (p_order), and what p_action does to it:
-- 0 read, 1 confirm (pay), 2 cancel. r_outcome: 1 done now (read: found), 2 it was in that end state already
-- (nothing changed), 3 refused (confirm: it was released; cancel: it is paid), 4 confirm refused because pay_by has
-- passed: the hold is released (expired) now. No row: no such order.
CREATE FUNCTION order_action(p_product integer, p_request bigint, p_order bigint, p_action smallint)
RETURNS TABLE (r_outcome smallint, r_request bigint, r_order bigint, r_user bigint, r_state text,
               r_pay_by_ms bigint, r_ended_ms bigint, r_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    rid     bigint;
    o       record;
    outcome smallint := 1;
    reason  text;
BEGIN
    IF p_request IS NOT NULL THEN
        SELECT x.request_id INTO rid FROM requests x
         WHERE x.request_id = p_request AND x.product_id = p_product AND x.order_id IS NOT NULL;
    ELSE
        SELECT x.request_id INTO rid FROM requests x
         WHERE x.order_id = p_order AND x.product_id = p_product ORDER BY x.request_id LIMIT 1;
    END IF;
    IF rid IS NULL THEN RETURN; END IF;
    IF p_action <> 0 THEN
        -- The row as it is once every other change of it has committed: the one decision point of its state.
        SELECT x.state, x.pay_by INTO o FROM requests x WHERE x.request_id = rid FOR UPDATE;
        IF p_action = 1 THEN
            IF o.state = 'paid' THEN outcome := 2;
            ELSIF o.state = 'released' THEN outcome := 3;
            ELSIF o.pay_by <= now() THEN outcome := 4; reason := 'expired';
            ELSE UPDATE requests SET state = 'paid', ended_at = now() WHERE request_id = rid;
            END IF;
        ELSIF p_action = 2 THEN
            IF o.state = 'released' THEN outcome := 2;
            ELSIF o.state = 'paid' THEN outcome := 3;
            ELSE reason := 'cancelled';
            END IF;
        END IF;
        IF reason IS NOT NULL THEN PERFORM release_holds(ARRAY[rid], reason); END IF;
    END IF;
    RETURN QUERY SELECT outcome, x.request_id, x.order_id, x.user_id, x.state,
                        (extract(epoch FROM x.pay_by) * 1000)::bigint, (extract(epoch FROM x.ended_at) * 1000)::bigint,
                        x.release_reason
                   FROM requests x WHERE x.request_id = rid;
END
$fn$;

-- Releases up to p_limit holds whose pay_by has passed, in one transaction, their units back in the slots. Holds
-- another transaction has locked (a confirm or cancel deciding, another instance's expiry) are skipped, so every
-- instance may run it at once without double work. Returns the products that got units back and how many.
CREATE FUNCTION expire_holds(p_limit integer, OUT r_products integer[], OUT r_counts bigint[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    ids bigint[];
BEGIN
    SELECT coalesce(array_agg(d.request_id), '{}') INTO ids
      FROM (SELECT x.request_id FROM requests x WHERE x.state = 'held' AND x.pay_by <= now()
             ORDER BY x.pay_by LIMIT greatest(p_limit, 0) FOR UPDATE SKIP LOCKED) d;
    SELECT r.r_products, r.r_counts INTO r_products, r_counts FROM release_holds(ids, 'expired') r;
END
$fn$;

-- As in migration 4, with the product's hold time.
DROP FUNCTION create_product(integer, text, bigint, integer, boolean, text, bigint);
CREATE FUNCTION create_product(p_id integer, p_name text, p_total bigint, p_slots integer, p_hot boolean,
                               p_database text, p_sale_limit bigint, p_hold integer)
RETURNS TABLE (r_id integer, r_created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    on_sale bigint := CASE WHEN p_sale_limit > 0 THEN least(p_total, p_sale_limit) ELSE p_total END;
    new_id  integer;
BEGIN
    INSERT INTO products (id, name, total_stock, slot_count, hot, database, sale_limit, withheld, hold_seconds)
    VALUES (coalesce(p_id, nextval(pg_get_serial_sequence('products', 'id'))::integer), p_name, on_sale, p_slots, p_hot,
            p_database, p_sale_limit, p_total - on_sale, p_hold)
    ON CONFLICT (name) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN QUERY SELECT p.id, false FROM products p WHERE p.name = p_name;
        RETURN;
    END IF;
    INSERT INTO stock_slot (product_id, slot, remaining)
    SELECT new_id, g, on_sale / p_slots + CASE WHEN g < on_sale % p_slots THEN 1 ELSE 0 END
    FROM generate_series(0, p_slots - 1) AS g;
    RETURN QUERY SELECT new_id, true;
END
$fn$;

REVOKE ALL ON FUNCTION release_holds(bigint[], text), order_action(integer, bigint, bigint, smallint),
    expire_holds(integer), create_product(integer, text, bigint, integer, boolean, text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION order_action(integer, bigint, bigint, smallint), expire_holds(integer),
    create_product(integer, text, bigint, integer, boolean, text, bigint, integer) TO flashsale_service;
"""#
}
