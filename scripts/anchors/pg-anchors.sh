#!/usr/bin/env bash
# Measures the database-side anchors of the flash-sale mission on this machine:
# orders committed per second on ONE hot product, for the seed's techniques done directly in SQL.
#   naive    : two statements per order (UPDATE hot row; INSERT order) in one transaction
#   proc     : the same in one plpgsql function call (seed: stored procedure)
#   slot4    : seed's slot table, 4 rows, SELECT ... ORDER BY remaining DESC LIMIT 1 FOR UPDATE
#   batch500 : one set-based function call takes 500 orders (group commit; the DB's practical ceiling)
# Usage: scripts/anchors/pg-anchors.sh [seconds-per-variant] [clients]
set -euo pipefail
T=${1:-8}; C=${2:-16}
D=$(mktemp -d /tmp/pganchor.XXXX); chown postgres "$D"
PORT=$((55000 + RANDOM % 1000))
runuser -u postgres -- initdb -D "$D/data" -A trust -U postgres >/dev/null
runuser -u postgres -- pg_ctl -D "$D/data" -o "-p $PORT -k $D -c listen_addresses=127.0.0.1 -c max_connections=200" -l "$D/log" -w start >/dev/null
trap 'runuser -u postgres -- pg_ctl -D "$D/data" -m immediate stop >/dev/null 2>&1; rm -rf "$D"' EXIT
P="psql -qAt -h 127.0.0.1 -p $PORT -U postgres"
$P <<'SQL'
create table stock(product text primary key, remaining int not null check (remaining>=0));
insert into stock values ('TV', 1000000000);
create table stock_slot(product text, slot int, remaining int not null check(remaining>=0), primary key(product,slot));
insert into stock_slot select 'TV', s, 250000000 from generate_series(0,3) s;
create table orders(id bigserial primary key, product text not null, user_id bigint not null, created timestamptz default now());
create function buy(p text, u bigint) returns bigint language plpgsql as $$
declare oid bigint;
begin
  update stock set remaining = remaining - 1 where product=p and remaining>0;
  if not found then return null; end if;
  insert into orders(product,user_id) values (p,u) returning id into oid;
  return oid;
end $$;
create function buy_slot(p text, u bigint) returns bigint language plpgsql as $$
declare s int; oid bigint;
begin
  select slot into s from stock_slot where product=p and remaining>0 order by remaining desc limit 1 for update;
  if not found then return null; end if;
  update stock_slot set remaining = remaining - 1 where product=p and slot=s and remaining>0;
  insert into orders(product,user_id) values (p,u) returning id into oid;
  return oid;
end $$;
create function buy_batch(p text, users bigint[]) returns int language plpgsql as $$
declare want int := cardinality(users); got int;
begin
  update stock set remaining = remaining - want where product=p and remaining>=want;
  if not found then return 0; end if;
  insert into orders(product,user_id) select p, u from unnest(users) u;
  return want;
end $$;
SQL
cat > "$D/naive.sql" <<'SQL'
\set uid random(1, 1000000)
BEGIN;
UPDATE stock SET remaining = remaining - 1 WHERE product='TV' AND remaining > 0;
INSERT INTO orders(product,user_id) VALUES ('TV', :uid);
COMMIT;
SQL
printf '\\set uid random(1, 1000000)\nSELECT buy(%s, :uid);\n' "'TV'" > "$D/proc.sql"
printf '\\set uid random(1, 1000000)\nSELECT buy_slot(%s, :uid);\n' "'TV'" > "$D/slot4.sql"
printf 'SELECT buy_batch(%s, (select array_agg(g::bigint) from generate_series(1,500) g));\n' "'TV'" > "$D/batch500.sql"
for v in naive proc slot4 batch500; do
  c=$C; [[ $v == batch500 ]] && c=2
  before=$($P -c 'select count(*) from orders')
  pgbench -n -h 127.0.0.1 -p $PORT -U postgres -f "$D/$v.sql" -c $c -j 2 -T "$T" postgres >"$D/$v.out" 2>&1
  after=$($P -c 'select count(*) from orders')
  echo "$v clients=$c orders_per_s=$(( (after - before) / T ))"
done
