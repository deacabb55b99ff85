/**
 * Fault injection against pg-warden: killed backends, frozen backends, network blackholes,
 * resets, server restarts, interruption while connecting and Layer shutdown under load.
 * Every test checks the server's own view (pg_stat_activity by application_name).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { type FaultProxy, startProxy } from "./support/proxy.js"
import {
  backendGone,
  backendPid,
  boundMs,
  configFor,
  eventually,
  expectSqlError,
  MARGIN_MS,
  open,
  promise,
  proxyTarget,
  runningSleep,
  scopedAdmin,
  scopedPrivateServer,
  thawQuietly,
  waitForBackends
} from "./support/warden.js"

const databaseUrl = inject("databaseUrl")

describe("faults", () => {
  let admin: Admin
  let proxy: FaultProxy

  beforeAll(async () => {
    admin = await Admin.connect(databaseUrl)
    proxy = await startProxy(proxyTarget(databaseUrl))
  })

  afterAll(async () => {
    await proxy?.close()
    await admin?.close()
  })

  const resetProxy = Effect.sync(() => {
    proxy.setMode("pass")
    proxy.reset()
  })

  /** Waits until the server shows no backend for `app`. */
  const noBackends = (app: string, timeoutMs?: number) => promise(() => admin.waitForNoBackends(app, timeoutMs))

  /** A table `warden_faults_…` named after `app`, dropped when the test's scope closes. */
  const scratchTable = (app: string): Effect.Effect<string, never, Scope.Scope> => {
    const table = `warden_faults_${app.slice(-12)}`
    return Effect.as(
      Effect.acquireRelease(
        promise(() => admin.query(`create table ${table} (id int primary key)`)),
        () => promise(() => admin.query(`drop table if exists ${table}`))
      ),
      table
    )
  }

  /** The number of rows committed to `table`, read by the admin session. */
  const committedRows = (table: string) =>
    Effect.map(
      promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`)),
      (rows) => rows[0]!.n
    )

  /** Forks a transaction that inserts a row into `table` and then never ends; returns once the insert ran. */
  const insertThenHang = (sql: SqlClient.SqlClient, table: string) =>
    Effect.gen(function* () {
      const inserted = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
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
      return fiber
    })

  /**
   * Through the proxy: runs `pg_sleep(10)`, blackholes the network and interrupts the statement
   * (`check` gets how long that took), then lets traffic pass and expects the server to end the
   * backend and the Layer to close leaving nothing.
   */
  const blackholeDuringStatement = (
    app: string,
    config: WardenClient.WardenClientConfig,
    check: (elapsed: Duration.Duration) => void
  ) =>
    Effect.gen(function* () {
      const { close, sql } = yield* open(config)
      const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
      yield* runningSleep(admin, app)

      proxy.setMode("blackhole")
      const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
      check(elapsed)

      proxy.setMode("pass")
      yield* noBackends(app, 10_000)
      yield* close
      yield* noBackends(app, 5_000)
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
            yield* backendGone(admin, app, pid1)
            // The driver's 'error'/'end' event reached the pool (and did not crash the process).
            yield* eventually(pool.stats, (s) => s.counters.lostWhileIdle >= 1, "pool noticed the lost idle session")

            const pid2 = yield* backendPid(sql)
            expect(pid2).not.toBe(pid1)
            expect((yield* promise(() => admin.backends(app))).map((b) => b.pid)).toEqual([pid2])
            expect((yield* eventually(pool.audit, (r) => r.ok, "audit ok")).ok).toBe(true)

            yield* close
            yield* noBackends(app, 5_000)
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
            yield* backendGone(admin, app, busy!.pid)

            yield* close
            yield* noBackends(app, 5_000)
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
          yield* backendGone(admin, app, pid, `frozen backend ${pid} still present after thaw`)
          const stats = yield* pool.stats
          expect(stats.counters.terminated).toBeGreaterThanOrEqual(1)
          expect(stats.total).toBeLessThanOrEqual(1)

          // The pool is still usable afterwards.
          expect(yield* backendPid(sql)).not.toBe(pid)
          yield* close
          yield* noBackends(app, 5_000)
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
            const table = yield* scratchTable(app)
            const config = configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 1 })
            const { sql, close } = yield* open(config)
            const fiber = yield* insertThenHang(sql, table)
            yield* waitForBackends(admin, app, (bs) => bs.some((b) => b.state === "idle in transaction"))

            proxy.setMode("blackhole")
            const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
            expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))

            proxy.setMode("pass")
            yield* noBackends(app, 10_000)
            expect(yield* committedRows(table)).toBe(0)
            yield* close
            yield* noBackends(app, 5_000)
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
            yield* blackholeDuringStatement(app, config, (elapsed) => {
              expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))
            })
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
          yield* blackholeDuringStatement(app, config, (elapsed) => {
            expect(
              Duration.toMillis(elapsed),
              `interruption took ${Math.round(Duration.toMillis(elapsed))} ms; cleanupBound is ${Duration.toMillis(WardenClient.cleanupBound(config))} ms`
            ).toBeLessThan(boundMs(config))
          })
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
          yield* waitForBackends(admin, app, (bs) => bs.length === 1 && bs[0]!.pid === pid2, {
            message: "the reset backend is gone and only the new one remains"
          })
          yield* eventually(pool.audit, (r) => r.ok, "audit ok after the reset")
          yield* close
          yield* noBackends(app, 5_000)
        })
      ),
    30_000
  )

  it.live(
    "server restart (private server): statements recover with typed errors only, nothing left",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const server = yield* scopedPrivateServer
          const app = uniqueAppName("restart")
          const { sql, close } = yield* open(
            configFor(server.url, app, { maxConnections: 3, minConnections: 2, connectTimeout: 2_000 })
          )
          const before = yield* scopedAdmin(server.url)
          yield* waitForBackends(before, app, (bs) => bs.length === 2, {
            message: "min connections open before the restart"
          })
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

          const after = yield* scopedAdmin(server.url)
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
            yield* noBackends(app)
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
            yield* noBackends(app, 5_000)
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
            yield* noBackends(app, 5_000)
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
          yield* noBackends(app, 2_000)

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
          const table = yield* scratchTable(app)
          const config = configFor(proxy.rewrite(databaseUrl), app, { maxConnections: 2 })
          const { sql, close } = yield* open(config)
          const inTx = yield* insertThenHang(sql, table)
          const sleeping = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
          yield* runningSleep(admin, app)

          proxy.setMode("blackhole")
          const [elapsed] = yield* Effect.timed(close)
          expect(Duration.toMillis(elapsed)).toBeLessThan(boundMs(config))
          expectSqlError(yield* Fiber.join(sleeping))

          proxy.setMode("pass")
          yield* noBackends(app, 10_000)
          expect(yield* committedRows(table)).toBe(0)
          // the fiber that outlived the Layer never commits
          yield* Fiber.interrupt(inTx)
          expect(yield* committedRows(table)).toBe(0)
        })
      ),
    30_000
  )
})
