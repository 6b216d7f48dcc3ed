/*
 * QuotaProtocol.pml: the quota and in-doubt protocol of one product, as a Promela model checked with spin
 * (issue 11, item 12). scripts/model-check.sh runs the check; Tests/ModelTests runs it in the tests.
 * It models the protocol as issue 11 fixes it (items 1-8, the shared contract decisions, the branches edge and quota),
 * and two rules the model itself showed are needed (marked NEEDED below: the code must do them too).
 *
 * WHAT IS CHECKED, exhaustively (-DSAFETY, no bitstate), at the sizes below: 2 edge addresses, 3 edge ids (one
 * restart on an address), 2 request ids (one with 2 attempts), 1 unit of stock, a raise of 1, a limit to 1,
 * at most one fault (a crash, maybe followed by a restart on the same address under a new edge id, or a partition
 * from ZooKeeper with or without the quota service). Any of the
 * operator's changes and the fault may also not happen. `scripts/model-check.sh --large`: 2 units, 2 attempts each.
 *   (1) SAFETY, in every state (proctype Safety can only move when it is broken): the units on the counters of
 *       edges that sell (alive, not fenced) are at most the database's remaining stock; while a lowered sale limit
 *       is being applied (the database is cut first, the edges give back after: adjust_stock then the quota
 *       round) at most remaining + the units the limit cut. And the audit, orders + remaining == total stock.
 *   (2) NOTHING STRANDED: in every end state (no buyer has an attempt left, every timer has fired, no party can
 *       take a step: spin's `timeout`) the units on the counters of selling edges equal the remaining stock, i.e.
 *       remaining == 0 or every remaining unit is sellable somewhere.
 *   Why an end-state assertion and not LTL: spin checks assertions in every reachable state exhaustively and
 *   cheaply with -DSAFETY. An end-state assertion speaks only of runs that end, so every step of the model uses
 *   up a budget or moves a counter one way (none undoes another), and the case `terminates` proves that every run
 *   ends: a non-progress-cycle search (-DNP, ./pan -l) with no progress label finds no cycle at all.
 *
 * HOW TIME IS MODELLED: no clocks. A timer is a step that may fire at any moment after it is armed (a call's
 * deadline, the resolver's next lookup, the edge's fence, ZooKeeper's session expiry, a partition healing),
 * constrained only by the orderings the implementation guarantees:
 *   T1 (deadlines), NEEDED: the edge never gives a forward a deadline past its fence (its last ZooKeeper contact
 *      + session timeout - margin), and the inventory never buys a purchase past its deadline (issue 11 item 5).
 *      So by the time an edge fences itself, and before its session can expire, each purchase it forwarded is
 *      bought or dropped. In the model `fence` and `expire` need no queued forward of that edge id. At eaaa7e6
 *      the edge's default forward timeout (5 s) was longer than its session (4 s): BUG_LATE_COMMIT. Now each
 *      forward's timeout is capped at the time left to the fence (QuotaLedger.timeToFence, set by
 *      EdgeQuotaAgent.heard; PurchasePath.forwardTimeout), and too little left is UNAVAILABLE before a unit is
 *      taken (test: PurchasePathTests noForwardOutlivesTheEdgesFence).
 *   T2 (fence before expiry, finding 8): cut off from ZooKeeper for its session timeout minus a margin, an edge
 *      stops selling (UNAVAILABLE), before the server can expire its session. In the model `expire` of a live
 *      edge's session needs that edge fenced.
 *
 * THE OTHER RULES the model holds the edges and the quota service to:
 *   - lookup_only is definitive: it closes an id with no order (contract 2); so is SOLD_OUT from the inventory.
 *   - one in-doubt owner per (request id, edge id): a second in-doubt attempt of an id gives its unit back at
 *     once; a retry claims the held unit (contract 3).
 *   - NEEDED: an order made through edge id a keeps exactly one unit of a: the first attempt of that request id
 *     settled with it (answered PURCHASED, or found by the resolver) keeps its unit, every later one gives its unit
 *     back (`counted`: per product, the request ids whose order this edge has counted; at most its granted units).
 *     At eaaa7e6 an in-doubt attempt keeps its unit whenever the order was made through this edge id, so a repeat
 *     of a request id already bought here that goes in doubt keeps a second unit for one order
 *     (BUG_MADE_HERE_BY_EDGE_ID): stranded.
 *   - releases and probes carry the edge id; another edge at the address refuses, which the quota service counts
 *     as "gone" for an absent allotment (contract 6).
 *   - the partition fence (T2) suspends the ledger and hands back what is on the counter. After its session
 *     expired an edge registers again under its name but sells again only once the quota service has taken the
 *     new session (a probe's release names it: QuotaLedger.vouch); a retired allotment is never probed again, so
 *     it is never revived and its edge never sells again; its in-doubt units settle onto that suspended counter.
 *     The quota service reclaims granted - reclaimed - sold through a retired edge (BUG_REVIVE: eaaa7e6 revives).
 *
 * ABSTRACTIONS (left out, and why that is sound for these properties):
 *   - One product: the quota math, the ledger and the orders are per product.
 *   - The lottery, and what a client is told (SOLD_OUT, UNAVAILABLE, SHED): they decide whether an attempt is
 *     made, and every attempt the model allows may also not be made. A request id belongs to one (product, user)
 *     (contract 1): a reused one is refused before it takes a unit. A dry attempt that asks the quota service again
 *     (PurchaseDecision.maxAsksAgain) is an EDGE_APPLY, then an EDGE_FORWARD: steps the model interleaves already.
 *   - The planner (fair shares, favoured edges, the spread of a raise) is over-approximated: any grant of one unit
 *     of a positive pool to any live edge, any release of one unit while the pool is negative; every plan
 *     QuotaBalance makes is a sequence of these. A round is one atomic step: a sale through a live edge lowers
 *     sellable and that edge's outstanding alike (the pool does not move), a raise only makes a stale pool smaller,
 *     a limit is inside its window, and T1 keeps a dead edge's late orders out.
 *   - A response lost after the inventory committed is the edge timing out first and the inventory taking the
 *     orphaned forward later (both are steps of the model). A call that failed before it was sent gives its unit
 *     back at once (contract 4): nothing happens to the model's state.
 *
 * MAP to the code (each mirrored Swift file starts or ends with a "model:" line naming its functions' counterparts
 * here, and Schema.procedures' doc names purchase_batch's and adjust_stock's: update both together):
 *   database (Sources/InventoryCore/Database/Schema.swift)
 *     total, remaining, orders     products.total_stock, sum(stock_slot.remaining), count(orders)
 *     sold[a]                      orders per orders.edge_id (SoldCounts)
 *     outcome[r]                   request id r's order (ORDER_BY(a)), or its durable "no order" record (CLOSED)
 *     inventory_buys               purchase_batch for one purchase
 *     lookup                       a lookup_only purchase
 *     OPERATOR                     adjust_stock: p_raise, or p_limit (lim := greatest(p_limit, sold), surplus cut)
 *   quota service (Sources/QuotaService)
 *     exists, granted, reclaimed,  EdgeAllotment and its granted / reclaimed / retired, in the product's record
 *     retired
 *     OUT(a), POOL                 QuotaBalance.outstanding, QuotaBalance.pool (sellable == remaining)
 *     QS_GRANT, QS_RELEASE         QuotaBalance.plan's grants and releases, run by QuotaCoordinator.round
 *     QS_PROBE                     QuotaCoordinator.probe: release everything, by edge id, to an absent edge
 *     QS_LEARN                     QuotaBalance.reconcile taking a registered edge's reported released total
 *     QS_LIMIT_DONE                the round after a limit that brings the pool back to >= 0
 *   ZooKeeper
 *     session[a]                   the registration node edges/edge-<a> exists with a session the quota service
 *                                  trusts
 *   edges (Sources/Edge)
 *     alive[s], cur[s]             the edge process at address s, and its edge id now (EdgeQuotaAgent.edgeID)
 *     zkcut[s], qscut[s], fenced   cut off from ZooKeeper (and the quota service); stopped selling (T2)
 *     avail, applied, released     QuotaLedger's available, granted, released per edge id
 *     wq, wc [request, id]         PurchasePath.forward calls waiting for the inventory (wc: carrying a claimed
 *                                  in-doubt unit); oq: forwards given up on (in doubt), still at the inventory
 *     pend, counted                InDoubtResolver's pending entries (one unit each); the ids whose order kept a unit
 *     EDGE_FORWARD, EDGE_CLAIM     PurchasePath.purchase -> takeAndForward / InDoubtResolver.claim
 *     BUYER_LOOKUP                 PurchasePath.answerWithoutStock: a shed or dry retry's definitive lookup
 *     EDGE_ANSWERED, settle        PurchasePath.forward's completion: madeHere keeps the unit, else giveBack
 *     EDGE_TIMEOUT, in_doubt       PurchasePath.forward's in-doubt failure -> InDoubtResolver.resolveLater
 *     RESOLVER_LOOKUP              InDoubtResolver.resolveLater's lookup and settlement
 *     EDGE_APPLY                   EdgeQuotaAgent.apply(quota:) and askForMore -> QuotaLedger.applyGrant
 *     QS_RELEASE/QS_PROBE at edge  EdgeQuotaAgent's edge.ReleaseQuota -> QuotaLedger.release
 *     vouching[s]                  QuotaLedger.suspendUntilVouched / vouch (after an expiry)
 *     FENCE, HEAL                  EdgeQuotaAgent's partition fence (SessionGuard); reconnect, recoverFromExpiry
 *
 * OLD BEHAVIOURS: each switch (-DBUG_...) must give a counterexample; scripts/model-check.sh and the test check it.
 *   BUG_LEAK_SECOND_INDOUBT  finding 1: a second in-doubt entry of one request id leaks its unit
 *                            (InDoubtResolver.resolveLater's `guard isNew else { return }`).
 *   BUG_MADE_HERE_BY_EDGE_ID the resolver keeps a unit whenever the order was made through this edge id (above).
 *   BUG_NONFENCING_LOOKUP    finding 2: a lookup finding no order leaves the id open; a queued forward commits after.
 *   BUG_NO_PARTITION_FENCE   finding 8: an edge cut off from ZooKeeper sells until it sees its session expired.
 *   BUG_RELEASE_BY_ADDRESS   finding 7: releases and probes go to whatever edge listens at the address; only an
 *                            unreachable address retires an allotment.
 *   BUG_REVIVE               after an expiry the edge registers again under its old id, the quota service revives
 *                            the retired allotment, and the old session's grants and in-doubt units are sold.
 *   BUG_LATE_COMMIT          T1 not kept: a dead edge's purchase commits after its units were granted again.
 */

/* ---- sizes (small, exhaustive) ------------------------------------------------------------------------------ */
#ifndef EDGES
#define EDGES 2           /* edge addresses (processes) */
#endif
#ifndef NEW_IDS
#define NEW_IDS 1         /* edge ids beyond the first ones: an edge restarted on an address gets a new one */
#endif
#define IDS (EDGES + NEW_IDS)
#ifndef REQUESTS
#define REQUESTS 2        /* request ids, each one buyer's */
#endif
#ifndef FIRST_ATTEMPTS
#define FIRST_ATTEMPTS 2  /* attempts of request id 0: a first try and a repeat or retry */
#endif
#ifndef ATTEMPTS
#define ATTEMPTS 1        /* attempts of each other request id */
#endif
#ifndef STOCK
#define STOCK 1           /* units at the start; the operator may raise by RAISE */
#endif
#define RAISE 1
#define LIMIT_TO 1
#ifndef FAULTS
#define FAULTS 1          /* crashes and partitions in all; each may use one new id */
#endif

#define NONE 0
#define CLOSED 1
#define ORDER_BY(a) (2 + (a))

/* ---- database ------------------------------------------------------------------------------------------------ */
byte total = STOCK;
byte remaining = STOCK;
byte orders;
byte sold[IDS];
byte outcome[REQUESTS];
bool raised, limited;
bool limit_open;          /* a limit cut the database; the quota service has not yet brought the pool back to >= 0 */
byte cut;                 /* units that limit cut */

/* ---- quota service records, ZooKeeper sessions ----------------------------------------------------------------- */
bool exists[IDS];
byte granted[IDS];
byte reclaimed[IDS];
bool retired[IDS];
bool session[IDS];

/* ---- edges --------------------------------------------------------------------------------------------------- */
bool alive[EDGES];
byte cur[EDGES];
bool zkcut[EDGES], qscut[EDGES], fenced[EDGES];
bool restarts[EDGES];     /* a crashed edge will be started again on its address */
bool vouching[EDGES];     /* registered again after an expiry: suspended until a release names its new session */
byte slot_of[IDS];
byte avail[IDS], applied[IDS], released[IDS];
#define RA(r, a) ((r) * IDS + (a))
byte wq[REQUESTS * IDS], wc[REQUESTS * IDS], oq[REQUESTS * IDS], pend[REQUESTS * IDS];
bool counted[REQUESTS * IDS]; /* the request's order through this id has kept a unit */
byte leaked[IDS];         /* units lost by BUG_LEAK_SECOND_INDOUBT (for reading counterexamples) */

byte attempts[REQUESTS];
byte faults = FAULTS;
byte next_id = EDGES;

hidden byte i, j, k;      /* temporaries inside d_steps: not part of the state */
hidden mtype res;

/* ---- derived quantities ---------------------------------------------------------------------------------------- */
#define SELLS(s) (alive[s] && !fenced[s])
#define ON_COUNTER(s) (SELLS(s) -> avail[cur[s]] : 0)
#if EDGES == 2
#define HELD (ON_COUNTER(0) + ON_COUNTER(1))
#elif EDGES == 3
#define HELD (ON_COUNTER(0) + ON_COUNTER(1) + ON_COUNTER(2))
#endif
/* QuotaBalance.outstanding: granted - reclaimed - sold through the edge, clamped at 0; nothing once retired. */
#define OUT(a) ((exists[a] && !retired[a] && granted[a] > reclaimed[a] + sold[a]) -> granted[a] - reclaimed[a] - sold[a] : 0)
#if IDS == 3
#define OUTSTANDING (OUT(0) + OUT(1) + OUT(2))
#elif IDS == 4
#define OUTSTANDING (OUT(0) + OUT(1) + OUT(2) + OUT(3))
#elif IDS == 5
#define OUTSTANDING (OUT(0) + OUT(1) + OUT(2) + OUT(3) + OUT(4))
#endif
#define POOL (remaining - OUTSTANDING)
#define LIVE(a) (exists[a] && session[a] && !retired[a])
/* Forwards of edge id a still at the inventory. */
#define QUEUED_OF(a) (wq[RA(0,a)] + wc[RA(0,a)] + oq[RA(0,a)] + wq[RA(1,a)] + wc[RA(1,a)] + oq[RA(1,a)] + MORE_QUEUED(a))
#if REQUESTS == 3
#define MORE_QUEUED(a) (wq[RA(2,a)] + wc[RA(2,a)] + oq[RA(2,a)])
#else
#define MORE_QUEUED(a) 0
#endif

/* For reading a counterexample (spin -t prints it; the verifier skips printf). */
inline print_state() {
    printf("  remaining %d, on selling counters %d, pool %d, limit window %d (cut %d)\n", remaining, HELD, POOL, limit_open, cut);
    for (i : 0 .. IDS - 1) {
        if
        :: exists[i] ->
            printf("  id %d at edge %d: counter %d, granted %d (applied %d), released %d, sold %d, reclaimed %d, session %d, retired %d, leaked %d\n",
                i, slot_of[i], avail[i], granted[i], applied[i], released[i], sold[i], reclaimed[i], session[i], retired[i], leaked[i])
        :: else -> skip
        fi
    }
}

/* ---- the database ---------------------------------------------------------------------------------------------- */

/* purchase_batch for one purchase of request r through edge id a; `res` tells the edge what came back. */
mtype = { R_NEW, R_REPLAY_SAME, R_OTHER };
/* R_NEW: PURCHASED, a new order; R_REPLAY_SAME: PURCHASED replayed, the order made through edge id a;
 * R_OTHER: PURCHASED replayed through another edge, or SOLD_OUT (fresh or replayed) */
inline inventory_buys(r, a, res) {
    if
    :: outcome[r] == NONE && remaining > 0 ->
        outcome[r] = ORDER_BY(a); remaining--; orders++; sold[a]++; res = R_NEW
    :: outcome[r] == NONE && remaining == 0 ->
        outcome[r] = CLOSED; res = R_OTHER          /* SOLD_OUT is a durable first outcome (contract 2) */
    :: outcome[r] == ORDER_BY(a) -> res = R_REPLAY_SAME
    :: else -> res = R_OTHER
    fi
}

/* lookup_only: definitive (contract 2): an id with no order is closed, so no later purchase of it buys. */
inline lookup(r) {
#ifndef BUG_NONFENCING_LOOKUP
    if
    :: outcome[r] == NONE -> outcome[r] = CLOSED
    :: else -> skip
    fi
#else
    skip
#endif
}

/* ---- actions (each one atomic step; `s` an edge address, `r` a request id, `a` an edge id) ------------------- */

/* A buyer's attempt that takes a unit and forwards (PurchasePath.purchase -> takeAndForward). */
#define EDGE_FORWARD(r, s) \
    :: d_step { attempts[r] > 0 && SELLS(s) && avail[cur[s]] > 0 -> \
        attempts[r]--; avail[cur[s]]--; wq[RA(r, cur[s])]++; printf("buyer %d: forward at edge %d (id %d)\n", r, s, cur[s]) }

/* A retry of an attempt this edge holds in doubt claims its unit (InDoubtResolver.claim). */
#define EDGE_CLAIM(r, s) \
    :: d_step { attempts[r] > 0 && SELLS(s) && pend[RA(r, cur[s])] > 0 -> \
        attempts[r]--; pend[RA(r, cur[s])]--; wc[RA(r, cur[s])]++; printf("buyer %d: retry claims the in-doubt unit at edge %d (id %d)\n", r, s, cur[s]) }

/* A retry that is shed, or finds the edge dry, is settled by a definitive lookup (contract 3). */
#define BUYER_LOOKUP(r, s) \
    :: d_step { attempts[r] > 0 && SELLS(s) && outcome[r] == NONE LOOKUP_CHANGES -> \
        attempts[r]--; lookup(r); printf("buyer %d: retry shed or dry at edge %d: lookup\n", r, s) }
#ifdef BUG_NONFENCING_LOOKUP
#define LOOKUP_CHANGES && false   /* it changes nothing: leave it out */
#else
#define LOOKUP_CHANGES
#endif

/* An order made through edge id a keeps exactly one of the units a's attempts of that request id took: the first
 * attempt settled with that order keeps its unit (counted), every other one gives its unit back. At eaaa7e6
 * (BUG_MADE_HERE_BY_EDGE_ID) an in-doubt attempt kept its unit whenever the order was made through this edge id,
 * so a repeat of a request id bought here, that went in doubt, kept a second unit for the same order. */
#ifdef BUG_MADE_HERE_BY_EDGE_ID
#define KEEPS(r, a) true
#define COUNT(r, a) skip
#else
#define KEEPS(r, a) (!counted[RA(r, a)])
#define COUNT(r, a) counted[RA(r, a)] = true
#endif
inline settle(r, a, made_here) {
    if
    :: made_here && KEEPS(r, a) -> COUNT(r, a)
    :: else -> avail[a]++          /* QuotaLedger.giveBack */
    fi
}

/* The inventory answers a waiting forward (PurchasePath.forward: madeHere is a new order, or for a forward that
 * carries a claimed in-doubt unit a replay of an order made through this edge id). */
#define EDGE_ANSWERED(r, a) \
    :: d_step { wq[RA(r, a)] > 0 -> \
        wq[RA(r, a)]--; inventory_buys(r, a, res); settle(r, a, res == R_NEW); \
        printf("inventory answers buyer %d's forward through id %d: %e\n", r, a, res) } \
    :: d_step { wc[RA(r, a)] > 0 -> \
        wc[RA(r, a)]--; inventory_buys(r, a, res); settle(r, a, res != R_OTHER); \
        printf("inventory answers buyer %d's claiming forward through id %d: %e\n", r, a, res) }

/* The edge's call times out (or its connection drops): the purchase may still commit; the unit is held in doubt
 * (PurchasePath.forward -> InDoubtResolver.resolveLater). */
#ifdef BUG_LEAK_SECOND_INDOUBT
#define SECOND_IN_DOUBT(a) leaked[a]++            /* `guard isNew else { return }`: the unit is lost */
#else
#define SECOND_IN_DOUBT(a) avail[a]++             /* the pending entry holds a unit for this id already */
#endif
#define EDGE_TIMEOUT(r, a) \
    :: d_step { wq[RA(r, a)] > 0 -> wq[RA(r, a)]--; in_doubt(r, a); printf("id %d: buyer %d's forward times out: in doubt\n", a, r) } \
    :: d_step { wc[RA(r, a)] > 0 -> wc[RA(r, a)]--; in_doubt(r, a); printf("id %d: buyer %d's claiming forward times out: in doubt\n", a, r) }
inline in_doubt(r, a) {
    oq[RA(r, a)]++;
    if
    :: pend[RA(r, a)] == 0 -> pend[RA(r, a)] = 1
    :: else -> SECOND_IN_DOUBT(a)
    fi
}

/* The inventory takes a forward nobody waits for any more: it buys, or drops it at its deadline. */
#define INVENTORY_ORPHAN(r, a) \
    :: d_step { oq[RA(r, a)] > 0 -> oq[RA(r, a)]--; inventory_buys(r, a, res); printf("inventory takes buyer %d's orphaned forward of id %d: %e\n", r, a, res) } \
    :: d_step { oq[RA(r, a)] > 0 -> oq[RA(r, a)]--; printf("inventory drops buyer %d's orphaned forward of id %d at its deadline\n", r, a) }

/* The resolver looks the in-doubt request up and settles it (InDoubtResolver.resolveLater): see settle. An edge that
 * is suspended (fenced, or awaiting its vouch) settles onto its suspended counter, which sells nothing. */
#define RESOLVER_LOOKUP(r, a) \
    :: d_step { pend[RA(r, a)] > 0 && alive[slot_of[a]] -> \
        lookup(r); pend[RA(r, a)]--; settle(r, a, outcome[r] == ORDER_BY(a)); \
        printf("id %d: resolver looks buyer %d up: outcome %d\n", a, r, outcome[r]) }

/* The edge applies the total granted in its quota node (watch) or in a GrantMore answer. */
#define EDGE_APPLY(a) \
    :: d_step { exists[a] && session[a] && alive[slot_of[a]] && cur[slot_of[a]] == a && !zkcut[slot_of[a]] \
                && applied[a] < granted[a] -> \
        avail[a] = avail[a] + granted[a] - applied[a]; applied[a] = granted[a]; printf("id %d applies its grant: granted %d\n", a, granted[a]) }

/* The quota service grants one unit of a positive pool to a live edge. */
#define QS_GRANT(a) \
    :: d_step { LIVE(a) && POOL > 0 -> granted[a]++; printf("quota service grants id %d one unit\n", a) }

/* The quota service asks a live edge for a unit back while more is out than is sellable. The release carries the
 * edge id (contract 6): another edge at that address refuses it. */
#ifdef BUG_RELEASE_BY_ADDRESS
#define TARGET(a) cur[slot_of[a]]
#else
#define TARGET(a) a
#endif
#define REACHABLE(a) (alive[slot_of[a]] && !qscut[slot_of[a]] && cur[slot_of[a]] == TARGET(a))
#define QS_RELEASE(a) \
    :: d_step { LIVE(a) && POOL < 0 && REACHABLE(a) && avail[TARGET(a)] > 0 -> \
        k = TARGET(a); avail[k]--; released[k]++; \
        if :: reclaimed[a] < released[k] -> reclaimed[a] = released[k] :: else -> skip fi; \
        printf("quota service asks id %d for a unit: id %d releases one\n", a, k) }

/* An absent edge (node gone, not retired) is asked for everything; one that does not answer, or refuses (another
 * edge id at the address), is retired: its outstanding units go back to the pool (QuotaCoordinator.probe). */
#define QS_PROBE(a) \
    :: d_step { exists[a] && !session[a] && !retired[a] && REACHABLE(a) \
                && (avail[TARGET(a)] > 0 || reclaimed[a] < released[TARGET(a)] || vouching[slot_of[a]]) -> \
        k = TARGET(a); released[k] = released[k] + avail[k]; avail[k] = 0; \
        if :: reclaimed[a] < released[k] -> reclaimed[a] = released[k] :: else -> skip fi; \
        vouch(a); \
        printf("quota service probes absent id %d: id %d releases everything\n", a, k) } \
    :: d_step { exists[a] && !session[a] && !retired[a] && !REACHABLE(a) \
                PROBE_REFUSAL_RETIRES(a) -> retired[a] = true; printf("quota service probes absent id %d: no answer: retired\n", a) }
#ifdef BUG_RELEASE_BY_ADDRESS
/* at eaaa7e6 an edge that answers is alive: only an unreachable address retires */
#define PROBE_REFUSAL_RETIRES(a) && !(alive[slot_of[a]] && !qscut[slot_of[a]])
#else
#define PROBE_REFUSAL_RETIRES(a)
#endif

/* The probe's answer names the edge's new session (registered again after an expiry): the quota service takes it,
 * the allotment is live again and the edge sells again (QuotaLedger.vouch). A retired allotment is never probed,
 * so an edge whose allotment was retired never sells again. */
inline vouch(a) {
    if
    :: vouching[slot_of[a]] && cur[slot_of[a]] == a ->
        vouching[slot_of[a]] = false; session[a] = true; fenced[slot_of[a]] = false
    :: else -> skip
    fi
}

/* The quota service reads the released total a registered edge reports in its node (QuotaBalance.reconcile). */
#define QS_LEARN(a) \
    :: d_step { LIVE(a) && alive[slot_of[a]] && cur[slot_of[a]] == a && !zkcut[slot_of[a]] \
                && reclaimed[a] < released[a] -> reclaimed[a] = released[a]; printf("quota service reads id %d's released total %d\n", a, released[a]) }

/* The quota service's round after a limit finds the pool back at >= 0: the limit's window closes. */
#define QS_LIMIT_DONE \
    :: d_step { limit_open && POOL >= 0 -> limit_open = false; cut = 0; printf("quota service: the pool is back at >= 0 after the limit\n") }

/* Operator: raise the stock, or stop the sale after LIMIT_TO sold (adjust_stock: the database first). Each may
 * also never happen: a run ends only when no step is possible, and an event that could always still happen would
 * be in every end state. */
#define OPERATOR \
    :: d_step { !raised -> raised = true } \
    :: d_step { !limited -> limited = true } \
    :: d_step { !raised -> raised = true; total = total + RAISE; remaining = remaining + RAISE; printf("operator raises the stock by %d\n", RAISE) } \
    :: d_step { !limited -> limited = true; \
        k = (LIMIT_TO > orders -> LIMIT_TO : orders);              /* lim := greatest(p_limit, sold) */ \
        if :: remaining > k - orders -> j = remaining - (k - orders) :: else -> j = 0 fi;   /* surplus */ \
        remaining = remaining - j; total = total - j; \
        if :: j > 0 -> limit_open = true; cut = cut + j :: else -> skip fi; \
        printf("operator limits the sale to %d: %d units cut\n", LIMIT_TO, j) }

/* An edge process dies (kill -9, lost machine): its counters and in-doubt entries go with it; forwards it sent
 * may still be queued at the inventory. Its node stays until the session expires. */
#define CRASH(s) \
    :: d_step { faults > 0 && alive[s] -> faults--; crash(s); restarts[s] = (next_id < IDS); printf("edge %d crashes (to be restarted)\n", s) } \
    :: d_step { faults > 0 && alive[s] -> faults--; crash(s); restarts[s] = false; printf("edge %d crashes\n", s) }
inline crash(s) {
    alive[s] = false; fenced[s] = false; zkcut[s] = false; qscut[s] = false; vouching[s] = false;
    for (i : 0 .. IDS - 1) {
        if
        :: exists[i] && slot_of[i] == s ->
            avail[i] = 0; applied[i] = 0; released[i] = 0;   /* nothing reads a dead ledger: keep states canonical */
            for (j : 0 .. REQUESTS - 1) {
                oq[RA(j, i)] = oq[RA(j, i)] + wq[RA(j, i)] + wc[RA(j, i)];
                wq[RA(j, i)] = 0; wc[RA(j, i)] = 0; pend[RA(j, i)] = 0; counted[RA(j, i)] = false
            }
        :: else -> skip
        fi
    }
}

/* A new edge process on the same address: a new edge id, a new registration (finding 7's scenario). */
#define RESTART(s) \
    :: d_step { !alive[s] && restarts[s] && next_id < IDS -> restarts[s] = false; join(s); printf("edge %d restarts as id %d\n", s, cur[s]) }
inline join(s) {
    k = next_id; next_id++;
    cur[s] = k; slot_of[k] = s; exists[k] = true; session[k] = true;
    alive[s] = true; fenced[s] = false; zkcut[s] = false; qscut[s] = false
}

/* A partition cuts an edge off from ZooKeeper, and maybe from the quota service too; buyers and the inventory
 * still reach it. */
#define PARTITION(s) \
    :: d_step { faults > 0 && alive[s] && !zkcut[s] -> faults--; zkcut[s] = true; qscut[s] = true; printf("edge %d cut off from ZooKeeper and the quota service\n", s) } \
    :: d_step { faults > 0 && alive[s] && !zkcut[s] -> faults--; zkcut[s] = true; printf("edge %d cut off from ZooKeeper\n", s) }

/* T2: cut off for session timeout minus the margin, the edge stops selling. T1: by then each of its forwards is
 * past its deadline, so bought or dropped at the inventory. */
#ifdef BUG_NO_PARTITION_FENCE
#define FENCE(s)
#else
#define FENCE(s) \
    :: d_step { alive[s] && zkcut[s] && !fenced[s] SETTLED(cur[s]) -> \
        fenced[s] = true; released[cur[s]] = released[cur[s]] + avail[cur[s]]; avail[cur[s]] = 0; \
        printf("edge %d fences itself: hands back what is on its counter\n", s) }
#endif
#ifdef BUG_LATE_COMMIT
#define SETTLED(a)
#else
#define SETTLED(a) && QUEUED_OF(a) == 0
#endif

/* ZooKeeper expires a session it no longer hears from: the edge died, was replaced, or is cut off (and then, T2,
 * already fenced). */
#ifdef BUG_NO_PARTITION_FENCE
#define FENCED_FIRST(a)
#else
#define FENCED_FIRST(a) && (!alive[slot_of[a]] || cur[slot_of[a]] != a || fenced[slot_of[a]])
#endif
#define EXPIRE(a) \
    :: d_step { exists[a] && session[a] \
                && (!alive[slot_of[a]] || cur[slot_of[a]] != a || zkcut[slot_of[a]]) FENCED_FIRST(a) SETTLED(a) -> \
        session[a] = false; printf("id %d's session expires\n", a) }

/* The partition heals. Session still alive: the edge re-reads its quotas and sells again. Session expired: it hands
 * back what is on its counter, registers again under its name with a new session and stays suspended until the
 * quota service takes that session (vouch): its allotment may be retired and re-granted already. With BUG_REVIVE
 * (eaaa7e6): it sells again at once, and the quota service revives a retired allotment. */
#define HEAL(s) \
    :: d_step { alive[s] && zkcut[s] -> zkcut[s] = false; qscut[s] = false; heal(s); printf("edge %d reconnects: now id %d\n", s, cur[s]) }
inline heal(s) {
    if
    :: session[cur[s]] -> fenced[s] = false
    :: else ->
#ifdef BUG_REVIVE
        k = cur[s]; released[k] = released[k] + avail[k]; avail[k] = 0;
        session[k] = true; retired[k] = false; fenced[s] = false
#else
        /* registered again under its old name by a new session; sells once the quota service has taken it */
        k = cur[s]; released[k] = released[k] + avail[k]; avail[k] = 0; vouching[s] = true
#endif
    fi
}

/* ---- the index lists (sizes above) ---------------------------------------------------------------------------- */
#if EDGES == 2
#define EACH_S(X) X(0) X(1)
#define EACH_RS_R(X, r) X(r, 0) X(r, 1)
#elif EDGES == 3
#define EACH_S(X) X(0) X(1) X(2)
#define EACH_RS_R(X, r) X(r, 0) X(r, 1) X(r, 2)
#endif
#if IDS == 3
#define EACH_A(X) X(0) X(1) X(2)
#define EACH_RA_R(X, r) X(r, 0) X(r, 1) X(r, 2)
#elif IDS == 4
#define EACH_A(X) X(0) X(1) X(2) X(3)
#define EACH_RA_R(X, r) X(r, 0) X(r, 1) X(r, 2) X(r, 3)
#elif IDS == 5
#define EACH_A(X) X(0) X(1) X(2) X(3) X(4)
#define EACH_RA_R(X, r) X(r, 0) X(r, 1) X(r, 2) X(r, 3) X(r, 4)
#endif
#if REQUESTS == 2
#define EACH_RS(X) EACH_RS_R(X, 0) EACH_RS_R(X, 1)
#define EACH_RA(X) EACH_RA_R(X, 0) EACH_RA_R(X, 1)
#elif REQUESTS == 3
#define EACH_RS(X) EACH_RS_R(X, 0) EACH_RS_R(X, 1) EACH_RS_R(X, 2)
#define EACH_RA(X) EACH_RA_R(X, 0) EACH_RA_R(X, 1) EACH_RA_R(X, 2)
#endif

/* (1) Safety, watched in every state: this process can only move when the invariant is broken. */
#define SAFE (orders + remaining == total && HELD <= remaining + (limit_open -> cut : 0))
active proctype Safety() {
end_watching:
    atomic { !SAFE -> printf("safety broken:\n"); print_state(); assert(SAFE) }
}

/* ---- the sale ------------------------------------------------------------------------------------------------ */
active proctype Sale() {
    d_step {
        for (i : 0 .. EDGES - 1) {
            alive[i] = true; cur[i] = i; slot_of[i] = i; exists[i] = true; session[i] = true
        }
        for (i : 0 .. REQUESTS - 1) { attempts[i] = (i == 0 -> FIRST_ATTEMPTS : ATTEMPTS) }
    }
    do
    EACH_RS(EDGE_FORWARD)
    EACH_RS(EDGE_CLAIM)
    EACH_RS(BUYER_LOOKUP)
    EACH_RA(EDGE_ANSWERED)
    EACH_RA(EDGE_TIMEOUT)
    EACH_RA(INVENTORY_ORPHAN)
    EACH_RA(RESOLVER_LOOKUP)
    EACH_A(EDGE_APPLY)
    EACH_A(QS_GRANT)
    EACH_A(QS_RELEASE)
    EACH_A(QS_PROBE)
    EACH_A(QS_LEARN)
    QS_LIMIT_DONE
    OPERATOR
    :: d_step { faults > 0 -> faults = 0 }   /* no more faults: see OPERATOR */
    EACH_S(CRASH)
    EACH_S(RESTART)
    EACH_S(PARTITION)
    EACH_S(FENCE)
    EACH_A(EXPIRE)
    EACH_S(HEAL)
    :: timeout -> break   /* nothing can happen any more: no buyer left, every timer fired */
    od;
    /* (2) nothing stranded: every remaining unit is on the counter of an edge that sells it. */
    printf("end of the sale:\n");
    d_step { print_state() };
    assert(HELD == remaining)
}
