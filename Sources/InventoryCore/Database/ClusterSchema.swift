extension Schema {
    /// Migration 6: products placed on named clusters. `products.database` names the cluster a product's stock lives
    /// on (`main`, `hot` or a shard), under the rule of `DatabaseRole`; the main database's row of a product placed
    /// elsewhere is its catalog entry (`add_catalog_entry`, `add_hot_catalog_entry` for any cluster). Each database
    /// also records which cluster it is (`claim_cluster`, called by the inventory as it brings the cluster up), so a
    /// connection string given under another cluster's name is refused rather than served from the wrong rows.
    static let clusters = #"""
ALTER TABLE products ADD CONSTRAINT products_database_name CHECK (database ~ '^[a-z][a-z0-9-]{0,31}$');

CREATE TABLE cluster_identity (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    name       text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,31}$'),
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- The cluster this database is: the first inventory to bring it up names it, later ones read that name.
CREATE FUNCTION claim_cluster(p_name text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
    INSERT INTO cluster_identity (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    RETURN (SELECT c.name FROM cluster_identity c);
END
$fn$;

-- The main database's catalog entry of a product whose stock lives on cluster p_database.
CREATE FUNCTION add_catalog_entry(p_id integer, p_name text, p_slots integer, p_sale_limit bigint, p_hot boolean,
                                  p_database text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
    INSERT INTO products (id, name, total_stock, slot_count, hot, database, sale_limit)
    VALUES (p_id, p_name, 0, p_slots, p_hot, p_database, p_sale_limit) ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$fn$;

REVOKE ALL ON FUNCTION claim_cluster(text), add_catalog_entry(integer, text, integer, bigint, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION claim_cluster(text), add_catalog_entry(integer, text, integer, bigint, boolean, text)
    TO flashsale_service;
REVOKE ALL ON cluster_identity FROM PUBLIC;
GRANT SELECT ON cluster_identity TO flashsale_service;
"""#
}
