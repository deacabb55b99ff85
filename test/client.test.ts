/**
 * The SqlClient / PgClient surface on top of the pool: statements, transforms, json,
 * savepoints, reserve, streams and LISTEN/NOTIFY, each checked against the server.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Statement from "@effect/sql/Statement"
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Str from "effect/String"
import * as Tracer from "effect/Tracer"
import { WardenClient, WardenPool } from "../src/index.js"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { isRunningSleep, waitForBackends } from "./support/warden.js"

const url = inject("databaseUrl")

const withClient = <A, E>(
  name: string,
  f: (ctx: {
    sql: PgClient.PgClient
    admin: Admin
    app: string
    pool: WardenPool.WardenPool
  }) => Effect.Effect<A, E, never>,
  config: Partial<WardenClient.WardenClientConfig> = {}
) => {
  const app = uniqueAppName(name)
  return Effect.acquireUseRelease(
    Effect.promise(() => Admin.connect(url)),
    (admin) =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        const pool = yield* WardenPool.WardenPool
        return yield* f({ sql, admin, app, pool })
      }).pipe(
        Effect.provide(WardenClient.layer({ url: Redacted.make(url), applicationName: app, ...config })),
        Effect.zipLeft(Effect.promise(() => admin.waitForNoBackends(app)))
      ),
    (admin) => Effect.promise(() => admin.close())
  )
}

describe("WardenClient as SqlClient/PgClient", () => {
  it.live("runs statements and provides both tags from one layer", () =>
    withClient("basic", ({ sql }) =>
      Effect.gen(function* () {
        const generic = yield* SqlClient.SqlClient
        expect(yield* generic`select ${1}::int as a, ${"b"}::text as b`).toEqual([{ a: 1, b: "b" }])
        expect(yield* sql`select 1 as x, 2 as y`.values).toEqual([[1, 2]])
        const raw = (yield* sql`select 1 as x`.raw) as { command: string; rowCount: number }
        expect(raw.command).toBe("SELECT")
        expect(yield* sql`select ${sql.json({ a: [1, 2] })}::jsonb as j`).toEqual([{ j: { a: [1, 2] } }])
        const rows = yield* sql`select * from (values (1, 'a'), (2, 'b')) as t(id, name) where ${sql.in("id", [2])}`
        expect(rows).toEqual([{ id: 2, name: "b" }])
      }).pipe(Effect.provideService(SqlClient.SqlClient, sql))
    )
  )

  it.live("without the cancel channel, connections opened while others are busy run their first statement", () =>
    // pg marks a new client ready only after its connect callback: a statement handed to a connection from inside that
    // callback once waited for a ReadyForQuery that never came (nothing else is sent at connect without the channel).
    withClient(
      "no-channel",
      ({ sql }) =>
        Effect.gen(function* () {
          const rows = yield* Effect.all(
            Array.from({ length: 4 }, (_, i) => sql`select ${i}::int as i, pg_sleep(0.05)`),
            { concurrency: "unbounded" }
          ).pipe(Effect.timeout("5 seconds"))
          expect(rows.map((r) => r[0]?.i)).toEqual([0, 1, 2, 3])
        }),
      { cancelChannel: false, maxConnections: 4 }
    )
  )

  it.live("sends the server safety settings at startup, and none with serverSafety: false", () =>
    Effect.gen(function* () {
      const show = (sql: PgClient.PgClient) =>
        sql<{
          a: string
          b: string
          c: string
        }>`select current_setting('idle_in_transaction_session_timeout') as a, current_setting('client_connection_check_interval') as b, current_setting('tcp_keepalives_idle') as c`
      const on = yield* withClient("safety", ({ sql }) => show(sql))
      expect(on).toEqual([{ a: "1min", b: "1s", c: "30" }])
      const off = yield* withClient("nosafety", ({ sql }) => show(sql), { serverSafety: false })
      expect(off[0]!.b).toBe("0")
    })
  )

  it.live("prepares parameterised statements per connection, bounded, and recovers when they are invalidated", () =>
    withClient(
      "prepared",
      ({ sql }) =>
        Effect.gen(function* () {
          const table = `warden_prep_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
          const prepared = sql<{
            name: string
          }>`select name from pg_prepared_statements where (statement like ${"%" + table + "%"} or statement like '%warden_marker%') and statement not like '%pg_prepared_statements%'`
          yield* sql`create table ${sql(table)} (a int)`
          yield* sql`insert into ${sql(table)} values (1)`
          for (let i = 0; i < 3; i++) {
            expect(yield* sql`select a from ${sql(table)} where a = ${1}`).toEqual([{ a: 1 }])
          }
          expect((yield* prepared).length).toBe(1)
          // bounded: statementCacheSize is 2 here
          for (let i = 0; i < 4; i++) yield* sql.unsafe(`select $1::int as warden_marker_${i}`, [i])
          expect((yield* prepared).length).toBeLessThanOrEqual(2)
          // DDL that changes the result type invalidates the cached plan: one typed failure at most, then it works
          yield* sql`alter table ${sql(table)} add column b int`
          const first = yield* sql`select * from ${sql(table)} where a = ${1}`.pipe(Effect.either)
          if (Either.isLeft(first)) expect(first.left._tag).toBe("SqlError")
          expect(yield* sql`select * from ${sql(table)} where a = ${1}`).toEqual([{ a: 1, b: null }])
          // DISCARD ALL drops the session's prepared statements: at most one typed failure, then it works
          yield* sql`discard all`
          const again = yield* sql`select a from ${sql(table)} where a = ${1}`.pipe(Effect.either)
          if (Either.isLeft(again)) expect(again.left._tag).toBe("SqlError")
          expect(yield* sql`select a from ${sql(table)} where a = ${1}`).toEqual([{ a: 1 }])
          yield* sql`drop table ${sql(table)}`
        }),
      { maxConnections: 1, statementCacheSize: 2 }
    )
  )

  it.live("applies transformResultNames and transformQueryNames like @effect/sql-pg", () =>
    withClient(
      "transform",
      ({ sql }) =>
        Effect.gen(function* () {
          const rows = yield* sql`select 1 as ${sql("fooBar")}`
          expect(rows).toEqual([{ fooBar: 1 }])
        }),
      { transformResultNames: Str.snakeToCamel, transformQueryNames: Str.camelToSnake }
    )
  )

  it.live("keeps @effect/sql's spans when a tracer records them, and its statement transformers", () =>
    withClient("spans", ({ sql }) =>
      Effect.gen(function* () {
        // Statements skip the span only while Effect's built-in tracer would drop it: any other
        // tracer (OpenTelemetry, this recording one) sees the same spans as with @effect/sql-pg.
        const builtin = yield* Effect.tracer
        const spans: Array<Tracer.Span> = []
        const recording = Tracer.make({
          span: (...args) => {
            const span = builtin.span(...args)
            spans.push(span)
            return span
          },
          context: builtin.context
        })
        yield* Effect.withTracer(
          Effect.zipRight(sql`select ${1}::int as a`, sql.withTransaction(sql`select 2 as b`)),
          recording
        )
        expect(spans.map((span) => span.name)).toEqual(["sql.execute", "sql.transaction", "sql.execute"])
        expect(spans[0]!.attributes.get("db.query.text")).toBe("select $1::int as a")
        expect(spans[0]!.attributes.get("db.system.name")).toBe("postgresql")

        const transformed = yield* Statement.withTransformer(sql`select 1 as x`, (_, make) =>
          Effect.succeed(make`select 2 as x`)
        )
        expect(transformed).toEqual([{ x: 2 }])
        expect(yield* sql.withoutTransforms()`select ${3}::int as x`).toEqual([{ x: 3 }])
        expect(yield* sql.unsafe("select $1::int as x", [4])).toEqual([{ x: 4 }])
      })
    )
  )

  it.live("commits, rolls back, and nests with savepoints (checked from the server)", () =>
    withClient("tx", ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = `warden_tx_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
        yield* sql`create table ${sql(table)} (v int)`
        const count = () =>
          Effect.promise(() => admin.query<{ n: string }>(`select count(*)::text as n from ${table}`)).pipe(
            Effect.map((r) => Number(r[0]!.n))
          )
        yield* sql.withTransaction(sql`insert into ${sql(table)} values (1)`)
        expect(yield* count()).toBe(1)
        const failed = yield* sql
          .withTransaction(Effect.zipRight(sql`insert into ${sql(table)} values (2)`, Effect.fail("boom" as const)))
          .pipe(Effect.either)
        expect(failed).toEqual(Either.left("boom"))
        expect(yield* count()).toBe(1)
        yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`insert into ${sql(table)} values (3)`
            const inner = yield* sql
              .withTransaction(Effect.zipRight(sql`insert into ${sql(table)} values (4)`, Effect.fail("inner")))
              .pipe(Effect.either)
            expect(Either.isLeft(inner)).toBe(true)
            yield* sql.withTransaction(sql`insert into ${sql(table)} values (5)`)
          })
        )
        const values = yield* Effect.promise(() => admin.query<{ v: number }>(`select v from ${table} order by v`))
        expect(values.map((r) => r.v)).toEqual([1, 3, 5])
        yield* sql`drop table ${sql(table)}`
      })
    )
  )

  it.live(
    "BEGIN rides with the first statement: multi-statement text, an empty body, a failing first statement, a cursor",
    () =>
      withClient(
        "begin",
        ({ sql, admin, app }) =>
          Effect.gen(function* () {
            const table = `warden_begin_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
            yield* sql`create table ${sql(table)} (v int)`
            const values = () =>
              Effect.promise(() => admin.query<{ v: number }>(`select v from ${table} order by v`)).pipe(
                Effect.map((rows) => rows.map((r) => r.v))
              )
            // several statements in one simple query as the first statement, then a failure: all rolled back
            const failed = yield* sql
              .withTransaction(
                Effect.zipRight(
                  sql.unsafe(`insert into ${table} values (1); insert into ${table} values (2)`),
                  Effect.fail("stop" as const)
                )
              )
              .pipe(Effect.either)
            expect(failed).toEqual(Either.left("stop"))
            expect(yield* values()).toEqual([])
            // the same committed; the result shape is the text's own (two results)
            const results = yield* sql.withTransaction(
              sql.unsafe(`insert into ${table} values (1); select count(*)::int as n from ${table}`)
            )
            expect(results).toEqual([[], [{ n: 1 }]])
            expect(yield* values()).toEqual([1])
            // an empty transaction sends nothing and succeeds
            expect(yield* sql.withTransaction(Effect.succeed(42))).toBe(42)
            // a failing first statement: typed error, nothing left open, the session is reused
            const [{ pid }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
            const bad = yield* sql.withTransaction(sql`insert into ${sql(table)} values (${"x"})`).pipe(Effect.either)
            expect(Either.isLeft(bad) && bad.left._tag).toBe("SqlError")
            const backends = yield* Effect.promise(() => admin.backends(app))
            expect(backends.map((b) => [b.pid, b.state])).toEqual([[pid, "idle"]])
            // a cursor as the first statement opens the transaction first
            const streamed = yield* sql.withTransaction(
              sql`select v from ${sql(table)}`.stream.pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray))
            )
            expect(streamed).toEqual([{ v: 1 }])
            // a parameterised first statement, prepared, inside the transaction
            yield* sql.withTransaction(
              Effect.zipRight(
                sql`insert into ${sql(table)} values (${2})`,
                sql`insert into ${sql(table)} values (${3})`
              )
            )
            expect(yield* values()).toEqual([1, 2, 3])
            yield* sql`drop table ${sql(table)}`
          }),
        { maxConnections: 1 }
      )
  )

  it.live("releasing a reserved connection fails statements still queued on it instead of leaving them waiting", () =>
    withClient("queued", ({ sql, admin, app }) =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const connection = yield* Scope.extend(sql.reserve, scope)
        const running = yield* Effect.forkDaemon(connection.execute("select pg_sleep(10)", [], undefined))
        yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))
        const queued = yield* Effect.forkDaemon(connection.execute("select 1", [], undefined))
        yield* Effect.sleep("20 millis")
        yield* Scope.close(scope, Exit.void)
        const [first, second] = yield* Effect.all([Fiber.await(running), Fiber.await(queued)]).pipe(
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "a statement was left waiting" })
        )
        expect(Exit.isFailure(first)).toBe(true)
        expect(Exit.isFailure(second)).toBe(true)
        yield* waitForBackends(admin, app, (bs) => bs.every((b) => b.state === "idle"))
      })
    )
  )

  it.live("reserve: a connection used after its scope closed fails with a typed error", () =>
    withClient("reserve", ({ sql }) =>
      Effect.gen(function* () {
        const connection = yield* Effect.scoped(sql.reserve)
        const result = yield* connection.execute("select 1", [], undefined).pipe(Effect.either)
        expect(Either.isLeft(result) && result.left._tag).toBe("SqlError")
        const pid = yield* Effect.scoped(
          Effect.flatMap(sql.reserve, (c) => c.execute("select pg_backend_pid() as pid", [], undefined))
        )
        expect(typeof pid[0]?.pid).toBe("number")
      })
    )
  )

  it.live("streams rows with a cursor, and an interrupted stream leaves the session clean", () =>
    withClient(
      "stream",
      ({ sql, admin, app, pool }) =>
        Effect.gen(function* () {
          const all = yield* sql`select g from generate_series(1, 1000) g`.stream.pipe(Stream.runCollect)
          expect(Chunk.size(all)).toBe(1000)
          const first = yield* sql`select g from generate_series(1, 100000) g`.stream.pipe(
            Stream.take(5),
            Stream.runCollect
          )
          expect(Chunk.toReadonlyArray(first).map((r: any) => r.g)).toEqual([1, 2, 3, 4, 5])
          // A stream whose statement is slow on the server, interrupted while it waits for rows.
          const fiber = yield* sql`select pg_sleep(10), 1 as x`.stream.pipe(Stream.runCollect, Effect.fork)
          yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))
          yield* Fiber.interrupt(fiber)
          yield* waitForBackends(admin, app, (bs) => bs.every((b) => b.state === "idle"), { timeoutMs: 5000 })
          expect(yield* sql`select 1 as ok`).toEqual([{ ok: 1 }])
          const audit = yield* pool.audit
          expect(audit.ok).toBe(true)
        }),
      { maxConnections: 1 }
    )
  )

  it.live("LISTEN holds its own connection for the stream's lifetime; NOTIFY delivers", () =>
    withClient("listen", ({ sql, admin, app }) =>
      Effect.gen(function* () {
        const fiber = yield* sql.listen("warden_channel").pipe(Stream.take(2), Stream.runCollect, Effect.fork)
        // wait until the LISTEN session is on the server
        yield* waitForBackends(admin, app, (bs) => bs.some((b) => b.query.startsWith("LISTEN")))
        yield* sql.notify("warden_channel", "one")
        yield* sql.notify("warden_channel", "two")
        const got = yield* Fiber.join(fiber)
        expect(Chunk.toReadonlyArray(got)).toEqual(["one", "two"])
        yield* waitForBackends(admin, app, (bs) => !bs.some((b) => b.query.startsWith("LISTEN")))
      })
    )
  )
})
