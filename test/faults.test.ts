/**
 * Fault injection against pg-warden: killed backends, frozen backends, network blackholes,
 * resets, server restarts, interruption while connecting and Layer shutdown under load.
 * Every test checks the server's own view (pg_stat_activity by application_name).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import * as WardenPool from "../src/WardenPool.js"
import { Admin, type Backend, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { startPrivateServer } from "./support/embedded.js"
import { type FaultProxy, startProxy } from "./support/proxy.js"

const databaseUrl = inject("databaseUrl")

const target = (() => {
  const url = new URL(databaseUrl)
  return { host: url.hostname === "" ? "127.0.0.1" : url.hostname, port: url.port === "" ? 5432 : Number(url.port) }
})()

/** Short cleanup deadlines, so that fault tests run quickly. */
const deadlines = {
  cancelTimeout: 300,
  drainTimeout: 300,
  rollbackTimeout: 300,
  terminateTimeout: 300
} as const

const MARGIN_MS = 1_500

const configFor = (
  url: string,
  applicationName: string,
  extra: Partial<WardenClient.WardenClientConfig> = {}
): WardenClient.WardenClientConfig => ({
  url: Redacted.make(url),
  applicationName,
  ...deadlines,
  ...extra
})

const boundMs = (config: WardenClient.WardenClientConfig): number =>
  Duration.toMillis(WardenClient.cleanupBound(config)) + MARGIN_MS

interface Opened {
  readonly sql: SqlClient.SqlClient
  readonly pool: WardenPool.WardenPool
  /** Closes the Layer's scope (idempotent). */
  readonly close: Effect.Effect<void>
}

/** Builds the Layer in its own scope, closed at the latest when the test's scope closes. */
const open = (config: WardenClient.WardenClientConfig): Effect.Effect<Opened, SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(WardenClient.layer(config), scope)
    return {
      sql: Context.get(context, SqlClient.SqlClient),
      pool: Context.get(context, WardenPool.WardenPool),
      close: Scope.close(scope, Exit.void)
    }
  })

const promise = <A>(f: () => Promise<A>): Effect.Effect<A> => Effect.promise(f)

const backendPid = (sql: SqlClient.SqlClient) =>
  Effect.map(sql<{ pid: number }>`select pg_backend_pid() as pid`, (rows) => rows[0]!.pid)

/** Polls an effect until `predicate` holds; dies with `message` and the last value otherwise. */
const eventually = <A, E>(
  probe: Effect.Effect<A, E>,
  predicate: (value: A) => boolean,
  message: string,
  timeoutMs = 10_000
): Effect.Effect<A> =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    let last: unknown
    for (;;) {
      const result = yield* Effect.either(probe)
      if (result._tag === "Right") {
        last = result.right
        if (predicate(result.right)) return result.right
      } else {
        last = result.left
      }
      if (Date.now() >= deadline) {
        return yield* Effect.dieMessage(`timed out after ${timeoutMs} ms: ${message} (last: ${String(safeJson(last))})`)
      }
      yield* Effect.sleep(Duration.millis(25))
    }
  })

const safeJson = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** The failure of an exit, asserting it is a typed `SqlError` (not a defect, not an interruption). */
const expectSqlError = <A>(exit: Exit.Exit<A, unknown>): SqlError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success: ${safeJson(exit.value)}`)
  expect(Cause.isDie(exit.cause), `defect instead of a typed error: ${Cause.pretty(exit.cause)}`).toBe(false)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got: ${Cause.pretty(exit.cause)}`)
  expect(failure.value).toBeInstanceOf(SqlError)
  return failure.value as SqlError
}

/** SIGCONT, tolerating a process that already exited. */
const thawQuietly = (admin: Admin, pid: number): void => {
  try {
    admin.thaw(pid)
  } catch {
    // already gone
  }
}

const runningSleep = (admin: Admin, app: string, count = 1): Effect.Effect<ReadonlyArray<Backend>> =>
  promise(() =>
    admin.waitFor(
      async () => (await admin.backends(app)).filter((b) => b.state === "active" && b.query.includes("pg_sleep")),
      (bs) => bs.length >= count,
      { message: `${count} backend(s) running pg_sleep for ${app}` }
    )
  )

describe("faults", () => {
  let admin: Admin
  let proxy: FaultProxy

  beforeAll(async () => {
    admin = await Admin.connect(databaseUrl)
    proxy = await startProxy(target)
  })

  afterAll(async () => {
    await proxy?.close()
    await admin?.close()
  })

  const resetProxy = Effect.sync(() => {
    proxy.setMode("pass")
    proxy.reset()
  })

  describe("backend killed with pg_terminate_backend", () => {
    it.live(
      "while idle in the pool: the next statement runs on a new backend",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("kill-idle")
            const { sql, pool, close } = yield* open(configFor(databaseUrl, app, { maxConnections: 2 }))
            const pid1 = yield* backendPid(sql)
            expect((yield* promise(() => admin.backends(app))).map((b) => b.pid)).toEqual([pid1])

            expect(yield* promise(() => admin.terminate(pid1))).toBe(true)
            yield* promise(() =>
              admin.waitFor(
                () => admin.backends(app),
                (bs) => bs.every((b) => b.pid !== pid1)
              )
            )
            // The driver's 'error'/'end' event reached the pool (and did not crash the process).
            yield* eventually(pool.stats, (s) => s.counters.lostWhileIdle >= 1, "pool noticed the lost idle session")

            const pid2 = yield* backendPid(sql)
            expect(pid2).not.toBe(pid1)
            expect((yield* promise(() => admin.backends(app))).map((b) => b.pid)).toEqual([pid2])
            expect((yield* eventually(pool.audit, (r) => r.ok, "audit ok")).ok).toBe(true)

            yield* close
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )

    it.live(
      "while running pg_sleep(10): typed SqlError, the next statement works, audit ok",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("kill-busy")
            const { sql, pool, close } = yield* open(configFor(databaseUrl, app, { maxConnections: 2 }))
            const fiber = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
            const [busy] = yield* runningSleep(admin, app)
            expect(yield* promise(() => admin.terminate(busy!.pid))).toBe(true)

            const [elapsed, exit] = yield* Effect.timed(Fiber.join(fiber))
            const error = expectSqlError(exit)
            expect(Duration.toMillis(elapsed)).toBeLessThan(5_000)
            // 57P01 admin_shutdown: "terminating connection due to administrator command"
            expect(WardenError.sqlState(error)).toBe("57P01")

            const pid2 = yield* backendPid(sql)
            expect(pid2).not.toBe(busy!.pid)
            yield* eventually(pool.audit, (r) => r.ok, "audit ok after the kill")
            yield* promise(() =>
              admin.waitFor(
                () => admin.backends(app),
                (bs) => bs.every((b) => b.pid !== busy!.pid)
              )
            )

            yield* close
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )
  })

  it.live(
    "backend frozen with SIGSTOP inside withTransaction: interruption is bounded, the backend ends",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("freeze-tx")
          const config = configFor(databaseUrl, app, { maxConnections: 1 })
          const { sql, pool, close } = yield* open(config)
          const fiber = yield* Effect.fork(sql.withTransaction(sql`select pg_sleep(10)`))
          const [busy] = yield* runningSleep(admin, app)
          const pid = busy!.pid
          yield* Effect.acquireRelease(
            Effect.sync(() => admin.freeze(pid)),
            () => Effect.sync(() => thawQuietly(admin, pid))
          )

          const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
          expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))

          thawQuietly(admin, pid)
          yield* promise(() =>
            admin.waitFor(
              () => admin.backends(app),
              (bs) => bs.every((b) => b.pid !== pid),
              { message: `frozen backend ${pid} still present after thaw` }
            )
          )
          const stats = yield* pool.stats
          expect(stats.counters.terminated).toBeGreaterThanOrEqual(1)
          expect(stats.total).toBeLessThanOrEqual(1)

          // The pool is still usable afterwards.
          expect(yield* backendPid(sql)).not.toBe(pid)
          yield* close
          yield* promise(() => admin.waitForNoBackends(app, 5_000))
        })
      ),
    30_000
  )

  describe("network blackhole", () => {
    it.live(
      "between statements of a transaction: bounded interruption, nothing committed, nothing left",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* resetProxy
            const app = uniqueAppName("blackhole-tx")
            const table = `warden_faults_${app.slice(-12)}`
            yield* Effect.acquireRelease(
              promise(() => admin.query(`create table ${table} (id int primary key)`)),
              () => promise(() => admin.query(`drop table if exists ${table}`))
            )
            const config = configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 1 })
            const { sql, close } = yield* open(config)
            const inserted = yield* Deferred.make<void>()
            const fiber = yield* Effect.fork(
              sql.withTransaction(
                sql`insert into ${sql(table)} (id) values (1)`.pipe(
                  Effect.zipRight(Deferred.succeed(inserted, undefined)),
                  Effect.zipRight(Effect.never)
                )
              )
            )
            yield* Deferred.await(inserted)
            yield* promise(() =>
              admin.waitFor(
                () => admin.backends(app),
                (bs) => bs.some((b) => b.state === "idle in transaction")
              )
            )

            proxy.setMode("blackhole")
            const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
            expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))

            proxy.setMode("pass")
            yield* promise(() => admin.waitForNoBackends(app, 10_000))
            const rows = yield* promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`))
            expect(rows[0]!.n).toBe(0)
            yield* close
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )

    it.live(
      "during a statement: bounded interruption, the server ends the backend",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* resetProxy
            const app = uniqueAppName("blackhole-stmt")
            const config = configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 1 })
            const { close, sql } = yield* open(config)
            const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
            yield* runningSleep(admin, app)

            proxy.setMode("blackhole")
            const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
            expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))

            proxy.setMode("pass")
            yield* promise(() => admin.waitForNoBackends(app, 10_000))
            yield* close
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )
  })

  it.live(
    "network blackhole during a statement with a long terminateTimeout: still within cleanupBound",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          yield* resetProxy
          const app = uniqueAppName("blackhole-bound")
          // cleanupBound = 300 + 300 + 100 + 3000 = 3700 ms; the margin stays 1.5 s.
          const config = configFor(proxy.rewrite(databaseUrl), app, {
            maxConnections: 1,
            rollbackTimeout: 100,
            terminateTimeout: 3_000
          })
          const { close, sql } = yield* open(config)
          const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
          yield* runningSleep(admin, app)

          proxy.setMode("blackhole")
          const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
          expect(
            Duration.toMillis(elapsed),
            `interruption took ${Math.round(Duration.toMillis(elapsed))} ms; cleanupBound is ${Duration.toMillis(WardenClient.cleanupBound(config))} ms`
          ).toBeLessThan(boundMs(config))

          proxy.setMode("pass")
          yield* promise(() => admin.waitForNoBackends(app, 10_000))
          yield* close
          yield* promise(() => admin.waitForNoBackends(app, 5_000))
        })
      ),
    30_000
  )

  it.live(
    "proxy reset while a statement runs: typed SqlError, the next statement works, no leak",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          yield* resetProxy
          const app = uniqueAppName("proxy-reset")
          const { sql, pool, close } = yield* open(configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 2 }))
          const fiber = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
          const [busy] = yield* runningSleep(admin, app)

          proxy.reset()
          const [elapsed, exit] = yield* Effect.timed(Fiber.join(fiber))
          expectSqlError(exit)
          expect(Duration.toMillis(elapsed)).toBeLessThan(5_000)

          const pid2 = yield* backendPid(sql)
          expect(pid2).not.toBe(busy!.pid)
          yield* promise(() =>
            admin.waitFor(
              () => admin.backends(app),
              (bs) => bs.length === 1 && bs[0]!.pid === pid2,
              { message: "the reset backend is gone and only the new one remains" }
            )
          )
          yield* eventually(pool.audit, (r) => r.ok, "audit ok after the reset")
          yield* close
          yield* promise(() => admin.waitForNoBackends(app, 5_000))
        })
      ),
    30_000
  )

  it.live(
    "server restart (private server): statements recover with typed errors only, nothing left",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const server = yield* Effect.acquireRelease(
            promise(() => startPrivateServer()),
            (s) => promise(() => s.dispose())
          )
          const app = uniqueAppName("restart")
          const privateAdmin = (url: string) =>
            Effect.acquireRelease(
              promise(() => Admin.connect(url)),
              (a) => promise(() => a.close())
            )

          const { sql, close } = yield* open(
            configFor(server.url, app, { maxConnections: 3, minConnections: 2, connectTimeout: 2_000 })
          )
          const before = yield* privateAdmin(server.url)
          yield* promise(() =>
            before.waitFor(
              () => before.backends(app),
              (bs) => bs.length === 2,
              { message: "min connections open before the restart" }
            )
          )
          yield* promise(() => before.close())

          yield* promise(() => server.restart())

          const failures: Array<SqlError> = []
          let ok = false
          for (let attempt = 0; attempt < 20 && !ok; attempt++) {
            const exit = yield* Effect.exit(sql<{ n: number }>`select 1 as n`)
            if (Exit.isSuccess(exit)) {
              expect(exit.value).toEqual([{ n: 1 }])
              ok = true
            } else {
              failures.push(expectSqlError(exit))
              yield* Effect.sleep(Duration.millis(100))
            }
          }
          expect(ok, `statements never recovered: ${failures.map((e) => e.message).join(" | ")}`).toBe(true)
          expect(failures.length).toBeLessThanOrEqual(5)
          // and keep working
          yield* sql`select 1`
          yield* sql`select 1`

          const after = yield* privateAdmin(server.url)
          expect(yield* promise(() => after.count(app))).toBeGreaterThanOrEqual(1)
          yield* close
          yield* promise(() => after.waitForNoBackends(app, 5_000))
        })
      ),
    60_000
  )

  describe("interruption while connecting", () => {
    it.live(
      "a statement waiting on a hanging connect is interrupted quickly; nothing is left",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* resetProxy
            const app = uniqueAppName("connect-hang")
            const { sql, pool, close } = yield* open(configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 1 }))
            const pid = yield* backendPid(sql)
            expect(yield* promise(() => admin.terminate(pid))).toBe(true)
            yield* promise(() => admin.waitForNoBackends(app))
            yield* eventually(pool.stats, (s) => s.total === 0, "pool dropped the killed idle session")
            yield* eventually(
              Effect.sync(() => proxy.connections()),
              (n) => n === 0,
              "proxy pair of the killed session closed"
            )

            proxy.setMode("blackhole")
            const fiber = yield* Effect.fork(sql`select 1`)
            // the pool dials a new connection through the proxy, which hangs
            yield* eventually(
              Effect.sync(() => proxy.connections()),
              (n) => n >= 1,
              "pool started connecting"
            )
            const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
            expect(Duration.toMillis(elapsed)).toBeLessThan(1_000)

            proxy.setMode("pass")
            const [closing] = yield* Effect.timed(close)
            expect(Duration.toMillis(closing)).toBeLessThan(boundMs(configFor(databaseUrl, app)))
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )

    it.live(
      "connectTimeout with the network blackholed: typed ConnectTimeout/ConnectFailed when building the layer",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* resetProxy
            proxy.setMode("blackhole")
            const app = uniqueAppName("connect-timeout")
            const [elapsed, exit] = yield* Effect.timed(
              Effect.exit(
                Effect.scoped(
                  open(configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 1, connectTimeout: 500 }))
                )
              )
            )
            const error = expectSqlError(exit)
            const reason = WardenError.fromSqlError(error)?.reason
            expect(["ConnectTimeout", "ConnectFailed"]).toContain(reason)
            expect(Duration.toMillis(elapsed)).toBeLessThan(500 + MARGIN_MS)
            proxy.setMode("pass")
            yield* promise(() => admin.waitForNoBackends(app, 5_000))
          })
        ),
      30_000
    )
  })

  it.live(
    "Layer shutdown while statements run: bounded, and the server shows no backend afterwards",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("shutdown")
          const config = configFor(databaseUrl, app, { maxConnections: 3 })
          const { sql, close } = yield* open(config)
          const fibers = yield* Effect.forEach([1, 2, 3], () => Effect.fork(Effect.exit(sql`select pg_sleep(10)`)))
          yield* runningSleep(admin, app, 3)

          const [elapsed] = yield* Effect.timed(close)
          expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))
          yield* promise(() => admin.waitForNoBackends(app, 2_000))

          const [joining, exits] = yield* Effect.timed(Effect.forEach(fibers, Fiber.join))
          expect(Duration.toMillis(joining)).toBeLessThan(boundMs(config))
          for (const exit of exits) expectSqlError(exit)
        })
      ),
    30_000
  )

  it.live(
    "Layer shutdown under a network blackhole (statement running, transaction open): bounded, nothing left",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          yield* resetProxy
          const app = uniqueAppName("shutdown-blackhole")
          const table = `warden_faults_${app.slice(-12)}`
          yield* Effect.acquireRelease(
            promise(() => admin.query(`create table ${table} (id int primary key)`)),
            () => promise(() => admin.query(`drop table if exists ${table}`))
          )
          const config = configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 2 })
          const { sql, close } = yield* open(config)
          const inserted = yield* Deferred.make<void>()
          const inTx = yield* Effect.fork(
            Effect.exit(
              sql.withTransaction(
                sql`insert into ${sql(table)} (id) values (1)`.pipe(
                  Effect.zipRight(Deferred.succeed(inserted, undefined)),
                  Effect.zipRight(Effect.never)
                )
              )
            )
          )
          yield* Deferred.await(inserted)
          const sleeping = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
          yield* runningSleep(admin, app)

          proxy.setMode("blackhole")
          const [elapsed] = yield* Effect.timed(close)
          expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))
          expectSqlError(yield* Fiber.join(sleeping))

          proxy.setMode("pass")
          yield* promise(() => admin.waitForNoBackends(app, 10_000))
          const rows = yield* promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`))
          expect(rows[0]!.n).toBe(0)
          // the fiber that outlived the Layer never commits
          yield* Fiber.interrupt(inTx)
          expect(
            (yield* promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`)))[0]!.n
          ).toBe(0)
        })
      ),
    30_000
  )
})
