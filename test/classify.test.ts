/**
 * Statement classification (no database): which texts may leave session state behind, return rows,
 * drop prepared statements or control the transaction.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  classify,
  DIRTIES,
  DROPS_PREPARED,
  EXPANDS_STAR,
  RETURNS_ROWS,
  TRANSACTION_CONTROL
} from "../src/core/classify.js"

const dirty = (text: string): boolean => (classify(text) & DIRTIES) !== 0
const rows = (text: string): boolean => (classify(text) & RETURNS_ROWS) !== 0

const expectClean = (texts: ReadonlyArray<string>): void => {
  for (const text of texts) expect({ text, dirty: dirty(text) }).toEqual({ text, dirty: false })
}
const expectDirty = (texts: ReadonlyArray<string>): void => {
  for (const text of texts) expect({ text, dirty: dirty(text) }).toEqual({ text, dirty: true })
}

describe("classify", () => {
  it("empty texts are 0", () => {
    expect(classify("")).toBe(0)
    expect(classify("   \n\t")).toBe(0)
    expect(classify(";;  ;")).toBe(0)
    expect(classify("-- only a comment")).toBe(0)
    expect(classify("/* only /* a nested */ comment */")).toBe(0)
  })

  it("ORM-style statements are clean", () => {
    expectClean([
      `select "id", "name" from "users" where "id" = $1`,
      `insert into "users" ("id", "name") values ($1, $2) returning "id"`,
      `insert into public.users (id, name) values ($1, $2)`,
      `insert into t as x (a) values (1)`,
      `update "t" set "a" = $1 where "id" = $2`,
      "update t set (a, b) = ($1, $2) where id = $3",
      "delete from t where id = any($1)",
      "select count(*) filter (where x > 1) over (partition by y) from t",
      "select coalesce(max(id), 0) from t",
      "select $1::varchar(20)",
      "select $1::character varying(20), $2::pg_catalog.numeric(10, 2), $3::interval second(3)",
      "select cast($1 as numeric(10,2))",
      "select $1::timestamp(3) with time zone, $2::int[]",
      "insert into t (a) values (1) on conflict (a) do update set a = excluded.a",
      "insert into t (a) values (1) on conflict on constraint t_pkey do nothing",
      "with x as (select 1) select * from x",
      "with recursive x(n) as (select 1 union all select n + 1 from x where n < 3) select * from x",
      "with a as (select 1), b(x) as (select 2), c(y) as materialized (select 3) select * from a, b, c",
      "select * from generate_series(1, 3)",
      "select * from generate_series(1, 3) g(n)",
      "select * from unnest($1::int[]) with ordinality t(x, n)",
      "select * from (values (1, 2)) v(a, b)",
      "select * from (values (1, 2)) as v(a, b)",
      "select * from t, lateral (select 1) s(a)",
      "select pg_sleep(0.01)",
      "select 1; select 2",
      "select pg_catalog.lower('A'), \"lower\"('B'), \"pg_catalog\".\"upper\"('c')",
      "select now() at time zone 'utc', date_trunc('day', now()), extract(epoch from now())",
      "select trim(both ' ' from x), substring(x from 1 for 2), position('a' in x) from t",
      "select exists(select 1), array(select 1), row(1, 2)",
      "select json_agg(t), jsonb_build_object('a', 1) from (select 1) t",
      "select * from t where (a, b) in ((1, 2)) and x between symmetric 1 and 2",
      "select * from t1 join t2 using (id) join t3 on (t3.id = t1.id)",
      "select a, b, count(*) from t group by grouping sets ((a), (b)), rollup (a), cube (b)",
      "select percentile_cont(0.5) within group (order by x) from t",
      "select * from t order by x nulls last limit $1 offset $2 for update skip locked",
      "select x from t where x ilike $1 escape '!'",
      "select * from t tablesample bernoulli (10) repeatable (1)",
      "select distinct on (a) a, lower(b) from t",
      "select gen_random_uuid(), nextval('s'), pg_backend_pid(), current_setting('x')",
      "merge into t using s on t.id = s.id when matched then update set a = s.a when not matched then insert (id, a) values (s.id, s.a)",
      "select 1 from t where x = 1 union (select 2) except (select 3)",
      "(select 1) union (select 2)",
      "values (1), (2)",
      "table t",
      "show search_path",
      "select x.y, t.* from t x",
      "execute p(1, 2)",
      "select * from t where id = $1::uuid and tags @> $2::text[] and doc->>'a' = $3"
    ])
  })

  it("strings, comments and quoted identifiers do not count", () => {
    expectClean([
      "select 'set_config(' as a",
      "select 'x; set search_path to y'",
      "select 'it''s; SET role x'",
      "select E'\\'; set role x'",
      "select E'\\\\', 'a' -- ; set role x",
      "select 1 /* set_config( /* nested */ ; set role x */",
      "select $$; set role x$$, $tag$ $$ ; set_config( $tag$",
      "select U&'d\\0061t\\+000061', B'101', X'1F', N'x'",
      `select "set config" from t where "a;b" = 'c'`,
      "select 1 -- set_config(",
      "select 'SET' as set"
    ])
    // `$1` is a parameter, not the start of a dollar quote, so what follows it is seen.
    expectDirty([
      "select $1; set role x",
      "select '\\'; set role x",
      "select E'\\\\'; set role x",
      "select $a$ x $a$; set role x",
      "select /* a */ 1; /* b */ set role x"
    ])
    expect(dirty("DO $$ BEGIN PERFORM 1; END $$")).toBe(true)
    expect(classify("DO $$ BEGIN PERFORM 1; END $$") & TRANSACTION_CONTROL).toBe(0)
  })

  it("session commands dirty", () => {
    expectDirty([
      "SET search_path TO x",
      "set statement_timeout = 5",
      "SET ROLE r",
      "SET SESSION AUTHORIZATION r",
      "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
      "set time zone 'UTC'",
      `set "search_path" = x`,
      "RESET ALL",
      "reset statement_timeout",
      "DISCARD ALL",
      "DEALLOCATE ALL",
      "deallocate p",
      "PREPARE p AS SELECT 1",
      "prepare p (int) as select $1",
      "prepare transaction as select 1",
      "LISTEN ch",
      "UNLISTEN *",
      "LOAD 'x'",
      "DO $$ BEGIN PERFORM 1; END $$",
      "CALL p()",
      "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
      "declare c no scroll cursor with hold for select 1",
      "select 1; set search_path to x",
      "set search_path to x; select 1"
    ])
  })

  it("transaction-scoped settings and cursors are clean", () => {
    expectClean([
      "SET LOCAL statement_timeout = 5",
      "set local role r",
      "set transaction isolation level serializable",
      "SET CONSTRAINTS ALL DEFERRED",
      "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
      "DECLARE c CURSOR FOR SELECT 1",
      "declare c cursor for select hold from t",
      "fetch 10 from c",
      "move next in c",
      "close c",
      "lock table t in access exclusive mode",
      "notify ch, 'payload'",
      "checkpoint",
      "begin",
      "commit",
      "PREPARE TRANSACTION 'x'",
      "commit prepared 'x'"
    ])
  })

  it("temporary objects dirty", () => {
    expectDirty([
      "CREATE TEMP TABLE t (a int)",
      "create temporary table x as select 1",
      "create table pg_temp.x (a int)",
      `create table "pg_temp".x (a int)`,
      "CREATE TEMP SEQUENCE s",
      "create temporary view v as select 1",
      "create or replace temp view v as select 1",
      "create local temporary table t (a int)",
      "create function pg_temp.f() returns int language sql as 'select 1'",
      "alter table t set schema pg_temp",
      "select * into temp x from t",
      "select 1 as a into temporary table x",
      "select 1 as a into local temp x",
      "select 1 as a into pg_temp.x",
      "with q as (select 1 as a) select * into temp x from q"
    ])
    expectClean(["select * into x from t", "select temp from weather", "insert into t (temp) values (1)"])
  })

  it("calls outside the allowlist dirty", () => {
    expectDirty([
      "SELECT set_config('statement_timeout', '1234', false)",
      "select set_config('x', 'y', true)",
      "select pg_advisory_lock(1)",
      "select pg_advisory_lock_shared(1)",
      "select pg_try_advisory_lock($1)",
      "select pg_try_advisory_lock_shared($1)",
      "select dblink_connect('x')",
      "select lo_open(1, 2)",
      "select setseed(0.5)",
      "select st_makepoint(1, 2)",
      "select my_func(1)",
      "select public.f()",
      "select pg_catalog.set_config('x', 'y', false)",
      "select a.pg_catalog.lower('x')",
      `select "MyFunc"()`,
      `select "set_config"('x', 'y', false)`,
      "select * from my_func(1)",
      "select a, my_func(b) from t",
      "select a, my_func(b) as x from t",
      "select a, my_func(b)",
      "select a from t where my_func(a) /* comment */ and true",
      "select my_func /* between */ (1)",
      "select lower(my_func(a)) from t",
      "insert into t (a) values (my_func())",
      "insert into t (a) select my_func()",
      "update t set a = my_func() where id = 1",
      "delete from t where my_func(id)",
      "select distinct on (a) my_func(b) from t",
      "select 1 operator(pg_catalog.+) my_func(2)",
      "select x from t order by my_func(x)",
      "select count(*) filter (where my_func(x)) from t",
      "with a as (select 1), b as (select my_func()) select * from b",
      "values (1, my_func())",
      "execute p(my_func())",
      "declare c cursor for select my_func()",
      "select * from t join lateral my_func(t.x) f(a) on true",
      "select * from t, my_func(1) as (a int, b text)",
      "select * from t, my_func(1) as x (a int, b text)",
      "select * from t, my_func(1) x (a int)",
      // a false positive, on the safe side: a later CTE with columns whose query modifies data
      "with a as (select 1), b(x) as (insert into t values (1) returning 1) select * from b",
      "alter table t add column b int; select my_func()"
    ])
    expectClean(["select pg_advisory_xact_lock(1)", "select pg_try_advisory_xact_lock($1), pg_advisory_unlock_all()"])
  })

  it("DDL is judged by temporary objects and the query it runs, not by its stored expressions", () => {
    expectClean([
      "CREATE TABLE t (a varchar(20) default my_func())",
      "create table t (a timestamp with time zone default now(), b int check (my_check(b))) with (fillfactor = 70)",
      "create index on t (lower(a))",
      "create index i on t using gin (my_op(a))",
      "ALTER TABLE t ADD COLUMN b int",
      "alter table t alter column a set default my_func()",
      "create view v as select my_func()",
      "create or replace function f() returns int language sql as $$ select set_config('a', 'b', false) $$",
      "create trigger tr after insert on t for each row execute function my_trigger()",
      "drop table t",
      "comment on table t is 'temp'",
      "grant select on t to r",
      "truncate t",
      "vacuum (analyze) t",
      "analyze t",
      "refresh materialized view v",
      "create table t as select lower('a')",
      "create materialized view v as select 1"
    ])
    expectDirty([
      "create table t as select my_func()",
      "create table t (a) as select my_func()",
      "create unlogged table if not exists t as with x as (select my_func()) select * from x",
      "create materialized view v as select my_func()"
    ])
  })

  it("a SQL-standard function body is one statement", () => {
    const text =
      "create function f(x int) returns int language sql begin atomic select case when x > 0 then 1 else 0 end; end; select 1"
    expect(classify(text)).toBe(RETURNS_ROWS)
    expect(classify(`${text}; begin`)).toBe(RETURNS_ROWS | TRANSACTION_CONTROL)
  })

  it("COPY is judged by the query or condition it runs", () => {
    expect(classify("copy t (a, b) from stdin")).toBe(0)
    expect(classify("copy t from stdin with (format csv, force_not_null (a))")).toBe(0)
    expect(classify("copy t to stdout (format csv, force_quote (a))")).toBe(RETURNS_ROWS)
    expect(classify("copy (select lower(a) from t) to stdout")).toBe(RETURNS_ROWS)
    expect(classify("copy (select my_func()) to stdout")).toBe(DIRTIES | RETURNS_ROWS)
    expect(classify("copy t from stdin where my_func(a)")).toBe(DIRTIES)
  })

  it("EXPLAIN is judged by the statement it explains", () => {
    expect(classify("explain select 1")).toBe(RETURNS_ROWS)
    expect(classify("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT 1")).toBe(RETURNS_ROWS)
    expect(classify("explain analyze verbose insert into t values (1)")).toBe(RETURNS_ROWS)
    expect(classify("explain analyze select my_func()")).toBe(DIRTIES | RETURNS_ROWS)
    expect(classify("explain analyze create table t as select set_config('a', 'b', false)")).toBe(
      DIRTIES | RETURNS_ROWS
    )
  })

  it("unknown statements dirty and may return rows", () => {
    for (const text of ["frobnicate", "42", `"select" 1`, "(", "reindex; foo bar"]) {
      expect(classify(text) & (DIRTIES | RETURNS_ROWS)).toBe(DIRTIES | RETURNS_ROWS)
    }
  })

  it("transaction control", () => {
    for (const text of [
      "begin",
      "BEGIN ISOLATION LEVEL SERIALIZABLE",
      "start transaction read only",
      "commit",
      "commit and chain",
      "end",
      "rollback",
      "ROLLBACK TO SAVEPOINT s",
      "abort",
      "savepoint s",
      "release savepoint s",
      "prepare transaction 'x'",
      "commit prepared 'x'",
      "rollback prepared 'x'"
    ]) {
      expect({ text, kind: classify(text) }).toEqual({ text, kind: TRANSACTION_CONTROL })
    }
    expect(classify("begin; select 1; commit")).toBe(TRANSACTION_CONTROL | RETURNS_ROWS)
    expect(classify("select 'begin'") & TRANSACTION_CONTROL).toBe(0)
  })

  it("RETURNS_ROWS", () => {
    for (const text of [
      "select 1",
      "with x as (delete from t returning id) insert into u select id from x",
      "values (1)",
      "table t",
      "show all",
      "fetch all from c",
      "execute p",
      "call p()",
      "insert into t values (1) returning *",
      "update t set a = 1 returning a",
      "delete from t returning id",
      "merge into t using s on true when matched then delete returning *"
    ]) {
      expect({ text, rows: rows(text) }).toEqual({ text, rows: true })
    }
    for (const text of [
      "insert into t values (1)",
      "update t set a = 1",
      "delete from t",
      "create table t (a int)",
      "set local a = 1",
      "begin",
      "commit",
      "prepare p as insert into t values (1) returning *",
      "declare c cursor for select 1"
    ]) {
      expect({ text, rows: rows(text) }).toEqual({ text, rows: false })
    }
  })

  it("DROPS_PREPARED", () => {
    expect(classify("DISCARD ALL")).toBe(DIRTIES | DROPS_PREPARED)
    expect(classify("discard plans")).toBe(DIRTIES | DROPS_PREPARED)
    expect(classify("DEALLOCATE ALL")).toBe(DIRTIES | DROPS_PREPARED)
    expect(classify("deallocate prepare p")).toBe(DIRTIES | DROPS_PREPARED)
    expect(classify("select 'discard all'") & DROPS_PREPARED).toBe(0)
  })

  it("statements whose result columns follow a table's expand a star", () => {
    const star = (text: string): boolean => (classify(text) & EXPANDS_STAR) !== 0
    for (const text of [
      "select * from t where id = $1",
      "SELECT t.* FROM t JOIN u ON u.id = t.id",
      "insert into t (a) values ($1) returning *",
      "update t set a = $1 returning t.*",
      "TABLE t",
      "select a * 2 from t"
    ]) {
      expect({ text, star: star(text) }).toEqual({ text, star: true })
    }
    for (const text of [
      "select balance from t where id = $1",
      "select count(*) from t",
      "insert into t (a) values ($1) returning id",
      "select 1 /* a * comment */",
      "select '*' as s"
    ]) {
      expect({ text, star: star(text) }).toEqual({ text, star: false })
    }
  })

  it("caches per text", () => {
    const text = "select coalesce(max(id), 0) from t where x = $1 /* cache */"
    const first = classify(text)
    expect(classify(text)).toBe(first)
    expect(classify("SET search_path TO x")).toBe(classify("SET search_path TO x"))
    // More texts than the cache holds: results stay right after it has been cleared.
    const many = Array.from({ length: 5000 }, (_, i) => classify(`select ${i}`))
    expect(many.every((kind) => kind === RETURNS_ROWS)).toBe(true)
    expect(classify(text)).toBe(first)
    const long = `select ${"1 + ".repeat(10_000)}1; set role x`
    expect(classify(long)).toBe(DIRTIES | RETURNS_ROWS)
    expect(classify(long)).toBe(DIRTIES | RETURNS_ROWS)
  })
})
