/**
 * Drop-in behaviour: what a `PgClient.layer` user relies on keeps working the same way (URL
 * parameters, the error where `error.cause.code` is read, the `sql.transaction` span and its events,
 * one shared LISTEN connection, `fromPool`), and the mistakes `PgClient` lets through are refused
 * (a transaction left open by a pooled statement, a conflicting configuration, a connection used
 * after its transaction ended). The server's view is the truth throughout.
 */
import { randomBytes } from "node:crypto"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { afterAll, describe, expect, inject, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import pg from "pg"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import * as WardenPool from "../src/WardenPool.js"
import { type Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { findFreePort, type PrivateServer, startPrivateServer } from "./support/embedded.js"
import { rejectsWrongPassword, withParams, withUrl } from "./support/urls.js"
import {
  configFor,
  deadlines,
  eventually,
  expectSqlError,
  isRunningSleep,
  promise,
  runningSleep,
  safeJson,
  scopedAdmin,
  waitForBackends
} from "./support/warden.js"

const url = inject("databaseUrl")

const token = (): string => randomBytes(4).toString("hex")

interface Services {
  readonly sql: PgClient.PgClient
  readonly pool: WardenPool.WardenPool
  readonly close: Effect.Effect<void>
}

/** Builds `layer` in its own scope (closed at the latest with the test's) and returns its services. */
const build = (
  layer: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | WardenPool.WardenPool, SqlError>
): Effect.Effect<Services, SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope)
    return {
      sql: Context.get(context, PgClient.PgClient),
      pool: Context.get(context, WardenPool.WardenPool),
      close: Scope.close(scope, Exit.void)
    }
  })

const openWarden = (config: WardenClient.WardenClientConfig) => build(WardenClient.layer(config))

/** Builds (and closes) any Layer; the build must fail with a typed `SqlError`, which is returned. */
const buildFailure = <A, E>(layer: Layer.Layer<A, E>): Effect.Effect<SqlError> =>
  Effect.map(Effect.exit(Effect.scoped(Layer.build(layer))), expectSqlError)

/** `error.cause.code`: where `PgClient` users read the driver's code. */
const causeCode = (error: SqlError): unknown => (error.cause as { code?: unknown } | undefined)?.code

/**
 * Runs `body` with a fresh application name and an admin session on `on`: `body`'s own scope (the
 * pool) closes first, then the server must show no backend under that name.
 */
const scenario = <A, E>(
  name: string,
  body: (app: string, admin: Admin) => Effect.Effect<A, E, Scope.Scope>,
  on: string = url
): Effect.Effect<A, E> =>
  Effect.gen(function* () {
    const app = uniqueAppName(name)
    const admin = yield* scopedAdmin(on)
    const result = yield* Effect.scoped(body(app, admin))
    yield* promise(() => admin.waitForNoBackends(app))
    return result
  }).pipe(Effect.scoped)

/** A table created by the admin for this test, dropped at the end of the scope. */
const scopedTable = (admin: Admin, prefix: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const table = `${prefix}_${token()}`
      yield* promise(() => admin.query(`create table ${table} (v int)`))
      return table
    }),
    (table) => promise(() => admin.query(`drop table if exists ${table}`))
  )

const tableValues = (admin: Admin, table: string) =>
  Effect.map(
    promise(() => admin.query<{ v: number }>(`select v from ${table} order by v`)),
    (rows) => rows.map((r) => r.v)
  )

/** The server safety settings pg-warden sends by default, as `current_setting` shows them. */
const showSafety = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql<{
      iit: string
      ccci: string
      st: string
    }>`select current_setting('idle_in_transaction_session_timeout') as iit,
              current_setting('client_connection_check_interval') as ccci,
              current_setting('statement_timeout') as st`,
    (rows) => rows[0]!
  )

/** A private scram server (the shared one may trust every connection), started once, on first use. */
let passwordServer: Promise<{ readonly server: PrivateServer; readonly url: string }> | undefined
/** A server that asks for passwords: the shared one when it does, otherwise a private one. */
const serverAskingPasswords = (): Promise<{ readonly url: string }> => {
  passwordServer ??= (async () => {
    const server = await startPrivateServer()
    return { server, url: server.url }
  })()
  return rejectsWrongPassword(url).then((asks) => (asks ? { url } : passwordServer!))
}
afterAll(async () => {
  if (passwordServer !== undefined) await (await passwordServer).server.dispose()
})

describe("URL parameters merge with pg-warden's own", () => {
  it.live("?options=-c statement_timeout keeps pg-warden's safety settings and adds statement_timeout", () =>
    scenario("url-options", (app) =>
      Effect.gen(function* () {
        const { sql } = yield* openWarden(
          configFor(withParams(url, { options: "-c statement_timeout=4321" }), app, { maxConnections: 1 })
        )
        expect(yield* showSafety(sql)).toEqual({ iit: "1min", ccci: "1s", st: "4321ms" })
      })
    )
  )

  it.live("a user value for a safety parameter wins over pg-warden's default (URL options, startupParameters)", () =>
    Effect.gen(function* () {
      yield* scenario("url-safety", (app) =>
        Effect.gen(function* () {
          const { sql } = yield* openWarden(
            configFor(withParams(url, { options: "-c idle_in_transaction_session_timeout=7s" }), app)
          )
          expect(yield* showSafety(sql)).toEqual({ iit: "7s", ccci: "1s", st: "0" })
        })
      )
      yield* scenario("param-safety", (app) =>
        Effect.gen(function* () {
          const { sql } = yield* openWarden(
            configFor(url, app, { startupParameters: { idle_in_transaction_session_timeout: "5s" } })
          )
          expect(yield* showSafety(sql)).toEqual({ iit: "5s", ccci: "1s", st: "0" })
        })
      )
    })
  )

  it.live("?application_name=x is the pool's applicationName when the config has none", () =>
    scenario("url-app", (app, admin) =>
      Effect.gen(function* () {
        const config: WardenClient.WardenClientConfig = {
          url: Redacted.make(withParams(url, { application_name: app })),
          ...deadlines
        }
        const { sql, pool } = yield* openWarden(config)
        const [{ pid }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
        const backends = yield* promise(() => admin.backends(app))
        expect(
          backends.map((b) => b.pid),
          "pg_stat_activity shows the URL's name"
        ).toContain(pid)
        expect(pool.applicationName).toBe(app)
        const audit = yield* pool.audit
        expect(audit.applicationName).toBe(app)
        expect(
          audit.server.map((b) => b.pid),
          "the audit finds the pool's backends by the URL's name"
        ).toContain(pid)
        expect(audit.ok, safeJson(audit)).toBe(true)
      })
    )
  )

  it.live("applicationName in the config and a different one in the URL: InvalidConfig (the same one is fine)", () =>
    scenario("url-app-conflict", (app, admin) =>
      Effect.gen(function* () {
        const other = uniqueAppName("url-app-other")
        const error = yield* buildFailure(
          WardenClient.layer(configFor(withParams(url, { application_name: other }), app))
        )
        expect(WardenError.fromSqlError(error)?.reason, error.message).toBe("InvalidConfig")
        yield* promise(() => admin.waitForNoBackends(other))
        // the same name in both places is no conflict
        const { sql, pool } = yield* openWarden(configFor(withParams(url, { application_name: app }), app))
        expect(yield* sql`select 1 as one`).toEqual([{ one: 1 }])
        expect(pool.applicationName).toBe(app)
      })
    )
  )

  it.live("the same parameter with different values in the URL's options and in the config: InvalidConfig", () =>
    scenario("url-param-conflict", (app) =>
      Effect.gen(function* () {
        const conflicts: ReadonlyArray<readonly [string, Partial<WardenClient.WardenClientConfig>]> = [
          ["-c statement_timeout=4321", { statementTimeout: "3 seconds" }],
          ["-c work_mem=4MB", { startupParameters: { work_mem: "8MB" } }],
          ["-c lock_timeout=1s", { lockTimeout: "2 seconds" }]
        ]
        for (const [options, extra] of conflicts) {
          const error = yield* buildFailure(WardenClient.layer(configFor(withParams(url, { options }), app, extra)))
          expect(WardenError.fromSqlError(error)?.reason, `${options} vs ${safeJson(extra)}: ${error.message}`).toBe(
            "InvalidConfig"
          )
        }
        // different parameters merge
        const { sql } = yield* openWarden(
          configFor(withParams(url, { options: "-c work_mem=4MB" }), app, {
            startupParameters: { lock_timeout: "2s" }
          })
        )
        const [row] = yield* sql<{
          wm: string
          lt: string
          iit: string
        }>`select current_setting('work_mem') as wm, current_setting('lock_timeout') as lt,
                  current_setting('idle_in_transaction_session_timeout') as iit`
        expect(row).toEqual({ wm: "4MB", lt: "2s", iit: "1min" })
      })
    )
  )
})

describe("a pooled statement that leaves a transaction open fails", () => {
  const leftOpen = (error: SqlError) => {
    expect(WardenError.fromSqlError(error)?.reason, error.message).toBe("TransactionLeftOpen")
    expect(error.message).toMatch(/withTransaction/)
    expect(error.message).toMatch(/reserve/)
  }

  it.live("BEGIN, START TRANSACTION, `begin; insert ...`: TransactionLeftOpen, rolled back, nothing committed", () =>
    scenario("left-open", (app, admin) =>
      Effect.gen(function* () {
        const table = yield* scopedTable(admin, "warden_open")
        const { sql, pool } = yield* openWarden(configFor(url, app, { maxConnections: 2 }))
        const statements = [
          ["sql`BEGIN`", sql`BEGIN`],
          ["sql`START TRANSACTION`", sql`START TRANSACTION`],
          ["begin; insert", sql.unsafe(`begin; insert into ${table} values (1)`)],
          [
            "BEGIN ISOLATION LEVEL ...; insert",
            sql.unsafe(`BEGIN ISOLATION LEVEL SERIALIZABLE; insert into ${table} values (2)`)
          ]
        ] as const
        for (const [what, statement] of statements) {
          const error = expectSqlError(yield* Effect.exit(statement))
          leftOpen(error)
          // rolled back: nothing idle in transaction on the server, nothing committed
          yield* waitForBackends(admin, app, (bs) => bs.every((b) => b.state === "idle" && b.xactStart === null), {
            message: `after ${what}: no backend of the pool in a transaction`
          })
          expect(yield* tableValues(admin, table), `after ${what}`).toEqual([])
        }
        // the pool is fine afterwards
        expect(yield* sql`select 1 as one`).toEqual([{ one: 1 }])
        expect((yield* pool.audit).ok).toBe(true)
      })
    )
  )

  it.live("hand-written BEGIN / INSERT / ROLLBACK as three pooled statements commits nothing", () =>
    scenario("left-open-3", (app, admin) =>
      Effect.gen(function* () {
        const table = yield* scopedTable(admin, "warden_open3")
        const { sql } = yield* openWarden(configFor(url, app))
        const exit = yield* Effect.exit(
          Effect.gen(function* () {
            yield* sql`BEGIN`
            yield* sql`insert into ${sql(table)} values (${1})`
            yield* sql`ROLLBACK`
          })
        )
        leftOpen(expectSqlError(exit))
        expect(yield* tableValues(admin, table), "the program stopped at BEGIN; the insert never ran").toEqual([])
      })
    )
  )

  it.live("a pooled multi-statement text that closes its own transaction is fine", () =>
    scenario("closed-tx", (app, admin) =>
      Effect.gen(function* () {
        const table = yield* scopedTable(admin, "warden_closed")
        const { sql } = yield* openWarden(configFor(url, app))
        yield* sql.unsafe(`begin; insert into ${table} values (1); commit`)
        expect(yield* tableValues(admin, table)).toEqual([1])
      })
    )
  )

  it.live("BEGIN on sql.reserve stays allowed", () =>
    scenario("reserve-begin", (app, admin) =>
      Effect.gen(function* () {
        const table = yield* scopedTable(admin, "warden_rbegin")
        const { sql } = yield* openWarden(configFor(url, app))
        yield* Effect.scoped(
          Effect.gen(function* () {
            const connection = yield* sql.reserve
            yield* connection.executeUnprepared("BEGIN", [], undefined)
            yield* connection.executeUnprepared(`insert into ${table} values (1)`, [], undefined)
            yield* connection.executeUnprepared("COMMIT", [], undefined)
          })
        )
        expect(yield* tableValues(admin, table)).toEqual([1])
      })
    )
  )
})

describe("a failed Layer build keeps the driver error where PgClient users look (error.cause.code)", () => {
  /** Builds both layers against `badUrl`; returns [pg-warden's error, upstream's error]. */
  const both = (badUrl: string) =>
    Effect.gen(function* () {
      const app = uniqueAppName("build-warden")
      const upstreamApp = uniqueAppName("build-upstream")
      const warden = yield* buildFailure(WardenClient.layer(configFor(badUrl, app, { connectTimeout: 3_000 })))
      const upstream = yield* buildFailure(
        PgClient.layer({ url: Redacted.make(badUrl), applicationName: upstreamApp, connectTimeout: "3 seconds" })
      )
      return { warden, upstream, apps: [app, upstreamApp] }
    })

  it.live("unknown database: 3D000, as with PgClient.layer", () =>
    Effect.gen(function* () {
      const admin = yield* scopedAdmin(url)
      const { warden, upstream, apps } = yield* both(
        withUrl(url, (u) => {
          u.pathname = `/warden_no_such_db_${token()}`
        })
      )
      expect(causeCode(upstream), "upstream (test sanity)").toBe("3D000")
      expect(causeCode(warden), `pg-warden: ${warden.message}`).toBe(causeCode(upstream))
      for (const app of apps) yield* promise(() => admin.waitForNoBackends(app))
    }).pipe(Effect.scoped)
  )

  it.live("closed port: ECONNREFUSED, as with PgClient.layer", () =>
    Effect.gen(function* () {
      const port = yield* promise(() => findFreePort())
      const { warden, upstream } = yield* both(`postgres://postgres@127.0.0.1:${port}/postgres`)
      expect(causeCode(upstream), "upstream (test sanity)").toBe("ECONNREFUSED")
      expect(causeCode(warden), `pg-warden: ${warden.message}`).toBe(causeCode(upstream))
    })
  )

  it.live(
    "wrong password: 28P01, as with PgClient.layer",
    () =>
      Effect.gen(function* () {
        const server = yield* promise(() => serverAskingPasswords())
        const admin = yield* scopedAdmin(server.url)
        const { warden, upstream, apps } = yield* both(
          withUrl(server.url, (u) => {
            u.password = "definitely-wrong"
          })
        )
        expect(causeCode(upstream), "upstream (test sanity)").toBe("28P01")
        expect(causeCode(warden), `pg-warden: ${warden.message}`).toBe(causeCode(upstream))
        for (const app of apps) yield* promise(() => admin.waitForNoBackends(app))
      }).pipe(Effect.scoped),
    90_000
  )
})

describe("the sql.transaction span with Effect's built-in tracer, as with PgClient.layer", () => {
  interface Seen {
    readonly name: string
    readonly events: ReadonlyArray<string>
    readonly ended: boolean
  }

  const describeSpan = (span: Tracer.AnySpan | undefined): Seen | undefined => {
    if (span === undefined || span._tag !== "Span") return undefined
    const events = (span as unknown as { events?: Array<[string, bigint, Record<string, unknown>]> }).events
    return { name: span.name, events: (events ?? []).map((e) => e[0]), ended: span.status._tag === "Ended" }
  }

  /** Spans seen inside a committed transaction, its nested savepoints, and a rolled-back one. */
  const observe = Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const current = Effect.map(Effect.option(Effect.currentSpan), Option.getOrUndefined)
    let outer: Tracer.Span | undefined
    let inner: Tracer.Span | undefined
    let failedInner: Tracer.Span | undefined
    let rolledBack: Tracer.Span | undefined
    yield* sql.withTransaction(
      Effect.gen(function* () {
        outer = yield* current
        yield* sql`select 1`
        yield* sql.withTransaction(
          Effect.gen(function* () {
            inner = yield* current
            yield* sql`select 2`
          })
        )
        yield* Effect.either(
          sql.withTransaction(
            Effect.gen(function* () {
              failedInner = yield* current
              yield* sql`select 3`
              return yield* Effect.fail("inner" as const)
            })
          )
        )
      })
    )
    yield* Effect.either(
      sql.withTransaction(
        Effect.gen(function* () {
          rolledBack = yield* current
          yield* sql`select 4`
          return yield* Effect.fail("outer" as const)
        })
      )
    )
    const parentOf = (span: Tracer.Span | undefined) =>
      span !== undefined && span.parent._tag === "Some" ? span.parent.value : undefined
    return {
      committed: describeSpan(outer),
      savepoint: describeSpan(inner),
      rolledBackSavepoint: describeSpan(failedInner),
      rolledBack: describeSpan(rolledBack),
      nestedUnderOuter: outer !== undefined && parentOf(inner) === outer && parentOf(failedInner) === outer
    }
  })

  it.live("Effect.currentSpan is sql.transaction; commit, savepoint and rollback events as upstream records them", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("span")
      const upstreamApp = uniqueAppName("span-upstream")
      const admin = yield* scopedAdmin(url)
      const upstream = yield* observe.pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(url), applicationName: upstreamApp }))
      )
      // test sanity: what upstream does
      expect(upstream).toEqual({
        committed: { name: "sql.transaction", events: ["db.transaction.commit"], ended: true },
        savepoint: { name: "sql.transaction", events: ["db.transaction.savepoint"], ended: true },
        rolledBackSavepoint: { name: "sql.transaction", events: ["db.transaction.rollback"], ended: true },
        rolledBack: { name: "sql.transaction", events: ["db.transaction.rollback"], ended: true },
        nestedUnderOuter: true
      })
      const warden = yield* observe.pipe(Effect.provide(WardenClient.layer(configFor(url, app))))
      expect(warden).toEqual(upstream)
      yield* promise(() => admin.waitForNoBackends(app))
      yield* promise(() => admin.waitForNoBackends(upstreamApp))
    }).pipe(Effect.scoped)
  )
})

describe("listen streams share one connection", () => {
  it.live("two listen streams on two channels: one LISTEN backend on the server; nothing left afterwards", () =>
    scenario("listen-shared", (app, admin) =>
      Effect.gen(function* () {
        const tok = token()
        const channels = [`warden_la_${tok}`, `warden_lb_${tok}`] as const
        const { sql, pool, close } = yield* openWarden(configFor(url, app))
        const streams = yield* Effect.forEach(channels, (channel) =>
          Effect.gen(function* () {
            const ready = yield* Deferred.make<void>()
            const fiber = yield* sql.listen(channel).pipe(
              Stream.tap((payload) => (payload === "ping" ? Deferred.succeed(ready, undefined) : Effect.void)),
              Stream.takeUntil((payload) => payload === "end"),
              Stream.runCollect,
              Effect.map(Chunk.toReadonlyArray),
              Effect.fork
            )
            return { channel, ready, fiber }
          })
        )
        // Both streams are listening once each has received a ping (notify until they have).
        yield* eventually(
          Effect.gen(function* () {
            for (const s of streams) yield* sql.notify(s.channel, "ping")
            return yield* Effect.forEach(streams, (s) => Deferred.isDone(s.ready))
          }),
          (done) => done.every(Boolean),
          "both listen streams received a notification"
        )
        const audit = yield* pool.audit
        const statementPids = new Set([...audit.pool.idle, ...audit.pool.leased, ...audit.pool.releasing])
        const backends = yield* promise(() => admin.backends(app))
        const listening = backends.filter((b) => /^LISTEN /i.test(b.query))
        expect(
          listening.map((b) => b.state),
          `exactly one LISTEN session, idle, for both streams: ${safeJson(backends)}`
        ).toEqual(["idle"])
        // and nothing else besides the pool's statement sessions
        const others = backends.filter((b) => !statementPids.has(b.pid))
        expect(
          others.every((b) => b.pid === listening[0]!.pid),
          `no backend besides the pool's sessions and the LISTEN one: ${safeJson(backends)}`
        ).toBe(true)
        for (const s of streams) yield* sql.notify(s.channel, "end")
        for (const s of streams) {
          const got = yield* Fiber.join(s.fiber)
          expect(got.at(-1), `${s.channel} got its notifications`).toBe("end")
        }
        yield* close
      })
    )
  )
})

describe("a LISTEN session that stops answering", () => {
  it.live("a new listen fails within the deadline, the streams on it fail, the backend ends", () =>
    scenario("listen-frozen", (app, admin) =>
      Effect.gen(function* () {
        const tok = token()
        const { sql, close } = yield* openWarden({ ...configFor(url, app), rollbackTimeout: "300 millis" })
        const ready = yield* Deferred.make<void>()
        const first = yield* sql.listen(`warden_lf_${tok}`).pipe(
          Stream.tap(() => Deferred.succeed(ready, undefined)),
          Stream.runDrain,
          Effect.exit,
          Effect.fork
        )
        yield* eventually(
          Effect.andThen(sql.notify(`warden_lf_${tok}`, "ping"), Deferred.isDone(ready)),
          (done) => done,
          "the first stream received a notification"
        )
        const [listener] = (yield* promise(() => admin.backends(app))).filter((b) => /^LISTEN /i.test(b.query))
        admin.freeze(listener!.pid)
        // Whatever happens, the backend does not stay stopped (it may be gone by then).
        yield* Effect.addFinalizer(() => Effect.ignore(Effect.try(() => admin.thaw(listener!.pid))))
        const started = Date.now()
        const second = yield* sql.listen(`warden_lg_${tok}`).pipe(Stream.runDrain, Effect.exit)
        expect(Exit.isFailure(second), "the second listen fails").toBe(true)
        expect(Date.now() - started).toBeLessThan(5_000)
        expect(Exit.isFailure(yield* Fiber.join(first)), "the first stream fails with its session").toBe(true)
        admin.thaw(listener!.pid)
        yield* promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => !bs.some((b) => b.pid === listener!.pid),
            { message: "the frozen LISTEN backend is gone" }
          )
        )
        yield* close
      })
    )
  )
})

/** `WardenClient.fromPool` with its `Reactivity` provided. */
const fromPool = (options: WardenClient.WardenClientFromPoolOptions) => {
  expect(WardenClient.fromPool, "WardenClient.fromPool").toBeTypeOf("function")
  return WardenClient.fromPool(options).pipe(Effect.provide(Reactivity.layer))
}
const layerFromPool = (options: WardenClient.WardenClientFromPoolOptions) => {
  expect(WardenClient.layerFromPool, "WardenClient.layerFromPool").toBeTypeOf("function")
  return WardenClient.layerFromPool(options)
}

/** A `pg.Pool` the caller owns (ended when the scope closes); `created` is filled by `acquire`. */
const userPool = (config: pg.PoolConfig) => {
  const created: Array<pg.Pool> = []
  const acquire = Effect.acquireRelease(
    Effect.sync(() => {
      const pool = new pg.Pool(config)
      pool.on("error", () => {})
      created.push(pool)
      return pool
    }),
    (pool) => promise(() => pool.end())
  )
  return { acquire, created }
}

describe("fromPool: pg-warden's sessions from the settings of a pg.Pool the caller owns", () => {
  it.live("fromPool runs statements, an interrupted pg_sleep stops on the server, the user's pool stays unused", () =>
    scenario("from-pool", (app, admin) =>
      Effect.gen(function* () {
        const user = userPool({ connectionString: url, application_name: app, max: 3 })
        const sql = yield* fromPool({ acquire: user.acquire, applicationName: app, ...deadlines })
        expect(yield* sql`select ${1}::int as one`).toEqual([{ one: 1 }])
        const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
        yield* runningSleep(admin, app)
        yield* Fiber.interrupt(fiber)
        yield* waitForBackends(admin, app, (bs) => !bs.some(isRunningSleep), {
          message: "the interrupted pg_sleep stopped on the server"
        })
        expect(yield* sql`select 2 as two`).toEqual([{ two: 2 }])
        expect(sql.pool.applicationName).toBe(app)
        expect((yield* sql.pool.audit).ok).toBe(true)
        expect(user.created.length, "acquire was used").toBe(1)
        expect(user.created[0]!.totalCount, "no connection taken from the user's pool").toBe(0)
      })
    )
  )

  it.live("layerFromPool provides PgClient, SqlClient and WardenPool", () =>
    scenario("layer-from-pool", (app) =>
      Effect.gen(function* () {
        const user = userPool({ connectionString: url, application_name: app })
        const context = yield* Layer.build(layerFromPool({ acquire: user.acquire, applicationName: app, ...deadlines }))
        const pgClient = Context.get(context, PgClient.PgClient)
        const sqlClient = Context.get(context, SqlClient.SqlClient)
        const pool = Context.get(context, WardenPool.WardenPool)
        expect(yield* pgClient`select 1 as one`).toEqual([{ one: 1 }])
        expect(yield* sqlClient`select 2 as two`).toEqual([{ two: 2 }])
        expect(pool.applicationName).toBe(app)
        expect((yield* pool.stats).total).toBeGreaterThanOrEqual(1)
        expect(user.created[0]!.totalCount).toBe(0)
      })
    )
  )

  it.live(
    "fromPool evaluates the pool's password function for each new connection (a rotating IAM-style token)",
    () =>
      Effect.gen(function* () {
        const server = yield* promise(() => serverAskingPasswords())
        const admin = yield* scopedAdmin(server.url)
        const role = `warden_iam_${token()}`
        let password = "first-token"
        yield* Effect.acquireRelease(
          promise(() => admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`)),
          () => promise(() => admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined))
        )
        const target = new URL(server.url)
        let calls = 0
        yield* scenario(
          "from-pool-iam",
          (app) =>
            Effect.gen(function* () {
              const user = userPool({
                host: target.hostname,
                port: Number(target.port),
                database: target.pathname.slice(1),
                user: role,
                password: async () => {
                  calls++
                  return password
                },
                application_name: app
              })
              const sql = yield* fromPool({
                acquire: user.acquire,
                applicationName: app,
                maxConnections: 2,
                ...deadlines
              })
              expect(yield* sql`select current_user::text as u`).toEqual([{ u: role }])
              const before = calls
              expect(before, "the password function was called for the first connection").toBeGreaterThanOrEqual(1)
              // The token rotates: a new connection must ask the function again.
              password = "second-token"
              yield* promise(() => admin.query(`ALTER ROLE ${role} PASSWORD '${password}'`))
              const pids = yield* Effect.scoped(
                Effect.gen(function* () {
                  const a = yield* sql.reserve
                  const b = yield* sql.reserve
                  const pid = (c: typeof a) =>
                    Effect.map(c.execute("select pg_backend_pid() as pid", [], undefined), (r) => r[0]!.pid as number)
                  return [yield* pid(a), yield* pid(b)]
                })
              )
              expect(new Set(pids).size, "two sessions, one of them new").toBe(2)
              expect(calls, "the function was asked again for the new connection").toBeGreaterThan(before)
              expect(user.created[0]!.totalCount).toBe(0)
            }),
          server.url
        )
      }).pipe(Effect.scoped),
    90_000
  )
})

describe("a connection used after its transaction ended", () => {
  it.live("a fiber forked inside a transaction that uses its connection after the commit gets a clear SqlError", () =>
    scenario("after-commit", (app, admin) =>
      Effect.gen(function* () {
        const table = yield* scopedTable(admin, "warden_late")
        const { sql } = yield* openWarden(configFor(url, app, { maxConnections: 1 }))
        const committed = yield* Deferred.make<void>()
        const late = yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`insert into ${sql(table)} values (${1})`
            return yield* Effect.fork(
              Effect.zipRight(Deferred.await(committed), sql`insert into ${sql(table)} values (${2})`)
            )
          })
        )
        yield* Deferred.succeed(committed, undefined)
        // meanwhile the connection is back in the pool (and may be someone else's): it must not run there
        const exit = yield* Fiber.await(late)
        const error = expectSqlError(exit)
        expect(error.message).toMatch(/Connection used after its scope was closed/)
        expect(yield* sql`select 1 as one`).toEqual([{ one: 1 }])
        expect(yield* tableValues(admin, table), "only the committed insert is there").toEqual([1])
      })
    )
  )
})
