/// Migration 7: order calls in batches. `order_batch` reads, confirms and cancels many orders (of any products of the
/// database) in one call and one transaction, as the purchase pool's consumers send them (`OrderQueue`); it replaces
/// migration 5's one-order `order_action`, whose rules it keeps: each order decided under its row's lock, only a
/// `held` row changes, a confirm after `pay_by` releases the hold (expired) instead of paying it, and every unit
/// released goes back to a slot in the same transaction (`release_holds`).
///
/// Locks, in the order of migration 5: the changed orders' rows first, all at once and in request-id order (so two
/// batches never wait on each other in a cycle), then, in one `release_holds` call, the product rows in product order
/// and a slot each.
extension Schema {
    static let orderBatches = #"""
-- Entry i names an order of product p_products[i] by its request id (p_requests[i] <> 0) or by its order id
-- (p_orders[i]), and p_actions[i] says what to do to it: 0 read, 1 confirm (pay), 2 cancel. One row per entry that
-- names an order (r_index: i), as the order is after the whole batch; r_outcome: 1 done now (read: found), 2 it was in
-- that end state already (nothing changed), 3 refused (confirm: it was released; cancel: it is paid), 4 confirm
-- refused because pay_by has passed: the hold is released (expired) now. Entries run in array order, so a repeat of
-- an entry in the same batch sees what the first did.
CREATE FUNCTION order_batch(p_products integer[], p_requests bigint[], p_orders bigint[], p_actions smallint[])
RETURNS TABLE (r_index integer, r_outcome smallint, r_request bigint, r_order bigint, r_user bigint, r_state text,
               r_pay_by_ms bigint, r_ended_ms bigint, r_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    n        integer := coalesce(cardinality(p_products), 0);
    rids     bigint[];
    outcomes smallint[];
    ending   bigint[] := '{}';
    late     bigint[] := '{}';
    rid      bigint;
    st       text;
    due      timestamptz;
BEGIN
    IF n = 0 THEN RETURN; END IF;
    IF cardinality(p_requests) IS DISTINCT FROM n OR cardinality(p_orders) IS DISTINCT FROM n
       OR cardinality(p_actions) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'order_batch: arrays of different lengths' USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(k.request_id ORDER BY t.i) INTO rids
      FROM unnest(p_products, p_requests, p_orders) WITH ORDINALITY AS t(p, r, o, i)
      LEFT JOIN LATERAL (
          (SELECT x.request_id FROM requests x
            WHERE t.r <> 0 AND x.request_id = t.r AND x.product_id = t.p AND x.order_id IS NOT NULL)
          UNION ALL
          (SELECT x.request_id FROM requests x
            WHERE t.r = 0 AND x.order_id = t.o AND x.product_id = t.p ORDER BY x.request_id LIMIT 1)
          LIMIT 1) k ON true;
    -- The rows as they are once every other change of them has committed: the one decision point of their state.
    PERFORM 1 FROM requests x
      WHERE x.request_id IN (SELECT t.r FROM unnest(rids, p_actions) AS t(r, a) WHERE t.a <> 0)
      ORDER BY x.request_id FOR UPDATE;
    outcomes := array_fill(0::smallint, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        rid := rids[i];
        CONTINUE WHEN rid IS NULL;
        SELECT x.state, x.pay_by INTO st, due FROM requests x WHERE x.request_id = rid;
        -- Releases run at the end, together: a hold this batch releases is released for the entries after.
        IF rid = ANY (ending) THEN st := 'released'; END IF;
        outcomes[i] := 1;
        IF p_actions[i] = 1 THEN
            IF st = 'paid' THEN outcomes[i] := 2;
            ELSIF st = 'released' THEN outcomes[i] := 3;
            ELSIF due <= now() THEN outcomes[i] := 4; ending := ending || rid; late := late || rid;
            ELSE UPDATE requests SET state = 'paid', ended_at = now() WHERE request_id = rid;
            END IF;
        ELSIF p_actions[i] = 2 THEN
            IF st = 'released' THEN outcomes[i] := 2;
            ELSIF st = 'paid' THEN outcomes[i] := 3;
            ELSE ending := ending || rid;
            END IF;
        END IF;
    END LOOP;
    IF cardinality(ending) > 0 THEN
        -- One release_holds call, so the product rows are taken once and in product order; the late confirms'
        -- holds were released for expiry, not cancelled.
        PERFORM release_holds(ending, 'cancelled');
        IF cardinality(late) > 0 THEN
            UPDATE requests SET release_reason = 'expired' WHERE request_id = ANY (late);
        END IF;
    END IF;
    RETURN QUERY SELECT t.i::integer, outcomes[t.i::integer], x.request_id, x.order_id, x.user_id, x.state,
                        (extract(epoch FROM x.pay_by) * 1000)::bigint, (extract(epoch FROM x.ended_at) * 1000)::bigint,
                        x.release_reason
                   FROM unnest(rids) WITH ORDINALITY AS t(r, i) JOIN requests x ON x.request_id = t.r
                  ORDER BY t.i;
END
$fn$;

DROP FUNCTION order_action(integer, bigint, bigint, smallint);
REVOKE ALL ON FUNCTION order_batch(integer[], bigint[], bigint[], smallint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION order_batch(integer[], bigint[], bigint[], smallint[]) TO flashsale_service;
"""#
}
