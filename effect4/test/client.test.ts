/**
 * The Effect 4 edition as a user swaps it in: `WardenClient.layer` in place of `PgClient.layer`,
 * the same statements, the same values, and the server's view (through the repository's observer)
 * after interruptions.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { CoreError } from "../../src/core/errors.js"
import { inTransaction, Observer, runs } from "../../src/core/observer.js"
import { uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"

const url = inject("databaseUrl")

const warden = (app: string, extra: Partial<WardenClient.WardenClientConfig> = {}) =>
  WardenClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: 4, ...extra })

const observer = Effect.acquireRelease(
  Effect.promise(() => Observer.connect(url)),
  (observer) => Effect.promise(() => observer.close())
)

const failure = <A>(exit: Exit.Exit<A, SqlError>): SqlError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (reason === undefined || reason._tag !== "Fail") throw new Error(`expected a typed failure: ${String(exit.cause)}`)
  return reason.error
}

/** Expressions whose JS value must be the one @effect/sql-pg 4 returns. */
const VALUES = [
  "1::int2",
  "1::int4",
  "9007199254740993::int8",
  "array[1, 2]::int8[]",
  "1.5::float4",
  "1.5::float8",
  "'12.50'::numeric",
  "true",
  "'text'::text",
  "'x'::varchar",
  "'{\"a\": [1, 2]}'::jsonb",
  "'{\"a\": 1}'::json",
  "'2026-12-01'::date",
  "array['2026-12-01', '2026-12-02']::date[]",
  "'12:34:56.789012'::time",
  "'2026-12-01 12:34:56.789'::timestamp",
  "'2026-12-01 12:34:56.789+02'::timestamptz",
  "'1 year 2 mons 3 days 04:05:06.789'::interval",
  "'-3 days -00:00:01.5'::interval",
  "'\\xdeadbeef'::bytea",
  "'8b1f4d2e-8f5f-4c1a-9d6e-2c8c1e4e7b10'::uuid",
  "array['a', null, 'c']",
  "null::int8"
] as const

describe("WardenClient.layer (Effect 4)", () => {
  it.live("provides SqlClient, PgClient and WardenPool; statements, inserts and transactions work", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgClient.PgClient
      const pool = yield* WardenPool.WardenPool
      expect(pg.config.applicationName).toBe(pool.applicationName)
      const table = `e4_client_${Date.now()}`
      yield* sql.unsafe(`create temp table ${table} (id int primary key, name text)`)
      // A temp table lives on one session; use one for this part.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const conn = yield* sql.reserve
          yield* conn.executeRaw(`create temp table ${table}_r (id int primary key, name text)`, [])
          const inserted = yield* conn.execute(
            `insert into ${table}_r values ($1, $2) returning *`,
            [1, "a"],
            undefined
          )
          expect(inserted).toEqual([{ id: 1, name: "a" }])
        })
      )
      const rows = yield* sql<{ n: number }>`select ${41} + 1 as n`
      expect(rows).toEqual([{ n: 42 }])
      const committed = yield* sql.withTransaction(
        Effect.andThen(sql`select 1`, sql<{ now: unknown }>`select txid_current() as now`)
      )
      expect(committed.length).toBe(1)
      const stats = yield* pool.stats
      expect(stats.counters.acquired).toBeGreaterThan(0)
      expect((yield* pool.audit).ok).toBe(true)
    }).pipe(Effect.provide(warden(uniqueAppName("e4-basic"))))
  )

  it.live("returns the values @effect/sql-pg 4 returns, column by column", () =>
    Effect.gen(function* () {
      const select = `select ${VALUES.map((v, i) => `${v} as c${i}`).join(", ")}`
      const ours = yield* Effect.provide(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(select)),
        warden(uniqueAppName("e4-values"))
      )
      const theirs = yield* Effect.provide(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(select)),
        PgClient.layer({ url: Redacted.make(url), applicationName: uniqueAppName("e4-values-sqlpg") })
      )
      for (let i = 0; i < VALUES.length; i++) {
        expect({ expression: VALUES[i], value: (ours[0] as any)[`c${i}`] }).toStrictEqual({
          expression: VALUES[i],
          value: (theirs[0] as any)[`c${i}`]
        })
      }
    })
  )

  it.live("encodes parameters as @effect/sql-pg 4 does: bigint, Date, Uint8Array, sql.json", () =>
    Effect.gen(function* () {
      const run = Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        return yield* sql`select ${10n} as big, ${new Date("2026-12-01T00:00:00Z")} as at, ${new Uint8Array([1, 2])} as bytes, ${sql.json({ a: [1, "x"] })} as doc, ${sql.json({ a: 1 })}->>'a' as field`
      })
      const ours = yield* Effect.provide(run, warden(uniqueAppName("e4-params")))
      const theirs = yield* Effect.provide(
        run,
        PgClient.layer({ url: Redacted.make(url), applicationName: uniqueAppName("e4-params-sqlpg") })
      )
      expect(ours).toStrictEqual(theirs)
    })
  )

  it.live("fails with effect 4's reason classes; pg-warden's own causes are reachable", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const syntax = failure(yield* Effect.exit(sql`selec 1`))
      expect(syntax.reason._tag).toBe("SqlSyntaxError")
      const unique = failure(
        yield* Effect.exit(
          sql`select * from (values (1), (1)) v(x) where (select count(*) from pg_class) < 0`.pipe(
            Effect.andThen(sql.unsafe("create temp table e4u (x int primary key); insert into e4u values (1), (1)"))
          )
        )
      )
      expect(unique.reason._tag).toBe("UniqueViolation")
      const rolledBack = failure(
        yield* Effect.exit(sql.withTransaction(Effect.andThen(Effect.ignore(sql`select 1/0`), sql`select 1`)))
      )
      // The transaction failed on the server, so its COMMIT came back as ROLLBACK: a typed failure.
      expect(rolledBack.reason._tag).toBe("UnknownError")
    }).pipe(Effect.provide(warden(uniqueAppName("e4-errors"))))
  )

  it.live("a configuration field pg-warden cannot honour fails the layer, naming it", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.provide(Effect.asVoid(SqlClient.SqlClient), warden(uniqueAppName("e4-config"), { multiplex: true }))
      )
      const error = failure(exit)
      expect(error.reason.cause).toBeInstanceOf(CoreError)
      expect((error.reason.cause as CoreError).reason).toBe("InvalidConfig")
      expect(error.message).toMatch(/multiplex/)
    })
  )

  it.live("an interrupted statement and an interrupted transaction leave nothing on the server", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-interrupt")
      const admin = yield* observer
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const statement = yield* Effect.forkChild(sql`select pg_sleep(10)`)
        yield* Effect.promise(() => admin.waitForBackends(app, (bs) => bs.some(runs("pg_sleep(10)")), 5_000))
        yield* Fiber.interrupt(statement)
        expect((yield* Effect.promise(() => admin.backends(app))).filter(runs("pg_sleep(10)"))).toEqual([])

        const transaction = yield* Effect.forkChild(
          sql.withTransaction(Effect.andThen(sql`select 1`, sql`select pg_sleep(10)`))
        )
        yield* Effect.promise(() => admin.waitForBackends(app, (bs) => bs.some(runs("pg_sleep(10)")), 5_000))
        yield* Fiber.interrupt(transaction)
        const after = yield* Effect.promise(() => admin.backends(app))
        expect(after.filter((b) => inTransaction(b) || runs("pg_sleep")(b))).toEqual([])
        expect((yield* sql<{ one: number }>`select 1 as one`)[0]!.one).toBe(1)
      }).pipe(Effect.provide(warden(app)))
      yield* Effect.promise(() => admin.waitForNoBackends(app, 5_000))
    })
  )

  it.live("a raw BEGIN left open on a reserved connection does not reach the next borrower", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-raw-begin")
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* Effect.scoped(
          Effect.gen(function* () {
            const conn = yield* sql.reserve
            yield* conn.executeRaw("BEGIN", [])
            yield* conn.executeRaw("select txid_current()", [])
          })
        )
        const [row] = yield* sql<{ open: boolean }>`select now() <> statement_timestamp() as open`
        expect(row!.open).toBe(false)
      }).pipe(Effect.provide(warden(app, { maxConnections: 1 })))
    })
  )

  it.live("closing the layer while a daemon fiber is inside a transaction does not commit it", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-daemon")
      const admin = yield* observer
      const table = `e4_daemon_${Date.now()}`
      yield* Effect.promise(() => admin.query(`create table ${table} (n int)`))
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(warden(app), scope)
      const sql = context.mapUnsafe.get(SqlClient.SqlClient.key) as SqlClient.SqlClient
      yield* Effect.forkDetach(
        sql.withTransaction(
          Effect.andThen(sql.unsafe(`insert into ${table} values (1)`), sql`select pg_sleep(2)`).pipe(
            Effect.andThen(sql.unsafe(`insert into ${table} values (2)`))
          )
        )
      )
      yield* Effect.promise(() => admin.waitForBackends(app, (bs) => bs.some(runs("pg_sleep(2)")), 5_000))
      const started = performance.now()
      yield* Scope.close(scope, Exit.void)
      expect(performance.now() - started).toBeLessThan(
        Number(WardenClient.cleanupBound({}).pipe(Duration.toMillis)) + 1_000
      )
      yield* Effect.promise(() => admin.waitForNoBackends(app, 5_000))
      yield* Effect.sleep(2_500)
      const [row] = yield* Effect.promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`))
      expect(row!.n).toBe(0)
      yield* Effect.promise(() => admin.query(`drop table ${table}`))
    })
  )

  it.live("listen delivers notifications on a queue; notify sends them", () =>
    Effect.gen(function* () {
      const pg = yield* PgClient.PgClient
      const queue = yield* pg.listen("e4_channel")
      yield* pg.notify("e4_channel", "hello")
      const notification = yield* Queue.take(queue)
      expect(notification.channel).toBe("e4_channel")
      expect(notification.payload).toBe("hello")
      expect(typeof notification.processId).toBe("number")
    }).pipe(Effect.provide(warden(uniqueAppName("e4-listen"))))
  )
  it.live("onConnect sets the session's baseline; a lease's SET does not reach the next borrower (C8)", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const setting = (name: string) =>
        Effect.map(sql<{ value: string }>`select current_setting(${name}) as value`, (rows) => rows[0]!.value)
      expect(yield* setting("search_path")).toBe("pg_catalog, public")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const conn = yield* sql.reserve
          yield* conn.executeRaw("SET search_path = pg_catalog", [])
          yield* conn.executeRaw("SET work_mem = '7MB'", [])
        })
      )
      // A pool of one: the same backend, reset to the baseline the hook left.
      expect(yield* setting("search_path")).toBe("pg_catalog, public")
      expect(yield* setting("work_mem")).not.toBe("7MB")
      const stats = yield* (yield* WardenPool.WardenPool).stats
      expect(stats.counters.reset).toBeGreaterThanOrEqual(1)
      expect(stats.counters.created).toBe(1)
    }).pipe(
      Effect.provide(
        warden(uniqueAppName("e4-onconnect"), {
          maxConnections: 1,
          onConnect: (sql) => sql`SET search_path = pg_catalog, public`
        })
      )
    )
  )
})
